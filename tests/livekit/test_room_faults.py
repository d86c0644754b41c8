"""Faults, restarts and encryption of rooms, proven against the real LiveKit server.

Each test breaks one thing on purpose (the bot factory, a processor, the bot's speed,
the connection, the key) and checks two sides: that the room's supervisor does what
its policy says (what restarts, what does not), and what a participant actually hears.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence

import anyio
import numpy as np
import pytest
from livekit import api, rtc
from pipecat.frames.frames import Frame, InputAudioRawFrame, UserAudioRawFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from actors import Backoff, ChildInfo, RestartIntensity, RestartIntensityError, WhichChildrenFrame
from actors.room.pipeline import BotCrashedError
from actors.room.transport import RoomTransport
from supervisor.bots import room_pipeline
from supervisor.bots.echo import EchoProcessor
from supervisor.livekit_server.server import LiveKitServer
from tests.helpers.participants import (
    SAMPLE_RATE,
    SILENCE_RMS,
    collect_audio,
    dominant_frequency,
    is_tone,
    join,
    listen_for_tone,
    longest_silent_run,
    publishing_tone,
    rms,
    subscribed_audio_track,
)
from tests.helpers.probes import wait_until
from tests.helpers.rooms import RoomUnderTest, running_room

pytestmark = pytest.mark.anyio

FRAME_MS = 20
MAX_GAP_MS = 200


# --- bots ----------------------------------------------------------------------------


class CrashingFactory:
    """A bot factory that raises every time, and counts how often it was called."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, transport: RoomTransport) -> PipelineWorker:
        self.calls += 1
        raise RuntimeError(f"bot factory failed (call {self.calls})")


def pipeline_bot(
    middle: Callable[[RoomTransport], Sequence[FrameProcessor]],
) -> Callable[[RoomTransport], PipelineWorker]:
    """A bot factory: input, the processors `middle` builds (fresh per incarnation), output.

    `middle` gets the transport too, so a test's bot can register event handlers.
    """

    def create_bot(transport: RoomTransport) -> PipelineWorker:
        return room_pipeline(transport, *middle(transport))

    return create_bot


class RaisesOnFirstAudio(FrameProcessor):
    """Raises on the first audio frame it ever sees (across incarnations), then passes all.

    `raised` is shared between incarnations so the restarted bot works: the test can
    then show the room recovered, not merely that it restarted.
    """

    def __init__(self, raised: list[bool]) -> None:
        super().__init__()
        self._raised = raised

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and not self._raised:
            self._raised.append(True)
            raise RuntimeError("processor failed on its first audio frame")
        await self.push_frame(frame, direction)


class SlowerThanRealTime(FrameProcessor):
    """Spends `seconds` on every audio frame (20 ms of audio): a bot that cannot keep up."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self._seconds = seconds
        self.frames = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.frames += 1
            await asyncio.sleep(self._seconds)
        await self.push_frame(frame, direction)


class AudioLog(FrameProcessor):
    """Keeps every participant's input audio as the bot received it, by identity."""

    def __init__(self, heard: dict[str, list[bytes]]) -> None:
        super().__init__()
        self._heard = heard

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, UserAudioRawFrame):
            self._heard[frame.user_id].append(frame.audio)
        await self.push_frame(frame, direction)


# --- what a test reads ---------------------------------------------------------------


async def child_info(tree: RoomUnderTest, name: str) -> ChildInfo:
    """The room supervisor's view of one child: incarnation, state, last error."""
    infos = await tree.ref.ask(WhichChildrenFrame())
    return next(info for info in infos if info.name == name)


async def hear(room: rtc.Room, identity: str = "bot", seconds: float = 1.0) -> np.ndarray:
    """What `room` receives from `identity`, after 0.5 s for the jitter buffer to settle."""
    track = await subscribed_audio_track(room, identity)
    await collect_audio(track, 0.5)
    return await collect_audio(track, seconds)


async def hear_tone(
    room: rtc.Room, frequency: float, identity: str = "bot", timeout: float = 15.0
) -> np.ndarray:
    """What `room` hears from `identity`, listened to until it is the tone `frequency`
    (`listen_for_tone`)."""
    track = await subscribed_audio_track(room, identity)
    return await listen_for_tone(track, frequency, timeout=timeout)


