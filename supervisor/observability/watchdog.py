"""The loop watchdog: a thread that notices when bot code blocks the event loop.

Every room of a process shares one event loop, so a bot that blocks it (a synchronous
HTTP client, `time.sleep`, a CPU-heavy step) silences every other room of the process.
A heartbeat task on the loop stamps the time every `BEAT_SECONDS` (and reports how late
it woke: the loop-lag histogram); a thread off the loop checks the stamp. A stamp older
than `[watchdog] stall_seconds`, with the loop thread inside one and the same task step
or callback on two checks in a row, is a stall: the thread logs the loop thread's stack
and the room whose code is running, counts the stall for that room, and `health()`
(answered off the loop, see `supervisor.observability.http`) fails until the heartbeat runs again.
With `--workers N` the parent reads that health and restarts a worker stalled past
`restart_after_seconds` (`supervisor.process.workers`).

A late heartbeat alone is not a stall: a loop waiting in its selector while the
process gets no CPU (a host with too much to do) runs no code, and the first handles
it runs when it gets the CPU back are innocent; restarting the process would not
help. That is what the loop-lag histogram shows.

The room comes from the stack at the stall, not from anything kept per frame: asyncio
runs each task step and callback through an `asyncio.Handle` whose context is the
task's, and every task of a room's tree inherits `CURRENT_ROOM` from the room's own
task (`actors.room.room`). The thread finds that `Handle._run` frame on the stack and
reads the variable from its context. (asyncio only, as the supervisor is.)

A stall that ends within two check intervals past the threshold can go unseen: the
thread wakes `CHECKS_PER_THRESHOLD` times per threshold (at most every 0.25 s).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from types import FrameType

import anyio
import attrs
from anyio.abc import TaskStatus

from actors.room import CURRENT_ROOM
from supervisor.config import WatchdogConfig

log = logging.getLogger("supervisor")

BEAT_SECONDS = 0.1
"""How often the heartbeat task stamps the time while the loop runs."""
CHECKS_PER_THRESHOLD = 10
MAX_CHECK_SECONDS = 0.25
"""The thread checks the heartbeat `CHECKS_PER_THRESHOLD` times per `stall_seconds`,
at least every `MAX_CHECK_SECONDS`."""
STACK_FRAMES = 60
"""The innermost frames of the stalled stack that the log shows."""
_HANDLE_RUN = asyncio.events.Handle._run.__code__


@attrs.frozen
class Stall:
    """What the loop was doing when the watchdog found it stalled."""

    room: str | None
    """The room whose tree the blocking code belongs to; None: no room's."""
    where: str
    """The innermost Python frame: `file:line in function`."""
    stack: str
    since: float
    """`time.monotonic()` of the last heartbeat before the stall."""

    def describe(self) -> str:
        return f"{f'room {self.room}' if self.room else 'outside any room'}, at {self.where}"


def running_handle(frame: FrameType | None) -> asyncio.Handle | None:
    """The Handle (a task step or a callback) whose code runs `frame`'s stack; None when
    the loop runs none (it waits in its selector, or runs its own bookkeeping)."""
    while frame is not None:
        if frame.f_code is _HANDLE_RUN:
            handle = frame.f_locals.get("self")
            return handle if isinstance(handle, asyncio.Handle) else None
        frame = frame.f_back
    return None


def room_of(handle: asyncio.Handle) -> str | None:
    """The room whose tree started the task or callback `handle` runs."""
    return _context_of(handle).get(CURRENT_ROOM)


if sys.version_info >= (3, 12):

    def _context_of(handle: asyncio.Handle) -> contextvars.Context:
        return handle.get_context()

else:

    def _context_of(handle: asyncio.Handle) -> contextvars.Context:
        # Python 3.11 has no public accessor: this is the attribute 3.12's
        # `Handle.get_context()` returns, which typeshed leaves out.
        context: contextvars.Context = handle._context  # type: ignore[attr-defined]
        return context


class LoopWatchdog:
    """The heartbeat (on the loop), the thread that watches it, and what it found.

    Read from any thread: `health()`, `stalled_for()`, `counts()`, `stall`.
    """

    def __init__(
        self, config: WatchdogConfig, on_beat: Callable[[float], None] = lambda lag: None
    ) -> None:
        self.config = config
        self.on_beat = on_beat
        """Called at each beat with how late it woke, in seconds."""
        self.last_beat = time.monotonic()
        self.stall: Stall | None = None
        """The stall under way, once the thread has seen it."""
        self._stalls: Counter[str | None] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._loop_thread = 0
        """The ident of the thread that runs the loop (and `run`)."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Beat until cancelled, with the watching thread running alongside (started
        once the thread runs)."""
        self._loop_thread = threading.get_ident()
        thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        thread.start()
        task_status.started()
        try:
            while True:
                self.last_beat = time.monotonic()
                await anyio.sleep(BEAT_SECONDS)
                self.on_beat(max(0.0, time.monotonic() - self.last_beat - BEAT_SECONDS))
        finally:
            self._stop.set()
            thread.join()  # it wakes at once: no need to leave the loop for this

    def stalled_for(self) -> float:
        """How long the stall under way has lasted; 0 when there is none."""
        stall = self.stall
        return time.monotonic() - stall.since if stall is not None else 0.0

    def health(self) -> tuple[bool, str]:
        stall = self.stall
        if stall is None:
            return True, "ok"
        return False, f"event loop stalled for {self.stalled_for():.1f} s ({stall.describe()})"

    def counts(self) -> dict[str | None, int]:
        """Stalls so far, by room (None: outside any room)."""
        with self._lock:
            return dict(self._stalls)

    def _watch(self) -> None:
        threshold = self.config.stall_seconds
        interval = min(threshold / CHECKS_PER_THRESHOLD, MAX_CHECK_SECONDS)
        suspect: asyncio.Handle | None = None  # running at the last check, the beat late
        while not self._stop.wait(interval):
            late = time.monotonic() - self.last_beat > threshold
            if self.stall is not None:
                if not late:
                    stall, self.stall = self.stall, None
                    log.warning(
                        "%sthe event loop runs again after a %.1f s stall",
                        _tag(stall.room), self.last_beat - stall.since,
                    )  # fmt: skip
                continue
            frame = sys._current_frames().get(self._loop_thread) if late else None
            handle = running_handle(frame)
            if handle is not None and handle is suspect:
                self._caught(frame, handle)
            suspect = handle
            del frame  # a frame of another thread: keep no reference past this check

    def _caught(self, frame: FrameType | None, handle: asyncio.Handle) -> None:
        since, room = self.last_beat, room_of(handle)
        summary = traceback.extract_stack(frame, STACK_FRAMES)
        inner = summary[-1]
        where = f"{inner.filename}:{inner.lineno} in {inner.name}"
        stall = Stall(room, where, "".join(traceback.format_list(summary)), since)
        with self._lock:
            self._stalls[room] += 1
        self.stall = stall
        log.error(
            "%sevent loop stalled for %.1f s at %s: this call blocks every room of the "
            "process (bot code must not block the loop); the loop's stack:\n%s",
            _tag(room), time.monotonic() - since, where, stall.stack.rstrip(),
        )  # fmt: skip


def _tag(room: str | None) -> str:
    return f"[{room}] " if room else ""
