"""A two-lane mailbox: control never waits behind content.

The system lane carries control frames (pipecat `SystemFrame`s and the kernel's own):
it is unbounded, never drops, keeps order, and is always served first, as pipecat
serves `SystemFrame`s ahead of queued data. The data lane is bounded, and what happens
when it is full is a property of the receiver: real-time audio keeps the newest frames
(drop the oldest, count it), ordered content makes the sender wait (up to a timeout).

The mailbox belongs to the actor's slot, not to one incarnation: frames queued while an
actor restarts are served by the next incarnation, as in Akka.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

import anyio
import anyio.lowlevel
import attrs
from attrs import validators as v

from actors.errors import ActorStoppedError, FrameDroppedError, MailboxFullError


class Overflow(enum.Enum):
    """What a full data lane does with one more frame."""

    DROP_OLDEST = "drop_oldest"
    """Drop the oldest queued frame and count it: for real-time media."""
    BLOCK = "block"
    """Make the sender wait for room, up to the send timeout: for ordered content."""


@attrs.frozen
class MailboxSpec:
    """The shape of one actor's mailbox."""

    capacity: int = attrs.field(default=256, validator=[v.instance_of(int), v.ge(1)])
    overflow: Overflow = attrs.field(default=Overflow.BLOCK, validator=v.instance_of(Overflow))
    send_timeout: float = attrs.field(default=5.0, validator=[v.instance_of((int, float)), v.gt(0)])


@attrs.frozen
class MailboxStats:
    """A snapshot of one mailbox, for metrics and tests."""

    depth: int
    dropped: int
    dead_letters: int


class Reply:
    """The one-shot answer slot of an `ask`."""

    __slots__ = ("_done", "_error", "_event", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._event = anyio.Event()

    def set(self, value: Any) -> None:
        if not self._done:
            self._done, self._value = True, value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self._done:
            self._done, self._error = True, error
            self._event.set()

    @property
    def done(self) -> bool:
        return self._done

    async def wait(self) -> None:
        await self._event.wait()

    def result(self) -> Any:
        """The answer, or the error it failed with; call only once `done`."""
        if self._error is not None:
            raise self._error
        return self._value


class Request:
    """A frame that expects an answer: what `ask` puts in a lane."""

    __slots__ = ("frame", "reply")

    def __init__(self, frame: Any, reply: Reply) -> None:
        self.frame = frame
        self.reply = reply


class _Stop:
    """The marker `Mailbox.get` returns once a stop was requested."""

    def __repr__(self) -> str:
        return "STOP"


STOP = _Stop()


class Mailbox:
    """The two lanes of one actor slot, read by a single consumer: the actor's loop."""

    __slots__ = (
        "_capacity",
        "_closed",
        "_data",
        "_drop_oldest",
        "_reader",
        "_send_timeout",
        "_space",
        "_stop_requested",
        "_system",
        "dead_letters",
        "dropped",
        "path",
    )

    def __init__(self, spec: MailboxSpec, path: str) -> None:
        self.path = path
        self._system: deque[Any] = deque()
        self._data: deque[Any] = deque()
        self._capacity = spec.capacity
        self._drop_oldest = spec.overflow is Overflow.DROP_OLDEST
        self._send_timeout = spec.send_timeout
        self._reader: anyio.Event | None = None
        self._space: anyio.Event | None = None
        self._stop_requested = False
        self._closed = False
        self.dropped = 0
        self.dead_letters = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> MailboxStats:
        return MailboxStats(len(self._system) + len(self._data), self.dropped, self.dead_letters)

    def put_system(self, item: Any) -> None:
        """Queue a control item; the system lane never blocks and never drops."""
        if self._closed:
            self._dead_letter(item)
            return
        self._system.append(item)
        if self._reader is not None:
            self._reader.set()

    def put_data_nowait(self, item: Any) -> None:
        """Queue content without waiting; a full blocking lane raises `MailboxFullError`."""
        if self._closed:
            self._dead_letter(item)
            return
        if len(self._data) >= self._capacity:
            if not self._drop_oldest:
                raise MailboxFullError(f"{self.path}: data lane full ({self._capacity} frames)")
            self._drop_one()
        self._data.append(item)
        if self._reader is not None:
            self._reader.set()

    async def put_data(self, item: Any) -> None:
        """Queue content; on a full blocking lane wait for room up to the send timeout."""
        if len(self._data) >= self._capacity and not self._drop_oldest and not self._closed:
            with anyio.move_on_after(self._send_timeout):
                while len(self._data) >= self._capacity and not self._closed:
                    if self._space is None:
                        self._space = anyio.Event()
                    await self._space.wait()
            if len(self._data) >= self._capacity and not self._closed:
                raise MailboxFullError(
                    f"{self.path}: data lane stayed full ({self._capacity} frames) "
                    f"for {self._send_timeout:g} s"
                )
            self.put_data_nowait(item)
            return
        self.put_data_nowait(item)
        await anyio.lowlevel.checkpoint()

    async def get(self) -> Any:
        """Next item: system lane first, then a requested stop, then the data lane."""
        while True:
            if self._system:
                await anyio.lowlevel.checkpoint()
                return self._system.popleft()
            if self._stop_requested:
                self._stop_requested = False
                return STOP
            if self._data:
                await anyio.lowlevel.checkpoint()
                if self._system:
                    continue
                item = self._data.popleft()
                if self._space is not None:
                    self._space.set()
                    self._space = None
                return item
            self._reader = event = anyio.Event()
            try:
                await event.wait()
            finally:
                self._reader = None

    def request_stop(self) -> None:
        """Ask the reader to stop once the system lane is empty; queued data stays."""
        self._stop_requested = True
        if self._reader is not None:
            self._reader.set()

    def clear_stop(self) -> None:
        """Forget a stop the previous incarnation did not live to read."""
        self._stop_requested = False

    def close(self) -> None:
        """End the slot: answer every queued request with `ActorStoppedError`."""
        self._closed = True
        for lane in (self._system, self._data):
            while lane:
                self._dead_letter(lane.popleft())
        if self._reader is not None:
            self._reader.set()
        if self._space is not None:
            self._space.set()
            self._space = None

    def _drop_one(self) -> None:
        dropped = self._data.popleft()
        self.dropped += 1
        if type(dropped) is Request:
            dropped.reply.fail(
                FrameDroppedError(f"{self.path}: request dropped by a full drop-oldest lane")
            )

    def _dead_letter(self, item: Any) -> None:
        self.dead_letters += 1
        if type(item) is Request:
            item.reply.fail(ActorStoppedError(f"{self.path}: actor is stopped"))

