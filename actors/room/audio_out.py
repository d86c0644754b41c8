"""The audio-out actor: the bot's voice in the room.

It owns an `rtc.AudioSource` at the pipeline's output rate and the microphone track
published from it. Its data lane blocks rather than drops: `capture_frame` waits while
the source's buffer is full, the full lane then makes the pipeline's output wait, and
so a bot that produces audio faster than real time (a TTS burst) is paced, not cut.
Live audio passed through (the echo bot's) is the exception: it cannot get ahead of
real time, only behind, so what would play later than `passthrough_delay_ms` after it
arrived, behind audio already queued, is dropped as `late` and the path catches up
after a stall.

The source and its track exist only while someone else is in the room to hear them. A
published audio track costs the rtc SDK two threads and about 2 % of a core even in
silence (it encodes 50 packets a second whatever it is fed), and each source a capture
thread of its own: several times what an idle connection costs, and most rooms of a
large deployment are empty most of the time. The first participant to join gets the
track published (one signalling round trip, before the bot has anything to say to
them), the last to leave gets it unpublished (after `UNPUBLISH_GRACE_SECONDS`), and what
a bot says to an empty room is dropped and counted as `unheard`.

A bot taking the room over from another (`RoomSettings.predecessor`, a handoff) is
held back: its track is published at once, but what it says while the bot it replaces
is still in the room is captured as silence and counted as dropped (`handoff`), so the
track plays at the caller's before it is heard: measured with five rooms handed over
at once, a track left unfed until then was first heard 0.5-1.3 s after the old bot's
last words. That bot is removed once this track is published and subscribed to
(`RoomStats.track_subscribed_at`, `supervisor.dispatch.fleet`), and from its removal on
this one is heard, the silence it queued dropped: the caller hears one bot at a time.

The room's stats note when the track was first published and when the bot's first
audio went into it, since the tree started: a dispatched room's job times its
latency from the offer to those moments (`lksup_dispatch_track_seconds`,
`lksup_dispatch_first_audio_seconds`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from time import perf_counter_ns
from typing import Any

import anyio
from livekit import rtc
from pipecat.frames.frames import Frame, InterruptionFrame, OutputAudioRawFrame

from actors import Actor
from actors.room.bot_metrics import observe_response
from actors.room.frames import (
    GetRoomFrame,
    ParticipantJoinedFrame,
    ParticipantLeftFrame,
    SignallingLostFrame,
    UnheardFrame,
)
from actors.room.settings import RoomSettings
from actors.room.signalling import unanswered
from actors.room.stats import RoomStats
from actors.room.timing import arrival_age, observe_latency

log = logging.getLogger("actors.room")

TRACK_NAME = "bot-audio"
UNPUBLISH_GRACE_SECONDS = 3.0
"""How long the track outlives its last listener. A participant who rejoins (a reloaded
page, a new session under the same identity) keeps the track it is subscribed to
instead of meeting an unpublish and a new publication, however the server orders the
old session's departure and the new one's arrival; three seconds of an idle track cost
a few milliseconds of CPU."""


class AudioOutActor(Actor):
    """Publishes the bot's audio track while anyone listens, and feeds it the pipeline's
    output frames."""

    def __init__(self, settings: RoomSettings, stats: RoomStats) -> None:
        self.settings = settings
        self.stats = stats
        self._room: rtc.Room | None = None
        self._source: rtc.AudioSource | None = None
        self._publication: rtc.LocalTrackPublication | None = None
        self._passthrough_delay = settings.passthrough_delay_ms / 1000
        self._held_back = False
        """While the bot this one takes over from is in the room."""

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        room: rtc.Room = await self.sibling("connection").ask(GetRoomFrame())
        self._room = room
        self._held_back = self.settings.predecessor in room.remote_participants
        room.on("local_track_subscribed", self._subscribed)
        killed = False
        try:
            if room.remote_participants:
                await self._publish()
            yield
        except anyio.get_cancelled_exc_class():
            # Killed (a second stop signal, a shutdown timeout): the connection is being
            # torn down at the same moment, and an unpublish would wait for an answer
            # that never comes; leaving the room takes the track away anyway.
            killed = True
            raise
        finally:
            room.off("local_track_subscribed", self._subscribed)
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._unpublish(tell_server=room.isconnected() and not killed)

    def _subscribed(self, track: rtc.LocalTrack) -> None:
        if track.name == TRACK_NAME and self.stats.track_subscribed_at is None:
            self.stats.track_subscribed_at = anyio.current_time()

    async def _publish(self) -> None:
        """A source and its track, published: the SDK runs a capture thread per source,
        so neither exists while nobody listens."""
        assert self._room is not None
        if self._publication is not None:
            return
        source = rtc.AudioSource(
            self.settings.audio_out_sample_rate, 1, queue_size_ms=self.settings.audio_out_queue_ms
        )
        track = rtc.LocalAudioTrack.create_audio_track(TRACK_NAME, source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        try:
            self._publication = await self._room.local_participant.publish_track(track, options)
        except BaseException as err:
            with anyio.CancelScope(shield=True):
                await source.aclose()
            if unanswered(err):
                # the server stopped reading this connection: only a new one helps
                self.stats.unanswered_publishes += 1
                self.sibling("connection").tell_nowait(
                    SignallingLostFrame(f"publishing {TRACK_NAME} got no answer ({err})")
                )
                return
            raise
        self._source = source
        if self.stats.track_published_at is None:
            self.stats.track_published_at = anyio.current_time()
        log.info("[%s] publishing %s", self.settings.key, TRACK_NAME)

    async def _unpublish(self, *, tell_server: bool = True) -> None:
        assert self._room is not None
        publication, source = self._publication, self._source
        self._publication = self._source = None
        if publication is not None and tell_server:
            await self._room.local_participant.unpublish_track(publication.sid)
            log.info("[%s] nobody left to hear %s: unpublished", self.settings.key, TRACK_NAME)
        if source is not None:
            await source.aclose()

    def _holding_back(self) -> bool:
        """Whether the bot is still held back: its predecessor neither removed (as the
        server told the member taking the room over, `RoomStats.predecessor_removed`)
        nor reported gone by the SDK, which learns of it about 0.2 s later."""
        if self._held_back and self.stats.predecessor_removed:
            self._heard(f"{self.settings.predecessor} removed")
        return self._held_back

    def _heard(self, why: str) -> None:
        """From now on this bot is heard; the silence queued while it was held back is
        dropped, so its next words play at once rather than behind it."""
        self._held_back = False
        queued = 0.0
        if self._source is not None:
            queued = self._source.queued_duration
            self._source.clear_queue()
        log.info("[%s] %s: this bot is heard (%.0f ms of silence dropped)",
                 self.settings.key, why, queued * 1000)

    async def _unheard_after_grace(self) -> None:
        await anyio.sleep(UNPUBLISH_GRACE_SECONDS)
        self.ref.tell_nowait(UnheardFrame())

    def _late(self, frame: OutputAudioRawFrame, seconds: float, queued: float) -> bool:
        """Whether passed-through audio would play too late to be worth playing.

        Only while the source holds at least as much audio as the frame itself, i.e. a
        backlog that the drop shortens: where the whole path is slow (a loaded
        machine), every frame is old but none is behind another, and dropping them
        would turn a late echo into silence.
        """
        age = arrival_age(frame)
        return age is not None and queued >= seconds and age + queued > self._passthrough_delay

    async def receive(self, frame: Frame) -> Any:
        source = self._source
        if isinstance(frame, OutputAudioRawFrame):
            received = perf_counter_ns()  # the capture hop (see actors.room.timing)
            samples = len(frame.audio) // (2 * frame.num_channels)
            if not samples:
                return None
            if source is None:
                self.stats.audio_frames_dropped["unheard"] += 1
                return None
            if self._late(frame, samples / frame.sample_rate, source.queued_duration):
                self.stats.audio_frames_dropped["late"] += 1
                return None
            held_back = self._holding_back()
            # held back, silence in its place: the track plays on meanwhile
            audio = bytes(len(frame.audio)) if held_back else frame.audio
            await source.capture_frame(
                rtc.AudioFrame(audio, frame.sample_rate, frame.num_channels, samples)
            )
            if held_back:
                self.stats.audio_frames_dropped["handoff"] += 1
                return None
            self.stats.audio_frames_out += 1
            if self.stats.first_audio_at is None:
                self.stats.first_audio_at = anyio.current_time()
            observe_latency(frame, self.stats.audio_latency, self.stats.audio_hops, received)
            observe_response(self.stats)
        elif isinstance(frame, InterruptionFrame):
            if source is not None:
                source.clear_queue()  # the bot was interrupted: stop speaking at once
        elif isinstance(frame, ParticipantJoinedFrame):
            await self._publish()
        elif isinstance(frame, ParticipantLeftFrame):
            assert self._room is not None
            if self._held_back and frame.participant_id == self.settings.predecessor:
                self._heard(f"{frame.participant_id} left")
            # The SDK drops a participant before it reports the departure: anyone
            # listed is still here (a participant who rejoined under the same identity
            # is listed again by the time its old session's departure comes through).
            if not self._room.remote_participants and self._publication is not None:
                self.tasks.start_soon(self._unheard_after_grace)
        elif isinstance(frame, UnheardFrame):
            assert self._room is not None
            if not self._room.remote_participants:
                await self._unpublish()
        else:
            return await super().receive(frame)
        return None
