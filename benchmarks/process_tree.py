"""CPU time and resident memory of a process and all its descendants, from /proc.

The harness measures the bot process only (the supervisor and, with `--workers N`, its
worker processes; a baseline bot), never the server or the load generator, which run
beside it on the same machine. Linux only, like the benchmark's servers.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int, thread: int | None = None) -> list[str] | None:
    """/proc/PID/stat (or one thread's) after the command name (which may hold spaces),
    or None if gone."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def parent_of(pid: int) -> int | None:
    """`pid`'s parent, or None if `pid` is gone."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def tree(pid: int) -> list[int]:
    """`pid` and every process descended from it, alive now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, ()))
    return found


def cpu_seconds(pid: int, *, main_threads: bool = False) -> float:
    """User plus system CPU seconds used so far by the tree under `pid`; with
    `main_threads`, by each process's main thread only: in a Python bot that is the
    interpreter's event loop, while the rtc SDK's media work runs on threads of its own."""
    total = 0
    for member in tree(pid):
        fields = _stat_fields(member, member if main_threads else None)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def own_rss_bytes(pid: int) -> int:
    """One process's resident memory now (0 once it is gone)."""
    with contextlib.suppress(OSError, IndexError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
    return 0


def own_pss_bytes(pid: int) -> int:
    """One process's proportional memory now: each page it shares divided among the
    processes sharing it (0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    pss = (int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith("Pss:"))
    return next(pss, 0)


def rss_bytes(pid: int) -> int:
    """Resident memory of the tree under `pid` now (shared pages counted per process)."""
    return sum(own_rss_bytes(member) for member in tree(pid))


def pss_bytes(pid: int) -> int:
    """Proportional memory of the tree under `pid` now. Beside `rss_bytes` for
    process-per-job systems, whose forked job processes share the pages they inherited:
    RSS counts those once per job."""
    return sum(own_pss_bytes(member) for member in tree(pid))


def sample(pid: int) -> dict[str, float] | None:
    """One process on its own (not its tree): RSS in MB, open fds, threads and CPU seconds
    so far; None if it is gone or exiting (its memory already released, RSS 0). The
    churn harness reads each process of a tree apart, since workers come and go
    (recycled) and one growing must not hide in a sum."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in "ZX":
        return None
    try:
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, IndexError):
        return None
    if not resident:
        return None
    return {
        "rss_mb": resident / 1e6,
        "fds": fds,
        "threads": int(fields[17]),
        "cpu_s": (int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
    }


def command_line(pid: int) -> list[str]:
    """`pid`'s arguments ([] once it is gone): tells a worker (`--worker-index`) apart."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []
