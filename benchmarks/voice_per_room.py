"""The voice bot with pipecat's own analyzers, a copy of each model per room: the
"before" of the shared-models lever (`actors.room.models`), for `benchmarks.conversations`
(`--bot benchmarks.voice_per_room:create_bot`). Speech recognition stays shared: a
decoder per room would cost 95 MB a room (`supervisor.bots.recognizer`)."""

from __future__ import annotations

from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.pipeline.worker import PipelineWorker

from actors.room import RoomTransport
from supervisor.bots import room_worker
from supervisor.bots.voice import conversation


def create_bot(transport: RoomTransport) -> PipelineWorker:
    pipeline = conversation(
        transport.input(), transport.output(),
        vad_analyzer=SileroVADAnalyzer(), turn_analyzer=LocalSmartTurnAnalyzerV3(),
    )  # fmt: skip
    return room_worker(transport, pipeline, metrics=True)
