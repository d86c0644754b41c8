"""How long does a caller hear nothing when a room's bot is handed to another process?

    python -m benchmarks.handoff_gap [--trials 20] [--ways replace,remove,mbb] [--json PATH]

Why (issue 23, "no call cut by a deploy"): to roll out a new version without ending
calls, or to restore a dead host's rooms, a room's bot is replaced by a bot of another
process (another host) while the caller talks: a *handoff*. Which way of replacing
leaves the caller the shortest silence, and does it always work? Three ways:

- `replace`: the new bot joins under the old bot's identity; the server disconnects the
  old one (`DUPLICATE_IDENTITY`), and the new one publishes.
- `remove`: break before make. The old bot is removed through the server API
  (`RoomService.RemoveParticipant`), then the new bot joins under the same identity and
  publishes.
- `mbb`: make before break. The new bot joins under another identity and publishes a
  track carrying silence; once the caller is subscribed to it, the old bot leaves, and
  the new bot starts its audio as soon as the server tells it the old one is gone
  (`participant_disconnected`): it needs nobody else to say when.

What runs: one dev-mode livekit-server (`supervisor.livekit_server.server`); two bots, each a
child process of its own with its own rtc SDK (`python -m benchmarks.handoff_gap bot`,
driven by JSON lines on stdin and answering JSON lines on stdout), joining with agent
tokens as the product's bots do (`supervisor.livekit_server.access.agent_token`); the old
one plays a 440 Hz tone, the new one 660 Hz. Both processes are started before the first trial and
serve every trial's room in turn, as a worker process serves many rooms: a handoff's
new bot is a process that is already running, not one starting. The caller is an rtc
SDK participant in this process, subscribed to every audio track; per 10 ms frame of
each track it notes which tone it hears (a windowed single-bin DFT per tone, as
Goertzel's). Each trial is a new room: the caller joins, the old bot joins and is heard
for 200 ms, the handoff starts, and the trial ends 300 ms after the new bot is heard.

What is measured, per trial, by the caller's clock (`time.monotonic`, shared by the
processes): the *gap*, from the end of the last frame with the old tone to the first
frame with the new one (0 when they are contiguous); whether *both* were heard at once
(for at least one whole frame) and for how long; the new tone heard at all within
`HANDOFF_TIMEOUT` (10 s) of the handoff's start (else a failure, with what the new bot
and the server said); the old bot's disconnect reason; and whether the server answers
the new bot's first request after its join (setting its metadata, as a bot does): the
fleet (`supervisor/dispatch/fleet.py`, `_remove_ghost`) once saw a bot that had joined under a
replaced identity get no answer and its track never reach the caller.
Ways are interleaved trial by trial (their order rotating), so a load that changes
during a run weighs on each alike; the load average is sampled through the run.
The livekit-server log and each bot's stderr stay in a temporary folder, printed at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from livekit import api, rtc

from supervisor.livekit_server.access import (
    API_ERRORS,
    Credentials,
    agent_token,
    join_token,
    remove_participant,
)
from supervisor.livekit_server.server import LiveKitServer
from supervisor.process.rtc_shutdown import end_room, release_rtc

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 48_000
FRAME_SECONDS = 0.010
"""The caller judges 10 ms at a time."""
FRAME_SAMPLES = int(SAMPLE_RATE * FRAME_SECONDS)
SEND_FRAME_MS = 20
"""A bot captures 20 ms frames, paced by its clock, as the product's audio out does."""
AMPLITUDE = 0.3
OLD_HZ = 440.0
NEW_HZ = 660.0
TONE_LEVEL = 0.2 * AMPLITUDE * 32767
"""A frame carries a tone when that tone's amplitude is over a fifth of what was sent
(the other tone leaks 2 % into its bin, Opus comfort noise far less)."""
TONE_SHARE = 0.2
"""...and that tone is at least this share of the frame's power (both tones at once
are half each)."""
OLD_HEARD_FRAMES = 20
"""The old bot is heard (200 ms of its tone in a row) before the handoff starts."""
TAIL_FRAMES = 30
"""After the new tone is first heard the trial listens this many of its frames more,
for old frames still coming (an overlap)."""
HANDOFF_TIMEOUT = 10.0
"""No new tone within this many seconds of the handoff's start is a failure."""
SETUP_TIMEOUT = 10.0
JOIN_TIMEOUT = 10.0
API_TIMEOUT = 5.0
CLEANUP_TIMEOUT = 10.0
LOAD_SAMPLE_SECONDS = 5.0
OLD_IDENTITY = "agent-bot"
NEXT_IDENTITY = "agent-bot-next"
WAYS = ("replace", "remove", "mbb")
WAY_TITLES = {
    "replace": "A. replace (same identity, duplicate join)",
    "remove": "B. remove then join (same identity)",
    "mbb": "C. make before break (another identity)",
}


