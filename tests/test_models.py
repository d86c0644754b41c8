"""`actors.room.models`: the analyzers that share one ONNX session per process give
pipecat's own analyzers' outputs, keep their state apart, and set the attributes
pipecat's constructors set (a pipecat release that adds one fails here)."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer

from actors.room.models import (
    BatchingSession,
    SharedSileroVADAnalyzer,
    SharedSmartTurnAnalyzerV3,
    silero_batches,
    silero_session,
)
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


def test_batched_silero_hears_what_each_room_alone_hears() -> None:
    """Four rooms' VAD threads, each its own utterance window after window, on one
    batching session: every confidence is the one pipecat's own analyzer gives that
    room's audio alone, and the windows did go in batches."""
    texts = ("What is the weather like today?", "Can you hear me now?",
             "I would like a table for two.", "Hello there.")  # fmt: skip
    audios = [speech(text) for text in texts]
    expected = [confidences(SileroVADAnalyzer(), audio) for audio in audios]
    batches = BatchingSession(silero_session(), gather=0.005)
    analyzers = [SharedSileroVADAnalyzer() for _ in audios]
    for analyzer in analyzers:
        analyzer._model.session = batches
        batches.join()
    with ThreadPoolExecutor(len(audios)) as threads:
        got = list(threads.map(confidences, analyzers, audios))
    for mine, theirs in zip(got, expected, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-5)
    assert batches.windows == sum(len(e) for e in expected)
    assert batches.windows >= 2 * batches.batches  # most windows went with others
    assert max(max(e) for e in expected) > 0.9


def test_a_lone_room_s_windows_are_not_held_back() -> None:
    batches = BatchingSession(silero_session(), gather=10.0)  # a wait would show
    analyzer = SharedSileroVADAnalyzer()
    analyzer._model.session = batches
    batches.join()
    assert len(confidences(analyzer, speech("Hello there."))) == batches.windows


def test_analyzers_gathering_alike_share_one_batching_session() -> None:
    first, second = SharedSileroVADAnalyzer(batch_ms=8), SharedSileroVADAnalyzer(batch_ms=8)
    batches = silero_batches(0.008)
    assert first._model.session is second._model.session is batches
    assert SharedSileroVADAnalyzer(batch_ms=4)._model.session is not batches
    assert SharedSileroVADAnalyzer()._model.session is silero_session()
    users = batches._users
    del first
    gc.collect()
    assert batches._users == users - 1  # one room left: its windows wait no longer


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
