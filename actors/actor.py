"""The base class every actor subclasses.

An actor is a frame handler (`receive`) plus a lifespan: resources it opens when an
incarnation starts and closes when it ends, however it ends (a clean stop, a crash, a
kill). Helper tasks that belong to the incarnation, such as a reader of an rtc audio
stream, go in `tasks`: they are cancelled when the incarnation ends, and if one fails,
the incarnation crashes and its supervisor decides what happens next.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
from anyio.abc import TaskGroup
from pipecat.frames.frames import Frame

from actors.errors import Refused

if TYPE_CHECKING:
    from actors.cell import ActorCell
    from actors.ref import ActorRef
    from actors.specs import ChildStatistics


@attrs.frozen
class ReplyLater:
    """What `receive` returns to answer a request once `work()` is done, while the
    actor serves its next frames meanwhile (OTP's `{noreply, State}` followed by
    `gen_server:reply/2`): the asker gets `work()`'s value, or its error.

    `work` runs as one of the incarnation's `tasks`: the incarnation ending cancels
    it (the asker then sees `ActorStoppedError`), and a failure other than `Refused`
    crashes the actor, as a failing handler does."""

    work: Callable[[], Awaitable[Any]]


class Actor:
    """Override `receive`, and `lifespan` where the actor holds resources."""

    _cell: ActorCell | None = None
    _tasks: TaskGroup | None = None

    def _attach(self, cell: ActorCell, tasks: TaskGroup) -> None:
        self._cell = cell
        self._tasks = tasks

    @property
    def ref(self) -> ActorRef:
        """This actor's own handle, to hand to others."""
        if self._cell is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._cell.ref

    @property
    def tasks(self) -> TaskGroup:
        """Helper tasks scoped to this incarnation."""
        if self._tasks is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._tasks

    def sibling(self, name: str) -> ActorRef:
        """The ref of another child of this actor's supervisor.

        A supervisor creates the slots of all its static children before it starts the
        first, so an early child can already send to a later one (the frames wait in
        its mailbox), and a sibling's ref stays valid across its restarts.
        """
        cell = self._cell.siblings.get(name) if self._cell is not None else None
        if cell is None:
            raise LookupError(f"{type(self).__name__}: no sibling named {name!r}")
        return cell.ref

    def stop(self) -> None:
        """Stop this actor once its queued control frames are served: a normal exit."""
        assert self._cell is not None, f"{type(self).__name__} is not running"
        self._cell.mailbox.request_stop()

    def children(self) -> tuple[ChildStatistics, ...]:
        """The slots below this actor, read in place: none, but for a supervisor."""
        return ()

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Hold the incarnation's resources; frames are served while this is open."""
        yield

    async def receive(self, frame: Frame) -> Any:
        """Handle one frame; an `ask` gets the return value as its answer (or, for a
        `ReplyLater`, its work's value once done)."""
        raise Refused(f"{type(self).__name__} does not handle {type(frame).__name__}")
