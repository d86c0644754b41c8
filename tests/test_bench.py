"""`supervisor bench` as a user runs it: the load generator against a running supervisor.

`supervisor run` serves two echo rooms on the real server; `supervisor bench` (another
process, same config) joins them, sends tone bursts and must hear each room's echo back
with a plausible latency, reporting it in the table and the JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from livekit import rtc

from supervisor import bench
from supervisor.bench import RoomResult, percentile
from supervisor.livekit_server import LiveKitServer
from tests.cli_process import REPO_ROOT, SupervisorConfig, serving, supervisor_command

ROOMS = ("bench-smoke-a", "bench-smoke-b")
SECONDS = 4


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def test_each_onset_answers_one_burst_within_the_lost_window() -> None:
    """The judging, without a server: a burst takes the first unused onset after it,
    an onset a second or more later does not count, and one onset never answers two."""
    result = RoomResult("r", sent=[10.0, 11.0, 12.0, 13.0], onsets=[9.5, 10.2, 11.7, 13.0, 14.1])
    assert result.latencies() == [pytest.approx(0.2), pytest.approx(0.7), None, pytest.approx(0.0)]
    summary = result.summary(late_after=0.5)
    assert (summary["bursts_heard"], summary["lost"], summary["late"]) == (3, 1, 1)
    assert summary["latency_ms"]["p50"] == 200.0 and summary["latency_ms"]["p99"] == 700.0
    assert percentile([], 50) is None and percentile([3.0, 1.0, 2.0], 50) == 2.0


async def run_bench(
    config: SupervisorConfig, path: Path, *args: str
) -> subprocess.CompletedProcess[bytes]:
    """`supervisor bench PATH ARGS` against `config`'s deployment, as a user runs it."""
    with anyio.fail_after(60):
        return await anyio.run_process(
            supervisor_command("bench", str(path), *args),
            cwd=REPO_ROOT,
            env={**os.environ, **config.env()},
            stdin=subprocess.DEVNULL,
            check=False,
        )


@pytest.mark.anyio
@pytest.mark.livekit
async def test_bench_hears_each_rooms_echo(livekit_server: LiveKitServer, tmp_path: Path) -> None:
    config = SupervisorConfig(livekit_server, ROOMS)
    async with serving(tmp_path, config) as (_, path):
        out = tmp_path / "out.json"
        done = await run_bench(config, path, "--seconds", str(SECONDS), "--json", str(out))
    table = done.stdout.decode()
    assert done.returncode == 0, f"{table}\n{done.stderr.decode()[-3000:]}"
    print(f"\n{table}")
    summary = json.loads(out.read_text())
    assert summary["rooms"] == len(ROOMS) and summary["joined"] == len(ROOMS)
    assert sorted(room["room"] for room in summary["per_room"]) == sorted(ROOMS)
    for room in summary["per_room"]:
        assert room["joined"] and room["error"] is None, room
        assert room["bursts_sent"] >= SECONDS, room
        assert room["bursts_heard"] >= 1, room
        assert all(0 < latency < 2000 for latency in room["latencies_ms"]), room
        assert room["lost"] == room["bursts_sent"] - room["bursts_heard"], room
    assert summary["latency_ms"]["p50"] is not None
    assert {"p50", "p95", "p99"} <= set(summary["latency_ms"])
    assert {"p50", "max"} <= set(summary["join_s"])
    assert summary["generator_lag_ms"]["max"] is not None
    assert "echo ms" in table and ROOMS[0] in table


MANY_ROOMS = tuple(f"bench-exit-{index}" for index in range(12))
RUNS = 3


