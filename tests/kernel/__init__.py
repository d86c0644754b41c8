"""The actor kernel (`actors/`) alone: mailboxes, actors, supervision, the public faces.
Every async test runs on asyncio and trio (the suite's `anyio_backend`)."""
