"""One copy of each model per process, shared by every room: Silero VAD and smart-turn v3.

pipecat loads an ONNX session per analyzer, which is per room: measured here, Silero
costs 12 MB and 0.12 s (on the event loop every room shares, at each room's start) and
smart-turn v3 11.6 MB and 0.11 s. A process of many rooms needs the weights once. An
onnxruntime session holds no state between runs and may run on many threads at once, so
these analyzers share one session per model and keep everything else their own: the
recurrent state and context Silero carries from window to window, smart-turn's audio
buffer, and the thread each pipecat analyzer runs its model on. Their outputs are
pipecat's own analyzers' (tests/test_models.py); the session options are pipecat's.

Silero's runs can also go in batches across rooms (`BatchingSession`, `[bot]
vad_batch_ms`): each room's VAD runs on a thread of its own (pipecat's analyzer), and a
run that finds others waiting goes into one ONNX run with them, whose cost per window is
about half a lone run's at eight windows (386 against 178 µs). Outputs are the lone
runs' (the test). It is off by default: the ONNX run is under half of what a room's VAD
costs (pipecat's thread hop per frame and its numpy work are the rest), so gathering
8 ms saved 7-12 % of the VAD's CPU at 4-16 rooms (`benchmarks/vad_batching.py`), about
0.3 % of a core a room, for 5-6 ms more on each window.

They subclass pipecat's analyzers and replace only the constructor, which loads the
model; the test also checks that the attributes pipecat's constructors set are the ones
these set, so a pipecat release that adds one fails there, not in a room. A public face
of the room package of its own (not re-exported by `actors.room`): it loads onnxruntime,
which only the bots that use it should pay for.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Sequence
from importlib import resources
from typing import Any

import attrs
import numpy as np
import onnxruntime  # type: ignore[import-untyped]
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.utils.env import env_truthy

__all__ = [
    "BatchingSession",
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


@attrs.define(eq=False)
class _Run:
    """One room's window waiting for its batch."""

    inputs: dict[str, np.ndarray]
    done: threading.Event = attrs.field(factory=threading.Event)
    outputs: list[np.ndarray] | None = None
    error: Exception | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """What runs together: the same rate and window size."""
        return int(self.inputs["sr"]), self.inputs["input"].shape[1]


class BatchingSession:
    """Silero's ONNX session for every room's VAD thread at once: it stands in for the
    session in pipecat's model wrapper, whose `run` it takes, one window and its state
    at a time. The first run to find none waiting waits `gather` seconds for others,
    then runs them all as one batch (their windows stacked, their states side by side)
    and hands each its own output and state; the others wait for it. With one room
    (or none) using it, a run is a lone run at once."""

    def __init__(self, session: onnxruntime.InferenceSession, gather: float) -> None:
        self._session = session
        self._gather = gather
        self._lock = threading.Lock()
        self._pending: list[_Run] = []
        self._users = 0
        """Analyzers using it: batching waits only when there are several."""
        self.batches = 0
        self.windows = 0
        """Runs made and windows they judged: windows / batches is the batch size."""

    def join(self) -> None:
        """An analyzer uses it (until `leave`)."""
        with self._lock:
            self._users += 1

    def leave(self) -> None:
        with self._lock:
            self._users -= 1

    def run(self, output_names: Any, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._users < 2:
            self._count(1)
            return self._session.run(output_names, inputs)  # type: ignore[no-any-return]
        run = _Run(inputs)
        with self._lock:
            self._pending.append(run)
            first = len(self._pending) == 1
        if first:
            time.sleep(self._gather)
            with self._lock:
                batch, self._pending = self._pending, []
            self._run_batches(batch)
        else:
            run.done.wait()
        if run.error is not None:
            raise run.error
        assert run.outputs is not None
        return run.outputs

    def _run_batches(self, runs: Sequence[_Run]) -> None:
        shapes: dict[tuple[int, int], list[_Run]] = {}
        for run in runs:
            shapes.setdefault(run.shape, []).append(run)
        for (rate, _), same in shapes.items():
            try:
                out, state = self._session.run(None, {
                    "input": np.concatenate([r.inputs["input"] for r in same]),
                    "state": np.concatenate([r.inputs["state"] for r in same], axis=1),
                    "sr": np.array(rate, dtype="int64"),
                })  # fmt: skip
                for i, r in enumerate(same):
                    r.outputs = [out[i : i + 1], state[:, i : i + 1]]
            except Exception as err:  # noqa: BLE001 - raised in each waiting room, as a lone run
                for r in same:
                    r.error = err
            finally:
                self._count(len(same))
                for r in same:
                    r.done.set()

    def _count(self, windows: int) -> None:
        with self._lock:
            self.batches += 1
            self.windows += windows


@functools.cache
def silero_batches(gather: float) -> BatchingSession:
    """The process's Silero session, its runs batched across rooms, each batch gathered
    for `gather` seconds: a room's VAD window is 32 ms at 16 kHz, so with N rooms about
    N x gather / 32 ms windows come meanwhile, and each is judged that much later."""
    return BatchingSession(silero_session(), gather)


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

    def __init__(self, session: onnxruntime.InferenceSession | BatchingSession) -> None:
        self.session = session
        self.reset_states()  # type: ignore[no-untyped-call]
        self.sample_rates = [8000, 16000]


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """pipecat's `SileroVADAnalyzer` on the process's Silero session; with `batch_ms`,
    its runs in batches with other rooms' gathered that long (`BatchingSession`)."""

    def __init__(
        self,
        *,
        sample_rate: int | None = None,
        params: VADParams | None = None,
        batch_ms: float = 0,
    ) -> None:
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        session = silero_batches(batch_ms / 1000) if batch_ms else silero_session()
        self._model = _SileroState(session)
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        if isinstance(session, BatchingSession):
            session.join()
            weakref.finalize(self, session.leave)


class SharedSmartTurnAnalyzerV3(LocalSmartTurnAnalyzerV3):
    """pipecat's `LocalSmartTurnAnalyzerV3` on the process's smart-turn session."""

    def __init__(self, **kwargs: Any) -> None:
        BaseSmartTurn.__init__(self, **kwargs)
        self._log_data = env_truthy("PIPECAT_SMART_TURN_LOG_DATA", default=False)
        self._session = smart_turn_session()
