"""Simulated participants: real livekit rtc SDK clients in the test process.

Every feature is proven against the real server, so tests join rooms the way a
browser would (a token minted with livekit-api, WebRTC media through the server)
and judge what they hear by its energy and pitch rather than by exact samples,
which Opus and the jitter buffer change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import anyio
import numpy as np
from livekit import api, rtc

from supervisor.dispatch.fleet import successor_identity
from supervisor.process.rtc_shutdown import end_room

SAMPLE_RATE = 48_000
SILENCE_RMS = 100.0
"""Below this a frame is silence: a 0.3-amplitude tone is ~6950, Opus comfort noise far below."""


class ServerCredentials(Protocol):
    """What a participant needs from a server: the session fixture's LiveKitServer fits."""

    @property
    def url(self) -> str: ...

    @property
    def api_key(self) -> str: ...

    @property
    def api_secret(self) -> str: ...


def mint_token(
    server: ServerCredentials,
    room: str,
    identity: str,
    *,
    name: str | None = None,
    metadata: str = "",
) -> str:
    """A join token; the display name defaults to the identity."""
    grants = api.VideoGrants(
        room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True
    )
    return (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_name(name if name is not None else identity)
        .with_metadata(metadata)
        .with_grants(grants)
        .to_jwt()
    )


@contextlib.asynccontextmanager
async def join(
    server: ServerCredentials,
    room: str,
    identity: str,
    *,
    timeout: float = 10.0,
    options: rtc.RoomOptions | None = None,
    name: str | None = None,
    metadata: str = "",
) -> AsyncIterator[rtc.Room]:
    """A connected rtc.Room for `identity`, disconnected on exit.

    `options` (e.g. encryption with a shared key) default to the SDK's own; `name`
    and `metadata` go into the token, as an app server would put them there.
    """
    client = rtc.Room()
    token = mint_token(server, room, identity, name=name, metadata=metadata)
    try:
        await asyncio.wait_for(
            client.connect(server.url, token, options or rtc.RoomOptions()),
            timeout=timeout,
        )
        yield client
    finally:
        await end_room(client)


