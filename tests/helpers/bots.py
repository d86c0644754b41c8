"""Bots for tests that run the supervisor as a subprocess (named in config as
`tests.helpers.bots:NAME`; the subprocess imports them from the repository root)."""

from __future__ import annotations

import anyio

from actors.room import RoomTransport

STUBBORN_SECONDS = 120.0


async def stubborn_bot(transport: RoomTransport) -> None:
    """A bot that ignores every stop for two minutes: what drain deadlines and a second
    stop signal exist for. Only SIGKILL ends the process that runs it sooner."""
    with anyio.CancelScope(shield=True):
        await anyio.sleep(STUBBORN_SECONDS)
