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


def rss_bytes(pid: int) -> int:
    """Resident memory of the tree under `pid` now (shared pages counted per process)."""
    total = 0
    for member in tree(pid):
        with contextlib.suppress(OSError, IndexError):
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1]) * PAGE_BYTES
    return total


def pss_bytes(pid: int) -> int:
    """Proportional memory of the tree under `pid` now: each shared page divided among
    the processes sharing it. Beside `rss_bytes` for process-per-job systems, whose
    forked job processes share the pages they inherited: RSS counts those once per job."""
    total = 0
    for member in tree(pid):
        try:
            text = Path(f"/proc/{member}/smaps_rollup").read_text()
        except OSError:
            continue
        pss = (int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith("Pss:"))
        total += next(pss, 0)
    return total