def sine(frequency: float, samples: int, start: int = 0, amplitude: float = 0.3) -> np.ndarray:
    """int16 mono samples of a sine, continuing from sample `start` so frames join smoothly."""
    t = (np.arange(samples) + start) / SAMPLE_RATE
    return (amplitude * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


@contextlib.asynccontextmanager
async def publishing_tone(
    room: rtc.Room,
    frequency: float = 440.0,
    *,
    frame_ms: int = 20,
    name: str = "tone",
    signal: np.ndarray | None = None,
) -> AsyncIterator[rtc.LocalTrackPublication]:
    """Publish a microphone track playing a tone for as long as the block runs.

    Frames are paced against the clock, as a real microphone delivers them, so the
    server and the receiver see real-time audio rather than a burst. `signal`
    (int16 mono at SAMPLE_RATE) is played in a loop instead of the tone.
    """
    source = rtc.AudioSource(SAMPLE_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track(name, source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    publication = await room.local_participant.publish_track(track, options)
    samples_per_frame = SAMPLE_RATE * frame_ms // 1000

    async def pump() -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        sent = 0
        while True:
            if signal is None:
                data = sine(frequency, samples_per_frame, start=sent)
            else:
                data = np.take(signal, np.arange(sent, sent + samples_per_frame), mode="wrap")
            frame = rtc.AudioFrame(data.tobytes(), SAMPLE_RATE, 1, samples_per_frame)
            await source.capture_frame(frame)
            sent += samples_per_frame
            next_at += frame_ms / 1000
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    task = asyncio.create_task(pump())
    try:
        yield publication
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await room.local_participant.unpublish_track(publication.sid)
        await source.aclose()


async def subscribed_audio_track(
    room: rtc.Room, identity: str, *, timeout: float = 10.0
) -> rtc.RemoteAudioTrack:
    """The first audio track of participant `identity` that `room` is subscribed to."""
    found: asyncio.Future[rtc.RemoteAudioTrack] = asyncio.get_running_loop().create_future()

    def on_subscribed(
        track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if (
            participant.identity == identity
            and isinstance(track, rtc.RemoteAudioTrack)
            and not found.done()
        ):
            found.set_result(track)

    room.on("track_subscribed", on_subscribed)
    try:
        participant = room.remote_participants.get(identity)
        for publication in participant.track_publications.values() if participant else ():
            if isinstance(publication.track, rtc.RemoteAudioTrack) and not found.done():
                found.set_result(publication.track)
        return await asyncio.wait_for(found, timeout=timeout)
    finally:
        room.off("track_subscribed", on_subscribed)


async def collect_audio(track: rtc.Track, seconds: float, *, timeout: float = 10.0) -> np.ndarray:
    """`seconds` of int16 mono audio received from `track`, resampled to 48 kHz."""
    wanted = int(seconds * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)

    async def read() -> None:
        received = 0
        async for event in stream:
            chunk = np.frombuffer(event.frame.data, dtype=np.int16).copy()
            chunks.append(chunk)
            received += len(chunk)
            if received >= wanted:
                return

    try:
        await asyncio.wait_for(read(), timeout=timeout)
    finally:
        await stream.aclose()
    return np.concatenate(chunks)[:wanted] if chunks else np.zeros(0, dtype=np.int16)


def data_inbox(room: rtc.Room) -> asyncio.Queue[rtc.DataPacket]:
    """Every data packet `room` receives from now on, in arrival order.

    Call it before anything is sent to the participant, so no packet goes unseen;
    a test reads the queue with a timeout rather than sleeping.
    """
    inbox: asyncio.Queue[rtc.DataPacket] = asyncio.Queue()
    room.on("data_received", inbox.put_nowait)
    return inbox


async def media_paths(room: rtc.Room) -> set[tuple[str, str]]:
    """(protocol, server address) of the ICE candidate pair each transport selected.

    Media that silently falls back from UDP to ICE-TCP still passes an energy
    check, so tests that care about the path look here.
    """
    stats = await room.get_rtc_stats()
    reports = [*stats.publisher_stats, *stats.subscriber_stats]
    by_kind: dict[str, list] = {}
    for report in reports:
        by_kind.setdefault(report.WhichOneof("stats"), []).append(report)
    pairs = {
        r.candidate_pair.rtc.id: r.candidate_pair.candidate_pair.remote_candidate_id
        for r in by_kind.get("candidate_pair", [])
    }
    candidates = {
        r.remote_candidate.rtc.id: r.remote_candidate.candidate
        for r in by_kind.get("remote_candidate", [])
    }
    paths = set()
    for report in by_kind.get("transport", []):
        selected = report.transport.transport.selected_candidate_pair_id
        if selected in pairs and pairs[selected] in candidates:
            candidate = candidates[pairs[selected]]
            paths.add((candidate.protocol, candidate.address))
    return paths


def rms(samples: np.ndarray) -> float:
    """Root-mean-square level in int16 units (silence is 0, full-scale sine ~23170)."""
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def dominant_frequency(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """The strongest frequency in the signal, in Hz (resolution sample_rate / len)."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    spectrum[0] = 0.0
    return float(np.fft.rfftfreq(samples.size, 1 / sample_rate)[int(np.argmax(spectrum))])


def is_tone(samples: np.ndarray, frequency: float, sample_rate: int = SAMPLE_RATE) -> bool:
    """Audible, and `frequency` is its strongest component."""
    return (
        rms(samples) > SILENCE_RMS
        and abs(dominant_frequency(samples, sample_rate) - frequency) < 10.0
    )


async def listen_for_tone(
    track: rtc.Track, frequency: float, *, seconds: float = 1.0, timeout: float = 15.0
) -> np.ndarray:
    """`seconds` of `track`, after 0.5 s for the jitter buffer to settle: the first such
    window that is the tone `frequency`, else the last one heard within `timeout`.

    On a busy machine one window can come out choppy (a loop of the sender, the server
    or the listener ran late), which is not what a test of "the tone comes through"
    judges; a tone that never comes through still fails it."""
    await collect_audio(track, 0.5)
    heard = await collect_audio(track, seconds)
    with anyio.move_on_after(timeout):
        while not is_tone(heard, frequency):
            heard = await collect_audio(track, seconds)
    return heard


async def hears_echo(room: rtc.Room, bot: str = "bot", timeout: float = 20.0) -> float:
    """Publish a tone and hear `bot` echo it; the seconds until its track was subscribed."""
    started = time.perf_counter()
    async with publishing_tone(room, 440.0):
        track = await subscribed_audio_track(room, bot, timeout=timeout)
        arrived = time.perf_counter() - started
        heard = await listen_for_tone(track, 440.0)
    assert is_tone(heard, 440.0), f"no 440 Hz echo from {bot}"
    return arrived


async def hears_echo_across_a_handoff(room: rtc.Room, timeout: float = 20.0) -> float:
    """`hears_echo` from a dispatched bot, whichever of its job's two identities it has
    (`successor_identity`): a handoff (a recycle's, a deploy's) may replace `bot` by
    `bot~2` while the caller listens, and the echo is heard again from the one that
    stays."""
    try:
        return await hears_echo(room, "bot", timeout)
    except (AssertionError, TimeoutError):
        if successor_identity("bot") not in room.remote_participants:
            raise
    return await hears_echo(room, successor_identity("bot"), timeout)


def bot_track(room: rtc.Room, bot: str = "bot") -> str | None:
    """The sid of the bot's audio track as `room` sees it, once subscribed."""
    participant = room.remote_participants.get(bot)
    for publication in participant.track_publications.values() if participant else ():
        if isinstance(publication.track, rtc.RemoteAudioTrack):
            return publication.sid
    return None


async def agents_listed(server: ServerCredentials, room: str) -> list[str]:
    """The agents in `room` as the server lists them (two bots of one identity would show
    as one participant on the client's side)."""
    async with api.LiveKitAPI(server.url, server.api_key, server.api_secret) as lk:
        listing = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    agent = api.ParticipantInfo.Kind.AGENT
    return [p.identity for p in listing.participants if p.kind == agent]


async def tone_windows(
    track: rtc.Track, frequency: float, window: float
) -> AsyncIterator[tuple[float, bool]]:
    """Each `window` of `track`'s audio as its frames arrive (sliding by a frame): the
    loop time at its end, and whether it is the tone `frequency`. The stream closes as
    the iteration stops (iterate it in `contextlib.aclosing`)."""
    wanted = int(window * SAMPLE_RATE)
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
    recent = np.zeros(0, dtype=np.int16)
    try:
        async for event in stream:
            chunk = np.frombuffer(event.frame.data, dtype=np.int16)
            recent = np.concatenate([recent, chunk])[-wanted:]
            if recent.size == wanted:
                yield asyncio.get_running_loop().time(), is_tone(recent, frequency)
    finally:
        await stream.aclose()


async def first_tone_at(
    track: rtc.Track, frequency: float, *, window: float = 0.1, timeout: float = 30.0
) -> float:
    """The loop time at which `track` first carries `frequency`: the end of the first
    `window` of its audio that is that tone (for a time to the echo, not a verdict on
    its quality, which `listen_for_tone` gives)."""
    with anyio.fail_after(timeout):
        async with contextlib.aclosing(tone_windows(track, frequency, window)) as windows:
            async for at, tone in windows:
                if tone:
                    return at
    raise AssertionError("the track ended without the tone")


def longest_silent_run(levels: Sequence[float], start: int = 0) -> int:
    """The longest run of silent frames (by RMS level) from frame `start` on."""
    longest = run = 0
    for level in levels[start:]:
        run = run + 1 if level <= SILENCE_RMS else 0
        longest = max(longest, run)
    return longest
