"""The echo bot through the room actor tree and the real server: audio in, audio out."""

from __future__ import annotations

import asyncio
import time

import anyio
import numpy as np
import pytest
from livekit import api, rtc
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from actors.room import RoomTransport
from actors.room.audio_out import TRACK_NAME
from actors.room.connection import ROOM_IDLE_SECONDS
from actors.room.timing import BucketCounts
from supervisor.bots import room_pipeline
from supervisor.bots.echo import EchoProcessor
from supervisor.bots.echo import create_bot as echo_bot
from supervisor.livekit_server.server import LiveKitServer
from tests.helpers.participants import (
    SAMPLE_RATE,
    SILENCE_RMS,
    collect_audio,
    dominant_frequency,
    is_tone,
    join,
    listen_for_tone,
    publishing_tone,
    rms,
    sine,
    subscribed_audio_track,
)
from tests.helpers.probes import wait_until
from tests.helpers.rooms import running_room

pytestmark = pytest.mark.anyio


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("rate_in", "rate_out"), [(16000, 24000), (48000, 48000), (8000, 16000)]
)
async def test_participant_hears_its_own_tone_back(
    livekit_server: LiveKitServer, rate_in: int, rate_out: int
) -> None:
    room = f"echo-{rate_in}-{rate_out}"
    async with (
        running_room(
            livekit_server, room, audio_in_sample_rate=rate_in, audio_out_sample_rate=rate_out
        ) as tree,
        join(livekit_server, room, "alice") as alice,
        publishing_tone(alice, 440.0),
    ):
        track = await subscribed_audio_track(alice, "bot")
        heard = await listen_for_tone(track, 440.0)
    assert rms(heard) > SILENCE_RMS, f"alice heard silence (rms {rms(heard):.1f})"
    assert abs(dominant_frequency(heard) - 440.0) < 10.0
    assert tree.stats.audio_frames_in > 0
    assert tree.stats.audio_frames_out > 0


class InputDurations(FrameProcessor):
    """Notes how much audio each input frame the bot gets carries, in ms."""

    def __init__(self) -> None:
        super().__init__(enable_direct_mode=True)
        self.seen: set[float] = set()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.seen.add(1000 * len(frame.audio) / (2 * frame.num_channels * frame.sample_rate))
        await self.push_frame(frame, direction)


@pytest.mark.parametrize("frame_ms", [10, 40])
async def test_the_bot_hears_and_speaks_in_frames_of_audio_frame_ms(
    livekit_server: LiveKitServer, frame_ms: int
) -> None:
    """Every input frame carries `audio_frame_ms` of audio, and the output transport
    writes chunks of as much: once the tone stops and the echo drains, each input frame
    was captured as one chunk or counted as dropped, by the room or by the pipeline's
    drop-oldest lane (chunks of another size would make more or fewer)."""
    durations = InputDurations()
    room = f"echo-frames-{frame_ms}"

    def bot(transport: RoomTransport) -> PipelineWorker:
        return room_pipeline(transport, durations, EchoProcessor())

    async with (
        running_room(
            livekit_server, room, bot, audio_frame_ms=frame_ms,
            audio_in_sample_rate=16000, audio_out_sample_rate=16000,
        ) as tree,
        join(livekit_server, room, "alice") as alice,
    ):
        async with publishing_tone(alice, 440.0):
            heard = await listen_for_tone(await subscribed_audio_track(alice, "bot"), 440.0)
        stats, pipeline = tree.stats, await tree.child("pipeline")

        def passed_on() -> int:
            dropped = sum(stats.audio_frames_dropped.values()) + pipeline.stats.dropped
            return stats.audio_frames_out + dropped

        await wait_until(lambda: passed_on() >= stats.audio_frames_in, 10.0)
        frames_in, passed = stats.audio_frames_in, passed_on()
    assert is_tone(heard, 440.0)
    assert durations.seen == {float(frame_ms)}
    assert passed == frames_in, f"{frames_in} frames in, {passed} chunks out or dropped"


