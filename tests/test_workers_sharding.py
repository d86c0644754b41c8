"""`supervisor run --workers N` without a server: rooms sharded over worker processes by
a stable hash, and the flag and config errors that stop it before any worker starts.

The worker processes themselves (echo, restarts, signals) are in
tests/livekit/test_workers.py.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.cli import main
from supervisor.config import Config, ConfigError, RoomConfig
from supervisor.livekit_server.server import free_port
from supervisor.process import workers
from supervisor.process.workers import Shard, shard_of
from tests.helpers.cli_process import write_config
from tests.helpers.configs import echo_config
from tests.helpers.workers import config_text


def base_config() -> Config:
    return echo_config()


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
    metrics = attrs.evolve(BASE.metrics, listen="127.0.0.1:65534")
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        Shard(3, 4).of(attrs.evolve(BASE, metrics=metrics))
    path = write_config(tmp_path, config_text(free_port(), ["lobby"], metrics_port=65535))
    assert main(["run", str(path), "--workers", "2"]) == 2
    assert "metrics.listen = '127.0.0.1:65535'" in capsys.readouterr().err


def test_workers_must_be_at_least_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "config.toml", "--workers", "0"])
    assert exit_info.value.code == 2
    assert "--workers: '0': expected a whole number >= 1" in capsys.readouterr().err


def test_a_released_shard_serves_no_configured_room_and_names_them_all_siblings() -> None:
    config = with_rooms(BASE, ["a", "b", "c", "d"])
    mine = Shard(0, 2).of(config)
    released = attrs.evolve(Shard(0, 2), configured=False).of(mine)
    assert released.rooms == ()
    assert released.sibling_rooms == {"a", "b", "c", "d"}


# --- recycling: the parent's side, with stand-in workers ------------------------------

FAKE_WORKER = """
import os, signal, sys, time
fd = int(os.environ["SUPERVISOR_WORKER_REPORT_FD"])
succeeds = os.environ.get("SUPERVISOR_WORKER_SUCCEEDS")
def say(line):
    with open(sys.argv[1], "a") as log:
        log.write(f"{os.getpid()} {line}\\n")
def term(*_):
    say("drains")
    sys.exit(0)
def release(*_):
    say("releases")
    os.write(fd, b"released\\n")
signal.signal(signal.SIGUSR1, release)
signal.signal(signal.SIGUSR2, lambda *_: say("takes"))
signal.signal(signal.SIGTERM, term)
say(f"started after {succeeds}")
if succeeds and sys.argv[2] == "successors-fail":
    sys.exit(2)
if succeeds:
    time.sleep(0.3)  # a start takes time: the old worker must be draining only after it
    say("ready")
os.write(fd, b"ready\\n")
if not succeeds:
    os.write(fd, b"due 1 rooms served (recycle.max_rooms_served = 1)\\n")
while True:
    time.sleep(0.05)
"""


def fake_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> tuple[Any, Path]:
    script, events = tmp_path / "worker.py", tmp_path / "events"
    script.write_text(FAKE_WORKER)
    events.touch()
    monkeypatch.setattr(
        workers, "worker_command", lambda *_: [sys.executable, str(script), str(events), mode]
    )
    config = attrs.evolve(
        BASE,
        metrics=attrs.evolve(BASE.metrics, listen=f"127.0.0.1:{free_port()}"),
        supervision=attrs.evolve(BASE.supervision, backoff_initial_seconds=0.5),
    )
    return workers.WorkerPool(tmp_path / "config.toml", config, 1, "info", dict(os.environ)), events


def lines(events: Path) -> list[tuple[int, str]]:
    return [(int(pid), what) for pid, what in
            (line.split(" ", 1) for line in events.read_text().splitlines())]


async def until(events: Path, done: Any) -> list[tuple[int, str]]:
    with anyio.fail_after(20):
        while not done(found := lines(events)):
            await anyio.sleep(0.05)
    return found


async def run_until(
    pool: Any, events: Path, done: Any
) -> list[tuple[int, str]]:
    """Run the pool's slot 0 until `done` holds for its workers' events, then stop it."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(pool.keep_running, 0)
        found = await until(events, done)
        pool.stopping.set()
        pool.send_all(signal.SIGTERM)
    return found


ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])
"""The pool polls each worker's /healthz with aiohttp: it runs on asyncio, as
`serve_workers` does."""


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_a_due_worker_is_released_then_drains_once_its_successor_is_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool, events = fake_pool(tmp_path, monkeypatch, "successors-serve")
    found = await run_until(pool, events, lambda found: len(found) >= 6)
    old, new = found[0][0], found[1][0]
    assert found[:4] == [
        (old, "started after None"),
        (new, f"started after {old}"),
        (new, "ready"),  # the old one serves until its successor does,
        (old, "releases"),  # then lets its configured rooms and port go
    ]
    # ...which the successor takes as the old one drains (two processes: either order)
    assert sorted(found[4:]) == sorted([(new, "takes"), (old, "drains")])
    assert pool.recycled == 1
    assert lines(events)[-1] == (new, "drains")  # the successor served until the stop


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_while_no_successor_serves_the_due_worker_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool, events = fake_pool(tmp_path, monkeypatch, "successors-fail")
    found = await run_until(pool, events, lambda found: len(found) >= 3)  # two successors
    old = found[0][0]
    assert [what for pid, what in found if pid == old] == ["started after None"]
    assert all(what == f"started after {old}" for pid, what in found if pid != old)
    assert pool.recycled == 0
    assert lines(events)[-1] == (old, "drains")  # only the stop ended it
