"""`actors.room.models`: the analyzers that share one ONNX session per process give
pipecat's own analyzers' outputs, keep their state apart, and set the attributes
pipecat's constructors set (a pipecat release that adds one fails here)."""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer

from actors.room.models import SharedSileroVADAnalyzer, SharedSmartTurnAnalyzerV3
from tests.helpers.participants import SAMPLE_RATE as SPEECH_RATE
from tests.helpers.speech import utterance

RATE = 16_000
WINDOW = 512  # Silero's window at 16 kHz


def speech(text: str) -> np.ndarray:
    """`text` spoken, at 16 kHz (the tests' speech is at 48 kHz: every third sample)."""
    assert SPEECH_RATE == 3 * RATE
    return utterance(text, then_silent=0.5)[::3]


def confidence(analyzer: SileroVADAnalyzer, audio: np.ndarray, at: int) -> float:
    return float(np.squeeze(analyzer.voice_confidence(audio[at : at + WINDOW].tobytes())))


def confidences(analyzer: SileroVADAnalyzer, audio: np.ndarray) -> list[float]:
    analyzer.set_sample_rate(RATE)
    return [confidence(analyzer, audio, at) for at in range(0, len(audio) - WINDOW + 1, WINDOW)]


def test_shared_silero_hears_what_pipecat_s_hears_each_room_with_its_own_state() -> None:
    one, two = speech("What is the weather like today?"), speech("Can you hear me now?")
    expected = confidences(SileroVADAnalyzer(), one), confidences(SileroVADAnalyzer(), two)
    first, second = SharedSileroVADAnalyzer(), SharedSileroVADAnalyzer()
    assert first._model.session is second._model.session
    for analyzer in (first, second):
        analyzer.set_sample_rate(RATE)
    got: tuple[list[float], list[float]] = ([], [])
    # two rooms' windows interleaved on the one session, as rooms side by side run them
    for at in range(0, max(len(one), len(two)) - WINDOW + 1, WINDOW):
        for audio, analyzer, out in ((one, first, got[0]), (two, second, got[1])):
            if at + WINDOW <= len(audio):
                out.append(confidence(analyzer, audio, at))
    assert got[0] == pytest.approx(expected[0], abs=1e-6)
    assert got[1] == pytest.approx(expected[1], abs=1e-6)
    assert max(expected[0]) > 0.9  # it heard speech: the comparison means something


def test_shared_smart_turn_predicts_what_pipecat_s_predicts() -> None:
    pipecat_s, shared = LocalSmartTurnAnalyzerV3(), SharedSmartTurnAnalyzerV3()
    assert shared._session is SharedSmartTurnAnalyzerV3()._session
    for text in ("What is the weather like today?", "I would like to"):
        audio = speech(text).astype(np.float32) / 32768
        for analyzer in (pipecat_s, shared):
            analyzer.set_sample_rate(RATE)
        expected, got = pipecat_s._predict_endpoint(audio), shared._predict_endpoint(audio)
        assert got["prediction"] == expected["prediction"]
        assert got["probability"] == pytest.approx(expected["probability"], abs=1e-6)


@pytest.mark.parametrize(
    ("pipecat_s", "shared"),
    [(SileroVADAnalyzer, SharedSileroVADAnalyzer),
     (LocalSmartTurnAnalyzerV3, SharedSmartTurnAnalyzerV3)],
)  # fmt: skip
def test_the_shared_analyzers_set_what_pipecat_s_constructors_set(
    pipecat_s: type, shared: type
) -> None:
    theirs, ours = pipecat_s(), shared()
    assert set(vars(ours)) == set(vars(theirs))
    model = getattr(theirs, "_model", None)
    if model is not None:  # Silero's wrapper of the session and the state
        assert set(vars(ours._model)) == set(vars(model))
