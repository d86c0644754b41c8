"""Speech for tests: an utterance synthesized with espeak-ng, and telling speech from
silence in what a participant hears.

espeak-ng is Debian's `espeak-ng` package (`make test` installs it when missing and
it can); without it a test skips with the reason, and fails under CI.
"""

from __future__ import annotations

import numpy as np

from benchmarks.corpus import synthesize
from tests.helpers.participants import SAMPLE_RATE, rms
from tests.helpers.prometheus import tool

WINDOW = SAMPLE_RATE // 20
"""50 ms: a syllable's worth of audio."""


def utterance(text: str, *, then_silent: float = 0.0) -> np.ndarray:
    """`text` spoken by espeak-ng, int16 mono at the participants' rate, followed by
    `then_silent` seconds of silence."""
    speech = synthesize(text, SAMPLE_RATE, program=tool("espeak-ng", "espeak-ng"))
    return np.concatenate([speech, np.zeros(round(then_silent * SAMPLE_RATE), np.int16)])


def speech_windows(samples: np.ndarray, level: float = 500.0) -> int:
    """How many 50 ms windows of `samples` carry speech energy (RMS above `level`)."""
    windows = len(samples) // WINDOW
    return sum(rms(samples[i * WINDOW : (i + 1) * WINDOW]) > level for i in range(windows))
