"""The top of an actor tree: one actor that lives for the length of an `async with`.

The block is the root's parent, in the structured-concurrency sense: leaving the block
stops the root (and so its whole tree) within the spec's shutdown timeout, and a root
that crashes cancels the block and raises its error there, since nobody above it could
restart it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskStatus

from actors.cell import ActorCell
from actors.errors import single_errors
from actors.ref import ActorRef
from actors.specs import ChildSpec


@asynccontextmanager
async def open_actor(spec: ChildSpec, *, parent_path: str = "") -> AsyncIterator[ActorRef]:
    """Start the actor of `spec` and yield its ref once its lifespan is entered."""
    cell = ActorCell(spec, parent_path)

    async def run(*, task_status: TaskStatus[None]) -> None:
        error = await cell.live(task_status=task_status)
        cell.close()
        if error is not None:
            raise error

    with single_errors():
        async with anyio.create_task_group() as tasks:
            await tasks.start(run)
            try:
                yield cell.ref
            finally:
                await cell.stop(spec.shutdown_timeout)
