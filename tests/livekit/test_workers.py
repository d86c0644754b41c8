"""`supervisor run --workers N` against the embedded server: a dead worker's rooms come
back while the others' are untouched, signals reach every worker, and a stop leaves no
worker and no embedded server behind. The sharding alone is in tests/test_workers_sharding.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

import anyio
import pytest
from livekit import rtc

from supervisor.config import load_config
from supervisor.livekit_server.server import free_port, listening
from supervisor.livekit_server.source import for_token
from tests.helpers.cli_process import write_config
from tests.helpers.participants import SILENCE_RMS, join, publishing_tone
from tests.helpers.probes import wait_until
from tests.helpers.workers import (
    STUBBORN_BOT,
    bot_sid_changed,
    config_text,
    echo_level,
    free_port_pair,
    is_worker,
    rooms_by_shard,
    supervisor_run,
    worker_pids,
)

pytestmark = pytest.mark.anyio


def children(pid: int) -> set[int]:
    return {
        int(child)
        for path in Path(f"/proc/{pid}/task").glob("*/children")
        for child in path.read_text().split()
    }


async def assert_everyone_hears_echo(participants: dict[str, rtc.Room]) -> None:
    levels = await asyncio.gather(*(echo_level(p) for p in participants.values()))
    quiet = {
        room: level
        for room, level in zip(participants, levels, strict=True)
        if level <= SILENCE_RMS
    }
    assert not quiet, f"silence (rms) in {quiet}"


def bot_sids(participants: dict[str, rtc.Room]) -> dict[str, str]:
    return {room: p.remote_participants["bot"].sid for room, p in participants.items()}


async def test_two_workers_echo_and_a_killed_worker_rejoins_its_rooms(tmp_path: Path) -> None:
    port = free_port()
    shards = rooms_by_shard("workers-echo", count=2, per_shard=2)
    rooms = [room for shard in shards for room in shard]
    path = write_config(tmp_path, config_text(port, rooms, metrics_port=free_port_pair()))
    metrics_port = load_config(path).metrics.port

    async with supervisor_run(path, workers=2) as run:
        for index, shard in enumerate(shards):
            # The test's own crc32 and each worker's agree: the shard is stable across processes.
            served = await run.wait_for(rf"\[worker {index}\] .* serves 2 of 4 room\(s\): (.*); "
                                        rf"its metrics address: 127.0.0.1:(\d+)")
            assert served[0][1].split(", ") == shard
            assert int(served[0][2]) == metrics_port + index
        await run.wait_for(r"\[worker \d\] .* ready: 2 room\(s\)", count=2)
        assert listening(metrics_port)
        assert listening(metrics_port + 1)
        pids = worker_pids(run)
        assert set(pids) == {0, 1}
        assert {pids[0][0], pids[1][0]} <= children(run.process.pid)

        credentials = for_token(load_config(path).livekit)
        for pid in (pids[0][0], pids[1][0]):
            cmdline = await anyio.Path(f"/proc/{pid}/cmdline").read_bytes()
            assert credentials.api_secret.encode() not in cmdline

        async with contextlib.AsyncExitStack() as stack:
            participants: dict[str, rtc.Room] = {}
            for room in rooms:
                participants[room] = await stack.enter_async_context(
                    join(credentials, room, "alice")
                )
                await stack.enter_async_context(publishing_tone(participants[room]))
            await assert_everyone_hears_echo(participants)
            before = bot_sids(participants)

            killed = pids[0][0]
            os.kill(killed, signal.SIGKILL)
            await run.wait_for(
                rf"worker 0 \(pid {killed}\) died after .* \(killed by SIGKILL\): restart 1 in"
            )
            await run.wait_for(r"supervisor: worker 0 started \(pid \d+\)", count=2)
            for room in shards[0]:
                await wait_until(bot_sid_changed(participants[room], before[room]), timeout=60)
            await assert_everyone_hears_echo(participants)
            after = bot_sids(participants)
            assert {room: after[room] for room in shards[1]} == {
                room: before[room] for room in shards[1]
            }
            assert len(worker_pids(run)[1]) == 1, "the other worker was restarted too"

        assert await run.stop(signal.SIGTERM) == 0
        log = "\n".join(run.lines)
        assert credentials.api_secret not in log
        stopped = run.matches(r"supervisor: worker (\d) \(pid \d+\) stopped: exit code 0$")
        assert sorted(m[1] for m in stopped) == ["0", "1"]
        leftover = [pid for pids in worker_pids(run).values() for pid in pids if is_worker(pid)]
        assert not leftover, f"workers outlived the supervisor: {leftover}"
        assert not listening(port), "the embedded livekit-server outlived the supervisor"


async def test_sighup_reaches_every_worker_and_each_keeps_its_shard(tmp_path: Path) -> None:
    port = free_port()
    shards = rooms_by_shard("workers-hup", count=2, per_shard=2)
    first = [shards[0][0], shards[1][0]]
    metrics_port = free_port_pair()
    path = write_config(tmp_path, config_text(port, first, metrics_port))

    async with supervisor_run(path, workers=2) as run:
        await run.wait_for(r"\[worker \d\] .* ready: 1 room\(s\)", count=2)
        added = shards[1][1]
        write_config(tmp_path, config_text(port, [*first, added], metrics_port))
        run.process.send_signal(signal.SIGHUP)

        await run.wait_for(rf"\[worker 1\] .* \[{re.escape(added)}\] joined as bot")
        await run.wait_for(r"\[worker 1\] .* reloaded: 1 started, 0 stopped, 2 rooms")
        await run.wait_for(r"\[worker 0\] .* reloaded: 0 started, 0 stopped, 1 rooms")
        took = run.matches(rf"\[worker 0\] .*\[{re.escape(added)}\]")
        assert not took, "worker 0 took worker 1's room"
        assert len(worker_pids(run)[0]) == len(worker_pids(run)[1]) == 1, "a worker restarted"


@pytest.mark.parametrize("second_signal", [True, False], ids=["second-signal", "drain-deadline"])
async def test_workers_that_do_not_drain_are_killed(tmp_path: Path, second_signal: bool) -> None:
    """Workers whose bots ignore the stop are killed by a second signal, or else once
    the shutdown timeout plus the margin has passed; either way the exit code is 1."""
    port = free_port()
    rooms = [shard[0] for shard in rooms_by_shard("workers-stubborn", count=2, per_shard=1)]
    timeout = 30 if second_signal else 1  # with a second signal, the deadline must not act first
    text = config_text(port, rooms, free_port_pair(), bot=STUBBORN_BOT, shutdown_timeout=timeout)
    path = write_config(tmp_path, text)

    async with supervisor_run(path, workers=2) as run:
        await run.wait_for(r"\[worker \d\] .* ready: 1 room\(s\)", count=2)
        pids = [pid for pids in worker_pids(run).values() for pid in pids]
        run.process.send_signal(signal.SIGTERM)
        await run.wait_for(r"supervisor: SIGTERM: draining 2 worker\(s\)")
        if second_signal:
            assert await run.stop(signal.SIGTERM, timeout=20) == 1
            await run.wait_for(r"supervisor: SIGTERM again: killing 2 worker\(s\)")
        else:
            with anyio.fail_after(30):
                assert await run.process.wait() == 1
            await run.wait_for(r"supervisor: 2 worker\(s\) still draining after 6 s: killing them")
        killed = await run.wait_for(
            r"supervisor: worker (\d) \(pid \d+\) stopped: killed by SIGKILL", count=2
        )
        assert sorted(m[1] for m in killed) == ["0", "1"]
        assert not [pid for pid in pids if is_worker(pid)]
        assert not listening(port), "the embedded livekit-server outlived the supervisor"


async def test_workers_drain_and_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    port = free_port()
    rooms = [shard[0] for shard in rooms_by_shard("workers-orphan", count=2, per_shard=1)]
    path = write_config(tmp_path, config_text(port, rooms, metrics_port=free_port_pair()))

    async with supervisor_run(path, workers=2) as run:
        await run.wait_for(r"\[worker \d\] .* ready: 1 room\(s\)", count=2)
        workers = {pids[0] for pids in worker_pids(run).values()}
        run.process.kill()
        await run.process.wait()
        # The embedded server goes with the parent (its parent-death signal is a SIGKILL)...
        await wait_until(lambda: not listening(port), timeout=5)
        # ...and the workers, which watch their parent, drain: they are not killed.
        await run.wait_for(r"\[worker \d\] .* SIGTERM: draining", count=2, timeout=30)
        await run.wait_for(r"\[worker \d\] .* \[workers-orphan-\d+\] left", count=2)
        await wait_until(lambda: not any(is_worker(pid) for pid in workers), timeout=30)
        assert not run.matches(r"\[worker \d\] .* again: stopping at once")

    # A service manager restarting the supervisor finds the port free and serves again.
    async with supervisor_run(path, workers=2) as run:
        await run.wait_for(r"\[worker \d\] .* ready: 1 room\(s\)", count=2)
        assert await run.stop(signal.SIGTERM) == 0
    assert not listening(port)
