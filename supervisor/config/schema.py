"""Every config key once: its table, name, type, default, check and description.

A table is a frozen attrs class; a key is a field with a `Key` in its metadata (`key`),
and a field without one is derived when the file is read (a loaded factory, a secret
read from the environment). The parser (`supervisor.config.parse`), the unknown-key
check and the reference (`supervisor.config.reference`) all read these fields, so a
key's default and description are written here only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.util import find_spec
from typing import Any, cast
from urllib.parse import urlsplit

import attrs

from actors.room import FRAME_DURATIONS_MS, SAMPLE_RATES, VAD_RATES_TEXT, BotFactory

_KEY = "supervisor.config.key"
_TYPE_NAMES = {bool: "boolean", int: "integer", str: "string", list: "array", dict: "table"}


@attrs.frozen
class Value:
    """What a key accepts: its TOML types and a check, with the words that say it both in
    an error ("expected ...") and in the reference."""

    types: tuple[type, ...]
    expected: str
    check: Callable[[Any], object] | None = None
    """Truthy for a valid value (a regex's `match` will do); the types are checked first."""

    def accepts(self, value: Any) -> bool:
        # TOML's booleans are Python ints: an integer key must not take `true`
        typed = isinstance(value, self.types) and (bool in self.types or type(value) is not bool)
        return typed and (self.check is None or bool(self.check(value)))

    def convert(self, value: Any) -> Any:
        """As the config holds it: numbers that may be written as integers are floats,
        arrays are tuples (frozen)."""
        if float in self.types:
            return float(value)
        return tuple(value) if isinstance(value, list) else value

    def also(self, check: Callable[[Any], object], expected: str) -> Value:
        """This value further checked against another key's: `expected` replaces the words."""
        own = self.check
        return Value(self.types, expected, lambda v: (own is None or own(v)) and check(v))

    @property
    def type_name(self) -> str:
        """The TOML type, as the reference names it."""
        return "number" if float in self.types else _TYPE_NAMES[self.types[0]]


@attrs.frozen
class Key:
    """A field's metadata that makes it a config key (`key`): the field's name is the key's."""

    value: Value
    doc: str
    table: type | None = None
    """The schema of a key that is a table (`[dispatch.bot]`), or of each of an array's
    tables (`[[rooms]]`)."""


def key(value: Value, doc: str, table: type | None = None) -> dict[str, Key]:
    """A field's metadata that makes it a key: `attrs.field(default=..., metadata=key(...))`."""
    return {_KEY: Key(value, doc, table)}


def keys(schema: type) -> dict[str, attrs.Attribute[Any]]:
    """`schema`'s keys by name, in the order the file and the reference list them."""
    return {field.name: field for field in attrs.fields(schema) if _KEY in field.metadata}


def key_of(field: attrs.Attribute[Any]) -> Key:
    return cast(Key, field.metadata[_KEY])


def _nonblank(expected: str, check: Callable[[str], object] | None = None) -> Value:
    return Value((str,), expected, lambda v: bool(v.strip()) and (check is None or check(v)))


def _table(
    schema: type, expected: str = "a table", doc: str = "", *, array: bool = False
) -> dict[str, Key]:
    """A key that is a table of `schema`'s keys, or an array of such tables (`[[rooms]]`)."""
    return key(Value((list,) if array else (dict,), expected), doc, schema)


def _count(minimum: int) -> Value:
    return Value((int,), f"a whole number >= {minimum}", lambda v: v >= minimum)


def _url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("ws", "wss", "http", "https") and bool(parts.hostname)


def _listen(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


_ENV_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_FLAG = Value((bool,), "true or false")
_SECONDS = Value((int, float), "a number of seconds > 0", lambda v: v > 0)
_SECONDS_OR_ZERO = Value((int, float), "a number of seconds >= 0", lambda v: v >= 0)
_ENV_NAME = _nonblank("an environment variable name", _ENV_VARIABLE.match)
_SAMPLE_RATE = Value(
    (int,), f"a sample rate, one of {', '.join(map(str, SAMPLE_RATES))}", SAMPLE_RATES.__contains__
)

EVENT_LOOPS = ("asyncio", "uvloop")
"""`[runtime] event_loop`: asyncio's own loop, or uvloop's (the `uvloop` extra)."""

JOB_TYPES = ("room", "participant", "publisher")
"""`[dispatch] job_type`: livekit-server's JT_ROOM, JT_PARTICIPANT, JT_PUBLISHER."""


@attrs.frozen
class LiveKitConfig:
    """The LiveKit server the rooms are on. Its credentials are never in the file: it
    names the environment variables holding them."""

    url: str = attrs.field(metadata=key(
        _nonblank("a ws:// or wss:// URL", _url),
        "The server's URL. When it is 127.0.0.1 or localhost, nothing listens on its port "
        "and `embedded_server` is true, the supervisor starts its own livekit-server there.",
    ))
    api_key_env: str = attrs.field(default="LIVEKIT_API_KEY", metadata=key(
        _ENV_NAME, "The environment variable holding the server's API key."
    ))
    api_secret_env: str = attrs.field(default="LIVEKIT_API_SECRET", metadata=key(
        _ENV_NAME, "The environment variable holding the server's API secret."
    ))
    embedded_server: bool = attrs.field(default=True, metadata=key(
        _FLAG,
        "Start the project's own livekit-server for a loopback `url` with nothing listening "
        "on its port, with fresh credentials used in-process only (the variables above are "
        "then not needed). Must be false with `cluster_urls`, and is by default then.",
    ))
    cluster_urls: tuple[str, ...] = attrs.field(default=(), metadata=key(
        Value(
            (list,),
            "a list of ws:// or wss:// URLs, each once and none of them url",
            lambda v: all(isinstance(u, str) and _url(u) for u in v) and len(set(v)) == len(v),
        ),
        "The other nodes of `url`'s LiveKit cluster (the same key and secret): the agent "
        "worker registers with each of them as well, and a dispatched room's bot joins "
        "again through another node when its own is gone.",
    ))


@attrs.frozen
class BotConfig:
    """The bot every room runs; `[rooms.bot]` and `[dispatch.bot]` tables may override any
    of its keys for a room or for dispatched rooms."""

    factory: str = attrs.field(metadata=key(
        _nonblank("'module:function'", lambda v: v.count(":") == 1),
        "The bot factory, imported at start: called with each room's `RoomTransport`, it "
        "returns a pipecat `PipelineWorker` (or runs its bot itself).",
    ))
    load: BotFactory = attrs.field(repr=False, eq=False)
    identity: str = attrs.field(default="bot", metadata=key(
        _nonblank("a participant identity"), "The bot's participant identity in every room."
    ))
    audio_in_sample_rate: int = attrs.field(default=16000, metadata=key(
        _SAMPLE_RATE,
        f"The pipeline's input rate in Hz (the rtc SDK resamples); {VAD_RATES_TEXT} with "
        "`vad = true`.",
    ))
    audio_out_sample_rate: int = attrs.field(default=24000, metadata=key(
        _SAMPLE_RATE,
        "The pipeline's output rate in Hz (the rtc SDK resamples). A pipeline that "
        "resamples (pipecat's stream resampler) holds audio back by up to ~70 ms, so a bot "
        "that answers at its input's rate (the echo bot) is best given that rate.",
    ))
    audio_frame_ms: int = attrs.field(default=20, metadata=key(
        Value(
            (int,),
            f"milliseconds of audio a frame, one of {', '.join(map(str, FRAME_DURATIONS_MS))}",
            FRAME_DURATIONS_MS.__contains__,
        ),
        "Audio per frame, in and out: 40 costs a talking room a fifth less CPU for 20 ms "
        "more delay each way.",
    ))
    audio_in_user_tracks: bool = attrs.field(default=True, metadata=key(
        _FLAG, "One `UserAudioRawFrame` stream per participant; false: one mixed stream."
    ))
    vad: bool = attrs.field(default=False, metadata=key(
        _FLAG, "Silero VAD (it ships inside pipecat) on the input."
    ))
    vad_batch_ms: float = attrs.field(default=0, metadata=key(
        Value((int, float), "milliseconds from 0 to 32 (a VAD window)", lambda v: 0 <= v <= 32),
        "How long a room's VAD window may wait for other rooms' of the process to run in "
        "one batch with them (with `vad = true`); 0 runs each alone. Measured at 8: 7-12 % "
        "less of the VAD's CPU at 4-16 rooms, each window 5-6 ms later.",
    ))


@attrs.frozen
class SupervisionConfig:
    """How each room's actor tree is restarted when it fails, and how long a drain takes."""

    max_restarts: int = attrs.field(default=5, metadata=key(
        _count(0),
        "A room's actors may restart this often within `within_seconds`; past that the "
        "room is quarantined.",
    ))
    within_seconds: float = attrs.field(default=30.0, metadata=key(
        _SECONDS, "The window `max_restarts` is counted in."
    ))
    backoff_initial_seconds: float = attrs.field(default=0.5, metadata=key(
        _SECONDS_OR_ZERO, "The first wait before a restart; waits grow exponentially, with "
        "jitter..."
    ))
    backoff_max_seconds: float = attrs.field(default=10.0, metadata=key(
        _SECONDS_OR_ZERO, "...up to this; at least `backoff_initial_seconds`."
    ))
    quarantine_seconds: float = attrs.field(default=30.0, metadata=key(
        _SECONDS, "A quarantined room is retried after this, the wait doubling up to 10x."
    ))
    shutdown_timeout_seconds: float = attrs.field(default=10.0, metadata=key(
        _SECONDS,
        "On SIGINT or SIGTERM the rooms drain within this (bots get an `EndFrame`, rooms "
        "leave); a second signal stops at once.",
    ))


@attrs.frozen
class MetricsConfig:
    """The HTTP listener: Prometheus' `/metrics`, `/healthz`, `/readyz`, `/status` and the
    try-it page."""

    listen: str = attrs.field(default="127.0.0.1:9464", metadata=key(
        _nonblank("'host:port'", _listen),
        "Where the listener binds (loopback: local scrapers only). Worker i of `--workers N` "
        "listens on port + i; `supervisor targets CONFIG --workers N` prints them.",
    ))
    per_room_labels: bool = attrs.field(default=True, metadata=key(
        _FLAG, "Export per-room series (a `room` label) besides the process totals..."
    ))
    max_room_series: int = attrs.field(default=500, metadata=key(
        _count(0), "...for at most this many rooms; the others count only in the totals."
    ))

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
    """Bot code must not block the event loop: every room of the process shares it."""

    stall_seconds: float = attrs.field(default=2.0, metadata=key(
        _SECONDS,
        "Code holding the event loop this long is a stall: logged with the stack and the "
        "room whose code runs, counted, and `/healthz` answers 503 while it lasts.",
    ))
    restart_after_seconds: float = attrs.field(default=10.0, metadata=key(
        _SECONDS,
        "With `--workers N`, the parent kills and restarts a worker stalled this long; "
        "more than `stall_seconds`.",
    ))


@attrs.frozen
class RuntimeConfig:
    """How the rooms' processes run: read at start, a reload changes nothing here."""

    event_loop: str = attrs.field(default="asyncio", metadata=key(
        Value(
            (str,),
            f"{' or '.join(map(repr, EVENT_LOOPS))} "
            "(installed: pip install 'livekit-supervisor[uvloop]')",
            lambda v: v == "asyncio" or (v in EVENT_LOOPS and find_spec(v) is not None),
        ),
        "The event loop under anyio's asyncio backend. uvloop costs a talking room less "
        "CPU (docs/benchmarks/runs/05-run-g.md), but the loop watchdog sees no stall under it: "
        "it recognises a task step by asyncio's own `Handle._run` on the loop thread's "
        "stack, which uvloop runs in C. The lag histogram still measures.",
    ))


@attrs.frozen
class LimitsConfig:
    """Bounds on the configured rooms."""

    max_rooms: int = attrs.field(default=1000, metadata=key(
        _count(1), "At most this many `[[rooms]]`."
    ))
    join_concurrency: int = attrs.field(default=16, metadata=key(
        _count(1), "Rooms joining (and leaving) at once."
    ))


@attrs.frozen
class DispatchConfig:
    """Rooms on demand: the supervisor registers with the server as a LiveKit agent worker
    and serves the rooms it is sent (`supervisor.dispatch.agent_worker`)."""

    enabled: bool = attrs.field(default=False, metadata=key(
        _FLAG, "Register as an agent worker: the server sends this process rooms to serve."
    ))
    agent_name: str = attrs.field(default="", metadata=key(
        Value((str,), "an agent name ('' for automatic dispatch)", lambda v: v == v.strip()),
        "Empty: every new room is offered (automatic dispatch); set: only dispatches naming it.",
    ))
    job_type: str = attrs.field(default="room", metadata=key(
        Value((str,), " or ".join(map(repr, JOB_TYPES)), JOB_TYPES.__contains__),
        "A bot per room, per participant who joins (its room tree is named `room:identity`), "
        "or per participant who publishes, once they do.",
    ))
    bot: BotConfig | None = attrs.field(default=None, metadata=_table(
        BotConfig, doc="The dispatched rooms' bot: the keys it sets override `[bot]`'s."
    ))
    max_rooms: int = attrs.field(default=100, metadata=key(
        _count(1),
        "At most this many dispatched rooms at once, counting those accepted and not yet "
        "running; then the worker reports itself full.",
    ))
    load_threshold: float = attrs.field(default=0.7, metadata=key(
        Value((int, float), "a number > 0 and <= 1", lambda v: 0 < v <= 1),
        "The process's CPU load (per core available, over a short window, plus an estimate "
        "for the jobs accepted and not yet running) at which the worker reports itself "
        "full: livekit-server's own `agents.target_load`.",
    ))
    accept: str = attrs.field(default="", metadata=key(
        Value((str,), "'' or 'module:function'", lambda v: v == "" or v.count(":") == 1),
        "A hook, imported at start, that accepts or rejects each job "
        "(`supervisor.dispatch.admission`).",
    ))
    accept_hook: Callable[..., Any] | None = attrs.field(default=None, repr=False, eq=False)
    idle_timeout_seconds: float = attrs.field(default=30.0, metadata=key(
        _SECONDS, "The bot leaves this long after the last participant left; the job succeeded."
    ))
    max_duration_seconds: float = attrs.field(default=0.0, metadata=key(
        _SECONDS_OR_ZERO, "A job's hard limit; 0: none."
    ))
    drain_seconds: float = attrs.field(default=600.0, metadata=key(
        _SECONDS_OR_ZERO, "On SIGTERM, how long running jobs may go on before their bots leave."
    ))
    restore: bool = attrs.field(default=True, metadata=key(
        _FLAG,
        "Join the fleet of this agent's workers and restore the jobs of one that dies "
        "(`supervisor.dispatch.fleet`).",
    ))
    restore_after_seconds: float = attrs.field(default=2.0, metadata=key(
        Value((int, float), "a number of seconds >= 1 (two beats)", lambda v: v >= 1),
        "A fleet member not heard from for this long is probed, and dead unless it answers "
        "(it beats twice a second).",
    ))
    handoff: bool = attrs.field(default=True, metadata=key(
        _FLAG,
        "On SIGTERM (a deploy, a recycle), hand each running job to another member of the "
        "fleet, which brings its bot into the room, instead of letting it run on here until "
        "`drain_seconds` cut it. Needs `restore = true`; off when `restore` is.",
    ))
    checkpoint: bool = attrs.field(default=False, metadata=key(
        _FLAG,
        "Carry each running job's state, as its bot last offered it "
        "(`transport.offer_state`), in this worker's fleet record, so that a survivor "
        "restoring the job after this process died (SIGKILL, a crash) hands it to the new "
        "bot as a handoff does. Costs a record update, sent to every member, after each "
        "offer (at most two a second a worker). Needs `restore = true`.",
    ))


@attrs.frozen
class RecycleConfig:
    """When a worker process is replaced by a fresh one (`supervisor.process.recycle`): the rtc
    SDK keeps native memory for every room a process served while others lived beside
    it, so a process that serves rooms in turn for ever grows until it fails. A run with
    `[dispatch]` (or with `max_rss_mb`) and a bound serves its rooms in a worker under a
    thin parent, even without `--workers`."""

    max_rooms_served: int = attrs.field(default=200, metadata=key(
        _count(0),
        "Room trees started and ended (dispatched and restored jobs, configured rooms a "
        "reload stopped); 0: no bound.",
    ))
    max_rss_mb: int = attrs.field(default=0, metadata=key(
        _count(0), "Resident memory in MiB; 0: no bound."
    ))

    @property
    def enabled(self) -> bool:
        return bool(self.max_rooms_served or self.max_rss_mb)


@attrs.frozen
class WebConfig:
    """The try-it page on the metrics listener (`supervisor.web`)."""

    enabled: bool = attrs.field(default=True, metadata=key(_FLAG, "Serve the page."))
    access_secret_env: str = attrs.field(default="", metadata=key(
        Value((str,), "'' or an environment variable name",
              lambda v: v == "" or _ENV_VARIABLE.match(v)),
        "An environment variable holding a secret the page must present for a join token: "
        "without one, tokens are minted only while the listener is on a loopback address.",
    ))
    access_secret: str = attrs.field(default="", repr=False)
    livekit_url: str = attrs.field(default="", metadata=key(
        Value((str,), "'' or a ws://, wss://, http:// or https:// URL",
              lambda v: v == "" or _url(v)),
        "The LiveKit URL browsers connect to; empty: the supervisor's own.",
    ))
    tokens_per_minute: int = attrs.field(default=10, metadata=key(
        _count(1), "Join tokens one client address may fetch per minute."
    ))


@attrs.frozen
class RoomConfig:
    """A room the supervisor creates on the server (when missing) and joins with its bot."""

    name: str = attrs.field(metadata=key(
        _nonblank("a room name without '/'", lambda v: "/" not in v and v == v.strip()),
        "The LiveKit room; no other room may use it.",
    ))
    bot: BotConfig = attrs.field(metadata=_table(
        BotConfig, doc="This room's bot: the keys it sets override `[bot]`'s."
    ))
    e2ee_key_env: str | None = attrs.field(default=None, eq=False, metadata=key(
        _ENV_NAME,
        "An environment variable holding the room's shared key: the bot joins end-to-end "
        "encrypted.",
    ))
    e2ee_key: bytes | None = attrs.field(default=None, repr=False)


@attrs.frozen
class Config:
    """A whole config file: each key is a table of the file."""

    livekit: LiveKitConfig = attrs.field(metadata=_table(LiveKitConfig, "a [livekit] table"))
    bot: BotConfig = attrs.field(metadata=_table(BotConfig, "a [bot] table"))
    supervision: SupervisionConfig = attrs.field(
        default=SupervisionConfig(), metadata=_table(SupervisionConfig, "a [supervision] table")
    )
    metrics: MetricsConfig = attrs.field(
        default=MetricsConfig(), metadata=_table(MetricsConfig, "a [metrics] table")
    )
    watchdog: WatchdogConfig = attrs.field(
        default=WatchdogConfig(), metadata=_table(WatchdogConfig, "a [watchdog] table")
    )
    limits: LimitsConfig = attrs.field(
        default=LimitsConfig(), metadata=_table(LimitsConfig, "a [limits] table")
    )
    dispatch: DispatchConfig = attrs.field(
        default=DispatchConfig(), metadata=_table(DispatchConfig, "a [dispatch] table")
    )
    web: WebConfig = attrs.field(default=WebConfig(), metadata=_table(WebConfig, "a [web] table"))
    runtime: RuntimeConfig = attrs.field(
        default=RuntimeConfig(), metadata=_table(RuntimeConfig, "a [runtime] table")
    )
    recycle: RecycleConfig = attrs.field(
        default=RecycleConfig(), metadata=_table(RecycleConfig, "a [recycle] table")
    )
    rooms: tuple[RoomConfig, ...] = attrs.field(
        default=(), metadata=_table(RoomConfig, "[[rooms]] tables", array=True)
    )
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
