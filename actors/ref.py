"""The handle other actors hold: stable across restarts, dead only when the slot is.

A ref points at a slot, not at one incarnation, so a sender never needs a new ref after
its peer restarts; frames sent during the restart wait in the slot's mailbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from pipecat.frames.frames import AudioRawFrame, Frame, ImageRawFrame, SystemFrame

from actors.errors import ActorStoppedError, AskTimeoutError
from actors.mailbox import MailboxStats, Reply, Request

if TYPE_CHECKING:
    from actors.cell import ActorCell, ActorState


_MEDIA = (AudioRawFrame, ImageRawFrame)


def is_control(frame: Frame) -> bool:
    """Whether a frame travels in the system lane.

    Control is a `SystemFrame`, except raw media: pipecat marks input audio and images
    as `SystemFrame`s so interruptions never discard them, but in a mailbox they are the
    bulk content that must yield to control and may be dropped when a consumer lags.
    """
    return isinstance(frame, SystemFrame) and not isinstance(frame, _MEDIA)


class ActorRef:
    """Send frames to an actor: `tell` to fire and forget, `ask` to await an answer."""

    __slots__ = ("_cell", "_mailbox")

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell
        self._mailbox = cell.mailbox

    @property
    def path(self) -> str:
        """Where the actor sits in the tree, e.g. ``/rooms/lobby/pipeline``."""
        return self._cell.path

    @property
    def name(self) -> str:
        return self._cell.spec.name

    @property
    def state(self) -> ActorState:
        return self._cell.state

    @property
    def incarnation(self) -> int:
        """How many times the actor has started: 1 before any restart."""
        return self._cell.incarnation

    @property
    def stats(self) -> MailboxStats:
        return self._mailbox.stats

    async def tell(self, frame: Frame) -> None:
        """Queue a frame: control (see `is_control`) in the system lane, the rest in the data lane.

        A frame for a stopped actor is counted as a dead letter, as Erlang drops a send
        to a dead process. A full blocking lane raises `MailboxFullError` after the
        mailbox's send timeout.
        """
        if is_control(frame):
            self._mailbox.put_system(frame)
            await anyio.lowlevel.checkpoint()
        else:
            await self._mailbox.put_data(frame)

    def tell_nowait(self, frame: Frame) -> None:
        """`tell` from synchronous code (an rtc callback); a full blocking lane raises."""
        if is_control(frame):
            self._mailbox.put_system(frame)
        else:
            self._mailbox.put_data_nowait(frame)

    async def ask(self, frame: Frame, timeout: float = 5.0) -> Any:
        """Send a frame and wait for the actor's answer, within `timeout` seconds.

        Raises `ActorStoppedError` at once for a stopped actor, `MailboxFullError` if
        a blocking data lane stayed full for its `send_timeout`, `ActorCrashedError` if
        the actor crashed on this frame, `AskTimeoutError` if no answer came in time
        (the time spent waiting for room in a full lane counts), and whatever the
        handler raised as `Refused`.
        """
        if self._mailbox.closed:
            raise ActorStoppedError(f"{self.path}: actor is stopped")
        reply = Reply()
        request = Request(frame, reply)
        with anyio.move_on_after(timeout):
            if is_control(frame):
                self._mailbox.put_system(request)
            else:
                await self._mailbox.put_data(request)
            await reply.wait()
        if not reply.done:
            raise AskTimeoutError(f"{self.path}: no answer to {frame} within {timeout:g} s")
        return reply.result()

    def __repr__(self) -> str:
        return f"<ActorRef {self.path} {self._cell.state.value}>"
