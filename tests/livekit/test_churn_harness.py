"""`benchmarks/churn.py` on three lifetimes of each mode: every room served, and each
process's figures there for a run's page (docs/benchmarks/runs/)."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from benchmarks.churn import SdkRun, SupervisorRun, measure_sdk, measure_supervisor
from supervisor.livekit_server.server import LiveKitServer

PROCESS_FIELDS = {
    "process", "warm_rss_mb", "final_rss_mb", "max_rss_mb", "mb_per_lifetime", "fds", "threads",
    "cpu_ms_per_lifetime_first_third", "cpu_ms_per_lifetime_last_third",
}  # fmt: skip


@pytest.mark.anyio
async def test_sdk_mode_runs_the_reproducer_and_samples_it(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    run = SdkRun("stream", 3, 0.5, ("--aclose",), (), sys.executable, linger=1.0)
    with anyio.fail_after(60):
        result = await measure_sdk(run, 2, livekit_server, tmp_path)
    assert result["served"] == 3, result
    assert result["exit"] == 0, result
    assert [p["process"] for p in result["processes"]] == ["sdk"], result
    assert result["processes"][0].keys() >= PROCESS_FIELDS, result


@pytest.mark.anyio
async def test_supervisor_mode_serves_every_lifetime(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    run = SupervisorRun(3, 1, "", 1.0, count_objects=False)
    with anyio.fail_after(90):
        result = await measure_supervisor(run, 2, livekit_server, tmp_path)
    assert result["served"] == 3, result
    assert result["no_bot"] == result["no_echo"] == 0, result
    processes = {p["process"]: p for p in result["processes"]}
    assert {"supervisor", "harness (callers)"} <= processes.keys(), result
    assert processes["supervisor"].keys() >= PROCESS_FIELDS, result
    assert processes["supervisor"]["final_rss_mb"] > 10, result
