"""How long the garbage collector holds the interpreter, by generation.

A collection runs with the GIL held, so every room's audio waits for it: a pause of
the oldest generation over a large heap is a latency spike no loop-lag probe can
attribute. `gc.callbacks` are called at each collection's start and stop, which is
cheap enough to time every one (two clock reads and a bisect per collection, and a
busy process collects a few dozen times a second at most).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter_ns
from typing import Any

from actors.room import BucketCounts

GC_PAUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
"""Seconds of one collection: a young one takes tens of microseconds, a full one over a
large heap tens of milliseconds."""
GENERATIONS = (0, 1, 2)


class GCPauses:
    """Per-generation histograms of collection times, while `installed`."""

    def __init__(self) -> None:
        self.pauses = tuple(BucketCounts(GC_PAUSE_BUCKETS) for _ in GENERATIONS)
        self._started = 0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = perf_counter_ns()
        elif self._started:
            self.pauses[info["generation"]].observe_ns(perf_counter_ns() - self._started)
            self._started = 0

    @contextmanager
    def installed(self) -> Iterator[None]:
        gc.callbacks.append(self._callback)
        try:
            yield
        finally:
            gc.callbacks.remove(self._callback)
