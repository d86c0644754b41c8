"""`config.toml` read into frozen attrs classes, every key checked before anything runs.

A mistake fails at start, not an hour into a run, with one line that names the key
path, the bad value and what was expected (`supervisor check` does only this). The
credentials are never in the file: it names the environment variables that hold them,
and no error message ever shows a secret's value.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from actors.room import (
    FRAME_DURATIONS_MS,
    SAMPLE_RATES,
    VAD_RATES_TEXT,
    VAD_SAMPLE_RATES,
    BotFactory,
)
from supervisor.bots import BotLoadError, load_bot

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MISSING = object()


class ConfigError(Exception):
    """A config or environment problem the user must fix; reported in one line, exit 2."""


@attrs.frozen
class LiveKitConfig:
    url: str
    api_key_env: str = "LIVEKIT_API_KEY"
    api_secret_env: str = "LIVEKIT_API_SECRET"
    embedded_server: bool = True
    cluster_urls: tuple[str, ...] = ()
    """The other nodes of `url`'s LiveKit cluster (the same key and secret): the agent
    worker registers with each of them as well (`supervisor.agent_worker`)."""


@attrs.frozen
class BotConfig:
    factory: str
    load: BotFactory = attrs.field(repr=False, eq=False)
    identity: str = "bot"
    audio_in_sample_rate: int = 16000
    audio_out_sample_rate: int = 24000
    audio_frame_ms: int = 20
    audio_in_user_tracks: bool = True
    vad: bool = False


@attrs.frozen
class SupervisionConfig:
    max_restarts: int = 5
    """A room's actors may restart this often within `within_seconds`..."""
    within_seconds: float = 30.0
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 10.0
    quarantine_seconds: float = 30.0
    """...past that the room is quarantined: retried after this, doubling up to 10x."""
    shutdown_timeout_seconds: float = 10.0


@attrs.frozen
class MetricsConfig:
    listen: str = "127.0.0.1:9464"
    per_room_labels: bool = True
    """Export per-room series (a `room` label) besides the process totals..."""
    max_room_series: int = 500
    """...for at most this many rooms; the others count only in the totals."""

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def cannot_listen(self, err: OSError) -> OSError:
        """`err` from binding `listen`, saying which setting to change."""
        return OSError(err.errno, f"metrics.listen = {self.listen!r}: {err.strerror}")


@attrs.frozen
class WatchdogConfig:
    stall_seconds: float = 2.0
    """Code holding the event loop this long is a stall: logged with the stack and
    the room whose code runs, counted, and `/healthz` answers 503 while it lasts..."""
    restart_after_seconds: float = 10.0
    """...and with `--workers N` the parent kills and restarts a worker stalled this long."""


EVENT_LOOPS = ("asyncio", "uvloop")
"""`[runtime] event_loop`: asyncio's own loop, or uvloop's (the `uvloop` extra)."""


@attrs.frozen
class RuntimeConfig:
    """How the rooms' processes run: read at start, a reload changes nothing here."""

    event_loop: str = "asyncio"
    """The event loop under anyio's asyncio backend (see `EVENT_LOOPS`): uvloop costs
    a talking room less CPU (RESULTS.md, run G), but the loop watchdog sees no stall
    under it: it recognises a task step by asyncio's own `Handle._run` on the loop
    thread's stack, which uvloop runs in C. The lag histogram still measures."""


@attrs.frozen
class LimitsConfig:
    max_rooms: int = 1000
    join_concurrency: int = 16


JOB_TYPES = ("room", "participant", "publisher")
"""`[dispatch] job_type`: a job per room, per participant who joins, or per participant
who publishes (livekit-server's JT_ROOM, JT_PARTICIPANT, JT_PUBLISHER)."""