@pytest.mark.anyio
@pytest.mark.livekit
async def test_repeated_runs_on_many_rooms_exit_cleanly(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    """Each run leaves its rooms and then exits 0: the rtc SDK's native runtime calls
    back into Python while the rooms' connections close, and a callback that met the
    interpreter's finalization used to abort the process (SIGABRT, exit -6) after the
    results were printed (see `supervisor.rtc_shutdown`)."""
    config = SupervisorConfig(livekit_server, MANY_ROOMS)
    async with serving(tmp_path, config) as (_, path):
        for run in range(RUNS):
            done = await run_bench(config, path, "--seconds", "2")
            table, log = done.stdout.decode(), done.stderr.decode()
            assert done.returncode == 0, f"run {run}: exit {done.returncode}\n{table}\n{log[-3000:]}"
            assert f"rooms {len(MANY_ROOMS)} (joined {len(MANY_ROOMS)})" in table, table
            assert "panicked" not in log, log[-3000:]


@pytest.mark.anyio
@pytest.mark.livekit
async def test_harness_measures_every_system(livekit_server: LiveKitServer, tmp_path: Path) -> None:
    """`benchmarks/echo.py` on 2 rooms for a few seconds: each system joins, echoes and is
    measured, and the summary sets the supervisor beside both baselines."""
    from benchmarks.echo import SYSTEMS, Options, format_markdown, measure

    options = Options(warmup=2.0, window=2.0, idle=1.0, settle=1.0)
    results = []
    for name in ("floor", "pipecat", "supervisor"):
        with anyio.fail_after(90):
            result = await measure(SYSTEMS[name], 2, livekit_server, options, tmp_path)
        print(result)
        assert result["join_all_s"] > 0 and result["ready_from_spawn_s"] >= result["join_all_s"]
        assert result["cpu_per_room"] > 0 and result["idle_cpu_per_room"] > 0, result
        assert result["rss_mb"] > 10, result
        assert result["lost"] < result["bursts_sent"], result  # the bot echoed
        assert 0 < result["echo_p50_ms"] <= result["echo_p99_ms"] < 1000, result
        assert result["generator_cores"] > 0 and result["server_cores"] > 0, result
        results.append(result)
    supervisor = results[-1]
    assert supervisor["internal_p50_ms"] is not None and supervisor["internal_p99_ms"] is not None
    table = format_markdown(results)
    print(table)
    assert table.count("| supervisor | 2 |") == 2  # its figures and its ratios


class _Publication:
    """A remote publication as the rtc SDK lists it: an audio track, maybe subscribed."""

    kind = rtc.TrackKind.KIND_AUDIO
    sid = "TR_bot"
    track = None
    subscribed = False


class _Participant:
    identity = "bot"

    def __init__(self) -> None:
        self.track_publications = {"TR_bot": _Publication()}


class _Room:
    """What `bot_track` reads of an `rtc.Room`: the bot listed with its audio track."""

    def __init__(self) -> None:
        self.remote_participants = {"bot": _Participant()}
        self.handlers: dict[str, Any] = {}

    def on(self, event: str, handler: Any) -> None:
        self.handlers[event] = handler

    def off(self, event: str, handler: Any) -> None:
        del self.handlers[event]


@pytest.mark.anyio
async def test_a_track_listed_and_never_delivered_is_a_lost_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server lists the bot's track and never binds it to this participant (its own
    signalling lost on the server): the participant is told to join again."""
    monkeypatch.setattr(bench, "SUBSCRIBE_GRACE", 0.6)
    room = _Room()
    started = anyio.current_time()
    with pytest.raises(bench.SignallingLostError, match="TR_bot published, not subscribed"):
        await bench.bot_track(room, "bot")  # type: ignore[arg-type]
    assert anyio.current_time() - started >= 0.6
    assert room.handlers == {}


@pytest.mark.anyio
async def test_a_track_delivered_within_the_grace_is_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench, "SUBSCRIBE_GRACE", 5.0)
    room = _Room()
    track = object.__new__(rtc.RemoteAudioTrack)

    async def deliver() -> None:
        await anyio.sleep(0.7)
        room.handlers["track_subscribed"](track, None, room.remote_participants["bot"])

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(deliver)
        with anyio.fail_after(3):
            assert await bench.bot_track(room, "bot") is track  # type: ignore[arg-type]
