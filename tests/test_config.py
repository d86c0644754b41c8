"""`config_toml`: what the benchmarks and tests write is read back exactly."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.config import ConfigError, config_toml, parse_config
from supervisor.config import schema as config_schema
from supervisor.process.recycle import recycles

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


def test_a_cluster_config_names_every_node() -> None:
    doc = {
        "livekit": {
            "url": "wss://lk-a.example.com",
            "cluster_urls": ["wss://lk-b.example.com", "wss://lk-c.example.com"],
            "embedded_server": False,
        },
        "bot": {"factory": "supervisor.bots.echo:create_bot"},
        "dispatch": {"enabled": True},
    }
    environ = {"LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "secret"}
    livekit = parse_config(tomllib.loads(config_toml(doc)), environ).livekit
    assert livekit.cluster_urls == ("wss://lk-b.example.com", "wss://lk-c.example.com")
    assert not livekit.embedded_server


@pytest.mark.parametrize("value", [float("nan"), object(), None])
def test_what_toml_cannot_hold_is_refused(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        config_toml({"bot": {"x": value}})


ENVIRON = {"LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "secret"}


def dispatch_doc(**dispatch: Any) -> dict[str, Any]:
    return {
        "livekit": {"url": "ws://127.0.0.1:7880", "embedded_server": False},
        "bot": {"factory": "supervisor.bots.echo:create_bot", "audio_in_sample_rate": 48000},
        "dispatch": {"enabled": True, **dispatch},
        "rooms": [{"name": "lobby"}],
    }


def test_dispatched_rooms_run_the_bot_unless_dispatch_names_its_own() -> None:
    config = parse_config(dispatch_doc(), ENVIRON)
    assert config.dispatch.bot is None
    assert config.dispatch_bot is config.bot
    assert config.dispatch.job_type == "room"


def test_a_dispatch_bot_overrides_the_keys_it_sets_and_keeps_the_rest_of_bot() -> None:
    doc = dispatch_doc(
        job_type="participant",
        bot={"factory": "supervisor.bots.data:create_bot", "identity": "helper",
             "audio_frame_ms": 40},
    )
    config = parse_config(tomllib.loads(config_toml(doc)), ENVIRON)
    bot = config.dispatch_bot
    assert (bot.factory, bot.identity, bot.audio_in_sample_rate, bot.audio_frame_ms) == (
        "supervisor.bots.data:create_bot",
        "helper",
        48000,
        40,
    )
    assert config.bot.audio_frame_ms == 20
    assert bot.load.__module__ == "supervisor.bots.data"
    assert config.rooms[0].bot is config.bot  # a configured room keeps the [bot]
    assert config.dispatch.job_type == "participant"


@pytest.mark.parametrize(
    ("dispatch", "error"),
    [
        (
            {"bot": {"identiy": "helper"}},
            "dispatch.bot.identiy is not a known key: expected one of factory, identity,",
        ),
        (
            {"bot": {"audio_in_sample_rate": 11025}},
            "dispatch.bot.audio_in_sample_rate = 11025: expected a sample rate, one of",
        ),
        (
            {"bot": {"vad": True}},  # the [bot]'s 48 kHz input, which Silero cannot take
            "dispatch.bot.audio_in_sample_rate = 48000: expected 8000 or 16000 with vad",
        ),
        (
            {"bot": {"factory": "nowhere:create_bot"}},
            "dispatch.bot.factory = 'nowhere:create_bot': cannot import module 'nowhere'",
        ),
        ({"bot": "echo"}, "dispatch.bot = 'echo': expected a table"),
        (
            {"job_type": "people"},
            "dispatch.job_type = 'people': expected 'room' or 'participant' or 'publisher'",
        ),
    ],
)
def test_a_bad_dispatch_bot_or_job_type_is_named(dispatch: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(dispatch_doc(**dispatch), ENVIRON)
    assert str(raised.value).startswith(error), raised.value


def web_doc(**web: Any) -> dict[str, Any]:
    return {**dispatch_doc(), "web": web}


def test_the_web_access_secret_is_read_from_its_variable_and_kept_out_of_repr() -> None:
    environ = {**ENVIRON, "PAGE_SECRET": "s3"}
    config = parse_config(web_doc(access_secret_env="PAGE_SECRET"), environ)
    assert config.web.access_secret == "s3"
    assert "s3" not in repr(config)


@pytest.mark.parametrize(
    ("web", "error"),
    [
        ({"access_secret_env": "PAGE_SECRET"}, "environment variable PAGE_SECRET (named by "
         "web.access_secret_env) is not set"),
        ({"access_secret_env": "no such name"}, "web.access_secret_env = 'no such name': "
         "expected '' or an environment variable name"),
        ({"tokens_per_minute": 0}, "web.tokens_per_minute = 0: expected a whole number >= 1"),
        ({"livekit_url": "127.0.0.1"}, "web.livekit_url = '127.0.0.1': expected '' or a ws://"),
        ({"access_secret": "s3"}, "web.access_secret is not a known key"),
    ],
)
def test_a_bad_web_key_is_named(web: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(web_doc(**web), ENVIRON)
    assert str(raised.value).startswith(error), raised.value


def runtime_doc(**runtime: Any) -> dict[str, Any]:
    return {**dispatch_doc(), "runtime": runtime}


def test_the_event_loop_is_asyncio_unless_uvloop_is_asked_for() -> None:
    assert parse_config(dispatch_doc(), ENVIRON).runtime.event_loop == "asyncio"
    pytest.importorskip("uvloop")
    assert parse_config(runtime_doc(event_loop="uvloop"), ENVIRON).runtime.event_loop == "uvloop"


def test_uvloop_asked_for_and_not_installed_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config_schema, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"runtime.event_loop = 'uvloop': expected 'asyncio' "
                       r"or 'uvloop' \(installed: pip install 'livekit-supervisor\[uvloop\]'\)"):
        parse_config(runtime_doc(event_loop="uvloop"), ENVIRON)


@pytest.mark.parametrize(
    ("runtime", "error"),
    [
        ({"event_loop": "trio"}, "runtime.event_loop = 'trio': expected 'asyncio' or 'uvloop'"),
        ({"event_loop": 1}, "runtime.event_loop = 1: expected 'asyncio' or 'uvloop'"),
        ({"gc_freeze": True}, "runtime.gc_freeze is not a known key"),
    ],
)
def test_a_bad_runtime_key_is_named(runtime: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(runtime_doc(**runtime), ENVIRON)
    assert str(raised.value).startswith(error), raised.value


def recycle_doc(dispatch: bool = True, **recycle: Any) -> dict[str, Any]:
    doc = dispatch_doc() if dispatch else {k: v for k, v in dispatch_doc().items()
                                           if k != "dispatch"}
    return {**doc, "recycle": recycle}


def test_recycling_needs_a_parent_where_rooms_come_and_go_or_memory_is_bounded() -> None:
    default = parse_config(recycle_doc(), ENVIRON)
    assert (default.recycle.max_rooms_served, default.recycle.max_rss_mb) == (200, 0)
    assert recycles(default)
    assert not recycles(parse_config(recycle_doc(dispatch=False), ENVIRON))
    assert recycles(parse_config(recycle_doc(dispatch=False, max_rss_mb=800), ENVIRON))
    assert not recycles(parse_config(recycle_doc(max_rooms_served=0), ENVIRON))


@pytest.mark.parametrize(
    ("recycle", "error"),
    [
        ({"max_rooms_served": -1}, "recycle.max_rooms_served = -1: expected a whole number >= 0"),
        ({"max_rss_mb": 1.5}, "recycle.max_rss_mb = 1.5: expected a whole number >= 0"),
        ({"max_requests": 10}, "recycle.max_requests is not a known key"),
    ],
)
def test_a_bad_recycle_key_is_named(recycle: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(recycle_doc(**recycle), ENVIRON)
    assert str(raised.value).startswith(error), raised.value


def test_a_rooms_key_is_read_from_the_variable_it_names_and_a_reload_compares_the_key() -> None:
    """`e2ee_key_env` is kept with the room (the schema describes it like any key), but
    two configs whose variables differ in name and not in value run the same room."""

    def rooms(**env_names: str) -> dict[str, Any]:
        doc = dispatch_doc()
        doc["rooms"] = [{"name": name, "e2ee_key_env": env} for name, env in env_names.items()]
        return doc

    environ = {**ENVIRON, "KEY_A": "shared", "KEY_B": "shared", "KEY_C": "other"}
    lobby = parse_config(rooms(lobby="KEY_A"), environ).rooms[0]
    assert (lobby.e2ee_key_env, lobby.e2ee_key) == ("KEY_A", b"shared")
    assert "shared" not in repr(lobby)
    assert parse_config(rooms(lobby="KEY_B"), environ).rooms[0] == lobby
    assert parse_config(rooms(lobby="KEY_C"), environ).rooms[0] != lobby
    assert parse_config(dispatch_doc(), environ).rooms[0].e2ee_key is None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (40, "bot.vad_batch_ms = 40: expected milliseconds from 0 to 32 (a VAD window)"),
        (True, "bot.vad_batch_ms = True: expected milliseconds from 0 to 32 (a VAD window)"),
    ],
)
def test_a_vad_batch_past_a_window_is_named(value: Any, error: str) -> None:
    doc = dispatch_doc()
    doc["bot"] |= {"vad": True, "audio_in_sample_rate": 16000, "vad_batch_ms": value}
    with pytest.raises(ConfigError) as raised:
        parse_config(doc, ENVIRON)
    assert str(raised.value).startswith(error), raised.value
    doc["bot"]["vad_batch_ms"] = 8
    assert parse_config(doc, ENVIRON).bot.vad_batch_ms == 8
