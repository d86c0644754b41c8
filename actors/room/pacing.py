"""Input audio paced to the bot, so a bot slower than real time skips stale audio.

pipecat's queues are unbounded: fed at the room's pace, a bot slower than real
time would pile audio up inside its pipeline with ever-growing delay. Paced, the
feeder waits while the pipeline lags, so the backlog stays in the pipeline actor's
drop-oldest lane, where the oldest audio is dropped and counted. The lag is seen by
marks (`AudioMarkFrame`) sent behind the audio and the input's own audio queue.
"""

from __future__ import annotations

import logging
from typing import Protocol

import anyio
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection

from actors.room.frames import AudioMarkFrame
from actors.room.stats import RoomStats

log = logging.getLogger("actors.room")

AUDIO_MARK_EVERY_MS = 100
"""Input audio between two marks sent down the bot's pipeline."""
MAX_AUDIO_BEHIND_MS = 300
"""How much input audio the pipeline may lag before audio is held back."""
STALL_SECONDS = 0.5
"""How long one audio frame waits for a lagging pipeline before it is dropped."""


class PacedInput(Protocol):
    """The bot's started input transport, as pacing drives it."""

    @property
    def audio_backlog(self) -> int: ...

    async def push_audio_frame(self, frame: InputAudioRawFrame) -> None: ...

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None: ...


class InputPacer:
    """Paces one pipeline incarnation's input audio by the marks reaching its end."""

    def __init__(self, room_name: str, stats: RoomStats, frame_ms: int) -> None:
        self._room_name = room_name
        self._stats = stats
        self._mark_every = max(1, AUDIO_MARK_EVERY_MS // frame_ms)  # in frames, as is the rest
        self._max_behind = MAX_AUDIO_BEHIND_MS // frame_ms
        self._pacing = False  # until `pace_with`: a bot running itself has no worker to watch
        self._sent = 0
        self._through = 0

    def pace_with(self, worker: PipelineWorker) -> None:
        """Pace input audio by the marks reaching the end of `worker`'s pipeline."""
        worker.add_reached_downstream_filter((AudioMarkFrame,))
        worker.add_event_handler("on_frame_reached_downstream", self._mark_reached)
        self._pacing = True

    async def push(self, input: PacedInput, frame: InputAudioRawFrame) -> None:
        """Push `frame` into the started `input`, waiting while the pipeline lags.

        A frame that waited STALL_SECONDS is dropped, so room events still reach a
        stalled bot. A pipeline that never passed a mark on was never paceable (it
        drops system frames): pacing stops rather than drop all of its audio.
        """
        if self._pacing and self._lagging(input):
            with anyio.move_on_after(STALL_SECONDS):
                # polled (the input's backlog has no event): only a lagging room pays for it
                while self._lagging(input):  # noqa: ASYNC110
                    await anyio.sleep(0.005)
            if self._lagging(input):
                if self._through > 0:
                    self._stats.audio_frames_dropped["stale"] += 1
                    return  # stalled: this frame is stale
                log.warning(
                    "[%s] the bot's pipeline does not pass system frames on: "
                    "input audio is not paced",
                    self._room_name,
                )
                self._pacing = False
        await input.push_audio_frame(frame)
        self._sent += 1
        if self._pacing and self._sent % self._mark_every == 0:
            await input.push_frame(AudioMarkFrame(self._sent))

    async def _mark_reached(self, worker: PipelineWorker, frame: Frame) -> None:
        if isinstance(frame, AudioMarkFrame) and frame.seq > self._through:
            self._through = frame.seq

    def _lagging(self, input: PacedInput) -> bool:
        behind = self._sent - self._through
        return behind > self._max_behind or input.audio_backlog > self._max_behind