def peak_share(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """The share of the signal's energy within 20 Hz of its strongest frequency:
    near 1 for a clean tone, near 0 for broadband noise."""
    power = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size))) ** 2
    power[0] = 0.0
    freqs = np.fft.rfftfreq(samples.size, 1 / sample_rate)
    near_peak = np.abs(freqs - freqs[int(np.argmax(power))]) <= 20.0
    return float(power[near_peak].sum() / power.sum()) if power.sum() else 0.0


def describe(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
    """What a listener got, in words for the test output: length, level, pitch, purity."""
    if samples.size == 0:
        return "no audio at all"
    return (
        f"{samples.size / sample_rate:.2f} s, rms {rms(samples):.0f}, "
        f"peak at {dominant_frequency(samples, sample_rate):.0f} Hz holding "
        f"{peak_share(samples, sample_rate):.0%} of the energy"
    )


@contextlib.asynccontextmanager
async def recording_levels(track: rtc.Track) -> AsyncIterator[list[float]]:
    """The RMS of every 20 ms frame received from `track`, appended while the block runs."""
    levels: list[float] = []
    stream = rtc.AudioStream(
        track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=FRAME_MS
    )

    async def read() -> None:
        async for event in stream:
            levels.append(rms(np.frombuffer(event.frame.data, dtype=np.int16)))

    reader = asyncio.create_task(read())
    try:
        yield levels
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await stream.aclose()


def longest_silence(levels: Sequence[float]) -> int:
    """The longest run of silent frames after the first loud one, in frames."""
    onset = next(i for i, level in enumerate(levels) if level > SILENCE_RMS)
    return longest_silent_run(levels, onset)


@contextlib.asynccontextmanager
async def participant_events(room: rtc.Room, identity: str) -> AsyncIterator[list[str]]:
    """"joined"/"left" for `identity` as `room` sees them, in order, while the block runs."""
    seen: list[str] = []

    def joined(p: rtc.RemoteParticipant) -> None:
        if p.identity == identity:
            seen.append("joined")

    def left(p: rtc.RemoteParticipant) -> None:
        if p.identity == identity:
            seen.append("left")

    room.on("participant_connected", joined)
    room.on("participant_disconnected", left)
    try:
        yield seen
    finally:
        room.off("participant_connected", joined)
        room.off("participant_disconnected", left)


# --- 1. a crashing bot factory -------------------------------------------------------


async def test_crashing_factory_restarts_only_its_pipeline_while_another_room_echoes(
    livekit_server: LiveKitServer,
) -> None:
    """Rooms share one process and event loop, so a room crashing in a loop must not
    starve another: the steady room's echo is judged frame by frame (a stalled bot
    shows up as silent frames, since the listener's stream is clock-driven)."""
    crashing = CrashingFactory()
    async with (
        running_room(livekit_server, "faults-steady") as steady,
        join(livekit_server, "faults-steady", "alice") as alice,
        publishing_tone(alice, 440.0),
    ):
        echo = await subscribed_audio_track(alice, "bot")
        async with recording_levels(echo) as levels:
            await wait_until(lambda: any(level > SILENCE_RMS for level in levels), 10.0)
            onset_frames = len(levels)
            async with running_room(
                livekit_server,
                "faults-crashing",
                crashing,
                intensity=RestartIntensity(max_restarts=100, within_seconds=60),
                backoff=Backoff(initial=0.05, maximum=0.2),
            ) as tree:
                await wait_until(lambda: crashing.calls >= 6, 20.0)
                pipeline = await child_info(tree, "pipeline")
                connection = await child_info(tree, "connection")
                await anyio.sleep(0.5)  # keep listening after the last crash we waited for
        steady_pipeline = await child_info(steady, "pipeline")

    assert pipeline.incarnation >= 6, f"pipeline incarnation {pipeline.incarnation}"
    assert isinstance(pipeline.last_error, RuntimeError)
    assert "bot factory failed" in str(pipeline.last_error)
    assert connection.incarnation == 1, "the connection restarted with the bot"
    assert steady_pipeline.incarnation == 1, "the other room's bot restarted too"
    window = levels[onset_frames:]
    gap_ms = longest_silence(levels) * FRAME_MS
    print(f"\nsteady room: {len(window)} frames heard while the other room crashed "
          f"{crashing.calls} times; longest silence after the echo began: {gap_ms} ms")
    assert len(window) * FRAME_MS > 1000, "too short a window to judge"
    assert gap_ms <= MAX_GAP_MS, f"the steady room's echo had a {gap_ms} ms gap"


async def test_crashing_factory_past_its_intensity_escalates(
    livekit_server: LiveKitServer,
) -> None:
    """Past its restart intensity the room gives up and its failure reaches the parent."""
    crashing = CrashingFactory()
    with pytest.raises(RestartIntensityError, match="faults-escalates"):
        async with running_room(
            livekit_server,
            "faults-escalates",
            crashing,
            intensity=RestartIntensity(max_restarts=2, within_seconds=60),
            backoff=Backoff(initial=0.01, maximum=0.05),
        ):
            await anyio.sleep(20)  # the escalation cancels this long before
    assert crashing.calls == 3, "one start and two restarts, then the supervisor gives up"


# --- 2. a processor that raises ------------------------------------------------------


async def test_raising_processor_restarts_the_pipeline_only(
    livekit_server: LiveKitServer,
) -> None:
    """pipecat only logs a processor's exception (as an ErrorFrame); the room makes it
    a crash, so the bot restarts clean instead of running on half-broken."""
    raised: list[bool] = []
    bot = pipeline_bot(lambda _t: [RaisesOnFirstAudio(raised), EchoProcessor()])
    async with (
        running_room(livekit_server, "faults-processor", bot) as tree,
        join(livekit_server, "faults-processor", "alice") as alice,
        publishing_tone(alice, 440.0),
    ):
        await tree.wait_running("pipeline", 2)
        heard = await hear_tone(alice, 440.0)
        pipeline = await child_info(tree, "pipeline")
        connection = await child_info(tree, "connection")
    assert raised == [True]
    assert isinstance(pipeline.last_error, BotCrashedError), repr(pipeline.last_error)
    assert isinstance(pipeline.last_error.__cause__, RuntimeError)
    assert pipeline.incarnation == 2, "restarted once, then ran"
    assert connection.incarnation == 1
    assert is_tone(heard, 440.0), f"no echo after the restart: {describe(heard)}"


# --- 3. a bot slower than real time --------------------------------------------------


async def test_slow_bot_drops_oldest_audio_while_messages_arrive_in_order(
    livekit_server: LiveKitServer,
) -> None:
    """A bot at a third of real time: stale audio is dropped (counted) in the pipeline's
    lane instead of piling up inside pipecat, and data messages, which travel in the
    system lane, all reach the bot's handler in order meanwhile."""
    received: list[int] = []
    slow_processors: list[SlowerThanRealTime] = []

    def slow(transport: RoomTransport) -> list[FrameProcessor]:
        @transport.event_handler("on_app_message")
        async def on_app_message(_t: RoomTransport, message: dict, sender: str) -> None:
            received.append(message["seq"])

        slow_processors.append(SlowerThanRealTime(0.060))
        return slow_processors[-1:]

    count = 30
    async with (
        running_room(livekit_server, "faults-slow", pipeline_bot(slow)) as tree,
        join(livekit_server, "faults-slow", "alice") as alice,
        publishing_tone(alice, 440.0),
    ):
        pipeline = await tree.child("pipeline")
        await wait_until(lambda: pipeline.stats.dropped > 0, 15.0)
        dropped_before = pipeline.stats.dropped
        for seq in range(count):
            payload = json.dumps({"seq": seq}).encode()
            await alice.local_participant.publish_data(payload, reliable=True)
            await anyio.sleep(0.02)
        await wait_until(lambda: len(received) >= count, 15.0)
        dropped = pipeline.stats.dropped
        frames_in = tree.stats.audio_frames_in
    processed = sum(p.frames for p in slow_processors)
    print(f"\nslow bot: {dropped} of {frames_in} audio frames dropped, "
          f"{processed} processed; {len(received)} messages delivered")
    assert received == list(range(count))
    assert 0 < dropped < frames_in
    assert dropped > dropped_before, "the lane stopped dropping: no overload while messaging"
    assert processed > 0, "held back audio never reached the bot"


# --- 4. the server removes the bot ---------------------------------------------------


async def test_connection_removed_by_the_server_rejoins(livekit_server: LiveKitServer) -> None:
    """The SDK reports a removal as `disconnected` (reason participant_removed): the
    connection crashes on purpose, rest_for_one rebuilds the room, the bot is back."""
    room = "faults-removed"
    async with (
        running_room(livekit_server, room) as tree,
        join(livekit_server, room, "alice") as alice,
        publishing_tone(alice, 440.0),
    ):
        before = await hear_tone(alice, 440.0)
        async with (
            participant_events(alice, "bot") as seen,
            api.LiveKitAPI(
                livekit_server.url, livekit_server.api_key, livekit_server.api_secret
            ) as server,
        ):
            await server.room.remove_participant(
                api.RoomParticipantIdentity(room=room, identity="bot")
            )
            await tree.wait_running("connection", 2)
            await tree.wait_running("pipeline", 2)
            await wait_until(lambda: seen == ["left", "joined"], 20.0)
        after = await hear_tone(alice, 440.0)
        connection = await child_info(tree, "connection")
    print(f"\nremoved by the server: the connection crashed with {connection.last_error!r}, "
          f"rejoined as incarnation {connection.incarnation}")
    assert is_tone(before, 440.0), f"no echo before the removal: {describe(before)}"
    assert isinstance(connection.last_error, ConnectionError), repr(connection.last_error)
    assert connection.incarnation == 2
    assert is_tone(after, 440.0), f"no echo after the rejoin: {describe(after)}"


# --- 5. end-to-end encryption --------------------------------------------------------


def encrypted(key: bytes) -> rtc.RoomOptions:
    return rtc.RoomOptions(
        encryption=rtc.E2EEOptions(key_provider_options=rtc.KeyProviderOptions(shared_key=key))
    )


async def test_encrypted_room_serves_only_participants_with_the_key(
    livekit_server: LiveKitServer,
) -> None:
    """Alice has the room's key, mallory has none; both publish a tone (440 / 660 Hz).

    Alice must hear her echo; mallory must neither understand the bot nor be heard by
    it: the bot keeps a log of what it received from whom, so "not reaching the bot
    usefully" is checked at the bot, not inferred from what others hear.
    """
    room, key = "faults-e2ee", b"a shared secret for the e2ee test"
    heard_by_bot: dict[str, list[bytes]] = defaultdict(list)
    bot = pipeline_bot(lambda _t: [AudioLog(heard_by_bot), EchoProcessor()])
    async with (
        running_room(livekit_server, room, bot, e2ee_key=key) as tree,
        join(livekit_server, room, "alice", options=encrypted(key)) as alice,
        join(livekit_server, room, "mallory") as mallory,
        publishing_tone(alice, 440.0),
        publishing_tone(mallory, 660.0),
    ):
        alice_hears, mallory_hears, mallory_hears_alice = await asyncio.gather(
            hear_tone(alice, 440.0), hear(mallory), hear(mallory, "alice")
        )
        published = {
            who: rtc.EncryptionType.Name(pub.encryption_type)
            for who in ("bot", "alice")
            for pub in mallory.remote_participants[who].track_publications.values()
        }
    rate = tree.settings.audio_in_sample_rate
    bot_got = {
        who: np.frombuffer(b"".join(chunks), dtype=np.int16) for who, chunks in heard_by_bot.items()
    }
    print(
        f"\ne2ee: tracks as mallory sees them: {published}"
        f"\ne2ee: alice (key) hears the bot: {describe(alice_hears)}"
        f"\ne2ee: mallory (no key) hears the bot: {describe(mallory_hears)}"
        f"\ne2ee: mallory (no key) hears alice: {describe(mallory_hears_alice)}"
        f"\ne2ee: the bot got from: "
        + ", ".join(f"{who}: {describe(audio, rate)}" for who, audio in bot_got.items())
    )
    assert published == {"bot": "GCM", "alice": "GCM"}
    assert is_tone(bot_got["alice"], 440.0, rate)
    assert "mallory" not in bot_got, "mallory's unencrypted audio reached the bot"
    assert is_tone(alice_hears, 440.0), f"alice heard no echo: {describe(alice_hears)}"
    assert not is_tone(mallory_hears, 440.0), "mallory understood the encrypted echo"
    assert not is_tone(mallory_hears_alice, 440.0), "mallory understood alice"
