"""What a participant hears of the bot's echo, frame by frame: when it started, how long
it went silent, and a participant that plays a tone and records the echo.

Shared by the `supervisor run` tests and the watchdog tests (the other worker's room
must keep echoing while one worker is stalled).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator

import anyio
import attrs
import numpy as np
from livekit import rtc

from tests.helpers.participants import (
    SAMPLE_RATE,
    ServerCredentials,
    join,
    longest_silent_run,
    publishing_tone,
    rms,
    subscribed_audio_track,
)

BOT = "bot"
FRAME_MS = 20
ONSET_RMS = 1000.0
"""The echo has started at the first frame above this."""
SETTLE_FRAMES = 5
"""Frames skipped after the onset before judging: Opus and the jitter buffer ramp up."""


@attrs.define
class Echo:
    """The bot's audio as one participant receives it, in 20 ms frames since subscribing."""

    frames: list[np.ndarray] = attrs.field(factory=list)
    levels: list[float] = attrs.field(factory=list)
    """Each frame's RMS."""
    arrivals: list[float] = attrs.field(factory=list)
    """`time.monotonic()` at each frame's arrival."""
    onset: int | None = None
    """The index of the echo's first frame, once it has started."""
    arrived: asyncio.Event = attrs.field(factory=asyncio.Event)

    def add(self, frame: np.ndarray) -> None:
        level = rms(frame)
        if self.onset is None and level > ONSET_RMS:
            self.onset = len(self.frames)
        self.frames.append(frame)
        self.levels.append(level)
        self.arrivals.append(time.monotonic())
        self.arrived.set()

    async def heard(self, seconds: float, timeout: float = 30.0) -> list[np.ndarray]:
        """The frames of `seconds` of the echo, from shortly after it starts."""
        needed = round(seconds * 1000 / FRAME_MS)
        with anyio.move_on_after(timeout):
            while self.onset is None or len(self.frames) < self.onset + SETTLE_FRAMES + needed:
                self.arrived.clear()
                await self.arrived.wait()
            begin = self.onset + SETTLE_FRAMES
            return self.frames[begin : begin + needed]
        raise AssertionError(
            f"no {seconds} s of echo within {timeout} s ({len(self.frames)} frames received; "
            f"last levels {[round(level) for level in self.levels[-50:]]})"
        )

    def longest_silence_ms(self) -> int:
        """The longest silence since the echo started until now, in ms: a run of silent
        frames, or a stretch with no frames at all (the track gone, the stream stalled)."""
        assert self.onset is not None, "the echo never started"
        longest = longest_silent_run(self.levels, self.onset)
        times = [*self.arrivals[self.onset :], time.monotonic()]
        stalled = max(later - earlier for earlier, later in itertools.pairwise(times))
        return max(longest * FRAME_MS, round(stalled * 1000))

    def since_onset_ms(self) -> int:
        if self.onset is None:
            return 0
        return round((time.monotonic() - self.arrivals[self.onset]) * 1000)


@attrs.frozen
class Talker:
    """A participant playing a tone, and the echo it hears."""

    room: rtc.Room
    echo: Echo


@contextlib.asynccontextmanager
async def talking(server: ServerCredentials, room: str, frequency: float) -> AsyncIterator[Talker]:
    """A participant in `room` playing a tone and recording what the bot sends back."""
    async with (
        join(server, room, "alice", timeout=30) as client,
        publishing_tone(client, frequency),
    ):
        track = await subscribed_audio_track(client, BOT, timeout=30)
        async with recording(track) as echo:
            yield Talker(client, echo)


@contextlib.asynccontextmanager
async def recording(track: rtc.Track) -> AsyncIterator[Echo]:
    """Everything `track` plays from now on, in 20 ms frames."""
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=FRAME_MS)
    echo = Echo()

    async def record() -> None:
        async for event in stream:
            echo.add(np.frombuffer(event.frame.data, dtype=np.int16).copy())

    recorder = asyncio.create_task(record())
    try:
        yield echo
    finally:
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
        await stream.aclose()
