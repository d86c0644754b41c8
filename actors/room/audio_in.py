"""The audio-in actor: one `rtc.AudioStream` per subscribed audio track.

Each stream is asked for the pipeline's input rate and mono, so the SDK's native
resampler does the conversion before Python sees a sample. Frames go to the pipeline
with `tell_nowait` into its drop-oldest lane: a reader never waits on a slow bot, it
only makes the bot skip stale audio, and the drops are counted by that mailbox.

By default every participant is its own `UserAudioRawFrame` stream (user_id is the
identity), as in pipecat's LiveKit transport; with `audio_in_user_tracks` off the
participants are mixed into one `InputAudioRawFrame` stream.

The bot of a participant's job (`RoomSettings.hears`) hears that participant only: a
bot per participant, each echoing or answering everyone, would talk over the others'
bots. The others' tracks stay subscribed (their events still reach the bot), unread.
Nor does a bot taking a room over (`RoomSettings.predecessor`) hear the bot it replaces:
it would answer that bot's last words as a caller's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskStatus
from livekit import rtc
from pipecat.frames.frames import Frame, InputAudioRawFrame, UserAudioRawFrame

from actors import Actor
from actors.room.frames import AudioTrackSubscribedFrame, AudioTrackUnsubscribedFrame
from actors.room.settings import RoomSettings
from actors.room.stats import RoomStats
from actors.room.timing import stamp

log = logging.getLogger("actors.room")


class AudioInActor(Actor):
    """Reads every subscribed audio track and tells its frames to the pipeline."""

    def __init__(self, settings: RoomSettings, stats: RoomStats) -> None:
        self.settings = settings
        self.stats = stats
        self._readers: dict[str, anyio.CancelScope] = {}
        self._mixer: rtc.AudioMixer | None = None

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        if self.settings.audio_in_user_tracks:
            yield
            return
        rate = self.settings.audio_in_sample_rate
        blocksize = rate * self.settings.audio_frame_ms // 1000
        self._mixer = rtc.AudioMixer(rate, 1, blocksize=blocksize)
        self.tasks.start_soon(self._forward_mix, self._mixer)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await self._mixer.aclose()

    async def receive(self, frame: Frame) -> Any:
        if isinstance(frame, AudioTrackSubscribedFrame):
            hears = self.settings.hears
            if hears not in (None, frame.participant_id):
                log.info("[%s] not hearing %s (track %s): this bot hears %s only",
                         self.settings.key, frame.participant_id, frame.track_sid, hears)
            elif frame.participant_id == self.settings.predecessor:
                log.info("[%s] not hearing %s (track %s): the bot it takes over from",
                         self.settings.key, frame.participant_id, frame.track_sid)
            elif frame.track_sid not in self._readers:
                await self.tasks.start(self._read, frame)
        elif isinstance(frame, AudioTrackUnsubscribedFrame):
            scope = self._readers.pop(frame.track_sid, None)
            if scope is not None:
                scope.cancel()
        else:
            return await super().receive(frame)
        return None

    async def _read(
        self, subscribed: AudioTrackSubscribedFrame, *, task_status: TaskStatus[None]
    ) -> None:
        sid, user = subscribed.track_sid, subscribed.participant_id
        rate, frame_ms = self.settings.audio_in_sample_rate, self.settings.audio_frame_ms
        with anyio.CancelScope() as scope:
            self._readers[sid] = scope
            task_status.started()
            stream = rtc.AudioStream(
                subscribed.track, sample_rate=rate, num_channels=1, frame_size_ms=frame_ms
            )
            log.info("[%s] receiving audio of %s (track %s)", self.settings.key, user, sid)
            try:
                if self._mixer is not None:
                    frames = _frames_of(stream)
                    self._mixer.add_stream(frames)
                    try:
                        await anyio.sleep_forever()
                    finally:
                        self._mixer.remove_stream(frames)
                else:
                    await self._forward(stream, user)
            finally:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
        if self._readers.get(sid) is scope:
            del self._readers[sid]

    async def _forward(self, stream: rtc.AudioStream, user: str) -> None:
        tell = self.sibling("pipeline").tell_nowait
        stats = self.stats
        async for event in stream:
            audio = event.frame
            stats.audio_frames_in += 1
            frame = UserAudioRawFrame(
                audio=audio.data.tobytes(),
                sample_rate=audio.sample_rate,
                num_channels=audio.num_channels,
                user_id=user,
            )
            stamp(frame)  # for the latency histogram (see actors.room.timing)
            tell(frame)

    async def _forward_mix(self, mixer: rtc.AudioMixer) -> None:
        tell = self.sibling("pipeline").tell_nowait
        stats = self.stats
        async for audio in mixer:
            stats.audio_frames_in += 1
            frame = InputAudioRawFrame(
                audio=audio.data.tobytes(),
                sample_rate=audio.sample_rate,
                num_channels=audio.num_channels,
            )
            stamp(frame)
            tell(frame)


async def _frames_of(stream: rtc.AudioStream) -> AsyncIterator[rtc.AudioFrame]:
    async for event in stream:
        yield event.frame
