"""Room events and commands through the room actor tree and the real server.

Every test runs a bot that records what its `RoomTransport` tells the bot's event
handlers and what reaches its pipeline, while simulated participants join, leave,
publish and get muted through a real LiveKit server. pipecat runs event handlers as
tasks, so tests wait for records rather than sleep. Where a test must show that an
event did NOT fire, it waits for a later event first: events reach the transport in
order and handler tasks start in the order they were made, so everything before the
fence has been recorded by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from livekit import api, rtc
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    UserAudioRawFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.worker import PipelineWorker

from actors.errors import Refused
from actors.room import RoomTransport
from actors.room.transport import EVENTS
from supervisor.bots import room_pipeline
from supervisor.bots.echo import create_bot as echo_bot
from supervisor.livekit_server.server import LiveKitServer
from tests.helpers.participants import (
    SAMPLE_RATE,
    SILENCE_RMS,
    collect_audio,
    dominant_frequency,
    join,
    publishing_tone,
    rms,
    subscribed_audio_track,
)
from tests.helpers.probes import eventually
from tests.helpers.rooms import running_room

pytestmark = pytest.mark.anyio

TIMEOUT = 15.0
POLL: dict[str, Any] = {"timeout": TIMEOUT, "every": 0.02}
"""How the tests look at what the bot's pipeline and handlers recorded."""

Args = tuple[Any, ...]


class FrameLog(BaseObserver):
    """Every frame pushed in the bot's pipeline, once, in push order."""

    def __init__(self, frames: list[Frame]) -> None:
        super().__init__(observe_every_push=False)
        self._frames = frames

    async def on_push_frame(self, data: FramePushed) -> None:
        self._frames.append(data.frame)


def minimal_bot(transport: RoomTransport) -> PipelineWorker:
    """The smallest bot: the transport's input straight into its output."""
    return room_pipeline(transport)


class EventBot:
    """A bot factory recording every transport event and every frame of its pipeline.

    It wraps `inner` (the minimal bot unless told otherwise), registers a recorder
    for each of the transport's events, and keeps the transports it was given so a
    test can call their methods as a bot would. The records outlive the room tree.
    """

    def __init__(self, inner: Callable[[RoomTransport], PipelineWorker] = minimal_bot) -> None:
        self.inner = inner
        self.events: list[tuple[str, Args]] = []
        self.frames: list[Frame] = []
        self.transports: list[RoomTransport] = []

    def __call__(self, transport: RoomTransport) -> PipelineWorker:
        self.transports.append(transport)
        for event in EVENTS:
            transport.add_event_handler(event, functools.partial(self._record, event))
        worker = self.inner(transport)
        worker.add_observer(FrameLog(self.frames))
        return worker

    async def _record(self, event: str, _transport: RoomTransport, *args: Any) -> None:
        self.events.append((event, args))

    @property
    def transport(self) -> RoomTransport:
        return self.transports[-1]

    def calls(self, event: str) -> list[Args]:
        """The arguments of every call of `event`'s handlers so far, in order."""
        return [args for name, args in self.events if name == event]

    async def wait_for(self, event: str, *prefix: Any) -> Args:
        """The first call of `event` whose arguments start with `prefix`, once it comes."""

        def matches() -> list[Args]:
            return [args for args in self.calls(event) if args[: len(prefix)] == prefix]

        found = await eventually(
            matches, what=lambda: f"{event}{prefix}; recorded: {self.events}", **POLL
        )
        return found[0]

    async def wait_frame(self, kind: type[Frame]) -> Frame:
        """The first `kind` of frame pushed in the bot's pipeline, once it comes."""

        def first() -> Frame | None:
            return next((f for f in self.frames if isinstance(f, kind)), None)

        frame = await eventually(first, what=f"a {kind.__name__} in the pipeline", **POLL)
        assert frame is not None
        return frame

    async def heard(self, seconds: float, voices: int) -> dict[str | None, np.ndarray]:
        """`seconds` of the input audio reaching the pipeline from now, per stream.

        A stream is keyed by its `UserAudioRawFrame.user_id`, or None for audio that
        is not any user's (the mixed stream). Waits until `voices` streams have it all.
        """
        start = len(self.frames)
        rate = self.transport.settings.audio_in_sample_rate

        def streams() -> dict[str | None, list[InputAudioRawFrame]]:
            by_user: dict[str | None, list[InputAudioRawFrame]] = {}
            for frame in self.frames[start:]:
                if isinstance(frame, InputAudioRawFrame):
                    user = frame.user_id if isinstance(frame, UserAudioRawFrame) else None
                    by_user.setdefault(user, []).append(frame)
            return by_user

        def enough() -> bool:
            full = [
                user
                for user, frames in streams().items()
                if sum(len(f.audio) // 2 for f in frames) >= seconds * rate
            ]
            return len(full) >= voices

        await eventually(
            enough,
            what=lambda: f"{seconds} s from {voices} streams in the pipeline: "
            f"{ {u: len(f) for u, f in streams().items()} } frames",
            **POLL,
        )
        result = {}
        for user, frames in streams().items():
            assert {f.sample_rate for f in frames} == {rate}, "audio not at the pipeline's rate"
            result[user] = np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16)
        return result


