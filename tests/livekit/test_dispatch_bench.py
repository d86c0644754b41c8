"""`benchmarks/dispatch.py` on one room: livekit-agents' worker, in its own venv, is
dispatched the room a caller creates, echoes, and is measured; the supervisor's system,
too, beside it in the same table.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from benchmarks.dispatch import SYSTEMS, Options, format_markdown, measure
from supervisor.livekit_server.server import LiveKitServer

OPTIONS = Options(settle=1.0, idle=1.0, warmup=2.0, window=2.0)


@pytest.mark.anyio
async def test_harness_measures_livekit_agents_and_reports_the_supervisor(
    livekit_server: LiveKitServer, tmp_path: Path, agents_venv: Path
) -> None:
    # agents-tuned: its load is its own CPU, so other work on a shared machine cannot
    # make it full and leave the room without a bot, as the default's can.
    with anyio.fail_after(150):
        agents = await measure(SYSTEMS["agents-tuned"], 1, livekit_server, OPTIONS, tmp_path)
    print(agents)
    assert agents["served"] == 1, agents
    assert 0 < agents["track_p50_ms"] <= agents["heard_p50_ms"] < 30_000, agents
    assert agents["baseline_rss_mb"] > 10, agents
    assert agents["baseline_pss_mb"] > 10, agents
    assert agents["lost"] < agents["bursts_sent"], agents  # the bot echoed
    assert 0 < agents["echo_p50_ms"] <= agents["echo_p99_ms"] < 2000, agents
    assert agents["harness_cores"] > 0, agents
    assert agents["server_cores"] > 0, agents
    assert (tmp_path / "agents-tuned-1.log").read_text().count("registered worker") == 1

    with anyio.fail_after(150):
        supervisor = await measure(SYSTEMS["supervisor"], 1, livekit_server, OPTIONS, tmp_path)
    print(supervisor)
    table = format_markdown([agents, supervisor])
    print(table)
    assert supervisor["served"] == 1, supervisor
    assert "| agents-tuned | 1 | 1/1 |" in table, table
    assert "| supervisor | 1 | 1/1 |" in table, table
