"""`supervisor bench`: a load generator users run against their own deployment.

One simulated participant per room (the livekit rtc SDK, as a browser would join)
publishes speech-like audio, tone bursts paced in real time, and listens to the bot's
audio in the same room. An echo bot sends each burst back; the time from a burst's
first sample sent to the first loud frame heard back (energy onset) is the end-to-end
echo latency: network, server, the supervisor's audio path and the bot together.
Judging by energy rather than samples is what survives Opus and the jitter buffer.

The run is bounded: every participant sends until all of them have sent together for
`seconds`, listens a little longer so the last burst can come back, and leaves. All
rooms run in one task group, so nothing outlives the run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import numpy as np
from livekit import rtc
from livekit.rtc.participant import PublishTrackError

from actors.room import SUBSCRIBE_GRACE_SECONDS, narrow_room_events
from supervisor.config import Config, ConfigError
from supervisor.livekit_server.access import Credentials, join_token
from supervisor.livekit_server.source import for_token
from supervisor.process.rtc_shutdown import Closable, end_room

log = logging.getLogger("supervisor.bench")

SAMPLE_RATE = 48_000
SEND_FRAME_MS = 20
"""As a microphone delivers them; a burst's send time is its first frame's, exactly."""
RECEIVE_FRAME_MS = 10
"""Received frame size: the onset's resolution."""
TONE_HZ = 440.0
AMPLITUDE = 0.3
"""A 0.3-amplitude tone has an RMS near 6950; Opus comfort noise stays far below ONSET_RMS."""
ONSET_RMS = 1000.0
BURST_SECONDS = 0.5
PERIOD_SECONDS = 1.0
"""A burst every second: 0.5 s of tone, 0.5 s of silence, like short spoken phrases."""
LOST_AFTER = 1.0
"""A burst with no onset heard within this many seconds is lost."""
QUIET_BEFORE_ONSET = 0.1
"""An onset is loud audio after at least this long without any: a dropout inside an echo
(a lost packet, a jitter-buffer stretch) is not the start of the next one."""
IDENTITY = "bench"
JOIN_TIMEOUT = 30.0
BOT_TRACK_TIMEOUT = SUBSCRIBE_GRACE_SECONDS + JOIN_TIMEOUT
"""How long a participant waits for the bot's track: a bot whose session the server
stopped reading finds out after `SUBSCRIBE_GRACE_SECONDS` and joins again (seen in CI:
its track back 37 s after the bench joined, two rejoins); a bench that gives up sooner
reports as lost a room the supervisor still serves."""
SUBSCRIBE_GRACE = 10.0
"""The bot's track listed but not subscribed this long: this participant's own session
lost its signalling, and it joins again (at most `JOINS` times in all).

livekit-server closes a participant's signalling when 200 requests queue up unread
(`signal stream closed ... channel is full` in its debug log), which a storm of ICE
candidates does while many rooms join at once from one process on a busy machine, and
keeps the connection open: pings are still answered, nothing fails, but the server
never acts on another request, so the bot's track is never bound to it. That is the
generator's connection failing, not the deployment under test."""
JOINS = 3


@attrs.frozen
class BenchOptions:
    rooms: tuple[str, ...]
    seconds: float
    bot_identities: Mapping[str, str] = attrs.field(factory=dict)
    """The bot's identity per room, where a [[rooms]] table sets its own; else "bot"."""
    late_after: float = 0.5
    """A burst heard back later than this (seconds) counts as late (but not lost)."""