def band_share(samples: np.ndarray, rate: int, frequency: float, width: float = 20.0) -> float:
    """The fraction of the signal's power within `width` Hz of `frequency`."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size))) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / rate)
    return float(spectrum[np.abs(freqs - frequency) <= width].sum() / spectrum.sum())


# --- presence -------------------------------------------------------------------------


@pytest.mark.parametrize("alice_first", [False, True], ids=["bot-first", "alice-first"])
async def test_first_participant_joined_fires_once_and_a_second_only_connects(
    livekit_server: LiveKitServer, alice_first: bool
) -> None:
    """pipecat's semantics: one on_first_participant_joined per room, for whoever is
    first, also when they were in the room before the bot's tree started."""
    room = f"events-first-{'alice' if alice_first else 'bot'}"
    bot = EventBot()
    async with contextlib.AsyncExitStack() as stack:
        if alice_first:
            await stack.enter_async_context(join(livekit_server, room, "alice"))
        await stack.enter_async_context(running_room(livekit_server, room, bot))
        if not alice_first:
            await stack.enter_async_context(join(livekit_server, room, "alice"))
        await bot.wait_for("on_first_participant_joined", "alice")
        async with join(livekit_server, room, "bob"):
            await bot.wait_for("on_client_connected", {"id": "bob"})
            assert sorted(bot.transport.get_participants()) == ["alice", "bob"]
        await bot.wait_for("on_participant_left", "bob")  # the fence
        assert bot.transport.get_participants() == ["alice"]
    assert bot.calls("on_connected") == [()]
    assert bot.calls("on_first_participant_joined") == [("alice",)]
    assert bot.calls("on_participant_connected") == [("alice",), ("bob",)]
    assert bot.calls("on_client_connected") == [({"id": "alice"},), ({"id": "bob"},)]


async def test_leaving_fires_disconnected_and_left_and_an_empty_room_starts_over(
    livekit_server: LiveKitServer,
) -> None:
    room = "events-leave"
    bot = EventBot()
    async with running_room(livekit_server, room, bot):
        async with join(livekit_server, room, "alice"):
            await bot.wait_for("on_first_participant_joined", "alice")
        await bot.wait_for("on_participant_disconnected", "alice")
        _, reason = await bot.wait_for("on_participant_left", "alice")
        await bot.wait_for("on_client_disconnected", {"id": "alice"})
        assert bot.transport.get_participants() == []
        async with join(livekit_server, room, "bob"):
            await bot.wait_for("on_first_participant_joined", "bob")  # also the fence
            assert bot.calls("on_participant_disconnected") == [("alice",)]
            assert bot.calls("on_participant_left") == [("alice", reason)]
            assert bot.calls("on_client_disconnected") == [({"id": "alice"},)]
    assert reason == "client_initiated"  # the SDK's reason; pipecat always says "disconnected"
    assert bot.calls("on_first_participant_joined") == [("alice",), ("bob",)]


async def test_disconnected_fires_when_the_room_tree_stops(livekit_server: LiveKitServer) -> None:
    bot = EventBot()
    async with running_room(livekit_server, "events-stop", bot):
        await bot.wait_for("on_connected")
        assert "on_disconnected" not in [name for name, _ in bot.events]
    names = [name for name, _ in bot.events]
    assert names.count("on_disconnected") == 1, f"recorded: {bot.events}"
    assert names.index("on_disconnected") > names.index("on_connected")


# --- tracks ---------------------------------------------------------------------------


async def test_audio_track_subscribed_and_unsubscribed(livekit_server: LiveKitServer) -> None:
    room = "events-tracks"
    bot = EventBot()
    async with (
        running_room(livekit_server, room, bot),
        join(livekit_server, room, "alice") as alice,
    ):
        await bot.wait_for("on_participant_connected", "alice")
        async with publishing_tone(alice):
            await bot.wait_for("on_audio_track_subscribed", "alice")
            assert bot.calls("on_audio_track_unsubscribed") == []
        await bot.wait_for("on_audio_track_unsubscribed", "alice")
    assert bot.calls("on_audio_track_subscribed") == [("alice",)]


