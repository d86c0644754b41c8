"""LiveKit's load-test shape as a pipecat bot: Silero VAD on the caller's audio and, at
each end of speech, a second of sine wave back. LiveKit sized its agent workers with
this shape (30 sessions on 4 cores and 8 GB), so the conversations benchmark runs it for
every system (`--bot benchmarks.sine_reply:create_bot`; livekit-agents' is
`AGENTS_VOICE_SHAPE=sine` in `benchmarks/agents_voice.py`) and its figures sit beside
theirs: a room's transport and VAD, no recognition, no LLM, no speech synthesis.

`conversation()` is the pipeline between any transport's ends, as the voice bot's, so
pipecat's process per call (`benchmarks/pipecat_voice.py`) runs the same one; the
VAD defaults to the process's shared Silero session (`actors.room.models`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.frames.frames import (
    Frame,
    OutputAudioRawFrame,
    StartFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from actors.room import RoomTransport
from actors.room.models import SharedSileroVADAnalyzer, silero_session
from supervisor.bots import room_worker

TONE_HZ = 440.0
TONE_SECONDS = 1.0
AMPLITUDE = 0.3
"""Of full scale: well above the callers' noise floor, below clipping."""


def tone(sample_rate: int) -> bytes:
    """`TONE_SECONDS` of a `TONE_HZ` sine, 16-bit mono PCM at `sample_rate`."""
    t = np.arange(round(TONE_SECONDS * sample_rate)) / sample_rate
    wave = AMPLITUDE * 32767 * np.sin(2 * np.pi * TONE_HZ * t)
    return wave.astype("<i2").tobytes()


class SineReply(FrameProcessor):
    """Answers each end of speech the VAD reports with the tone, at the output's rate."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tone = b""
        self._rate = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._rate = frame.audio_out_sample_rate
            self._tone = tone(self._rate)
        await self.push_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            await self.push_frame(OutputAudioRawFrame(self._tone, self._rate, 1))


def conversation(
    input: FrameProcessor,
    output: FrameProcessor,
    *,
    vad_analyzer: VADAnalyzer | None = None,
    **_others: Any,
) -> Pipeline:
    """The VAD and the reply between `input` and `output` (the voice bot's other
    options, a recognizer say, have nothing to do here)."""
    vad = VADProcessor(vad_analyzer=vad_analyzer or SharedSileroVADAnalyzer())
    return Pipeline([input, vad, SineReply(), output])


def prewarm() -> None:
    """Load Silero before the process's first room (`supervisor.bots.prewarm`)."""
    silero_session()


def create_bot(transport: RoomTransport) -> PipelineWorker:
    pipeline = conversation(
        transport.input(), transport.output(), vad_analyzer=transport.vad_analyzer
    )
    return room_worker(transport, pipeline, metrics=True)
