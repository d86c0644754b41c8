"""`config.toml` read into the schema's classes, every key checked before anything runs.

A mistake fails at start, not an hour into a run, with one line that names the key
path, the bad value and what was expected (`supervisor check` does only this). A key's
type, default and check come from `supervisor.config.schema`; a table's reader adds
only what spans keys (one key checked against another, a factory imported, a secret
read from the environment), and no error message ever shows a secret's value.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import attrs

from actors.room import VAD_RATES_TEXT, VAD_SAMPLE_RATES, BotFactory
from supervisor.bots import BotLoadError, load_bot
from supervisor.config.schema import (
    BotConfig,
    Config,
    DispatchConfig,
    LimitsConfig,
    LiveKitConfig,
    MetricsConfig,
    RoomConfig,
    SupervisionConfig,
    Value,
    WatchdogConfig,
    WebConfig,
    key_of,
    keys,
)

_SCHEMA_DEFAULT: Any = object()


class ConfigError(Exception):
    """A config or environment problem the user must fix; reported in one line, exit 2."""


class _Table:
    """One TOML table being read against its schema: unknown keys are refused at once,
    and every error names the key's path."""

    def __init__(self, value: Any, path: str, schema: type) -> None:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} = {value!r}: expected a table")
        self.path = path
        self.keys = keys(schema)
        unknown = sorted(set(value) - set(self.keys))
        if unknown:
            raise ConfigError(
                f"{self.where(unknown[0])} is not a known key: expected one of "
                f"{', '.join(self.keys)}"
            )
        self.given = value
        self.schema = schema

    def where(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def accepts(self, name: str) -> Value:
        """What the schema lets key `name` be."""
        return key_of(self.keys[name]).value

    def read(self, name: str, default: Any = _SCHEMA_DEFAULT, accepts: Value | None = None) -> Any:
        """Key `name` as the config holds it; `default` and `accepts` stand in for the
        schema's where another key decides them."""
        accepts = accepts or self.accepts(name)
        if name not in self.given:
            default = self.keys[name].default if default is _SCHEMA_DEFAULT else default
            if default is attrs.NOTHING:
                raise ConfigError(f"{self.where(name)} is missing: expected {accepts.expected}")
            return default
        value = self.given[name]
        if not accepts.accepts(value):
            raise ConfigError(f"{self.where(name)} = {value!r}: expected {accepts.expected}")
        return accepts.convert(value)

    def table(self, name: str) -> _Table:
        """Key `name`, a table, to be read against its own schema (empty when absent and
        optional)."""
        field = self.keys[name]
        schema = key_of(field).table
        assert schema is not None, f"{name} is not a table"
        value = self.read(name, _SCHEMA_DEFAULT if field.default is attrs.NOTHING else {})
        return _Table(value, self.where(name), schema)

    def build(self, base: Any = None, **derived: Any) -> Any:
        """The schema's object: `derived` fields as given, every other key read, its
        default `base`'s value when there is a `base` (`[rooms.bot]` over `[bot]`)."""
        read = {
            name: self.read(name, _SCHEMA_DEFAULT if base is None else getattr(base, name))
            for name in self.keys
            if name not in derived
        }
        return self.schema(**read, **derived)


def parse_config(doc: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    """Check every key of a parsed TOML document; raise `ConfigError` at the first bad one."""
    environ = dict(os.environ) if environ is None else environ
    top = _Table(doc, "", Config)
    livekit = _read_livekit(top.table("livekit"))
    bot = _read_bot(top.table("bot"))  # [rooms.bot] and [dispatch.bot] start from it
    supervision = _read_supervision(top.table("supervision"))
    metrics: MetricsConfig = top.table("metrics").build()
    watchdog = _read_watchdog(top.table("watchdog"))
    limits: LimitsConfig = top.table("limits").build()
    return Config(
        livekit=livekit,
        bot=bot,
        supervision=supervision,
        metrics=metrics,
        watchdog=watchdog,
        limits=limits,
        rooms=_read_rooms(top, bot, limits.max_rooms, environ),
        dispatch=_read_dispatch(top.table("dispatch"), bot),
        web=_read_web(top.table("web"), environ),
        runtime=top.table("runtime").build(),
        recycle=top.table("recycle").build(),
    )


def _read_livekit(table: _Table) -> LiveKitConfig:
    url = table.read("url")
    urls = table.accepts("cluster_urls")
    cluster_urls = table.read(
        "cluster_urls", accepts=urls.also(lambda v: url not in v, f"{urls.expected} ({url!r})")
    )
    if cluster_urls:
        # a node of a cluster is never embedded: one down must not be replaced by a lone
        # server of our own with other credentials
        embedded = table.accepts("embedded_server").also(
            lambda v: not v, "false with cluster_urls (a cluster's nodes are not embedded)"
        )
        embedded_server = table.read("embedded_server", False, embedded)
    else:
        embedded_server = table.read("embedded_server")
    livekit: LiveKitConfig = table.build(
        url=url, cluster_urls=cluster_urls, embedded_server=embedded_server
    )
    return livekit


def _read_bot(table: _Table, inherited: BotConfig | None = None) -> BotConfig:
    """`[bot]`, or with `inherited` an override of it (`[rooms.bot]`, `[dispatch.bot]`)."""
    if inherited is None:
        factory = table.read("factory")
        load = _load(table, "factory", factory)
    else:
        factory = table.read("factory", inherited.factory)
        load = inherited.load if factory == inherited.factory else _load(table, "factory", factory)
    bot: BotConfig = table.build(inherited, factory=factory, load=load)
    if bot.vad and bot.audio_in_sample_rate not in VAD_SAMPLE_RATES:
        raise ConfigError(
            f"{table.where('audio_in_sample_rate')} = {bot.audio_in_sample_rate!r}: "
            f"expected {VAD_RATES_TEXT} with vad = true (Silero's rates)"
        )
    return bot


def _load(table: _Table, name: str, path: str) -> BotFactory:
    """The callable `module:function` names (a bot factory, an accept hook), imported now."""
    try:
        return load_bot(path)
    except BotLoadError as err:
        raise ConfigError(f"{table.where(name)} = {path!r}: {err}") from err


def _bot_override(table: _Table, bot: BotConfig) -> BotConfig | None:
    """`table`'s `bot` table (`[rooms.bot]`, `[dispatch.bot]`): `bot` with the keys it
    sets overridden; None when it has none."""
    return _read_bot(table.table("bot"), bot) if "bot" in table.given else None


def _read_supervision(table: _Table) -> SupervisionConfig:
    supervision: SupervisionConfig = table.build()
    if supervision.backoff_max_seconds < supervision.backoff_initial_seconds:
        raise ConfigError(
            f"supervision.backoff_max_seconds = {supervision.backoff_max_seconds!r}: expected "
            f"at least backoff_initial_seconds ({supervision.backoff_initial_seconds!r})"
        )
    return supervision


def _read_watchdog(table: _Table) -> WatchdogConfig:
    watchdog: WatchdogConfig = table.build()
    if watchdog.restart_after_seconds <= watchdog.stall_seconds:
        raise ConfigError(
            f"watchdog.restart_after_seconds = {watchdog.restart_after_seconds!r}: expected "
            f"more than stall_seconds ({watchdog.stall_seconds!r})"
        )
    return watchdog


def _read_rooms(
    top: _Table, bot: BotConfig, max_rooms: int, environ: dict[str, str]
) -> tuple[RoomConfig, ...]:
    values = top.read("rooms")
    if len(values) > max_rooms:
        raise ConfigError(
            f"rooms has {len(values)} entries: expected at most limits.max_rooms ({max_rooms})"
        )
    rooms: list[RoomConfig] = []
    for index, value in enumerate(values):
        table = _Table(value, f"rooms[{index}]", RoomConfig)
        name = table.read("name")
        if any(room.name == name for room in rooms):
            raise ConfigError(
                f"{table.where('name')} = {name!r}: expected a name no other room uses"
            )
        e2ee_key = _secret(table, "e2ee_key_env", environ, "the room's shared encryption key")
        rooms.append(table.build(
            name=name,
            bot=_bot_override(table, bot) or bot,
            e2ee_key=e2ee_key.encode("utf-8") if e2ee_key else None,
        ))
    return tuple(rooms)


def _read_dispatch(table: _Table, bot: BotConfig) -> DispatchConfig:
    accept = table.read("accept")
    dispatch: DispatchConfig = table.build(
        accept_hook=_load(table, "accept", accept) if accept else None,  # a factory's rules
        bot=_bot_override(table, bot),
        handoff=table.read("handoff", default=table.read("restore")),  # the fleet carries it
    )
    for carried in ("handoff", "checkpoint"):
        if getattr(dispatch, carried) and not dispatch.restore:
            raise ConfigError(
                f"dispatch.{carried} = true: expected dispatch.restore = true as well (the "
                "fleet carries it)"
            )
    return dispatch


def _read_web(table: _Table, environ: dict[str, str]) -> WebConfig:
    secret = _secret(table, "access_secret_env", environ, "the secret the try-it page must present")
    web: WebConfig = table.build(access_secret=secret or "")
    return web


def _secret(table: _Table, name: str, environ: dict[str, str], what: str) -> str | None:
    """The value of the environment variable that key `name` names (None when it names
    none): a variable named and not set is an error, `what` saying what it should hold."""
    variable = table.read(name)
    if not variable:
        return None
    value = environ.get(variable)
    if not value:
        raise ConfigError(
            f"environment variable {variable} (named by {table.where(name)}) is not set: "
            f"expected {what}"
        )
    return value


def load_config(path: Path, environ: dict[str, str] | None = None) -> Config:
    """Read and check a config file; every problem is a `ConfigError` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from err
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: TOML syntax error: {err}") from err
    try:
        return parse_config(doc, environ)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
