"""`supervisor run --workers N`: rooms sharded over worker processes by a stable hash, a
dead worker's rooms come back while the others' are untouched, signals reach every
worker, and a stop leaves no worker and no embedded server behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from livekit import rtc

from supervisor.cli import main
from supervisor.config import Config, ConfigError, RoomConfig, load_config, parse_config
from supervisor.credentials import for_token
from supervisor.livekit_server import free_port, listening
from supervisor.workers import Shard, shard_of
from tests.cli_process import SupervisorProcess, supervisor_process, write_config
from tests.participants import (
    SILENCE_RMS,
    collect_audio,
    join,
    publishing_tone,
    rms,
    subscribed_audio_track,
)
from tests.probes import wait_until


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"

KEY_ENV = "SUPERVISOR_WORKERS_TEST_KEY"
SECRET_ENV = "SUPERVISOR_WORKERS_TEST_SECRET"

CONFIG = f"""
[livekit]
url = "ws://127.0.0.1:{{port}}"
api_key_env = "{KEY_ENV}"
api_secret_env = "{SECRET_ENV}"
embedded_server = true

[bot]
factory = "{{bot}}"

[supervision]
shutdown_timeout_seconds = {{shutdown_timeout}}

[metrics]
listen = "127.0.0.1:{{metrics_port}}"
"""


ECHO_BOT = "supervisor.bots.echo:create_bot"
STUBBORN_BOT = "tests.bots:stubborn_bot"


def config_text(
    port: int,
    rooms: list[str],
    metrics_port: int = 9464,
    *,
    bot: str = ECHO_BOT,
    shutdown_timeout: float = 5,
) -> str:
    head = CONFIG.format(port=port, metrics_port=metrics_port, bot=bot, shutdown_timeout=shutdown_timeout)
    return head + "".join(f'[[rooms]]\nname = "{room}"\n' for room in rooms)


def free_port_pair() -> int:
    """A free port whose successor is free too: two workers' metrics ports."""
    while True:
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port + 1))
            return port


def base_config() -> Config:
    return parse_config(
        {"livekit": {"url": "ws://127.0.0.1:7880"}, "bot": {"factory": "supervisor.bots.echo:create_bot"}}
    )


def with_rooms(config: Config, names: list[str]) -> Config:
    return attrs.evolve(config, rooms=tuple(RoomConfig(name, config.bot) for name in names))


# --- sharding -------------------------------------------------------------------------

BASE = base_config()
room_names = st.lists(
    st.text(min_size=1, max_size=24).filter(lambda s: "/" not in s and s == s.strip()),
    unique=True,
    max_size=40,
)


@given(names=room_names, count=st.integers(1, 8), order=st.randoms(use_true_random=False))
def test_every_room_is_in_exactly_one_shard_whatever_the_order(
    names: list[str], count: int, order: random.Random
) -> None:
    config = with_rooms(BASE, names)
    served = {index: Shard(index, count).of(config) for index in range(count)}
    everything = [room.name for shard in served.values() for room in shard.rooms]
    assert sorted(everything) == sorted(names)  # names are unique: each served exactly once

    shuffled = names.copy()
    order.shuffle(shuffled)
    reordered = with_rooms(BASE, shuffled)
    for index, shard in served.items():
        again = Shard(index, count).of(reordered)
        assert {room.name for room in again.rooms} == {room.name for room in shard.rooms}
        assert all(shard_of(room.name, count) == index for room in again.rooms)
        assert shard.metrics.port == BASE.metrics.port + index


def test_metrics_port_past_65535_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="metrics.listen"):
        Shard(3, 4).of(attrs.evolve(BASE, metrics=attrs.evolve(BASE.metrics, listen="127.0.0.1:65534")))
    path = write_config(tmp_path, config_text(free_port(), ["lobby"], metrics_port=65535))
    assert main(["run", str(path), "--workers", "2"]) == 2
    assert "metrics.listen = '127.0.0.1:65535'" in capsys.readouterr().err


def test_workers_must_be_at_least_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "config.toml", "--workers", "0"])
    assert exit_info.value.code == 2
    assert "--workers: '0': expected a whole number >= 1" in capsys.readouterr().err


def rooms_by_shard(prefix: str, count: int, per_shard: int) -> list[list[str]]:
    """`per_shard` room names for each of `count` workers, found by trying names."""
    shards: list[list[str]] = [[] for _ in range(count)]
    for i in range(10_000):
        name = f"{prefix}-{i}"
        shard = shards[shard_of(name, count)]
        if len(shard) < per_shard:
            shard.append(name)
        if all(len(s) == per_shard for s in shards):
            return shards
    raise AssertionError("no spread of names found")


# --- the CLI with workers against the embedded server ---------------------------------


def worker_pids(run: SupervisorProcess) -> dict[int, list[int]]:
    """Every worker pid the parent reported, by worker index, in start order."""
    pids: dict[int, list[int]] = {}
    for m in run.matches(r"supervisor: worker (\d+) started \(pid (\d+)\)"):
        pids.setdefault(int(m[1]), []).append(int(m[2]))
    return pids