@attrs.frozen
class DispatchConfig:
    """The supervisor as a LiveKit agent worker: rooms on demand (see `supervisor.agent_worker`)."""

    enabled: bool = False
    agent_name: str = ""
    """Empty: every new room is offered (automatic dispatch); set: only dispatches naming it."""
    job_type: str = "room"
    """One of `JOB_TYPES`."""
    bot: BotConfig | None = None
    """`[dispatch.bot]`: the bot of dispatched rooms, any key of `[bot]` overridden;
    None: `[bot]` (`Config.dispatch_bot`)."""
    max_rooms: int = 100
    """At most this many dispatched rooms at once, counting those accepted and not yet
    running; then the worker reports itself full."""
    load_threshold: float = 0.7
    """The process's CPU load (per core available, over a short window, plus an estimate
    for the jobs accepted and not yet running) at which the worker reports itself full:
    livekit-server's own `agents.target_load` (0.7), above which it offers no job."""
    accept: str = ""
    """An optional `module:function` that accepts or rejects each job (`supervisor.admission`)."""
    accept_hook: Callable[..., Any] | None = attrs.field(default=None, repr=False, eq=False)
    idle_timeout_seconds: float = 30.0
    """The bot leaves this long after the last participant left; the job succeeded."""
    max_duration_seconds: float = 0.0
    """A job's hard limit; 0: none."""
    drain_seconds: float = 600.0
    """On SIGTERM, how long running jobs may go on before their bots leave."""
    restore: bool = True
    """Join the fleet of this agent's workers and restore the jobs of one that dies
    (`supervisor.fleet`)."""
    restore_after_seconds: float = 2.0
    """A fleet member not heard from for this long is probed, and dead unless it
    answers (it beats twice a second)."""
    handoff: bool = False
    """On SIGTERM (a deploy, a recycle), hand each running job to another member of the
    fleet, which brings its bot into the room, instead of letting it run on here until
    `drain_seconds` cut it (`supervisor.fleet`; needs `restore`)."""


@attrs.frozen
class RecycleConfig:
    """When a worker process is replaced by a fresh one (`supervisor.recycle`): the rtc
    SDK keeps native memory for every room a process served while others lived beside
    it, so a process that serves rooms in turn for ever grows until it fails."""

    max_rooms_served: int = 200
    """Room trees started and ended (dispatched and restored jobs, configured rooms a
    reload stopped: `RoomSet.rooms_served`); 0: no bound."""
    max_rss_mb: int = 0
    """Resident memory in MiB; 0: no bound."""

    @property
    def enabled(self) -> bool:
        return bool(self.max_rooms_served or self.max_rss_mb)


@attrs.frozen
class WebConfig:
    """The try-it page on the metrics listener (`supervisor.playground`)."""

    enabled: bool = True
    access_secret_env: str = ""
    """An environment variable holding a secret the page must present for a join token:
    without one, tokens are minted only while the listener is on a loopback address."""
    access_secret: str = attrs.field(default="", repr=False)
    """Read from `access_secret_env` when the config is loaded."""
    livekit_url: str = ""
    """The LiveKit URL browsers connect to; empty: the supervisor's own."""
    tokens_per_minute: int = 10
    """Join tokens one client address may fetch per minute."""


@attrs.frozen
class RoomConfig:
    name: str
    bot: BotConfig
    e2ee_key: bytes | None = attrs.field(default=None, repr=False)


@attrs.frozen
class Config:
    livekit: LiveKitConfig
    bot: BotConfig
    supervision: SupervisionConfig
    metrics: MetricsConfig
    limits: LimitsConfig
    rooms: tuple[RoomConfig, ...]
    watchdog: WatchdogConfig = WatchdogConfig()
    dispatch: DispatchConfig = DispatchConfig()
    web: WebConfig = WebConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    recycle: RecycleConfig = RecycleConfig()
    sibling_rooms: frozenset[str] = frozenset()
    """With `--workers N`, the configured rooms the other workers serve (`Shard.of`): a
    dispatched job for one of them is declined, or its room would get a second bot."""

    @property
    def dispatch_bot(self) -> BotConfig:
        """The bot dispatched rooms run: `[dispatch.bot]`, or else `[bot]`."""
        return self.dispatch.bot or self.bot

    @property
    def bots(self) -> tuple[BotConfig, ...]:
        """The bots this config's rooms run: configured rooms', and dispatched rooms'
        when dispatch is on."""
        dispatched = (self.dispatch_bot,) if self.dispatch.enabled else ()
        return (*(room.bot for room in self.rooms), *dispatched)


