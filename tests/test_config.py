"""`config_toml`: what the benchmarks and tests write is read back exactly."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.config import config_toml, parse_config

keys = st.text(min_size=1, max_size=12)
scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
values = scalars | st.lists(scalars, max_size=3)


def tables(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    inner = values if depth == 0 else values | tables(depth - 1)
    if depth:
        inner = inner | st.lists(tables(depth - 1), min_size=1, max_size=2)
    return st.dictionaries(keys, inner, max_size=4)


@given(tables(2))
def test_a_written_document_reads_back_as_it_was(doc: dict[str, Any]) -> None:
    assert tomllib.loads(config_toml(doc)) == doc


def test_a_deployment_config_parses() -> None:
    doc = {
        "livekit": {"url": "ws://127.0.0.1:7880", "embedded_server": False},
        "bot": {"factory": "supervisor.bots.echo:create_bot", "audio_in_sample_rate": 16000},
        "rooms": [{"name": "lobby"}, {"name": "side", "bot": {"identity": "helper"}}],
    }
    environ = {"LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "secret"}
    config = parse_config(tomllib.loads(config_toml(doc)), environ)
    assert [(room.name, room.bot.identity) for room in config.rooms] == [
        ("lobby", "bot"),
        ("side", "helper"),
    ]


@pytest.mark.parametrize("value", [float("nan"), object(), None])
def test_what_toml_cannot_hold_is_refused(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        config_toml({"bot": {"x": value}})
