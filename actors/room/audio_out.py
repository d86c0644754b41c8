"""The audio-out actor: the bot's voice in the room.

It owns an `rtc.AudioSource` at the pipeline's output rate and the microphone track
published from it. Its data lane blocks rather than drops: `capture_frame` waits while
the source's buffer is full, the full lane then makes the pipeline's output wait, and
so a bot that produces audio faster than real time (a TTS burst) is paced, not cut.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from livekit import rtc
from pipecat.frames.frames import Frame, InterruptionFrame, OutputAudioRawFrame

from actors.actor import Actor
from actors.room.frames import GetRoomFrame
from actors.room.settings import RoomSettings
from actors.room.stats import RoomStats
from actors.room.timing import observe_latency

log = logging.getLogger("actors.room")

TRACK_NAME = "bot-audio"


class AudioOutActor(Actor):
    """Publishes the bot's audio track and feeds it the pipeline's output frames."""

    def __init__(self, settings: RoomSettings, stats: RoomStats) -> None:
        self.settings = settings
        self.stats = stats
        self._source: rtc.AudioSource | None = None

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        room: rtc.Room = await self.sibling("connection").ask(GetRoomFrame())
        source = rtc.AudioSource(
            self.settings.audio_out_sample_rate, 1, queue_size_ms=self.settings.audio_out_queue_ms
        )
        track = rtc.LocalAudioTrack.create_audio_track(TRACK_NAME, source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publication = await room.local_participant.publish_track(track, options)
        self._source = source
        log.info("[%s] publishing %s", self.settings.room, TRACK_NAME)
        killed = False
        try:
            yield
        except anyio.get_cancelled_exc_class():
            # Killed (a second stop signal, a shutdown timeout): the connection is being
            # torn down at the same moment, and an unpublish would wait for an answer
            # that never comes; leaving the room takes the track away anyway.
            killed = True
            raise
        finally:
            self._source = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                if room.isconnected() and not killed:
                    await room.local_participant.unpublish_track(publication.sid)
                await source.aclose()

    async def receive(self, frame: Frame) -> Any:
        source = self._source
        assert source is not None
        if isinstance(frame, OutputAudioRawFrame):
            samples = len(frame.audio) // (2 * frame.num_channels)
            if samples:
                await source.capture_frame(
                    rtc.AudioFrame(frame.audio, frame.sample_rate, frame.num_channels, samples)
                )
                self.stats.audio_frames_out += 1
                observe_latency(frame, self.stats.audio_latency)
        elif isinstance(frame, InterruptionFrame):
            source.clear_queue()  # the bot was interrupted: stop speaking at once
        else:
            return await super().receive(frame)
        return None