async def onset_delay(alice: rtc.Room, *, bursts: int = 5, frame_ms: int = 20) -> list[float]:
    """Seconds from sending a tone burst to hearing it back, by energy onset, per burst."""
    source = rtc.AudioSource(SAMPLE_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("bursts", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    publication = await alice.local_participant.publish_track(track, options)
    samples = SAMPLE_RATE * frame_ms // 1000
    silence = np.zeros(samples, dtype=np.int16)
    sent_at: list[float] = []
    heard_at: list[float] = []
    echo = await subscribed_audio_track(alice, "bot")
    stream = rtc.AudioStream(echo, sample_rate=SAMPLE_RATE, num_channels=1)

    async def listen() -> None:
        loud = False
        async for event in stream:
            level = rms(np.frombuffer(event.frame.data, dtype=np.int16))
            if not loud and level > 1000 and len(heard_at) < len(sent_at):
                heard_at.append(time.perf_counter())
            loud = level > 1000

    async def speak() -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for burst in range(bursts * 2):
            tone = burst % 2 == 1
            for i in range(25):  # 0.5 s of silence, then 0.5 s of tone
                if tone and i == 0:
                    sent_at.append(time.perf_counter())
                data = sine(440.0, samples, start=i * samples) if tone else silence
                await source.capture_frame(rtc.AudioFrame(data.tobytes(), SAMPLE_RATE, 1, samples))
                next_at += frame_ms / 1000
                await asyncio.sleep(max(0.0, next_at - loop.time()))

    listener = asyncio.create_task(listen())
    try:
        await speak()
        await asyncio.sleep(0.5)
    finally:
        listener.cancel()
        await stream.aclose()
        await alice.local_participant.unpublish_track(publication.sid)
        await source.aclose()
    return [heard - sent for sent, heard in zip(sent_at, heard_at, strict=False)]


async def test_a_participant_rejoining_under_the_same_identity_keeps_the_bots_track(
    livekit_server: LiveKitServer,
) -> None:
    """A reloaded page: alice's new session joins, and the server drops her old one.
    The bot hears of the old session's departure after the new one is already listed:
    its track stays published (the same track), and the new session hears the echo."""
    async with (
        running_room(livekit_server, "echo-rejoin"),
        join(livekit_server, "echo-rejoin", "alice") as first,
    ):
        before = await subscribed_audio_track(first, "bot")
        async with (
            join(livekit_server, "echo-rejoin", "alice") as second,
            publishing_tone(second, 440.0),
        ):
            track = await subscribed_audio_track(second, "bot")
            assert track.sid == before.sid, "the bot published its track anew"
            assert is_tone(await listen_for_tone(track, 440.0), 440.0)


async def test_echo_round_trip_delay_is_measured(livekit_server: LiveKitServer) -> None:
    async with running_room(livekit_server, "echo-delay"), join(
        livekit_server, "echo-delay", "alice"
    ) as alice:
        delays = await onset_delay(alice)
    assert len(delays) >= 4, f"heard {len(delays)} of 5 bursts back"
    median = float(np.median(delays))
    print(f"\necho round trip (energy onset, loopback server): median {median * 1000:.0f} ms, "
          f"all {[round(d * 1000) for d in delays]} ms")
    assert 0 < median < 2.0


async def run_echo_bot(transport: RoomTransport) -> None:
    """A bot in pipecat's `run_bot(transport)` shape: it runs its own runner."""
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(echo_bot(transport))
    await runner.run()


async def test_a_bot_that_runs_itself_is_hosted_unchanged(livekit_server: LiveKitServer) -> None:
    async with (
        running_room(livekit_server, "echo-run-bot", run_echo_bot),
        join(livekit_server, "echo-run-bot", "alice") as alice,
        publishing_tone(alice, 660.0),
    ):
        track = await subscribed_audio_track(alice, "bot")
        heard = await listen_for_tone(track, 660.0)
    assert rms(heard) > SILENCE_RMS
    assert abs(dominant_frequency(heard) - 660.0) < 10.0


async def test_the_bot_keeps_its_room_open_when_alone(livekit_server: LiveKitServer) -> None:
    """LiveKit does not count an agent as a participant: the room must be created with
    long idle timeouts, or the server closes it (and kicks the bot) 20 s after the last
    person leaves."""
    async with (
        running_room(livekit_server, "echo-alone"),
        api.LiveKitAPI(
            livekit_server.url, livekit_server.api_key, livekit_server.api_secret
        ) as server,
    ):
        listed = await server.room.list_rooms(api.ListRoomsRequest(names=["echo-alone"]))
    (room,) = listed.rooms
    assert room.empty_timeout == ROOM_IDLE_SECONDS
    assert room.departure_timeout == ROOM_IDLE_SECONDS


async def bot_tracks(server: LiveKitServer, room: str) -> list[str] | None:
    """The names of the tracks the server lists for the bot, or None if it is absent."""
    async with api.LiveKitAPI(server.url, server.api_key, server.api_secret) as lk:
        listing = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    bot = next((p for p in listing.participants if p.identity == "bot"), None)
    return None if bot is None else [track.name for track in bot.tracks]


async def wait_for_bot_tracks(server: LiveKitServer, room: str, expected: list[str]) -> None:
    with anyio.fail_after(10):
        while (tracks := await bot_tracks(server, room)) != expected:
            await anyio.sleep(0.1)
    assert tracks == expected


async def test_the_bot_publishes_its_track_only_while_someone_listens(
    livekit_server: LiveKitServer,
) -> None:
    """An idle room costs a connection, not an encoding track: the bot publishes when
    the first participant arrives, unpublishes when the last leaves, and publishes
    again for the next one, who hears the echo as the first did.

    Nothing the bot says while someone is there is dropped as `unheard`. What is still
    on its way through the pipeline when the last person leaves (the echo of their
    last moments: a subscribed track yields frames, silent or not, until it goes) is
    fairly dropped as `unheard`, so the count is compared within each visit, from the
    track's publication to just before the visitor leaves."""
    room = "echo-lazy-publish"
    async with running_room(livekit_server, room) as tree:
        await wait_for_bot_tracks(livekit_server, room, [])  # joined, silent
        for visit in range(2):
            async with join(livekit_server, room, f"visitor-{visit}") as visitor:
                await wait_for_bot_tracks(livekit_server, room, [TRACK_NAME])
                unheard = tree.stats.audio_frames_dropped["unheard"]
                async with publishing_tone(visitor, 440.0):
                    track = await subscribed_audio_track(visitor, "bot")
                    heard = await listen_for_tone(track, 440.0)
                assert abs(dominant_frequency(heard) - 440.0) < 10.0, f"visit {visit}"
                assert tree.stats.audio_frames_dropped["unheard"] == unheard, (
                    f"visit {visit}: audio dropped as unheard while someone listened"
                )
            await wait_for_bot_tracks(livekit_server, room, [])


SLOW_SECONDS = 0.25
"""Played this long after it arrived, a passed-through frame is part of a backlog."""


def slow_frames(latency: BucketCounts) -> int:
    """How many frames the latency histogram counts over `SLOW_SECONDS`."""
    bounds = (*latency.bounds, float("inf"))
    return sum(n for bound, n in zip(bounds, latency.counts, strict=True) if bound > SLOW_SECONDS)


class StallsOnce(FrameProcessor):
    """Passes frames on, but holds the input audio for `seconds` once, at frame `at`:
    a bot that hiccups (a slow call, a GC pause) while the room keeps talking."""

    def __init__(self, at: int, seconds: float) -> None:
        super().__init__()
        self._at, self._seconds, self._frames = at, seconds, 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._frames += 1
            if self._frames == self._at:
                await asyncio.sleep(self._seconds)
        await self.push_frame(frame, direction)


def stalling_echo_bot(transport: RoomTransport) -> PipelineWorker:
    return room_pipeline(transport, StallsOnce(at=50, seconds=0.6), EchoProcessor())


async def test_an_echo_catches_up_after_a_stall(livekit_server: LiveKitServer) -> None:
    """Passed-through audio cannot outrun real time, so a backlog left by a stall never
    drains by itself: what would play over `passthrough_delay_ms` late is dropped
    (counted as `late`) and the echo goes on at its usual delay.

    Without the drop, every frame after the stall plays as late as the stall was long
    (0.6 s), for good. With it, the frames after the stall play within a fraction of
    that; the test asks it of most of them, not all, since on a busy machine a frame
    can be held up between the check and its capture."""
    room = "echo-stall"
    async with (
        running_room(livekit_server, room, stalling_echo_bot) as tree,
        join(livekit_server, room, "alice") as alice,
        publishing_tone(alice, 440.0),
    ):
        track = await subscribed_audio_track(alice, "bot")
        await wait_until(lambda: tree.stats.audio_frames_in > 120, 15.0)  # well past the stall
        out_after_stall = tree.stats.audio_frames_out
        slow_before = slow_frames(tree.stats.audio_latency)
        heard = await collect_audio(track, 1.0)
        out_later = tree.stats.audio_frames_out
        slow_after = slow_frames(tree.stats.audio_latency) - slow_before
    late = tree.stats.audio_frames_dropped["late"]
    print(f"\nstall: {late} frames dropped late; latency counts {tree.stats.audio_latency.counts}")
    assert late >= 10, "the stall's backlog was played, not dropped"
    assert out_later - out_after_stall >= 30, "the echo did not go on after the stall"
    assert slow_after * 2 < out_later - out_after_stall, (
        f"{slow_after} of {out_later - out_after_stall} frames after the stall played over "
        f"{SLOW_SECONDS * 1000:.0f} ms after they arrived: the echo stayed late"
    )
    assert abs(dominant_frequency(heard) - 440.0) < 10.0
