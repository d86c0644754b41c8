"""Recycling: a worker process past a bound is replaced by a fresh one, make before break.

Why (the rtc SDK keeps native memory for every room a process served beside others),
the steps and their figures: docs/scaling/recycling.md. The worker and its parent
(`supervisor.process.workers`) speak over a pipe the parent gives each worker
(`REPORT_FD_ENV`), one line a report (`ready`, `due REASON`, `released`), and signals
back (`RELEASE`, `TAKE`, then SIGTERM: the drain); a successor is started with
`SUCCEEDS_ENV` and holds back the slot's configured rooms until it is told to take them.
A single-process run that `recycles` runs its rooms in one worker under a thin parent.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

import anyio
import attrs

from supervisor.config import Config, RecycleConfig

log = logging.getLogger("supervisor")

REPORT_FD_ENV = "SUPERVISOR_WORKER_REPORT_FD"
"""The worker's end of its report pipe, a file descriptor number."""
SUCCEEDS_ENV = "SUPERVISOR_WORKER_SUCCEEDS"
"""Set for a successor: the pid of the worker it replaces, whose port it waits for."""
RELEASE = signal.SIGUSR1
"""The parent to a worker past its bound, once its successor serves: let go of the
configured rooms and the metrics port."""
TAKE = signal.SIGUSR2
"""The parent to a successor, once its predecessor let go: take them."""
READY = "ready"
DUE = "due"
RELEASED = "released"
CHECK_SECONDS = 1.0
"""How often the bounds are checked and readiness read."""
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_mb() -> float:
    """This process's resident memory in MiB (what the kernel accounts, native included)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE / 2**20


@attrs.define
class Bounds:
    """The worker's side: `[recycle]`'s bounds checked against what it has served."""

    config: RecycleConfig
    rooms_served: Callable[[], int]
    """Room trees this process started and saw end (`RoomSet.rooms_served`)."""
    rss_mb: Callable[[], float] = resident_mb
    due: str | None = None
    """Why this worker is due for replacement, once it is."""

    def check(self) -> str | None:
        """The reason, the first time a bound is passed; None otherwise."""
        if self.due is not None:
            return None
        served, limit = self.rooms_served(), self.config.max_rooms_served
        if limit and served >= limit:
            self.due = f"{served} rooms served (recycle.max_rooms_served = {limit})"
        rss, most = self.rss_mb(), self.config.max_rss_mb
        if self.due is None and most and rss >= most:
            self.due = f"{rss:.0f} MiB resident (recycle.max_rss_mb = {most})"
        return self.due


def recycles(config: Config) -> bool:
    """Whether a single-process `supervisor run` of `config` runs its rooms in a worker
    under a parent, which can replace it: where rooms come and go (`[dispatch]`) or a
    memory bound is set, and `[recycle]` has a bound. Configured rooms alone stay one
    process: their set is fixed, so is what they hold."""
    bounds = config.recycle
    return bounds.enabled and (config.dispatch.enabled or bounds.max_rss_mb > 0)


def describe(config: Config) -> str:
    """What recycling does for `config`, for `supervisor check` and the start's log."""
    bounds = config.recycle
    if not bounds.enabled:
        return "off"
    past = " or ".join(
        [f"{bounds.max_rooms_served} rooms served"] * bool(bounds.max_rooms_served)
        + [f"{bounds.max_rss_mb} MiB resident"] * bool(bounds.max_rss_mb)
    )
    if recycles(config):
        return f"a worker is replaced past {past}, its successor serving first"
    return (f"with --workers N, a worker is replaced past {past} (configured rooms alone "
            "otherwise run in one process, which nothing replaces)")


def report_fd() -> int | None:
    """The report pipe this worker's parent gave it, if any."""
    value = os.environ.get(REPORT_FD_ENV)
    return int(value) if value else None


def tell_parent(fd: int, line: str) -> bool:
    """One report: a line shorter than a pipe's atomic write, so the parent reads whole
    lines whatever else it reads. False if the parent is gone (the pipe is broken): the
    worker's watch on its parent drains it then, and a report is no cause to die."""
    try:
        os.write(fd, (line[:500] + "\n").encode())
    except BrokenPipeError:
        log.warning("recycle: the parent is gone: %r not reported", line)
        return False
    return True


async def report(
    fd: int, bounds: Bounds, readiness: Callable[[], tuple[bool, str]]
) -> None:
    """Tell the parent once when this worker is ready and once when it is due, for ever."""
    ready_sent = False
    while True:
        if not ready_sent and readiness()[0]:
            if not tell_parent(fd, READY):
                return
            ready_sent = True
        reason = bounds.check()
        if reason is not None:
            log.warning("recycle: %s; asking the parent for a successor", reason)
            if not tell_parent(fd, f"{DUE} {reason}"):
                return
        await anyio.sleep(CHECK_SECONDS)
