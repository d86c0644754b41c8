"""The callers of the conversations benchmark, in a process of their own: one rtc SDK
participant per room, each holding a spoken conversation with the bot there.

    python -m benchmarks.callers --rooms a,b,c --out PATH [--seed 1] [--warmup 10]
                                 [--window 30] [--deadline 10]

`benchmarks/conversations.py` starts it (credentials in LIVEKIT_URL, LIVEKIT_API_KEY,
LIVEKIT_API_SECRET, never on the command line) and reads its lines on stdout:
`room NAME` once a caller's joining has created its room (the pipecat peer's runner
is told then, as a session request would tell it), `ALL_TALKING` once every caller
has the bot's audio (or gave up on it), then `WINDOW_OPEN` after the warm-up and
`WINDOW_CLOSED` after the window: the harness measures the bot between the two.

Each caller publishes a microphone that sends real-time frames all along (silence
between utterances, as a real one does) and listens to the bot. A turn: speak an
utterance of the corpus (seeded per caller, so every system hears the same ones in
the same order), wait for the bot's first audio above the noise floor (the
voice-to-voice latency, from the utterance's last sample leaving the microphone's
queue), wait for the reply to end (the bot quiet for `REPLY_QUIET` s), pause 1-2 s,
speak the next. A turn with no bot audio within `--deadline` s is missed; one where
the bot spoke while the caller still did cut the caller off. Turns whose speech ended
inside the window count; once it closes no turn starts, the last ones finish, every
caller leaves, and the turns go to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import numpy as np
from livekit import rtc

from actors.room import narrow_room_events
from benchmarks.baseline import credentials_from_environment
from benchmarks.corpus import SAMPLE_RATE, Utterance, corpus
from benchmarks.dispatch import DISPATCH_TIMEOUT, agent_identity
from supervisor.bench import BOT_TRACK_TIMEOUT, JOIN_TIMEOUT, _measure_lag, bot_track, percentile
from supervisor.livekit_server.access import Credentials, join_token
from supervisor.process.rtc_shutdown import Closable, end_room, release_rtc

IDENTITY = "caller"
ROOM_CREATED = "room"
ALL_TALKING = "ALL_TALKING"
WINDOW_OPEN = "WINDOW_OPEN"
WINDOW_CLOSED = "WINDOW_CLOSED"
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
RECEIVE_FRAME_MS = 10
"""The bot's audio in 10 ms frames: the latency's resolution."""
NOISE_FLOOR_RMS = 300.0
"""A received frame louder than this (int16 RMS, about -40 dBFS) is the bot speaking:
espeak-ng's voiced sounds are ten times that, Opus's silence far below."""
REPLY_QUIET = 1.0
"""The bot quiet this long: its reply is over (espeak-ng pauses at most a few hundred
milliseconds between a reply's phrases)."""
PAUSE = (1.0, 2.0)
"""Seconds the caller waits after a reply before speaking again (uniform, seeded)."""


@attrs.frozen
class CallerOptions:
    rooms: tuple[str, ...]
    seed: int
    warmup: float
    """Seconds from every caller talking to the window (the bots' first turns settle)."""
    window: float
    deadline: float = 10.0
    """Seconds after the caller's speech with no bot audio: the reply is missed."""


@attrs.define
class Turn:
    utterance: int
    """Its index in the corpus."""
    spoke_at: float
    ended_at: float
    """When its first and last samples left the microphone's queue (monotonic clock)."""
    cut_off: bool = False
    """The bot's audio was heard while the caller still spoke."""
    reply_at: float | None = None
    """The first bot audio above the noise floor after `ended_at`; None: missed."""

    @property
    def latency(self) -> float | None:
        return None if self.reply_at is None else self.reply_at - self.ended_at


@attrs.define
class CallerResult:
    room: str
    bot_track_s: float | None = None
    """From connected to subscribed to the bot's audio."""
    turns: list[Turn] = attrs.field(factory=list)
    error: str | None = None


class Microphone:
    """Real-time frames into an audio source, silence unless an utterance is being said."""

    def __init__(self, source: rtc.AudioSource) -> None:
        self._source = source
        self._speech: np.ndarray | None = None
        self._at = 0
        self._started: float | None = None
        self._said = anyio.Event()
        self._ended: float | None = None

    async def say(self, samples: np.ndarray) -> tuple[float, float]:
        """Speak `samples` on the next frames; when its first and last sample left
        the source's queue (the send time of a burst in `supervisor.bench`)."""
        self._speech, self._at, self._started, self._ended = samples, 0, None, None
        self._said = anyio.Event()
        await self._said.wait()
        assert self._started is not None
        assert self._ended is not None
        return self._started, self._ended

    async def run(self) -> None:
        """Send a frame every `FRAME_MS`, against the clock; after a stall the schedule
        restarts from now rather than rushing frames into the queue (as `send_bursts`)."""
        silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        frame_seconds = FRAME_MS / 1000
        next_at = anyio.current_time()
        while True:
            data = silence
            speech = self._speech
            if speech is not None:
                if self._started is None:
                    self._started = anyio.current_time() + self._source.queued_duration
                data = speech[self._at : self._at + FRAME_SAMPLES]
                self._at += FRAME_SAMPLES
                if len(data) < FRAME_SAMPLES:
                    data = np.concatenate([data, silence[len(data) :]])
            await self._source.capture_frame(
                rtc.AudioFrame(data.tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)
            )
            if speech is not None and self._at >= len(speech):
                self._ended = anyio.current_time() + self._source.queued_duration
                self._speech = None
                self._said.set()
            next_at = max(next_at + frame_seconds, anyio.current_time() - frame_seconds)
            await anyio.sleep(max(0.0, next_at - anyio.current_time()))


class Ear:
    """The bot's audio as the caller hears it: when it was last above the noise floor,
    and the first time it was after a given moment."""

    def __init__(self) -> None:
        self.last_loud = -math.inf
        self._after = math.inf
        self._first: float | None = None
        self._heard = anyio.Event()

    def watch(self, after: float) -> None:
        """Look for the first loud frame after `after` (see `first`)."""
        self._after, self._first, self._heard = after, None, anyio.Event()

    async def first(self) -> float:
        """The first loud frame after the `watch` time, once there is one."""
        await self._heard.wait()
        assert self._first is not None
        return self._first

    async def quiet(self, seconds: float) -> None:
        """Until the bot has been quiet for `seconds`."""
        # a deadline each loud frame moves on: sleep to it, then see if it moved
        while (left := self.last_loud + seconds - anyio.current_time()) > 0:  # noqa: ASYNC110
            await anyio.sleep(left)

    async def listen(self, stream: rtc.AudioStream) -> None:
        async for event in stream:
            samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
            if samples.size and math.sqrt(float(np.mean(samples**2))) > NOISE_FLOOR_RMS:
                now = anyio.current_time()
                self.last_loud = now
                if self._first is None and now > self._after:
                    self._first = now
                    self._heard.set()


@attrs.define
class Schedule:
    """When every caller talks, and the window the harness measures, for all callers."""

    rooms: int
    settled: set[str] = attrs.field(factory=set)
    all_talking: anyio.Event = attrs.field(factory=anyio.Event)
    opened: float | None = None
    closed: float | None = None

    def settle(self, room: str) -> None:
        """`room` talks, or never will (its bot never came)."""
        self.settled.add(room)
        if len(self.settled) >= self.rooms and not self.all_talking.is_set():
            say(ALL_TALKING)
            self.all_talking.set()

    async def run(self, options: CallerOptions) -> None:
        await self.all_talking.wait()
        await anyio.sleep(options.warmup)
        self.opened = anyio.current_time()
        say(WINDOW_OPEN)
        await anyio.sleep(options.window)
        self.closed = anyio.current_time()
        say(WINDOW_CLOSED)


def say(line: str) -> None:
    """One line for the harness, on stdout."""
    print(line, flush=True)


async def converse(
    credentials: Credentials,
    index: int,
    utterances: Sequence[Utterance],
    options: CallerOptions,
    schedule: Schedule,
    result: CallerResult,
) -> None:
    """One caller's conversation, recorded in `result`; never raises for its own room's
    failure (it is recorded), so one room does not end the run."""
    room = rtc.Room()
    media: list[Closable] = []
    try:
        with anyio.fail_after(JOIN_TIMEOUT):
            await room.connect(credentials.url, join_token(credentials, result.room, IDENTITY))
        say(f"{ROOM_CREATED} {result.room}")
        narrow_room_events(room)  # not woken by the other callers' capture callbacks
        joined = anyio.current_time()
        source = rtc.AudioSource(SAMPLE_RATE, 1)
        media.append(source)
        track = rtc.LocalAudioTrack.create_audio_track("caller-mic", source)
        publish = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(track, publish)
        microphone = Microphone(source)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(microphone.run)
            with anyio.fail_after(DISPATCH_TIMEOUT + BOT_TRACK_TIMEOUT):
                bot = await agent_identity(room, any_kind=True)
                heard = await bot_track(room, bot)
            result.bot_track_s = anyio.current_time() - joined
            stream = rtc.AudioStream(
                heard, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=RECEIVE_FRAME_MS
            )
            media.insert(0, stream)
            ear = Ear()
            tasks.start_soon(ear.listen, stream)
            schedule.settle(result.room)
            await _turns(index, utterances, options, schedule, microphone, ear, result)
            tasks.cancel_scope.cancel()
    except Exception as err:  # noqa: BLE001 - a room's failure is a measurement, not a crash
        while isinstance(err, ExceptionGroup) and len(err.exceptions) == 1:
            err = err.exceptions[0]  # the task group's one failure says what happened
        result.error = f"{type(err).__name__}: {err}"
    finally:
        schedule.settle(result.room)
        await end_room(room, *media)


async def _turns(
    index: int,
    utterances: Sequence[Utterance],
    options: CallerOptions,
    schedule: Schedule,
    microphone: Microphone,
    ear: Ear,
    result: CallerResult,
) -> None:
    """Turn after turn until the window has closed."""
    chooser = random.Random(options.seed * 100_003 + index)
    while schedule.closed is None:
        chosen = chooser.randrange(len(utterances))
        spoke_at, ended_at = await microphone.say(utterances[chosen].samples)
        if schedule.closed is not None and ended_at > schedule.closed:
            return  # a turn after the window counts for nothing: no wait for its reply
        turn = Turn(chosen, spoke_at, ended_at, cut_off=ear.last_loud >= spoke_at)
        result.turns.append(turn)
        ear.watch(ended_at)
        with anyio.move_on_after(ended_at + options.deadline - anyio.current_time()):
            turn.reply_at = await ear.first()
        await ear.quiet(REPLY_QUIET)
        if schedule.closed is None:
            await anyio.sleep(chooser.uniform(*PAUSE))


async def call_all(options: CallerOptions) -> dict[str, Any]:
    """Every caller at once; what they measured, as `--out` holds it."""
    credentials = credentials_from_environment()
    utterances = corpus()
    schedule = Schedule(len(options.rooms))
    results = [CallerResult(room) for room in options.rooms]
    lags: list[float] = []
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_measure_lag, lags)
        async with anyio.create_task_group() as calls:
            calls.start_soon(schedule.run, options)
            for index, result in enumerate(results):
                calls.start_soon(converse, credentials, index, utterances, options, schedule,
                                 result)  # fmt: skip
        tasks.cancel_scope.cancel()
    return {
        "window": [schedule.opened, schedule.closed],
        "lag_p99_ms": percentile([lag * 1000 for lag in lags], 99),
        "callers": [attrs.asdict(result) for result in results],
    }