async def test_mute_and_unmute_go_through_the_server(livekit_server: LiveKitServer) -> None:
    """The participant itself sees its track muted and unmuted, and so does the bot.

    (The rtc SDK reports a server-side mute of a local track twice; that is its own.)
    """
    room = "events-mute"
    bot = EventBot()
    async with (
        running_room(livekit_server, room, bot),
        join(livekit_server, room, "alice") as alice,
        publishing_tone(alice) as publication,
    ):
        seen: list[tuple[str, str, str]] = []

        def on_mute_change(event: str, p: rtc.Participant, pub: rtc.TrackPublication) -> None:
            seen.append((event, p.identity, pub.sid))

        for event in ("track_muted", "track_unmuted"):
            alice.on(event, functools.partial(on_mute_change, event))
        await bot.wait_for("on_audio_track_subscribed", "alice")

        await bot.transport.mute_participant("alice")
        await eventually(lambda: ("track_muted", "alice", publication.sid) in seen, **POLL)
        assert publication.muted
        await bot.wait_for("on_track_muted", "alice", publication.sid)

        await bot.transport.unmute_participant("alice")
        await eventually(lambda: ("track_unmuted", "alice", publication.sid) in seen, **POLL)
        assert not publication.muted
        await bot.wait_for("on_track_unmuted", "alice", publication.sid)

        with pytest.raises(Refused, match="nobody"):
            await bot.transport.mute_participant("nobody")


# --- metadata -------------------------------------------------------------------------


async def test_participant_metadata_is_read_and_followed(livekit_server: LiveKitServer) -> None:
    room = "events-metadata"
    bot = EventBot()
    async with (
        running_room(livekit_server, room, bot),
        join(livekit_server, room, "alice", name="Alice Liddell", metadata='{"role": "caller"}'),
    ):
        await bot.wait_for("on_participant_connected", "alice")
        transport = bot.transport
        assert transport.get_participants() == ["alice"]
        assert await transport.get_participant_metadata("alice") == {
            "id": "alice",
            "name": "Alice Liddell",
            "metadata": '{"role": "caller"}',
        }
        assert await transport.get_participant_metadata("nobody") == {}

        async with api.LiveKitAPI(
            livekit_server.url, livekit_server.api_key, livekit_server.api_secret
        ) as server:
            await server.room.update_participant(
                api.UpdateParticipantRequest(room=room, identity="alice", metadata="on hold")
            )
        await bot.wait_for("on_participant_metadata_changed", "alice", "on hold")
        assert (await transport.get_participant_metadata("alice"))["metadata"] == "on hold"


async def test_bot_metadata_set_is_seen_by_participants(livekit_server: LiveKitServer) -> None:
    room = "events-set-metadata"
    bot = EventBot()
    async with (
        running_room(livekit_server, room, bot),
        join(livekit_server, room, "alice") as alice,
    ):
        changes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        alice.on(
            "participant_metadata_changed",
            lambda p, _old, new: changes.put_nowait((p.identity, new)),
        )
        await bot.wait_for("on_participant_connected", "alice")
        await bot.transport.set_metadata('{"state": "listening"}')
        assert await asyncio.wait_for(changes.get(), TIMEOUT) == ("bot", '{"state": "listening"}')
        assert alice.remote_participants["bot"].metadata == '{"state": "listening"}'


# --- input audio ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def two_tones(
    server: LiveKitServer, room: str, bot: EventBot
) -> AsyncIterator[None]:
    """alice plays 440 Hz and bob 660 Hz into `room`, both heard by the bot."""
    async with (
        join(server, room, "alice") as alice,
        join(server, room, "bob") as bob,
        publishing_tone(alice, 440.0),
        publishing_tone(bob, 660.0),
    ):
        await bot.wait_for("on_audio_track_subscribed", "alice")
        await bot.wait_for("on_audio_track_subscribed", "bob")
        yield


async def test_each_participant_is_its_own_user_audio_stream(livekit_server: LiveKitServer) -> None:
    room = "events-user-audio"
    bot = EventBot()
    async with running_room(livekit_server, room, bot), two_tones(livekit_server, room, bot):
        await bot.heard(0.5, voices=2)  # past the jitter buffer's start
        heard = await bot.heard(1.0, voices=2)
    rate = bot.transport.settings.audio_in_sample_rate
    assert set(heard) == {"alice", "bob"}
    assert abs(dominant_frequency(heard["alice"], rate) - 440.0) < 10.0
    assert abs(dominant_frequency(heard["bob"], rate) - 660.0) < 10.0


async def test_mixed_input_is_one_stream_of_both_participants(
    livekit_server: LiveKitServer,
) -> None:
    room = "events-mixed-audio"
    bot = EventBot()
    async with (
        running_room(livekit_server, room, bot, audio_in_user_tracks=False),
        two_tones(livekit_server, room, bot),
    ):
        await bot.heard(0.5, voices=1)
        heard = await bot.heard(1.0, voices=1)
    assert set(heard) == {None}, f"streams {set(heard)}"
    assert not any(isinstance(f, UserAudioRawFrame) for f in bot.frames)
    rate = bot.transport.settings.audio_in_sample_rate
    mix = heard[None]
    shares = {f: band_share(mix, rate, f) for f in (440.0, 660.0)}
    assert all(share > 0.2 for share in shares.values()), f"power share by tone {shares}"


VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480))
"""First three formants (Hz) of /a/, /i/, /u/, /e/."""


def speech_like(
    seconds: float, *, f0: float = 120.0, syllables_per_second: float = 4.0
) -> np.ndarray:
    """int16 audio at SAMPLE_RATE that Silero takes for speech: no recording needed.

    A glottal-like source (a harmonic series at a slowly wavering pitch) through
    three formant resonators per vowel, one vowel per syllable, each syllable's
    loudness rising and falling at a talker's rate. A pure tone scores 0.
    """
    rate = SAMPLE_RATE
    n = int(seconds * rate)
    t = np.arange(n) / rate
    phase = np.cumsum(2 * np.pi * f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.5 * t)) / rate)
    harmonics = np.arange(1, int(4000 / f0))
    source = (np.sin(np.outer(phase, harmonics)) / harmonics).sum(axis=1)
    taps = np.arange(int(0.03 * rate))
    syllable = (t * syllables_per_second).astype(int) % len(VOWELS)
    out = np.zeros(n)
    for vowel, formants in enumerate(VOWELS):
        voiced = np.zeros(n)
        for centre, bandwidth in zip(formants, (80, 100, 150), strict=True):
            r = np.exp(-np.pi * bandwidth / rate)
            theta = 2 * np.pi * centre / rate
            response = (1 - r) * r**taps * np.sin((taps + 1) * theta) / np.sin(theta)
            voiced += np.convolve(source, response)[:n]
        out += voiced * (syllable == vowel)
    out *= np.sin(np.pi * (t * syllables_per_second % 1)) ** 2
    return (0.5 * 32767 * out / np.max(np.abs(out))).astype(np.int16)


async def test_vad_marks_speech_not_a_tone_and_audio_still_flows(
    livekit_server: LiveKitServer,
) -> None:
    """With the room's `vad` on, the echo bot runs pipecat's Silero VAD on its input."""
    room = "events-vad"
    bot = EventBot(echo_bot)
    async with (
        running_room(livekit_server, room, bot, vad=True),
        join(livekit_server, room, "alice") as alice,
    ):
        async with publishing_tone(alice, 440.0):
            await bot.heard(1.5, voices=1)
        assert not any(isinstance(f, VADUserStartedSpeakingFrame) for f in bot.frames), (
            "VAD took a pure tone for speech"
        )
        async with publishing_tone(alice, signal=speech_like(2.0)):
            await bot.wait_frame(VADUserStartedSpeakingFrame)
            echo = await subscribed_audio_track(alice, "bot")
            heard = await collect_audio(echo, 1.0)
    assert isinstance(bot.transport.vad_analyzer, SileroVADAnalyzer)
    assert rms(heard) > SILENCE_RMS, f"alice heard silence (rms {rms(heard):.1f})"


async def test_rooms_vad_windows_run_in_batches_and_still_mark_speech(
    livekit_server: LiveKitServer,
) -> None:
    """`vad_batch_ms`: two rooms' VAD windows go to Silero together, and each room's
    VAD still marks its own participant's speech."""
    from actors.room.models import silero_batches

    batches = silero_batches(0.008)
    windows, runs = batches.windows, batches.batches
    bots = [EventBot(echo_bot), EventBot(echo_bot)]
    async with (
        running_room(livekit_server, "events-vad-a", bots[0], vad=True, vad_batch_ms=8),
        running_room(livekit_server, "events-vad-b", bots[1], vad=True, vad_batch_ms=8),
        join(livekit_server, "events-vad-a", "alice") as alice,
        join(livekit_server, "events-vad-b", "bob") as bob,
        publishing_tone(alice, signal=speech_like(3.0)),
        publishing_tone(bob, signal=speech_like(3.0)),
    ):
        for bot in bots:
            await bot.wait_frame(VADUserStartedSpeakingFrame)
    assert all(bot.transport.vad_analyzer._model.session is batches for bot in bots)
    # both rooms ran windows meanwhile: some of them went to Silero in one run
    assert batches.windows - windows > batches.batches - runs > 0


async def test_active_speaker_is_the_loud_participant(livekit_server: LiveKitServer) -> None:
    room = "events-speaker"
    bot = EventBot()
    async with (
        running_room(livekit_server, room, bot),
        join(livekit_server, room, "alice") as alice,
        join(livekit_server, room, "bob") as bob,
    ):
        async with publishing_tone(alice, 440.0):
            await bot.wait_for("on_active_speaker_changed", {"id": "alice"})
        async with publishing_tone(bob, 660.0):
            await bot.wait_for("on_active_speaker_changed", {"id": "bob"})
