"""Accept hooks for the dispatch tests (`[dispatch] accept = "tests.helpers.dispatch_hooks:..."`).

`choosy` decides by the room's name prefix: `private-` rejected, `raise-` raises, `hang-`
never answers (the worker gives up after its timeout), `sync-hang-` blocks its thread,
anything else is accepted with the bot named `helper` and an attribute. `one_name`
names every job's bot `helper`, a mistake for participant jobs (one room, many bots).
"""

from __future__ import annotations

import time

import anyio

from actors.room import Job
from supervisor.dispatch.admission import Accept, Reject


async def choosy(job: Job) -> Accept | Reject:
    if job.room.startswith("private-"):
        return Reject("private rooms get no bot")
    if job.room.startswith("raise-"):
        raise RuntimeError("the hook's backend is down")
    if job.room.startswith("hang-"):
        await anyio.sleep_forever()
    return Accept(identity="helper", attributes={"role": "echo"})


def blocking(job: Job) -> bool:
    """A synchronous hook: `sync-hang-` rooms block it far past the worker's timeout."""
    if job.room.startswith("sync-hang-"):
        time.sleep(6)  # twice the worker's patience; the process waits for it at exit
    return True


def one_name(job: Job) -> Accept:
    return Accept(identity="helper")