def now() -> float:
    """The clock every process of the run shares (CLOCK_MONOTONIC is system-wide)."""
    return time.monotonic()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# --- the bots: one child process each ----------------------------------------------


def emit(event: str, **fields: Any) -> None:
    """One event line for the harness, stamped with the shared clock."""
    print(json.dumps({"event": event, "t": now(), **fields}), flush=True)


async def pump_tone(source: rtc.AudioSource, frequency: float, unmuted: asyncio.Event) -> None:
    """Capture the tone in real time (silence while muted), its phase continuing."""
    loop = asyncio.get_running_loop()
    samples = SAMPLE_RATE * SEND_FRAME_MS // 1000
    silence = np.zeros(samples, dtype=np.int16)
    next_at = loop.time()
    sent = 0
    while True:
        if unmuted.is_set():
            t = (np.arange(samples) + sent) / SAMPLE_RATE
            data = (AMPLITUDE * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
        else:
            data = silence
        await source.capture_frame(rtc.AudioFrame(data.tobytes(), SAMPLE_RATE, 1, samples))
        sent += samples
        next_at += SEND_FRAME_MS / 1000
        await asyncio.sleep(max(0.0, next_at - loop.time()))


async def ask_server(room: rtc.Room) -> None:
    """One request after the join, as a bot makes them (its metadata): the sign that the
    server goes on answering this connection (`answered`), which the fleet once saw a
    bot joined under a replaced identity lose (`unanswered`)."""
    asked = now()
    try:
        await asyncio.wait_for(room.local_participant.set_metadata("serving"), JOIN_TIMEOUT)
    except Exception as err:  # noqa: BLE001 - the answer is the measurement
        emit("unanswered", error=f"{type(err).__name__}: {err}")
    else:
        emit("answered", ms=_ms(now() - asked))


async def serve_room(credentials: Credentials, order: dict[str, Any], leave: asyncio.Event) -> None:
    """Join `order["room"]`, publish the tone and play it until told to leave or
    disconnected by the server (which sets `leave` too); say every step on stdout."""
    room = rtc.Room()
    disconnected: list[str] = []
    unmuted = asyncio.Event()
    gone_identity: str | None = order.get("unmute_when_gone")
    if not order["muted"]:
        unmuted.set()

    def unmute(cause: str) -> None:
        if not unmuted.is_set():
            unmuted.set()
            emit("unmuted", cause=cause)

    def on_disconnected(reason: rtc.DisconnectReason.ValueType) -> None:
        disconnected.append(rtc.DisconnectReason.Name(reason))
        leave.set()

    def on_participant_disconnected(participant: rtc.RemoteParticipant) -> None:
        if participant.identity == gone_identity:
            unmute("participant_disconnected")

    room.on("disconnected", on_disconnected)
    room.on("participant_disconnected", on_participant_disconnected)
    room.on("reconnecting", lambda: emit("reconnecting"))
    room.on("reconnected", lambda: emit("reconnected"))
    token = agent_token(credentials, order["room"], order["identity"])
    source: rtc.AudioSource | None = None
    pump: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(room.connect(credentials.url, token), JOIN_TIMEOUT)
        emit("connected", sid=room.local_participant.sid)
        if gone_identity is not None and gone_identity not in room.remote_participants:
            unmute("absent at join")
        source = rtc.AudioSource(SAMPLE_RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("tone", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publication = await asyncio.wait_for(
            room.local_participant.publish_track(track, options), JOIN_TIMEOUT
        )
        pump = asyncio.create_task(pump_tone(source, order["frequency"], unmuted))
        emit("published", sid=publication.sid)
        answer = asyncio.create_task(ask_server(room))
        await leave.wait()
        answer.cancel()
        if disconnected:
            emit("disconnected", reason=disconnected[0])
        else:
            emit("leaving")
    except Exception as err:  # noqa: BLE001 - every failure is reported to the harness
        emit("error", error=f"{type(err).__name__}: {err}")
        await leave.wait()
    finally:
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        await end_room(room, *([source] if source is not None else []))
        emit("ended")


async def bot_main() -> None:
    """Serve one room at a time, as the harness orders on stdin."""
    credentials = Credentials(
        os.environ["LIVEKIT_URL"], os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"]
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    serving: asyncio.Task[None] | None = None
    leave = asyncio.Event()
    emit("ready", pid=os.getpid())
    while line := await reader.readline():
        order = json.loads(line)
        if order["cmd"] == "join":
            if serving is not None:
                leave.set()
                await serving
            leave = asyncio.Event()
            serving = asyncio.create_task(serve_room(credentials, order, leave))
        elif order["cmd"] == "leave":
            leave.set()
        elif order["cmd"] == "quit":
            break
    leave.set()
    if serving is not None:
        await serving


# --- the harness's side of a bot ------------------------------------------------------


@attrs.define
class Bot:
    """A bot process, its event history, and a way to wait for an event in it."""

    name: str
    process: asyncio.subprocess.Process
    history: list[dict[str, Any]] = attrs.Factory(list)
    changed: asyncio.Condition = attrs.Factory(asyncio.Condition)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, name: str, server: LiveKitServer, log_dir: Path) -> Bot:
        env = dict(os.environ)
        env.update(
            LIVEKIT_URL=server.url,
            LIVEKIT_API_KEY=server.api_key,
            LIVEKIT_API_SECRET=server.api_secret,
        )
        with (log_dir / f"bot-{name}.log").open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.handoff_gap",
                "bot",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=REPO_ROOT,
            )
        bot = cls(name, process)
        bot.reader = asyncio.create_task(bot._read())
        if await bot.wait_for({"ready"}, 0, 60.0) is None:
            raise RuntimeError(f"bot {name} did not start (see {log_dir})")
        return bot

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            async with self.changed:
                self.history.append(event)
                self.changed.notify_all()
        async with self.changed:
            self.history.append({"event": "exited", "t": now()})
            self.changed.notify_all()

    def mark(self) -> int:
        """Where the events from now on begin."""
        return len(self.history)

    def events(self, since: int) -> list[dict[str, Any]]:
        return self.history[since:]

    async def send(self, **order: Any) -> None:
        """Send an order; a join order is noted in the history (`asked`), so the time
        from it to the bot's track published is read on the same clock."""
        assert self.process.stdin is not None
        if order.get("cmd") == "join":
            self.history.append({"event": "asked", "t": now()})
        self.process.stdin.write(json.dumps(order).encode() + b"\n")
        await self.process.stdin.drain()

    async def wait_for(self, names: set[str], since: int, timeout: float) -> dict[str, Any] | None:
        """The first event named in `names` from index `since` on, or None in `timeout`."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.history[since:] if e["event"] in names), None)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self.changed:
                await self.changed.wait_for(lambda: found() is not None)
        return found()

    async def stop(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.send(cmd="quit")
        try:
            await asyncio.wait_for(self.process.wait(), CLEANUP_TIMEOUT)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


# --- the caller's ear -----------------------------------------------------------------


def _bin(frequency: float) -> np.ndarray:
    n = np.arange(FRAME_SAMPLES)
    return np.hanning(FRAME_SAMPLES) * np.exp(-2j * np.pi * frequency * n / SAMPLE_RATE)


_OLD_BIN = _bin(OLD_HZ)
_NEW_BIN = _bin(NEW_HZ)
_BIN_SCALE = 2.0 / float(np.hanning(FRAME_SAMPLES).sum())


def tones_heard(samples: np.ndarray) -> tuple[bool, bool]:
    """Whether one 10 ms frame carries the old tone, the new one: a tone's amplitude
    over `TONE_LEVEL`, and its power at least `TONE_SHARE` of the frame's (a click, a
    glitch of the jitter buffer, spreads its energy over every frequency: without this
    a click on the old tone's track once passed for a frame of the new tone)."""
    x = samples.astype(np.float64)
    power = float(np.mean(x * x))
    heard = []
    for tone_bin in (_OLD_BIN, _NEW_BIN):
        amplitude = float(abs(x @ tone_bin)) * _BIN_SCALE
        heard.append(amplitude > TONE_LEVEL and amplitude * amplitude / 2 >= TONE_SHARE * power)
    return heard[0], heard[1]


@attrs.frozen
class Heard:
    t: float
    """When the frame ended (its arrival)."""
    track: str
    identity: str
    old: bool
    new: bool


@attrs.define
class Ear:
    """Every 10 ms frame of every audio track the caller is subscribed to, judged."""

    frames: list[Heard] = attrs.Factory(list)
    tracks: dict[str, str] = attrs.Factory(dict)
    """Track sid -> its participant's identity, in the order subscribed."""
    changed: asyncio.Condition = attrs.Factory(asyncio.Condition)
    tasks: set[asyncio.Task[None]] = attrs.Factory(set)
    streams: list[rtc.AudioStream] = attrs.Factory(list)

    def attach(self, room: rtc.Room) -> None:
        def on_subscribed(
            track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
        ) -> None:
            if isinstance(track, rtc.RemoteAudioTrack):
                task = asyncio.create_task(self._listen(track, participant.identity))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

        room.on("track_subscribed", on_subscribed)

    async def _listen(self, track: rtc.RemoteAudioTrack, identity: str) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=10)
        self.streams.append(stream)
        async with self.changed:
            self.tracks[track.sid] = identity
            self.changed.notify_all()
        async for event in stream:
            arrived = now()
            data = np.frombuffer(event.frame.data, dtype=np.int16)
            count = data.size // FRAME_SAMPLES
            heard = []
            for i in range(count):
                old, new = tones_heard(data[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
                t = arrived - (count - 1 - i) * FRAME_SECONDS
                heard.append(Heard(t, track.sid, identity, old, new))
            async with self.changed:
                self.frames.extend(heard)
                self.changed.notify_all()

    async def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self.changed:
                await self.changed.wait_for(condition)
        return condition()

    def run_of(self, tone: str, length: int, since: float = 0.0) -> bool:
        """Whether `length` frames in a row of one track carried `tone` (since `since`)."""
        runs: dict[str, int] = {}
        for frame in self.frames:
            if frame.t < since:
                continue
            runs[frame.track] = runs.get(frame.track, 0) + 1 if getattr(frame, tone) else 0
            if runs[frame.track] >= length:
                return True
        return False

    def count(self, tone: str, since: float = 0.0) -> int:
        return sum(1 for f in self.frames if f.t >= since and getattr(f, tone))

    def frames_of(self, identity: str, after: float) -> int:
        return sum(1 for f in self.frames if f.identity == identity and f.t >= after)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for stream in self.streams:
            with contextlib.suppress(Exception):
                await stream.aclose()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# --- one trial ------------------------------------------------------------------------


@attrs.define
class Trial:
    way: str
    index: int
    room: str
    ok: bool = False
    started: float | None = None
    """When the handoff started (the shared clock; for `mbb`, the new bot told to join)."""
    setup_failed: str | None = None
    failure: str | None = None
    """The handoff failed: for `replace` and `remove` the caller is left without a bot;
    for `mbb` a failure before the break (`make: ...`) leaves the old bot talking."""
    gap_ms: float | None = None
    overlap_ms: float | None = None
    to_new_ms: float | None = None
    """From the handoff's start (for `mbb`: the old bot told to leave) to the new tone."""
    make_ms: float | None = None
    """`mbb` only: from the new bot told to join to the caller receiving its track."""
    new_published_ms: float | None = None
    """From the new bot told to join to its track published (its own word)."""
    remove_ms: float | None = None
    """`remove` only: how long the server took to answer the removal."""
    new_answer_ms: float | None = None
    """How long the server took to answer the new bot's request after its join (its
    metadata); None: never answered."""
    events: dict[str, list[list[Any]]] = attrs.Factory(dict)
    """What each bot said: [event, ms from the handoff's start, details...]."""
    old_reason: str | None = None
    timeline: list[tuple[float, int, str]] = attrs.Factory(list)
    """The caller's frames near the switch: (ms from the handoff's start, track in
    the order subscribed, "old", "new", "both" or "" for neither)."""
    notes: list[str] = attrs.Factory(list)
    participants_at_failure: list[str] | None = None


async def _room_listing(server_api: api.LiveKitAPI, room: str) -> list[str]:
    try:
        async with asyncio.timeout(API_TIMEOUT):
            listing = await server_api.room.list_participants(
                api.ListParticipantsRequest(room=room)
            )
    except Exception as err:  # noqa: BLE001 - a diagnosis only
        return [f"(listing failed: {err})"]
    return [
        f"{p.identity} sid={p.sid} state={api.ParticipantInfo.State.Name(p.state)} "
        f"tracks={len(p.tracks)}"
        for p in listing.participants
    ]


async def run_trial(
    way: str,
    index: int,
    run_id: str,
    server: LiveKitServer,
    server_api: api.LiveKitAPI,
    old: Bot,
    new: Bot,
) -> Trial:
    """One trial in a room of its own; whatever goes wrong is the trial's, not the run's."""
    trial = Trial(way, index, f"handoff-{run_id}-{index:03d}-{way}")
    caller = rtc.Room()
    ear = Ear()
    ear.attach(caller)
    old_mark, new_mark = old.mark(), new.mark()
    try:
        await _handoff(trial, server, server_api, old, new, old_mark, caller, ear)
    except Exception as err:  # noqa: BLE001 - one trial's trouble is reported, the run goes on
        said = f"{type(err).__name__}: {err}"
        if trial.started is None:
            trial.setup_failed = said
        else:
            trial.failure = said
    finally:
        await _finish(trial, way, old, new, old_mark, new_mark, ear, caller)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(API_TIMEOUT):
                await server_api.room.delete_room(api.DeleteRoomRequest(room=trial.room))
    return trial


async def _handoff(
    trial: Trial,
    server: LiveKitServer,
    server_api: api.LiveKitAPI,
    old: Bot,
    new: Bot,
    old_mark: int,
    caller: rtc.Room,
    ear: Ear,
) -> None:
    """The caller and the old bot in the room, then the handoff the trial's way; what
    the caller heard, into `trial`."""
    way, room_name = trial.way, trial.room
    credentials = Credentials(server.url, server.api_key, server.api_secret)
    new_identity = NEXT_IDENTITY if way == "mbb" else OLD_IDENTITY
    await asyncio.wait_for(
        caller.connect(server.url, join_token(credentials, room_name, "caller")),
        JOIN_TIMEOUT,
    )
    await old.send(cmd="join", room=room_name, identity=OLD_IDENTITY, frequency=OLD_HZ, muted=False)
    if await old.wait_for({"published"}, old_mark, SETUP_TIMEOUT) is None:
        trial.setup_failed = f"old bot not published: {old.events(old_mark)}"
        return
    if not await ear.wait_until(lambda: ear.run_of("old", OLD_HEARD_FRAMES), SETUP_TIMEOUT):
        trial.setup_failed = "old tone not heard"
        return

    new_order = dict(
        cmd="join", room=room_name, identity=new_identity, frequency=NEW_HZ, muted=False
    )
    if way == "replace":
        start = trial.started = now()
        await new.send(**new_order)
    elif way == "remove":
        start = trial.started = now()
        try:
            await remove_participant(server_api, room_name, OLD_IDENTITY, API_TIMEOUT)
        except API_ERRORS as err:
            trial.failure = f"the removal failed: {type(err).__name__}: {err}"
            return
        trial.remove_ms = _ms(now() - start)
        await new.send(**new_order)
    else:
        make = trial.started = now()
        await new.send(**(new_order | {"muted": True, "unmute_when_gone": OLD_IDENTITY}))

        def new_track_flows() -> bool:
            return ear.frames_of(NEXT_IDENTITY, make) >= 5

        if not await ear.wait_until(new_track_flows, HANDOFF_TIMEOUT):
            trial.failure = "make: the caller got no audio track of the new bot"
            trial.participants_at_failure = await _room_listing(server_api, room_name)
            return
        trial.make_ms = _ms(now() - make)
        early = [f for f in ear.frames if f.new and f.t >= make]
        if early:
            trial.notes.append(
                f"new tone heard before the break: {len(early)} frames from "
                f"{_ms(early[0].t - make)} ms after the join order, from {early[0].identity}"
            )
        start = now()
        await old.send(cmd="leave")

    def new_heard() -> bool:
        return ear.run_of("new", 3, start)

    if not await ear.wait_until(new_heard, HANDOFF_TIMEOUT):
        trial.failure = "no new tone within 10 s"
        trial.participants_at_failure = await _room_listing(server_api, room_name)
        return
    first_new = min(f.t for f in ear.frames if f.new and f.t >= start)
    await ear.wait_until(lambda: ear.count("new", start) >= TAIL_FRAMES, HANDOFF_TIMEOUT)
    old_frames = [f.t for f in ear.frames if f.old]
    last_old = max(old_frames)
    trial.ok = True
    trial.gap_ms = _ms(max(0.0, first_new - last_old - FRAME_SECONDS))
    trial.overlap_ms = _ms(max(0.0, last_old - first_new + FRAME_SECONDS))
    trial.to_new_ms = _ms(first_new - start)
    trial.timeline = timeline(ear, start, min(last_old, first_new) - 0.05, first_new + 0.1)


def timeline(ear: Ear, start: float, begin: float, end: float) -> list[tuple[float, int, str]]:
    order = list(ear.tracks)
    names = {(True, False): "old", (False, True): "new", (True, True): "both"}
    return [
        (_ms(f.t - start), order.index(f.track), names.get((f.old, f.new), ""))
        for f in ear.frames
        if begin <= f.t <= end
    ]


async def _finish(
    trial: Trial,
    way: str,
    old: Bot,
    new: Bot,
    old_mark: int,
    new_mark: int,
    ear: Ear,
    caller: rtc.Room,
) -> None:
    """Both bots out of the room, the caller too; what the bots said, kept. A request
    of the new bot not answered yet is waited for first (its own timeout ends it)."""
    published = await new.wait_for({"published"}, new_mark, 0)
    if published is not None:
        answer = await new.wait_for({"answered", "unanswered"}, new_mark, 0)
        if answer is None:
            waited = now()
            answer = await new.wait_for({"answered", "unanswered"}, new_mark, JOIN_TIMEOUT + 1)
            trial.notes.append(
                f"new bot: its request not answered by the trial's end; "
                f"{answer['event'] if answer else 'no word'} {_ms(now() - waited)} ms later"
            )
        if answer is not None and answer["event"] == "answered":
            trial.new_answer_ms = answer["ms"]
    for bot in (old, new):
        await bot.send(cmd="leave")
    for bot, mark in ((old, old_mark), (new, new_mark)):
        if bot.mark() > mark and await bot.wait_for({"ended"}, mark, CLEANUP_TIMEOUT) is None:
            trial.notes.append(f"{bot.name} bot did not end its room")
    old_events = old.events(old_mark)
    new_events = new.events(new_mark)
    reasons = [e.get("reason") for e in old_events if e["event"] == "disconnected"]
    trial.old_reason = reasons[0] if reasons else None
    if any(e["event"] == "leaving" for e in old_events) and trial.old_reason is None:
        trial.old_reason = "left"
    for name, events in (("old", old_events), ("new", new_events)):
        for event in events:
            if event["event"] in ("error", "unanswered", "reconnecting", "reconnected"):
                trial.notes.append(f"{name} bot: {event['event']} {event.get('error', '')}")
    origin = trial.started or 0.0
    trial.events = {
        name: [
            [e["event"], _ms(e["t"] - origin)]
            + [f"{k}={v}" for k, v in e.items() if k not in ("event", "t")]
            for e in events
        ]
        for name, events in (("old", old_events), ("new", new_events))
    }
    asked = next((e["t"] for e in new_events if e["event"] == "asked"), None)
    published = next((e["t"] for e in new_events if e["event"] == "published"), None)
    if asked is not None and published is not None:
        trial.new_published_ms = _ms(published - asked)
    if trial.failure is not None:
        trial.notes.append(f"new bot said: {[e['event'] for e in new_events]}")
        trial.notes.append(f"caller's tracks: {list(ear.tracks.values())}")
    expected = {"replace": "DUPLICATE_IDENTITY", "remove": "PARTICIPANT_REMOVED", "mbb": "left"}
    if trial.ok and trial.old_reason != expected[way]:
        trial.notes.append(f"old bot ended as {trial.old_reason}, not {expected[way]}")
    await ear.close()
    await end_room(caller)


# --- the run ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(trials: Sequence[Trial], way: str) -> dict[str, Any]:
    mine = [t for t in trials if t.way == way and t.setup_failed is None]
    ok = [t for t in mine if t.ok]
    gaps = [t.gap_ms for t in ok if t.gap_ms is not None]
    overlaps = [t.overlap_ms for t in ok if t.overlap_ms is not None]
    to_new = [t.to_new_ms for t in ok if t.to_new_ms is not None]
    return {
        "trials": len(mine),
        "setup_failed": sum(1 for t in trials if t.way == way and t.setup_failed is not None),
        "failures": len(mine) - len(ok),
        "gap_p50_ms": percentile(gaps, 50),
        "gap_p95_ms": percentile(gaps, 95),
        "gap_max_ms": max(gaps) if gaps else None,
        "overlap_trials": sum(1 for o in overlaps if o >= FRAME_SECONDS * 1000),
        "overlap_max_ms": max(overlaps) if overlaps else None,
        "to_new_p50_ms": percentile(to_new, 50),
        "to_new_max_ms": max(to_new) if to_new else None,
        "new_published_p50_ms": percentile(
            [t.new_published_ms for t in ok if t.new_published_ms is not None], 50
        ),
        "new_unanswered": sum(1 for t in mine if t.new_answer_ms is None),
        "new_answer_max_ms": max(
            (t.new_answer_ms for t in mine if t.new_answer_ms is not None), default=None
        ),
        "old_reasons": dict(Counter(t.old_reason or "none" for t in mine)),
    }


def _cell(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0f}"


def table(summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| way | trials | failures | gap p50 ms | gap p95 ms | gap max ms "
        "| both heard (trials >= 10 ms, max ms) | start to new tone p50 / max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for way, s in summary.items():
        lines.append(
            f"| {WAY_TITLES[way]} | {s['trials']} | {s['failures']} | {_cell(s['gap_p50_ms'])} "
            f"| {_cell(s['gap_p95_ms'])} | {_cell(s['gap_max_ms'])} "
            f"| {s['overlap_trials']}, {_cell(s['overlap_max_ms'])} "
            f"| {_cell(s['to_new_p50_ms'])} / {_cell(s['to_new_max_ms'])} |"
        )
    return "\n".join(lines)


async def sample_load(samples: list[float]) -> None:
    while True:
        samples.append(os.getloadavg()[0])
        await asyncio.sleep(LOAD_SAMPLE_SECONDS)


async def harness(args: argparse.Namespace) -> dict[str, Any]:
    """Run the trials, print the table and what was odd; return the whole report."""
    ways = tuple(args.ways)
    log_dir = Path(tempfile.mkdtemp(prefix="handoff-gap-"))
    server = LiveKitServer(log_path=log_dir / "livekit-server.log")
    server.start()
    load: list[float] = []
    load_task = asyncio.create_task(sample_load(load))
    run_id = uuid.uuid4().hex[:6]
    started = datetime.now(UTC)
    trials: list[Trial] = []
    bots: list[Bot] = []
    try:
        old = await Bot.start("old", server, log_dir)
        bots.append(old)
        new = await Bot.start("new", server, log_dir)
        bots.append(new)
        async with api.LiveKitAPI(server.url, server.api_key, server.api_secret) as server_api:
            for index in range(args.trials):
                shift = index % len(ways)
                for way in ways[shift:] + ways[:shift]:
                    trial = await run_trial(way, index, run_id, server, server_api, old, new)
                    trials.append(trial)
                    _progress(trial)
    finally:
        load_task.cancel()
        for bot in bots:
            await bot.stop()
        server.stop()
    load.append(os.getloadavg()[0])
    summary = {way: summarize(trials, way) for way in ways}
    print()
    print(
        f"{started:%Y-%m-%d %H:%M} UTC, {args.trials} trials a way, load average (1 min) "
        f"mean {np.mean(load):.2f}, max {max(load):.2f}, {os.cpu_count()} cores"
    )
    print()
    print(table(summary))
    print()
    for way, s in summary.items():
        reasons = ", ".join(f"{r} {n}" for r, n in s["old_reasons"].items())
        print(
            f"- {way}: the old bot ended as {reasons}; the new bot's request unanswered "
            f"{s['new_unanswered']}, answered within {_cell(s['new_answer_max_ms'])} ms at "
            f"most; the new track published {_cell(s['new_published_p50_ms'])}"
            " ms (p50) after its join order"
        )
    odd = [t for t in trials if t.notes or t.failure or t.setup_failed]
    if odd:
        print()
        for t in odd:
            said = t.failure or t.setup_failed or ""
            print(f"- {t.way} #{t.index} {said} {'; '.join(t.notes)}".rstrip())
            if t.participants_at_failure is not None:
                print(f"  server lists: {t.participants_at_failure}")
    print(f"\nlogs: {log_dir}")
    return {
        "started": started.isoformat(),
        "trials_per_way": args.trials,
        "load": {"samples": load, "mean": float(np.mean(load)), "max": max(load)},
        "cores": os.cpu_count(),
        "summary": summary,
        "trials": [attrs.asdict(t) for t in trials],
        "logs": str(log_dir),
    }


def _progress(trial: Trial) -> None:
    if trial.ok:
        said = f"gap {trial.gap_ms} ms, overlap {trial.overlap_ms} ms, to new {trial.to_new_ms} ms"
    else:
        said = trial.failure or f"setup: {trial.setup_failed}"
    print(f"{trial.way:8} #{trial.index:02d} {said}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("role", nargs="?", choices=["harness", "bot"], default="harness")
    parser.add_argument("--trials", type=int, default=20, help="trials per way")
    parser.add_argument(
        "--ways",
        type=lambda s: [w for w in s.split(",") if w],
        default=list(WAYS),
        help="comma-separated, of " + ", ".join(WAYS),
    )
    parser.add_argument("--json", help="write every trial and the summary here")
    args = parser.parse_args(argv)
    if any(way not in WAYS for way in args.ways):
        parser.error(f"--ways takes {', '.join(WAYS)}")
    try:
        if args.role == "bot":
            asyncio.run(bot_main())
            return 0
        report = asyncio.run(harness(args))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        return 0
    finally:
        release_rtc()


if __name__ == "__main__":
    sys.exit(main())
