"""One copy of each model per process, shared by every room: Silero VAD and smart-turn v3.

pipecat loads an ONNX session per analyzer, which is per room: measured here, Silero
costs 12 MB and 0.12 s (on the event loop every room shares, at each room's start) and
smart-turn v3 11.6 MB and 0.11 s. A process of many rooms needs the weights once. An
onnxruntime session holds no state between runs and may run on many threads at once, so
these analyzers share one session per model and keep everything else their own: the
recurrent state and context Silero carries from window to window, smart-turn's audio
buffer, and the thread each pipecat analyzer runs its model on. Their outputs are
pipecat's own analyzers' (tests/test_models.py); the session options are pipecat's.

They subclass pipecat's analyzers and replace only the constructor, which loads the
model; the test also checks that the attributes pipecat's constructors set are the ones
these set, so a pipecat release that adds one fails there, not in a room. A public face
of the room package of its own (not re-exported by `actors.room`): it loads onnxruntime,
which only the bots that use it should pay for.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import onnxruntime  # type: ignore[import-untyped]
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.utils.env import env_truthy

__all__ = [
    "SharedSileroVADAnalyzer",
    "SharedSmartTurnAnalyzerV3",
    "silero_session",
    "smart_turn_session",
]


def _model_file(package: str, name: str) -> str:
    return str(resources.files(package).joinpath(name))


@functools.cache
def silero_session() -> onnxruntime.InferenceSession:
    """The process's Silero VAD session, made on first use, with pipecat's options."""
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(
        _model_file("pipecat.audio.vad.data", "silero_vad.onnx"),
        providers=["CPUExecutionProvider"],
        sess_options=options,
    )


@functools.cache
def smart_turn_session() -> onnxruntime.InferenceSession:
    """The process's smart-turn v3 session, made on first use, with pipecat's options."""
    options = onnxruntime.SessionOptions()
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(
        _model_file("pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx"),
        sess_options=options,
    )


class _SileroState(SileroOnnxModel):
    """pipecat's Silero model wrapper on the shared session: its own state only."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self.session = session
        self.reset_states()  # type: ignore[no-untyped-call]
        self.sample_rates = [8000, 16000]


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """pipecat's `SileroVADAnalyzer` on the process's Silero session."""

    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None):
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        self._model = _SileroState(silero_session())
        self._windows_since_reset = 0
        self._low_confidence_windows = 0


class SharedSmartTurnAnalyzerV3(LocalSmartTurnAnalyzerV3):
    """pipecat's `LocalSmartTurnAnalyzerV3` on the process's smart-turn session."""

    def __init__(self, **kwargs: Any) -> None:
        BaseSmartTurn.__init__(self, **kwargs)
        self._log_data = env_truthy("PIPECAT_SMART_TURN_LOG_DATA", default=False)
        self._session = smart_turn_session()