@attrs.define
class RoomResult:
    """What one room's participant measured."""

    room: str
    join_s: float | None = None
    """From connect() called to connected."""
    bot_track_s: float | None = None
    """From connected to subscribed to the bot's audio track."""
    sent: list[float] = attrs.field(factory=list)
    """When each burst's first frame was handed to the SDK (anyio clock)."""
    onsets: list[float] = attrs.field(factory=list)
    """When each silent-to-loud transition was heard (anyio clock)."""
    rejoins: int = 0
    """Times this participant joined again, its own signalling lost (`SUBSCRIBE_GRACE`)."""
    error: str | None = None

    def latencies(self) -> list[float | None]:
        """Per burst sent: seconds to its echo's onset, or None if lost.

        Each onset answers at most one burst: the first unused onset after the burst
        was sent and before it counts as lost.
        """
        result: list[float | None] = []
        onsets = sorted(self.onsets)
        next_onset = 0
        for sent_at in self.sent:
            while next_onset < len(onsets) and onsets[next_onset] < sent_at:
                next_onset += 1
            if next_onset < len(onsets) and onsets[next_onset] - sent_at < LOST_AFTER:
                result.append(onsets[next_onset] - sent_at)
                next_onset += 1
            else:
                result.append(None)
        return result

    def summary(self, late_after: float) -> dict[str, Any]:
        latencies = self.latencies()
        heard = [latency for latency in latencies if latency is not None]
        return {
            "room": self.room,
            "joined": self.join_s is not None,
            "join_s": _round(self.join_s),
            "bot_track_s": _round(self.bot_track_s),
            "bursts_sent": len(self.sent),
            "bursts_heard": len(heard),
            "lost": len(latencies) - len(heard),
            "late": sum(latency > late_after for latency in heard),
            "latency_ms": _percentiles([latency * 1000 for latency in heard]),
            "latencies_ms": [round(latency * 1000, 1) for latency in heard],
            "rejoins": self.rejoins,
            "error": self.error,
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: an observed value, never an interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    return {f"p{q}": _round(percentile(values, q), 1) for q in (50, 95, 99)}


def _burst_frames() -> tuple[list[rtc.AudioFrame], list[rtc.AudioFrame]]:
    """One period's frames: the tone's, then the silence's (built once, sent many times)."""
    samples = SAMPLE_RATE * SEND_FRAME_MS // 1000
    tone_frames = round(BURST_SECONDS * 1000 / SEND_FRAME_MS)
    silent_frames = round((PERIOD_SECONDS - BURST_SECONDS) * 1000 / SEND_FRAME_MS)
    t = np.arange(samples * tone_frames) / SAMPLE_RATE
    tone = (AMPLITUDE * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
    silence = np.zeros(samples, dtype=np.int16).tobytes()
    frame = lambda data: rtc.AudioFrame(data, SAMPLE_RATE, 1, samples)  # noqa: E731
    return (
        [frame(chunk.tobytes()) for chunk in np.split(tone, tone_frames)],
        [frame(silence) for _ in range(silent_frames)],
    )


class SignallingLostError(Exception):
    """The server stopped acting on this participant's requests: the bot's track is
    listed and never delivered (`SUBSCRIBE_GRACE`), or publishing got no answer."""


async def bot_track(room: rtc.Room, identity: str) -> rtc.RemoteAudioTrack:
    """The bot's first audio track, once this participant is subscribed to it."""
    found: list[rtc.RemoteAudioTrack] = []
    subscribed = anyio.Event()

    def on_subscribed(
        track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if participant.identity == identity and isinstance(track, rtc.RemoteAudioTrack):
            found.append(track)
            subscribed.set()

    room.on("track_subscribed", on_subscribed)
    try:
        participant = room.remote_participants.get(identity)
        for publication in participant.track_publications.values() if participant else ():
            if isinstance(publication.track, rtc.RemoteAudioTrack):
                found.append(publication.track)
                subscribed.set()
        listed_since: float | None = None
        while not subscribed.is_set():
            with anyio.move_on_after(0.5):
                await subscribed.wait()
            if subscribed.is_set() or not _bot_audio(room, identity):
                listed_since = None
            elif listed_since is None:
                listed_since = anyio.current_time()
            elif anyio.current_time() - listed_since >= SUBSCRIBE_GRACE:
                raise SignallingLostError(_bot_seen(room, identity))
        return found[0]
    finally:
        room.off("track_subscribed", on_subscribed)


def _bot_audio(room: rtc.Room, identity: str) -> list[rtc.RemoteTrackPublication] | None:
    """The bot's audio publications as this participant sees them; None: no bot here."""
    bot = room.remote_participants.get(identity)
    if bot is None:
        return None
    return [pub for pub in bot.track_publications.values() if pub.kind == rtc.TrackKind.KIND_AUDIO]


def _bot_seen(room: rtc.Room, identity: str) -> str:
    """What this participant sees of the bot: where a missing track got stuck."""
    audio = _bot_audio(room, identity)
    if audio is None:
        return "the bot is not in the room"
    if not audio:
        return "the bot is in the room and publishes no audio track"
    return ", ".join(
        f"track {pub.sid} published, {'subscribed' if pub.subscribed else 'not subscribed'}"
        for pub in audio
    )


async def send_bursts(
    source: rtc.AudioSource, result: RoomResult, done: Callable[[], bool]
) -> None:
    """Tone bursts paced against the clock, as a microphone delivers them, until `done`.

    A burst is sent when its first sample leaves the source's queue for the encoder: the
    queue is the generator's, not the deployment's. After a stall (a busy event loop)
    the schedule restarts from now instead of catching up with a rush of frames, which
    would stand in that queue and add to every later burst's latency.
    """
    tone, silence = _burst_frames()
    frame_seconds = SEND_FRAME_MS / 1000
    next_at = anyio.current_time()
    while not done():
        for index, frame in enumerate([*tone, *silence]):
            if index == 0:
                result.sent.append(anyio.current_time() + source.queued_duration)
            await source.capture_frame(frame)
            next_at = max(next_at + frame_seconds, anyio.current_time() - frame_seconds)
            await anyio.sleep(max(0.0, next_at - anyio.current_time()))


async def listen(stream: rtc.AudioStream, result: RoomResult) -> None:
    """Record each start of loud audio after a quiet stretch of the bot's audio as an onset."""
    last_loud = -math.inf
    async for event in stream:
        samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
        level = math.sqrt(float(np.mean(samples**2))) if samples.size else 0.0
        if level > ONSET_RMS:
            now = anyio.current_time()
            if now - last_loud >= QUIET_BEFORE_ONSET:
                result.onsets.append(now)
            last_loud = now


@attrs.define
class Together:
    """When every room of a run sends: each sends `seconds` from then, so all of them
    talk at once for that long however spread out their joins were (seconds apart on a
    busy machine), and a harness measuring the deployment can start then."""

    rooms: int
    settled: set[str] = attrs.field(factory=set)
    """Rooms sending, or done without ever sending (their bot never came)."""
    since: float | None = None

    def settle(self, room: str) -> None:
        self.settled.add(room)
        if self.since is None and len(self.settled) >= self.rooms:
            self.since = anyio.current_time()
            log.info("%s (%d rooms)", ALL_SENDING, self.rooms)

    def over(self, seconds: float) -> bool:
        return self.since is not None and anyio.current_time() - self.since >= seconds


async def bench_room(
    credentials: Credentials,
    room_name: str,
    options: BenchOptions,
    together: Together | None = None,
) -> RoomResult:
    """Join, find the bot, send and listen for `options.seconds` (from when every room
    of `together` sends; alone by default), leave; never raises for a room's own failure
    (it is recorded), so one bad room does not end the run."""
    together = together or Together(1)
    result = RoomResult(room_name)
    bot = options.bot_identities.get(room_name, "bot")
    try:
        for join in range(JOINS):
            try:
                await _bench_session(credentials, room_name, bot, options, result, together)
                return result
            except SignallingLostError as err:
                if join + 1 == JOINS:
                    result.error = f"the bot {bot!r}'s audio track never reached us ({err})"
                else:
                    result.rejoins += 1
                    log.warning(
                        "[%s] the bot's track is listed but never arrives (%s): joining again",
                        room_name,
                        err,
                    )
            except TimeoutError as err:
                result.error = str(err)
                break
            except Exception as err:  # noqa: BLE001 - a room's failure is a measurement
                result.error = f"{type(err).__name__}: {err}"
                break
        return result
    finally:
        together.settle(room_name)


async def _bench_session(
    credentials: Credentials,
    room_name: str,
    bot: str,
    options: BenchOptions,
    result: RoomResult,
    together: Together,
) -> None:
    """One participant's session: join, find the bot, send and listen, leave."""
    room = rtc.Room()
    media: list[Closable] = []  # what feeds and reads the room, in the order it is closed
    try:
        began = anyio.current_time()
        result.join_s = None
        with anyio.fail_after(JOIN_TIMEOUT):
            await room.connect(credentials.url, join_token(credentials, room_name, IDENTITY))
        # every participant captures 50 frames a second: without this, each of those
        # callbacks would wake every other participant's room too
        narrow_room_events(room)
        result.join_s = anyio.current_time() - began
        source = rtc.AudioSource(SAMPLE_RATE, 1)
        media.append(source)
        track = rtc.LocalAudioTrack.create_audio_track("bench-mic", source)
        publish = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        try:
            await room.local_participant.publish_track(track, publish)
        except PublishTrackError as err:  # the server did not answer: the same lost session
            raise SignallingLostError(f"publishing the microphone: {err}") from err
        joined = anyio.current_time()
        try:
            with anyio.fail_after(BOT_TRACK_TIMEOUT):
                heard_track = await bot_track(room, bot)
        except TimeoutError:
            raise TimeoutError(
                f"timed out after {BOT_TRACK_TIMEOUT:g} s waiting for the bot {bot!r}'s audio "
                f"track ({_bot_seen(room, bot)})"
            ) from None
        result.bot_track_s = anyio.current_time() - joined
        stream = rtc.AudioStream(
            heard_track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=RECEIVE_FRAME_MS
        )
        media.insert(0, stream)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listen, stream, result)
            together.settle(room_name)
            await send_bursts(source, result, lambda: together.over(options.seconds))
            await anyio.sleep(LOST_AFTER)  # the last burst's echo may still be on its way
            tasks.cancel_scope.cancel()
    except TimeoutError:
        if result.join_s is None:
            raise TimeoutError(f"timed out after {JOIN_TIMEOUT:g} s waiting for connect") from None
        raise
    finally:
        await end_room(room, *media)


LAG_TICK = 0.01
ALL_SENDING = "every room is sending"


async def _measure_lag(lags: list[float]) -> None:
    """How late this process's event loop wakes up: when it lags, the generator itself
    delays sending and reading, and the latencies it reports are partly its own."""
    while True:
        asked = anyio.current_time() + LAG_TICK
        await anyio.sleep(LAG_TICK)
        lags.append(max(0.0, anyio.current_time() - asked))


async def bench(
    credentials: Credentials, options: BenchOptions, lags: list[float] | None = None
) -> list[RoomResult]:
    """All rooms at once, in one task group: the load a deployment sees when they all talk.
    `lags` collects the generator's own event-loop lag meanwhile, in seconds. Once every
    room sends, it logs `ALL_SENDING` (see `Together`)."""
    results: list[RoomResult | None] = [None] * len(options.rooms)
    together = Together(len(options.rooms))

    async def one(index: int, name: str) -> None:
        results[index] = await bench_room(credentials, name, options, together)

    async with anyio.create_task_group() as tasks:
        async with anyio.create_task_group() as rooms:
            tasks.start_soon(_measure_lag, [] if lags is None else lags)
            for index, name in enumerate(options.rooms):
                rooms.start_soon(one, index, name)
        tasks.cancel_scope.cancel()
    return [result for result in results if result is not None]


def report(
    results: Sequence[RoomResult], options: BenchOptions, lags: Sequence[float] = ()
) -> dict[str, Any]:
    """The run's summary and every room's numbers, as the JSON output holds them."""
    rooms = [result.summary(options.late_after) for result in results]
    joins = [result.join_s for result in results if result.join_s is not None]
    heard = [latency for room in rooms for latency in room["latencies_ms"]]
    return {
        "rooms": len(results),
        "joined": len(joins),
        "seconds": options.seconds,
        "late_after_ms": options.late_after * 1000,
        "join_s": {"p50": _round(percentile(joins, 50)), "max": _round(max(joins, default=None))},
        "latency_ms": _percentiles(heard),
        "bursts_sent": sum(room["bursts_sent"] for room in rooms),
        "bursts_heard": len(heard),
        "lost": sum(room["lost"] for room in rooms),
        "late": sum(room["late"] for room in rooms),
        "rejoins": sum(room["rejoins"] for room in rooms),
        "generator_lag_ms": {
            "p99": _round(percentile([lag * 1000 for lag in lags], 99), 1),
            "max": _round(max(lags, default=0.0) * 1000, 1),
        },
        "per_room": rooms,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _note(room: dict[str, Any]) -> str:
    if room["error"]:
        return str(room["error"])
    return f"joined again {room['rejoins']}x" if room["rejoins"] else ""


def format_table(summary: dict[str, Any]) -> str:
    """The human-readable report: the run's summary, then one line per room."""
    join, latency, lag = summary["join_s"], summary["latency_ms"], summary["generator_lag_ms"]
    seconds = lambda v: "-" if v is None else f"{v * 1000:.0f}"  # noqa: E731
    lines = [
        f"rooms {summary['rooms']} (joined {summary['joined']}), {summary['seconds']:g} s, "
        f"late > {summary['late_after_ms']:g} ms",
        f"join ms       p50 {seconds(join['p50'])}  max {seconds(join['max'])}",
        f"echo ms       p50 {_ms(latency['p50'])}  p95 {_ms(latency['p95'])}  "
        f"p99 {_ms(latency['p99'])}",
        f"bursts        sent {summary['bursts_sent']}  heard {summary['bursts_heard']}  "
        f"lost {summary['lost']}  late {summary['late']}",
        f"rejoins       {summary['rejoins']} (participants the server stopped answering, "
        "joined again)",
        f"generator lag p99 {_ms(lag['p99'])} ms  max {_ms(lag['max'])} ms "
        "(this process's event loop; high values inflate the latencies)",
        "",
        f"{'room':<24} {'join ms':>8} {'sent':>5} {'heard':>5} {'lost':>5} {'late':>5} "
        f"{'p50 ms':>8} {'p99 ms':>8}  error",
    ]
    for room in summary["per_room"]:
        lines.append(
            f"{room['room']:<24} {seconds(room['join_s']):>8} {room['bursts_sent']:>5} "
            f"{room['bursts_heard']:>5} {room['lost']:>5} {room['late']:>5} "
            f"{_ms(room['latency_ms']['p50']):>8} {_ms(room['latency_ms']['p99']):>8}  "
            f"{_note(room)}"
        )
    return "\n".join(lines)


def options_from(
    config: Config, rooms: int | None, seconds: float, late_ms: float
) -> BenchOptions:
    """The rooms to load: `--rooms N` names bench-0..N-1, else the config's [[rooms]]."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"--seconds {seconds!r}: expected a number of seconds > 0")
    if not math.isfinite(late_ms) or late_ms <= 0:
        raise ConfigError(f"--late-ms {late_ms!r}: expected a number of milliseconds > 0")
    identities = (
        {f"bench-{index}": config.bot.identity for index in range(rooms)}
        if rooms is not None
        else {room.name: room.bot.identity for room in config.rooms}
    )
    if not identities:
        raise ConfigError("no rooms to load: the config has no [[rooms]] and --rooms is not given")
    return BenchOptions(tuple(identities), seconds, identities, late_ms / 1000)


async def run_bench(config: Config, options: BenchOptions, json_path: Path | None) -> int:
    """Run, print the table, write the JSON; exit 1 if any room did not join or hear the bot."""
    credentials = for_token(config.livekit)
    started = time.perf_counter()
    lags: list[float] = []
    results = await bench(credentials, options, lags)
    summary = report(results, options, lags)
    summary["wall_s"] = round(time.perf_counter() - started, 3)
    print(format_table(summary), flush=True)
    if json_path is not None:
        await anyio.Path(json_path).write_text(
            json.dumps(summary, indent=2) + "\n", encoding="utf-8"
        )
    return 1 if any(result.error for result in results) else 0