class _Table:
    """One TOML table being read: typed getters that name the key path on error."""

    def __init__(self, value: Any, path: str, known: tuple[str, ...]) -> None:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} = {value!r}: expected a table")
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ConfigError(
                f"{self._key(path, unknown[0])} is not a known key: expected one of "
                f"{', '.join(known)}"
            )
        self.value = value
        self.path = path

    @staticmethod
    def _key(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        expected: str,
        default: Any = _MISSING,
        check: Callable[[Any], object] | None = None,  # truthy: valid (a regex's `match`)
    ) -> Any:
        where = self._key(self.path, key)
        if key not in self.value:
            if default is _MISSING:
                raise ConfigError(f"{where} is missing: expected {expected}")
            return default
        value = self.value[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok or (check is not None and not check(value)):
            raise ConfigError(f"{where} = {value!r}: expected {expected}")
        return value

    def text(self, key: str, expected: str, default: Any = _MISSING, check: Any = None) -> str:
        nonblank = lambda v: bool(v.strip()) and (check is None or check(v))  # noqa: E731
        return self.get(key, str, expected, default, nonblank)

    def seconds(self, key: str, default: float, *, allow_zero: bool = False) -> float:
        expected = "a number of seconds >= 0" if allow_zero else "a number of seconds > 0"
        ok = (lambda v: v >= 0) if allow_zero else (lambda v: v > 0)
        return float(self.get(key, (int, float), expected, default, ok))

    def count(self, key: str, default: int, minimum: int) -> int:
        return self.get(key, int, f"a whole number >= {minimum}", default, lambda v: v >= minimum)

    def flag(self, key: str, default: bool) -> bool:
        return self.get(key, bool, "true or false", default)

    def env_name(self, key: str, default: str) -> str:
        return self.text(key, "an environment variable name", default, _ENV_NAME.match)


def _url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("ws", "wss", "http", "https") and bool(parts.hostname)


def _listen(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _room_name(value: str) -> bool:
    return "/" not in value and value == value.strip()


def _read_bot(table: _Table, inherited: BotConfig | None = None) -> BotConfig:
    default: Any = _MISSING if inherited is None else inherited.factory
    factory = table.text(
        "factory", "'module:function'", default, lambda v: v.count(":") == 1
    )
    try:
        if inherited is None or factory != inherited.factory:
            load = load_bot(factory)
        else:
            load = inherited.load
    except BotLoadError as err:
        raise ConfigError(f"{table._key(table.path, 'factory')} = {factory!r}: {err}") from err
    base = inherited or BotConfig(factory=factory, load=load)
    rate = f"a sample rate, one of {', '.join(map(str, SAMPLE_RATES))}"
    in_sample_rate = SAMPLE_RATES.__contains__
    config = BotConfig(
        factory=factory,
        load=load,
        identity=table.text("identity", "a participant identity", base.identity),
        audio_in_sample_rate=table.get(
            "audio_in_sample_rate", int, rate, base.audio_in_sample_rate, in_sample_rate
        ),
        audio_out_sample_rate=table.get(
            "audio_out_sample_rate", int, rate, base.audio_out_sample_rate, in_sample_rate
        ),
        audio_frame_ms=table.get(
            "audio_frame_ms",
            int,
            f"milliseconds of audio a frame, one of {', '.join(map(str, FRAME_DURATIONS_MS))}",
            base.audio_frame_ms,
            FRAME_DURATIONS_MS.__contains__,
        ),
        audio_in_user_tracks=table.flag("audio_in_user_tracks", base.audio_in_user_tracks),
        vad=table.flag("vad", base.vad),
    )
    if config.vad and config.audio_in_sample_rate not in VAD_SAMPLE_RATES:
        raise ConfigError(
            f"{table._key(table.path, 'audio_in_sample_rate')} = {config.audio_in_sample_rate!r}: "
            f"expected {VAD_RATES_TEXT} with vad = true (Silero's rates)"
        )
    return config


_BOT_KEYS = (
    "factory",
    "identity",
    "audio_in_sample_rate",
    "audio_out_sample_rate",
    "audio_frame_ms",
    "audio_in_user_tracks",
    "vad",
)


def parse_config(doc: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    """Check every key of a parsed TOML document; raise `ConfigError` at the first bad one."""
    environ = dict(os.environ) if environ is None else environ
    top = _Table(
        doc,
        "",
        ("livekit", "bot", "supervision", "metrics", "watchdog", "limits", "dispatch", "web",
         "runtime", "recycle", "rooms"),
    )

    lk = _Table(top.get("livekit", dict, "a [livekit] table"), "livekit",
                ("url", "cluster_urls", "api_key_env", "api_secret_env", "embedded_server"))
    url = lk.text("url", "a ws:// or wss:// URL", check=_url)
    cluster_urls = tuple(
        lk.get(
            "cluster_urls",
            list,
            f"a list of ws:// or wss:// URLs, each once and none of them url ({url!r})",
            [],
            lambda v: all(isinstance(u, str) and _url(u) for u in v)
            and len({*v, url}) == len(v) + 1,
        )
    )
    livekit = LiveKitConfig(
        url=url,
        api_key_env=lk.env_name("api_key_env", "LIVEKIT_API_KEY"),
        api_secret_env=lk.env_name("api_secret_env", "LIVEKIT_API_SECRET"),
        # a node of a cluster is never embedded: one down must not be replaced by a
        # lone server of our own with other credentials
        embedded_server=lk.get(
            "embedded_server",
            bool,
            "false with cluster_urls (a cluster's nodes are not embedded)"
            if cluster_urls
            else "true or false",
            not cluster_urls,
            lambda v: not (v and cluster_urls),
        ),
        cluster_urls=cluster_urls,
    )

    bot = _read_bot(_Table(top.get("bot", dict, "a [bot] table"), "bot", _BOT_KEYS))

    sv = _Table(top.get("supervision", dict, "a [supervision] table", {}), "supervision",
                tuple(f.name for f in attrs.fields(SupervisionConfig)))
    d = SupervisionConfig()
    supervision = SupervisionConfig(
        max_restarts=sv.count("max_restarts", d.max_restarts, 0),
        within_seconds=sv.seconds("within_seconds", d.within_seconds),
        backoff_initial_seconds=sv.seconds(
            "backoff_initial_seconds", d.backoff_initial_seconds, allow_zero=True
        ),
        backoff_max_seconds=sv.seconds(
            "backoff_max_seconds", d.backoff_max_seconds, allow_zero=True
        ),
        quarantine_seconds=sv.seconds("quarantine_seconds", d.quarantine_seconds),
        shutdown_timeout_seconds=sv.seconds("shutdown_timeout_seconds", d.shutdown_timeout_seconds),
    )
    if supervision.backoff_max_seconds < supervision.backoff_initial_seconds:
        raise ConfigError(
            f"supervision.backoff_max_seconds = {supervision.backoff_max_seconds!r}: expected "
            f"at least backoff_initial_seconds ({supervision.backoff_initial_seconds!r})"
        )

    mt = _Table(top.get("metrics", dict, "a [metrics] table", {}), "metrics",
                tuple(f.name for f in attrs.fields(MetricsConfig)))
    dm = MetricsConfig()
    metrics = MetricsConfig(
        listen=mt.text("listen", "'host:port'", dm.listen, _listen),
        per_room_labels=mt.flag("per_room_labels", dm.per_room_labels),
        max_room_series=mt.count("max_room_series", dm.max_room_series, 0),
    )

    wd = _Table(top.get("watchdog", dict, "a [watchdog] table", {}), "watchdog",
                tuple(f.name for f in attrs.fields(WatchdogConfig)))
    dw = WatchdogConfig()
    watchdog = WatchdogConfig(
        stall_seconds=wd.seconds("stall_seconds", dw.stall_seconds),
        restart_after_seconds=wd.seconds("restart_after_seconds", dw.restart_after_seconds),
    )
    if watchdog.restart_after_seconds <= watchdog.stall_seconds:
        raise ConfigError(
            f"watchdog.restart_after_seconds = {watchdog.restart_after_seconds!r}: expected "
            f"more than stall_seconds ({watchdog.stall_seconds!r})"
        )

    lm = _Table(top.get("limits", dict, "a [limits] table", {}), "limits",
                ("max_rooms", "join_concurrency"))
    limits = LimitsConfig(
        max_rooms=lm.count("max_rooms", LimitsConfig().max_rooms, 1),
        join_concurrency=lm.count("join_concurrency", LimitsConfig().join_concurrency, 1),
    )

    rooms_value = top.get("rooms", list, "[[rooms]] tables", [])
    if len(rooms_value) > limits.max_rooms:
        raise ConfigError(
            f"rooms has {len(rooms_value)} entries: expected at most limits.max_rooms "
            f"({limits.max_rooms})"
        )
    rooms: list[RoomConfig] = []
    for index, value in enumerate(rooms_value):
        path = f"rooms[{index}]"
        table = _Table(value, path, ("name", "e2ee_key_env", "bot"))
        name = table.text("name", "a room name without '/'", check=_room_name)
        if any(room.name == name for room in rooms):
            raise ConfigError(f"{path}.name = {name!r}: expected a name no other room uses")
        room_bot = _bot_override(table, bot) or bot
        rooms.append(RoomConfig(name, room_bot, _e2ee_key(table, environ)))
    dispatch_keys = tuple(f.name for f in attrs.fields(DispatchConfig) if f.name != "accept_hook")
    dispatch = _read_dispatch(
        _Table(top.get("dispatch", dict, "a [dispatch] table", {}), "dispatch", dispatch_keys), bot
    )
    web = _read_web(
        _Table(top.get("web", dict, "a [web] table", {}), "web",
               tuple(f.name for f in attrs.fields(WebConfig) if f.name != "access_secret")),
        environ,
    )
    rt = _Table(top.get("runtime", dict, "a [runtime] table", {}), "runtime",
                tuple(f.name for f in attrs.fields(RuntimeConfig)))
    dr = RuntimeConfig()
    runtime = RuntimeConfig(
        event_loop=rt.get(
            "event_loop",
            str,
            "'asyncio' or 'uvloop' (installed: pip install 'livekit-supervisor[uvloop]')",
            dr.event_loop,
            lambda v: v == "asyncio" or (v == "uvloop" and find_spec("uvloop") is not None),
        ),
    )
    rc = _Table(top.get("recycle", dict, "a [recycle] table", {}), "recycle",
                tuple(f.name for f in attrs.fields(RecycleConfig)))
    recycle = RecycleConfig(
        max_rooms_served=rc.count("max_rooms_served", RecycleConfig().max_rooms_served, 0),
        max_rss_mb=rc.count("max_rss_mb", RecycleConfig().max_rss_mb, 0),
    )
    return Config(
        livekit, bot, supervision, metrics, limits, tuple(rooms), watchdog, dispatch, web,
        runtime, recycle,
    )


def _read_web(table: _Table, environ: dict[str, str]) -> WebConfig:
    d = WebConfig()
    name = table.get("access_secret_env", str, "'' or an environment variable name",
                     d.access_secret_env, lambda v: v == "" or _ENV_NAME.match(v))
    secret = environ.get(name, "") if name else ""
    if name and not secret:
        raise ConfigError(
            f"environment variable {name} (named by web.access_secret_env) is not set: "
            "expected the secret the try-it page must present"
        )
    return WebConfig(
        enabled=table.flag("enabled", d.enabled),
        access_secret_env=name,
        access_secret=secret,
        livekit_url=table.get("livekit_url", str, "'' or a ws://, wss://, http:// or https:// URL",
                              d.livekit_url, lambda v: v == "" or _url(v)),
        tokens_per_minute=table.count("tokens_per_minute", d.tokens_per_minute, 1),
    )


def _bot_override(table: _Table, bot: BotConfig) -> BotConfig | None:
    """`table`'s `bot` subtable (`[rooms.bot]`, `[dispatch.bot]`): `bot` with the keys it
    sets overridden; None when it has none."""
    if "bot" not in table.value:
        return None
    return _read_bot(_Table(table.value["bot"], table._key(table.path, "bot"), _BOT_KEYS), bot)


def _read_dispatch(table: _Table, bot: BotConfig) -> DispatchConfig:
    d = DispatchConfig()
    accept = table.get("accept", str, "'' or 'module:function'", d.accept,
                       lambda v: v == "" or v.count(":") == 1)
    hook = None
    if accept:
        try:
            hook = load_bot(accept)  # the same import rules as a bot factory
        except BotLoadError as err:
            raise ConfigError(f"dispatch.accept = {accept!r}: {err}") from err
    dispatch = DispatchConfig(
        enabled=table.flag("enabled", d.enabled),
        agent_name=table.get("agent_name", str, "an agent name ('' for automatic dispatch)",
                             d.agent_name, lambda v: v == v.strip()),
        job_type=table.get("job_type", str, " or ".join(map(repr, JOB_TYPES)), d.job_type,
                           JOB_TYPES.__contains__),
        bot=_bot_override(table, bot),
        max_rooms=table.count("max_rooms", d.max_rooms, 1),
        load_threshold=float(table.get(
            "load_threshold", (int, float), "a number > 0 and <= 1", d.load_threshold,
            lambda v: 0 < v <= 1,
        )),
        accept=accept,
        accept_hook=hook,
        idle_timeout_seconds=table.seconds("idle_timeout_seconds", d.idle_timeout_seconds),
        max_duration_seconds=table.seconds(
            "max_duration_seconds", d.max_duration_seconds, allow_zero=True
        ),
        drain_seconds=table.seconds("drain_seconds", d.drain_seconds, allow_zero=True),
        restore=table.flag("restore", d.restore),
        restore_after_seconds=float(table.get(
            "restore_after_seconds", (int, float), "a number of seconds >= 1 (two beats)",
            d.restore_after_seconds, lambda v: v >= 1,
        )),
        handoff=table.flag("handoff", d.handoff),
    )
    if dispatch.handoff and not dispatch.restore:
        raise ConfigError(
            "dispatch.handoff = true: expected dispatch.restore = true as well (the fleet "
            "carries a handoff)"
        )
    return dispatch


def _e2ee_key(table: _Table, environ: dict[str, str]) -> bytes | None:
    name = table.get("e2ee_key_env", str, "an environment variable name", None, _ENV_NAME.match)
    if name is None:
        return None
    value = environ.get(name)
    if not value:
        raise ConfigError(
            f"environment variable {name} (named by {table.path}.e2ee_key_env) is not set: "
            "expected the room's shared encryption key"
        )
    return value.encode("utf-8")


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


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def config_toml(doc: Mapping[str, Any]) -> str:
    """`doc` written as TOML, such that `tomllib.loads` gives it back: for programs that
    write configs for `supervisor run` (the benchmarks, the tests).

    Values are strings, booleans, numbers, lists of those, tables (mappings) and arrays
    of tables (lists of mappings), as in config.toml; a table's plain values come before
    its subtables, as TOML requires.
    """
    lines: list[str] = []
    _write_table(doc, "", lines)
    return "\n".join(lines) + "\n"


def _write_table(table: Mapping[str, Any], path: str, lines: list[str]) -> None:
    nested = [(key, value) for key, value in table.items() if _is_table(value)]
    for key, value in table.items():
        if not _is_table(value):
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in nested:
        name = f"{path}.{_toml_key(key)}" if path else _toml_key(key)
        for item in [value] if isinstance(value, Mapping) else value:
            lines.append(f"[{name}]" if isinstance(value, Mapping) else f"[[{name}]]")
            _write_table(item, name, lines)


def _is_table(value: Any) -> bool:
    """A table, or an array of tables (a non-empty list of them)."""
    return isinstance(value, Mapping) or (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(item, Mapping) for item in value)
    )


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r}: config values are finite numbers")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"{value!r}: not a TOML value")


def _toml_string(text: str) -> str:
    """A basic string: JSON escapes what TOML must have escaped, except DEL."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
