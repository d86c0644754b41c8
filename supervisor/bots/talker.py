"""The talker bot: answers how long the user spoke, out loud, with no outside service.

The lighter of the two speaking bots (`supervisor.bots.voice` is the full cascade), and
the built-in bot for the bot's own metrics, as the echo bot is for audio: Silero VAD
(pipecat's), the scripted LLM (`supervisor.bots.script`) and espeak-ng TTS
(`supervisor.bots.espeak`), on pipecat's own service base classes, so turns, responses,
interruptions, TTFB and usage reach the `lksup_bot_*` series through pipecat's code
paths. No transcript: a turn's context is how long the user spoke, turn by turn, and
the answer says the last turn's time and, from the second turn on, the conversation's,
so a reply shows whether the earlier turns came along through a handoff (it offers its
context as each answer ends and starts from the one handed to it,
`supervisor.bots.handoff`). It needs `[bot] vad = true` or makes its own Silero
analyzer, so the input rate must be 8 or 16 kHz.
"""

from __future__ import annotations

from typing import Any

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from actors.room import RoomTransport
from actors.room.models import SharedSileroVADAnalyzer, silero_session
from supervisor.bots import room_worker
from supervisor.bots.espeak import EspeakTTSService
from supervisor.bots.handoff import ContextOffer, handed_messages
from supervisor.bots.script import ScriptLLMService, user_texts


class TurnTaker(FrameProcessor):
    """Turns the VAD's speech marks into pipecat's user turns and asks the LLM to answer.

    The part of a voice bot that a user aggregator with turn strategies plays in a
    full pipeline, cut down to what needs no transcript: a turn starts with speech
    (interrupting the bot) and ends with the VAD's stop, adding how long the user spoke
    to `context`, the conversation so far.
    """

    def __init__(self, context: LLMContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._started: float | None = None
        self._context = context

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
            self._context.add_message({"role": "user", "content": f"{spoke:.1f}"})
            await self.push_frame(LLMContextFrame(context=self._context))


def spoke_for(context: LLMContext) -> str:
    """The answer to the last turn (seconds spoken, as `TurnTaker` writes it), and from
    the second turn on the seconds of every turn so far."""
    said = user_texts(context)
    if len(said) < 2:
        return f"You spoke for {(said or ['no time'])[-1]} seconds."
    total = sum(_seconds(text) for text in said)
    return f"You spoke for {said[-1]} seconds, {total:.1f} in all."


def _seconds(text: str) -> float:
    """A turn's seconds; 0 for a message that is not one (a handed context is input)."""
    try:
        return float(text)
    except ValueError:
        return 0.0


def prewarm() -> None:
    """Load Silero before the process's first room (`supervisor.bots.prewarm`)."""
    silero_session()


def create_bot(transport: RoomTransport) -> PipelineWorker:
    context = LLMContext(handed_messages(transport))
    pipeline = Pipeline(
        [
            transport.input(),
            VADProcessor(vad_analyzer=transport.vad_analyzer or SharedSileroVADAnalyzer()),
            TurnTaker(context),
            ScriptLLMService(spoke_for),
            EspeakTTSService(),
            transport.output(),
            ContextOffer(transport, context),
        ]
    )
    return room_worker(transport, pipeline, metrics=True)
