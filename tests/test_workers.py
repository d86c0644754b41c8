"""`supervisor run --workers N` without a server: rooms sharded over worker processes by
a stable hash, and the flag and config errors that stop it before any worker starts.

The worker processes themselves (echo, restarts, signals) are in
tests/livekit/test_workers.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.cli import main
from supervisor.config import Config, ConfigError, RoomConfig, parse_config
from supervisor.livekit_server import free_port
from supervisor.workers import Shard, shard_of
from tests.helpers.cli_process import write_config
from tests.helpers.workers import config_text


def base_config() -> Config:
    return parse_config(
        {
            "livekit": {"url": "ws://127.0.0.1:7880"},
            "bot": {"factory": "supervisor.bots.echo:create_bot"},
        }
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
