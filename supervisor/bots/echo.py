"""The echo bot: every participant hears their own audio back.

The embedded default's bot, and the load the benchmarks put on the supervisor: the
smallest pipeline that moves real audio in and out of a room.
"""

from __future__ import annotations

from typing import Any

from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from actors.room import RoomTransport
from supervisor.bots import room_pipeline


class EchoProcessor(FrameProcessor):
    """Turns input audio into output audio, unchanged.

    In pipecat's direct mode: it does too little per frame to earn its own queue and
    task, so a frame passes through it without a hop through the event loop."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(enable_direct_mode=True, **kwargs)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            echo = OutputAudioRawFrame(
                audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels
            )
            echo.metadata = frame.metadata
            await self.push_frame(echo)
        else:
            await self.push_frame(frame, direction)


def create_bot(transport: RoomTransport) -> PipelineWorker:
    # with the room's `vad` on, Silero marks speech (VADUserStarted/StoppedSpeakingFrame)
    analyzer = transport.vad_analyzer
    vad = [VADProcessor(vad_analyzer=analyzer)] if analyzer is not None else []
    return room_pipeline(transport, *vad, EchoProcessor())