async def stop(run: SupervisorProcess, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
    run.send_signal(signum)
    return await run.wait(timeout)


@contextlib.asynccontextmanager
async def supervisor_run(path: Path, workers: int) -> AsyncIterator[SupervisorProcess]:
    """Run the CLI with `--workers`; whatever happens, leave no worker behind.

    The credentials variables the config names are removed from the environment, so
    the workers can only have the embedded server's from the parent.
    """
    args = ("run", str(path), "--workers", str(workers))
    async with supervisor_process(*args, unset=(KEY_ENV, SECRET_ENV)) as run:
        try:
            yield run
        finally:
            for pid in (pid for pids in worker_pids(run).values() for pid in pids):
                if is_worker(pid):
                    os.kill(pid, signal.SIGKILL)


def is_worker(pid: int) -> bool:
    """Whether `pid` is (still) a live supervisor worker process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z" and b"--worker-index" in cmdline


def children(pid: int) -> set[int]:
    return {
        int(child)
        for path in Path(f"/proc/{pid}/task").glob("*/children")
        for child in path.read_text().split()
    }


async def echo_level(participant: rtc.Room) -> float:
    """RMS of a second of the bot's audio, after half a second to settle."""
    track = await subscribed_audio_track(participant, "bot", timeout=30)
    await collect_audio(track, 0.5)
    return rms(await collect_audio(track, 1.0, timeout=15))


async def assert_everyone_hears_echo(participants: dict[str, rtc.Room]) -> None:
    levels = await asyncio.gather(*(echo_level(p) for p in participants.values()))
    quiet = {room: level for room, level in zip(participants, levels, strict=True) if level <= SILENCE_RMS}
    assert not quiet, f"silence (rms) in {quiet}"


def bot_sids(participants: dict[str, rtc.Room]) -> dict[str, str]:
    return {room: p.remote_participants["bot"].sid for room, p in participants.items()}


def bot_sid_changed(participant: rtc.Room, old: str) -> Callable[[], bool]:
    return lambda: (bot := participant.remote_participants.get("bot")) is not None and bot.sid != old


@pytest.mark.anyio
@pytest.mark.livekit
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
        assert listening(metrics_port) and listening(metrics_port + 1)
        pids = worker_pids(run)
        assert set(pids) == {0, 1}
        assert {pids[0][0], pids[1][0]} <= children(run.process.pid)

        credentials = for_token(load_config(path).livekit)
        for pid in (pids[0][0], pids[1][0]):
            assert credentials.api_secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()

        async with contextlib.AsyncExitStack() as stack:
            participants: dict[str, rtc.Room] = {}
            for room in rooms:
                participants[room] = await stack.enter_async_context(join(credentials, room, "alice"))
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
            assert {room: after[room] for room in shards[1]} == {room: before[room] for room in shards[1]}
            assert len(worker_pids(run)[1]) == 1, "the other worker was restarted too"

        assert await stop(run, signal.SIGTERM) == 0
        log = "\n".join(run.lines)
        assert credentials.api_secret not in log
        stopped = run.matches(r"supervisor: worker (\d) \(pid \d+\) stopped: exit code 0$")
        assert sorted(m[1] for m in stopped) == ["0", "1"]
        leftover = [pid for pids in worker_pids(run).values() for pid in pids if is_worker(pid)]
        assert not leftover, f"workers outlived the supervisor: {leftover}"
        assert not listening(port), "the embedded livekit-server outlived the supervisor"


@pytest.mark.anyio
@pytest.mark.livekit
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
        assert not run.matches(rf"\[worker 0\] .*\[{re.escape(added)}\]"), "worker 0 took worker 1's room"
        assert len(worker_pids(run)[0]) == len(worker_pids(run)[1]) == 1, "a worker restarted"


@pytest.mark.anyio
@pytest.mark.livekit
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
            assert await stop(run, signal.SIGTERM, timeout=20) == 1
            await run.wait_for(r"supervisor: SIGTERM again: killing 2 worker\(s\)")
        else:
            with anyio.fail_after(30):
                assert await run.process.wait() == 1
            await run.wait_for(r"supervisor: 2 worker\(s\) still draining after 6 s: killing them")
        killed = await run.wait_for(r"supervisor: worker (\d) \(pid \d+\) stopped: killed by SIGKILL", count=2)
        assert sorted(m[1] for m in killed) == ["0", "1"]
        assert not [pid for pid in pids if is_worker(pid)]
        assert not listening(port), "the embedded livekit-server outlived the supervisor"


@pytest.mark.anyio
@pytest.mark.livekit
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
        await run.wait_for(r"\[worker \d\] .* SIGTERM: draining", count=2, timeout=10)
        await run.wait_for(r"\[worker \d\] .* \[workers-orphan-\d+\] left", count=2)
        await wait_until(lambda: not any(is_worker(pid) for pid in workers), timeout=30)
        assert not run.matches(r"\[worker \d\] .* again: stopping at once")

    # A service manager restarting the supervisor finds the port free and serves again.
    async with supervisor_run(path, workers=2) as run:
        await run.wait_for(r"\[worker \d\] .* ready: 1 room\(s\)", count=2)
        assert await stop(run, signal.SIGTERM) == 0
    assert not listening(port)
