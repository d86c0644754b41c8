"""The voice bot: pipecat's standard cascade, every stage real and local.

Transport input; the user aggregator with Silero VAD (pipecat's) and pipecat's default
turn strategies (speech or a transcript starts a turn, interrupting the bot; smart-turn
v3, whose ONNX model ships inside pipecat-ai, ends it), both models loaded once per
process (`actors.room.models`) where pipecat loads them per room; speech recognition on pocketsphinx
(`supervisor.bots.recognizer`, one decoder per process); an LLM answering from a script
what it heard (`supervisor.bots.script`); espeak-ng TTS (`supervisor.bots.espeak`);
transport output; the assistant aggregator. Metrics on. What a real bot runs per room,
with no outside service and no network: the load the conversations benchmark measures.

`conversation()` is the cascade between any transport's input and output, so the same
stages run under pipecat's own `LiveKitTransport` (the benchmark's process-per-call
peer). The input rate must be 8 or 16 kHz (Silero); 16 kHz spares a resampling before
recognition. Select it with `[bot] factory = "supervisor.bots.voice:create_bot"`; a
config naming it where pocketsphinx or espeak-ng is missing is refused (exit 2).
"""

from __future__ import annotations

from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from actors.room import RoomTransport
from actors.room.models import (
    SharedSileroVADAnalyzer,
    SharedSmartTurnAnalyzerV3,
    silero_session,
    smart_turn_session,
)
from supervisor.bots import room_worker
from supervisor.bots.espeak import EspeakTTSService
from supervisor.bots.handoff import ContextOffer, handed_messages
from supervisor.bots.recognizer import PocketsphinxSTTService, Recognizer, shared_recognizer
from supervisor.bots.script import ScriptLLMService, user_texts


def heard(context: LLMContext) -> str:
    """The answer to the last thing the user said: what the recognizer made of it."""
    said = " ".join(user_texts(context)[-1:]).strip()
    return f"I heard you say {said}." if said else "I did not catch that."


def conversation(
    input: FrameProcessor,
    output: FrameProcessor,
    *,
    vad_analyzer: VADAnalyzer | None = None,
    turn_analyzer: BaseTurnAnalyzer | None = None,
    recognizer: Recognizer | None = None,
    context: LLMContext | None = None,
    after: tuple[FrameProcessor, ...] = (),
) -> Pipeline:
    """The cascade between a transport's `input` and `output`, then `after`. The
    analyzers default to the process's shared models (`actors.room.models`; pipecat's
    defaults are per room), the recognizer to the process's pool of decoders, the
    context to an empty one."""
    turns = turn_analyzer or SharedSmartTurnAnalyzerV3()
    stop = TurnAnalyzerUserTurnStopStrategy(turn_analyzer=turns)
    user, assistant = LLMContextAggregatorPair(
        context or LLMContext(),
        user_params=LLMUserAggregatorParams(
            vad_analyzer=vad_analyzer or SharedSileroVADAnalyzer(),
            user_turn_strategies=UserTurnStrategies(stop=[stop]),  # and pipecat's start
        ),
    )
    return Pipeline(
        [
            input, PocketsphinxSTTService(recognizer=recognizer), user, ScriptLLMService(heard),
            EspeakTTSService(), output, assistant, *after,
        ]
    )  # fmt: skip


def prewarm() -> None:
    """Load the process's models before its first room (`supervisor.bots.prewarm`)."""
    shared_recognizer().wait_loaded()
    silero_session()
    smart_turn_session()


def create_bot(transport: RoomTransport) -> PipelineWorker:
    # a room handed over goes on with the conversation its previous bot had
    context = LLMContext(handed_messages(transport))
    pipeline = conversation(
        transport.input(),
        transport.output(),
        vad_analyzer=transport.vad_analyzer,
        context=context,
        after=(ContextOffer(transport, context),),
    )
    return room_worker(transport, pipeline, metrics=True)