def summary(out: dict[str, Any]) -> dict[str, Any]:
    """The figures of the turns whose speech ended inside the window: voice-to-voice
    latency p50/p95/p99 (of the turns answered without cutting the caller off), turns,
    replies missed, replies that cut the caller off, and the rooms that failed."""
    opened, closed = out["window"]
    turns = [
        turn for caller in out["callers"] for turn in caller["turns"]
        if opened is not None and closed is not None and opened <= turn["ended_at"] <= closed
    ]  # fmt: skip
    latencies = [
        (turn["reply_at"] - turn["ended_at"]) * 1000
        for turn in turns if turn["reply_at"] is not None and not turn["cut_off"]
    ]  # fmt: skip
    return {
        "turns": len(turns),
        "v2v_p50_ms": percentile(latencies, 50),
        "v2v_p95_ms": percentile(latencies, 95),
        "v2v_p99_ms": percentile(latencies, 99),
        "missed": sum(turn["reply_at"] is None for turn in turns),
        "cut_off": sum(turn["cut_off"] for turn in turns),
        "caller_errors": sorted({c["error"] for c in out["callers"] if c["error"]}),
        "callers_lag_p99_ms": out["lag_p99_ms"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", required=True, help="comma-separated room names")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--deadline", type=float, default=10.0)
    args = parser.parse_args(argv)
    options = CallerOptions(
        tuple(args.rooms.split(",")), args.seed, args.warmup, args.window, args.deadline
    )
    try:
        out = anyio.run(call_all, options, backend="asyncio")
    finally:
        release_rtc()  # the callers' SDK runtime, before the interpreter's exit
    args.out.write_text(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
