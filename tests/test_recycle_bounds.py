"""The worker's side of recycling alone: its bounds and its reports (`supervisor.process.recycle`).
The parent's side, and both against a real server, are in `tests/livekit/test_recycle.py`."""

from __future__ import annotations

import os

import anyio
import pytest

from supervisor.config import RecycleConfig
from supervisor.process.recycle import Bounds, report, resident_mb


def test_a_bound_passed_is_reported_once_with_the_setting_that_set_it() -> None:
    served = 0
    bounds = Bounds(RecycleConfig(max_rooms_served=3, max_rss_mb=0), lambda: served)
    assert bounds.check() is None
    served = 3
    assert bounds.check() == "3 rooms served (recycle.max_rooms_served = 3)"
    served = 4
    assert bounds.check() is None  # said once
    assert bounds.due == "3 rooms served (recycle.max_rooms_served = 3)"


def test_memory_is_a_bound_of_its_own_and_zero_is_none() -> None:
    rss = 100.0
    bounds = Bounds(RecycleConfig(max_rooms_served=0, max_rss_mb=120), lambda: 10**6, lambda: rss)
    assert bounds.check() is None
    rss = 121.0
    assert bounds.check() == "121 MiB resident (recycle.max_rss_mb = 120)"


def test_resident_memory_is_this_process_s() -> None:
    before = resident_mb()
    ballast = bytearray(64 * 2**20)
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])  # touch every page
    assert resident_mb() - before > 60
    del ballast


@pytest.mark.anyio
async def test_reports_are_whole_lines_ready_then_due() -> None:
    read_end, write_end = os.pipe()
    served, ready = 0, False
    bounds = Bounds(RecycleConfig(max_rooms_served=1), lambda: served)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(report, write_end, bounds, lambda: (ready, ""))
        ready = True
        served = 1
        lines: list[str] = []
        while len(lines) < 2:
            await anyio.wait_readable(read_end)
            lines += os.read(read_end, 4096).decode().splitlines()
        tasks.cancel_scope.cancel()
    os.close(read_end)
    os.close(write_end)
    assert lines == ["ready", "due 1 rooms served (recycle.max_rooms_served = 1)"]


@pytest.mark.anyio
async def test_a_parent_gone_before_a_report_ends_the_reports_not_the_worker() -> None:
    """The parent killed between the worker's readiness and its report: the broken pipe
    ends the reports (the worker's watch on its parent drains it), it is not a crash
    (one was, in a clean-clone run: `BrokenPipeError` instead of the drain)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the parent is gone
    bounds = Bounds(RecycleConfig(max_rooms_served=1), lambda: 0)
    with anyio.fail_after(5):  # a hang, not a time judged
        await report(write_end, bounds, lambda: (True, ""))
    os.close(write_end)
