"""pocketsphinx decoders in processes of their own: the voice bot's speech recognition.

A decoder holds the GIL while it decodes (py-spy: a third of the GIL's samples in a
voice room when it decoded on a thread of the rooms' process), so in the rooms' process
it would make every room's event loop wait, and two threads decode no faster than one.
In processes of their own, a few decoders serve every room of the process, in parallel
on the cores and off the GIL the rooms share. This module is what those processes import
(spawned, never forked from a process running the rtc SDK's threads): pocketsphinx and
nothing of pipecat.

pocketsphinx 5.1.1 (the `voice` extra) ships its en-us acoustic model, dictionary and
language model inside the wheel, so nothing is downloaded. Measured here (2 cores): a
decoder costs about 95 MB and 0.4 s to load.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

try:
    from pocketsphinx import Decoder  # type: ignore[import-untyped]
except ImportError as err:  # at import, i.e. when the config names the voice bot
    raise ImportError(
        f"{err}: the voice bot needs pocketsphinx: pip install 'livekit-supervisor[voice]'"
    ) from err

SAMPLE_RATE = 16_000
"""The rate of the en-us acoustic model."""
FAST_SEARCH: dict[str, Any] = {
    "ds": 2, "topn": 2, "maxhmmpf": 3000, "maxwpf": 5, "pl_window": 10,
    "fwdflat": False, "bestpath": False,
}  # fmt: skip
"""Frame downsampling, fewer Gaussians and a narrower beam (pocketsphinx's "fast"
settings), one pass: 0.16 s for a 1.8 s utterance against 0.81 s with pocketsphinx's
defaults (a quiet machine), at about the same accuracy on espeak-ng's voice. The
transcript feeds a scripted LLM: its accuracy is not the point, its cost is real."""

_decoder: Decoder | None = None
"""This process's decoder (in a pool's process)."""


def _load() -> None:
    global _decoder
    _decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **FAST_SEARCH)


def ready() -> bool:
    """True once this process's decoder is loaded (the pool's processes load it first)."""
    return _decoder is not None


def decode(pcm: bytes) -> str:
    """The words in `pcm` (16-bit mono at `SAMPLE_RATE`), or "" if it heard none."""
    assert _decoder is not None, "decode runs in a pool's process, which loads a decoder"
    _decoder.start_utt()
    _decoder.process_raw(pcm, full_utt=True)
    _decoder.end_utt()
    hypothesis = _decoder.hyp()
    return hypothesis.hypstr if hypothesis is not None else ""


def pool(processes: int) -> ProcessPoolExecutor:
    """`processes` decoders, each in a spawned process that loads it as it starts."""
    return ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("spawn"), initializer=_load
    )
