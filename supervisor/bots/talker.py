"""The talker bot: answers each thing the user says, out loud, with no outside service.

The built-in bot for the bot's own metrics, as the echo bot is for audio: Silero VAD
(pipecat's), then an LLM service and a TTS service built on pipecat's own service base
classes, so its time to first byte, processing time, token and character usage reach
pipecat's `MetricsFrame`s through pipecat's own code paths, and turns, responses and
interruptions through its turn frames. The "LLM" answers from a script (how long the
user spoke), the TTS speaks with espeak-ng (Debian's `espeak-ng` package, which `make
run` and `make test` install when missing and root). It needs `[bot] vad = true` or
makes its own Silero analyzer, so the input rate must be 8 or 16 kHz. What it imports
(onnxruntime, openai's types for pipecat's LLM adapter) it imports at the top, when the
config names it, not on the event loop the rooms share.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import struct
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

from pipecat.adapters.llm.services.open_ai_adapter import OpenAILLMAdapter
from pipecat.audio.utils import create_stream_resampler
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings, ServiceSettings, TTSSettings
from pipecat.services.tts_service import TTSService

from actors.room import RoomTransport
from supervisor.bots import room_pipeline

ESPEAK = "espeak-ng"
if shutil.which(ESPEAK) is None:
    # at import, i.e. when the config names this bot: a config error (exit 2), not a
    # bot that fails in every room until each is quarantined
    raise ImportError(
        f"{ESPEAK} is not installed: apt-get install espeak-ng (`make run` does, as root)"
    )
WAV_HEADER_BYTES = 44
"""espeak-ng writes a canonical 44-byte WAV header (with unknown lengths) to stdout."""
READ_BYTES = 4096


_S = TypeVar("_S", bound=ServiceSettings)


def _unsupported(settings: type[_S]) -> _S:
    """pipecat's settings of a service with every setting unsupported (None): pipecat
    logs an error for each one left unset, and these services have none."""
    unset: dict[str, Any] = {f.name: None for f in dataclasses.fields(settings)}
    del unset["extra"]
    return settings(**unset)


class TurnTaker(FrameProcessor):
    """Turns the VAD's speech marks into pipecat's user turns and asks the LLM to answer.

    The part of a voice bot that a user aggregator with turn strategies plays in a
    full pipeline, cut down to what needs no transcript: a turn starts with speech
    (interrupting the bot) and ends with the VAD's stop; its context is how long the
    user spoke.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._started: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if direction is not FrameDirection.DOWNSTREAM:
            return
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._started = frame.timestamp - frame.start_secs
            await self.broadcast_frame(UserStartedSpeakingFrame)
            await self.broadcast_interruption()
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._started is not None:
            spoke = frame.timestamp - frame.stop_secs - self._started
            self._started = None
            await self.broadcast_frame(UserStoppedSpeakingFrame)
            context = LLMContext(messages=[{"role": "user", "content": f"{spoke:.1f}"}])
            await self.push_frame(LLMContextFrame(context=context))


def _texts(context: LLMContext) -> list[str]:
    return [str(m.get("content", "")) for m in context.get_messages() if isinstance(m, dict)]


def script(context: LLMContext) -> str:
    """The answer to the last user message (seconds spoken, as `TurnTaker` writes it)."""
    said = _texts(context)[-1:] or ["no time"]
    return f"You spoke for {said[0]} seconds."


class ScriptLLMService(LLMService):
    """An LLM service on pipecat's base class that answers from `script`, reporting
    time to first byte, processing time and token usage through pipecat's helpers (a
    token here is a word)."""

    adapter_class = OpenAILLMAdapter
    """pipecat's default, named here so that it is imported with this module (when the
    config is read), not on the event loop by the first room's bot: openai's types
    take seconds to import on a busy machine."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(settings=_unsupported(LLMSettings), **kwargs)

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._answer(frame.context)
        else:
            await self.push_frame(frame, direction)

    async def _answer(self, context: LLMContext) -> None:
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        text = script(context)
        await self.stop_ttfb_metrics()
        await self.push_frame(LLMTextFrame(text))
        prompt = sum(len(text.split()) for text in _texts(context))
        completion = len(text.split())
        await self.start_llm_usage_metrics(
            LLMTokenUsage(
                prompt_tokens=prompt, completion_tokens=completion,
                total_tokens=prompt + completion,
            )
        )  # fmt: skip
        await self.stop_processing_metrics()
        await self.push_frame(LLMFullResponseEndFrame())


class EspeakTTSService(TTSService):
    """A TTS service on pipecat's base class that speaks with the espeak-ng command,
    streaming its WAV output as it comes (the base class times the first byte)."""

    def __init__(self, *, voice: str = "en", **kwargs: Any) -> None:
        super().__init__(
            push_start_frame=True, push_stop_frames=True, settings=_unsupported(TTSSettings),
            **kwargs,
        )  # fmt: skip
        self._voice = voice
        self._resampler = create_stream_resampler()

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        await self.start_tts_usage_metrics(text)
        await self.start_processing_metrics()
        process = await asyncio.create_subprocess_exec(
            ESPEAK, "--stdout", "-v", self._voice, text,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            header = await process.stdout.readexactly(WAV_HEADER_BYTES)
            (rate,) = struct.unpack_from("<I", header, 24)
            while chunk := await process.stdout.read(READ_BYTES):
                await self.stop_ttfb_metrics()
                audio = await self._resampler.resample(chunk[: len(chunk) // 2 * 2], rate,
                                                       self.sample_rate)
                if audio:
                    yield TTSAudioRawFrame(
                        audio=audio, sample_rate=self.sample_rate, num_channels=1,
                        context_id=context_id,
                    )  # fmt: skip
        except asyncio.IncompleteReadError:
            yield ErrorFrame(error=f"{ESPEAK} wrote no audio for {text!r}")
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
            await self.stop_ttfb_metrics()
            await self.stop_processing_metrics()


def _cascade(vad: VADAnalyzer) -> list[FrameProcessor]:
    """What runs between a transport's input and its output."""
    return [VADProcessor(vad_analyzer=vad), TurnTaker(), ScriptLLMService(), EspeakTTSService()]


def conversation(input: FrameProcessor, output: FrameProcessor) -> Pipeline:
    """The talker between any transport's input and output (pipecat's own
    `LiveKitTransport` in the conversations benchmark's pipecat peer), with its own
    Silero analyzer."""
    return Pipeline([input, *_cascade(SileroVADAnalyzer()), output])


def create_bot(transport: RoomTransport) -> PipelineWorker:
    return room_pipeline(
        transport, *_cascade(transport.vad_analyzer or SileroVADAnalyzer()), metrics=True
    )
