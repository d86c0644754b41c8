"""The loop watchdog: a thread that notices when bot code blocks the event loop.

Every room of a process shares one event loop, so a bot that blocks it (a synchronous
HTTP client, `time.sleep`, a CPU-heavy step) silences every other room of the process.
A heartbeat task on the loop stamps the time every `BEAT_SECONDS`; a thread off the
loop checks the stamp. A stamp older than `[watchdog] stall_seconds` is a stall: the
thread logs the loop thread's stack and the room whose code is running, counts the
stall for that room, and `health()` (answered off the loop, see `supervisor.http`)
fails until the heartbeat runs again. With `--workers N` the parent reads that health
and restarts a worker stalled past `restart_after_seconds` (`supervisor.workers`).

The room comes from the stack at the stall, not from anything kept per frame: the
loop runs each task step and callback through an `asyncio.Handle` whose context is the
task's, and every task of a room's tree inherits `CURRENT_ROOM` from the room's own
task (`actors.room.room`). The thread finds that `Handle._run` frame on the stack and
reads the variable from its context.

A stall that ends within one check interval past the threshold can go unseen: the
thread wakes `CHECKS_PER_THRESHOLD` times per threshold (at most every 0.25 s).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections import Counter
from types import FrameType

import anyio
import attrs
from anyio.abc import TaskStatus

from actors.room.room import CURRENT_ROOM
from supervisor.config import WatchdogConfig

log = logging.getLogger("supervisor")

BEAT_SECONDS = 0.05
"""How often the heartbeat task stamps the time while the loop runs."""
CHECKS_PER_THRESHOLD = 10
MAX_CHECK_SECONDS = 0.25
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


def room_of(frame: FrameType | None) -> str | None:
    """The room whose task or callback runs `frame`'s stack (read from its Handle)."""
    while frame is not None:
        if frame.f_code is _HANDLE_RUN:
            handle = frame.f_locals.get("self")
            context = getattr(handle, "_context", None)
            return context.get(CURRENT_ROOM) if context is not None else None
        frame = frame.f_back
    return None


class LoopWatchdog:
    """The heartbeat (on the loop), the thread that watches it, and what it found.

    Read from any thread: `health()`, `stalled_for()`, `counts()`, `stall`.
    """

    def __init__(self, config: WatchdogConfig) -> None:
        self.config = config
        self.last_beat = time.monotonic()
        self.stall: Stall | None = None
        """The stall under way, once the thread has seen it."""
        self._stalls: Counter[str | None] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Beat until cancelled, with the watching thread running alongside (started
        once the thread runs)."""
        self._loop_thread = threading.get_ident()
        self.last_beat = time.monotonic()
        self._stop.clear()
        thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        thread.start()
        task_status.started()
        try:
            while True:
                self.last_beat = time.monotonic()
                await anyio.sleep(BEAT_SECONDS)
        finally:
            self._stop.set()
            thread.join()  # it wakes at once: no need to leave the loop for this

    def stalled_for(self) -> float:
        """Seconds the loop has run no task, once that is past the threshold; else 0."""
        silent = time.monotonic() - self.last_beat
        return silent if silent > self.config.stall_seconds else 0.0

    def health(self) -> tuple[bool, str]:
        silent = self.stalled_for()
        if not silent:
            return True, "ok"
        stall = self.stall
        where = f" ({stall.describe()})" if stall is not None else ""
        return False, f"event loop stalled for {silent:.1f} s{where}"

    def counts(self) -> dict[str | None, int]:
        """Stalls so far, by room (None: outside any room)."""
        with self._lock:
            return dict(self._stalls)

    def _watch(self) -> None:
        threshold = self.config.stall_seconds
        interval = min(threshold / CHECKS_PER_THRESHOLD, MAX_CHECK_SECONDS)
        while not self._stop.wait(interval):
            if self.stall is None and self.stalled_for():
                self._caught()
            elif self.stall is not None and not self.stalled_for():
                stall, self.stall = self.stall, None
                log.warning(
                    "%sthe event loop runs again after a %.1f s stall",
                    f"[{stall.room}] " if stall.room else "", self.last_beat - stall.since,
                )  # fmt: skip

    def _caught(self) -> None:
        since = self.last_beat
        frame = sys._current_frames().get(self._loop_thread)
        room = room_of(frame)
        summary = traceback.extract_stack(frame) if frame is not None else traceback.StackSummary()
        del frame  # a frame of another thread: keep no reference past this
        inner = summary[-1] if summary else None
        where = f"{inner.filename}:{inner.lineno} in {inner.name}" if inner else "unknown"
        stall = Stall(room, where, "".join(traceback.format_list(summary)), since)
        with self._lock:
            self._stalls[room] += 1
        self.stall = stall
        log.error(
            "%sevent loop stalled for %.1f s at %s: bot code blocks every room of this "
            "process (it must not block the loop); the loop's stack:\n%s",
            f"[{room}] " if room else "", time.monotonic() - since, where, stall.stack.rstrip(),
        )  # fmt: skip
