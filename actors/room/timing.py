"""Cheap timing for the room's hot paths: arrival stamps and pre-bucketed histograms.

The audio path is the one place a metric runs per 20 ms frame per participant, so it
does no label lookup and takes no lock: the audio-in actor puts an integer
`perf_counter_ns` stamp into the pipecat frame's `metadata` dict, and the audio-out
actor, once it has captured a frame that carries one, bumps one slot of a
`BucketCounts` (a bisect over integer bounds and two additions). The metrics
exporter reads the arrays at scrape time. Nothing here imports prometheus-client:
the actors know nothing of how they are exported.

pipecat's output transport re-chunks the bot's audio (and resamples it) into frames
of its own, which start with an empty `metadata`; `StampCarrier` carries the stamps
across that step, by audio position, so a frame the bot passes through is timed when
its last sample is captured.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipecat.frames.frames import AudioRawFrame

ARRIVAL = "lksup_arrival_ns"
"""`frame.metadata` key: `perf_counter_ns()` when the audio-in actor got the frame."""

LATENCY_BUCKETS = (
    0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
)
"""Seconds from arrival in audio-in to capture by audio-out: 1 ms to 1 s, finest
where the budget is (under 2 ms at p99)."""

CONNECT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds for `rtc.Room.connect` to return: a join, or a rejoin after a restart."""

RESPONSE_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0)
"""Seconds from the user's speech ending to the bot's first audio captured after it:
voice, where under a second feels live and over three feels broken."""

SERVICE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds of a service's time to first byte or processing, as pipecat reports them."""


class BucketCounts:
    """A histogram as plain integers: per-bucket counts (not cumulative), sum, count.

    Bounds are kept in nanoseconds so `observe_ns` is an integer bisect; the last
    slot counts what is above the largest bound (Prometheus' `+Inf`).
    """

    __slots__ = ("_bounds_ns", "bounds", "counts", "sum_ns")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"bounds must be increasing and non-empty, got {bounds!r}")
        self.bounds = tuple(float(b) for b in bounds)
        self._bounds_ns = tuple(round(b * 1e9) for b in self.bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum_ns = 0

    def observe_ns(self, value_ns: int) -> None:
        self.counts[bisect_left(self._bounds_ns, value_ns)] += 1
        self.sum_ns += value_ns

    def observe(self, seconds: float) -> None:
        self.observe_ns(round(seconds * 1e9))

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def sum_seconds(self) -> float:
        return self.sum_ns / 1e9

    def absorb(self, other: BucketCounts) -> None:
        """Add `other`'s observations (same bounds) into this histogram."""
        if other.bounds != self.bounds:
            raise ValueError(f"bounds differ: {other.bounds!r} vs {self.bounds!r}")
        self.sum_ns += other.add_to(self.counts)

    def add_to(self, totals: list[int]) -> int:
        """Add these counts into `totals` (same bounds); return this histogram's sum_ns."""
        for i, n in enumerate(self.counts):
            totals[i] += n
        return self.sum_ns


def latency_buckets() -> BucketCounts:
    return BucketCounts(LATENCY_BUCKETS)


def connect_buckets() -> BucketCounts:
    return BucketCounts(CONNECT_BUCKETS)


def response_buckets() -> BucketCounts:
    return BucketCounts(RESPONSE_BUCKETS)


def service_buckets() -> BucketCounts:
    return BucketCounts(SERVICE_BUCKETS)


def stamp(frame: Any) -> None:
    """Mark a frame's arrival (the audio-in actor, once per frame)."""
    frame.metadata[ARRIVAL] = perf_counter_ns()


def observe_latency(frame: Any, histogram: BucketCounts) -> None:
    """Time a captured frame that carries an arrival stamp (the audio-out actor)."""
    arrival = frame.metadata.get(ARRIVAL)
    if arrival is not None:
        histogram.observe_ns(perf_counter_ns() - arrival)


def arrival_age(frame: Any) -> float | None:
    """Seconds since the input audio this frame passes on arrived, or None for audio the
    bot made itself (no stamp)."""
    arrival = frame.metadata.get(ARRIVAL)
    return None if arrival is None else (perf_counter_ns() - arrival) / 1e9


def _seconds(frame: AudioRawFrame) -> float:
    return len(frame.audio) / (2 * frame.num_channels * frame.sample_rate)


class StampCarrier:
    """Moves arrival stamps from the bot's output frames to pipecat's re-cut chunks.

    `entering` sees every output audio frame going into pipecat's output transport
    and notes where its audio ends (in seconds of audio queued); `leaving` sees every
    chunk the transport writes and, once the written audio reaches a noted end, puts
    that frame's stamp on the chunk. Several frames completed by one chunk (frames
    shorter than a chunk) give the chunk the oldest stamp: one observation per chunk.

    pipecat drops buffered audio on an interruption, and a partial chunk (and what its
    resampler holds back) when the bot stops speaking, so the two positions can drift.
    A frame entering after `IDLE_NS` without any audio in or out starts a new talk
    spurt: what came before has been written or dropped, and the positions re-align.
    """

    IDLE_NS = 500_000_000
    """Longer than pipecat's resampler holds audio back (it emits in ~70-100 ms blocks)."""
    TOLERANCE = 0.001
    """Seconds of slack for the resampler's own delay."""

    __slots__ = ("_last_seen", "_pending", "_queued", "_written")

    def __init__(self) -> None:
        self._pending: deque[tuple[float, int]] = deque()
        self._queued = 0.0
        self._written = 0.0
        self._last_seen = 0

    def entering(self, frame: Any) -> None:
        now = perf_counter_ns()
        if now - self._last_seen > self.IDLE_NS:
            self.clear()
        self._last_seen = now
        self._queued += _seconds(frame)
        arrival = frame.metadata.get(ARRIVAL)
        if arrival is not None:
            self._pending.append((self._queued, arrival))

    def leaving(self, chunk: Any) -> None:
        self._last_seen = perf_counter_ns()
        self._written += _seconds(chunk)
        pending = self._pending
        if pending and pending[0][0] <= self._written + self.TOLERANCE:
            chunk.metadata[ARRIVAL] = pending.popleft()[1]
            while pending and pending[0][0] <= self._written + self.TOLERANCE:
                pending.popleft()

    def clear(self) -> None:
        """Forget the stamps of audio pipecat discarded (interrupted, or idle)."""
        self._pending.clear()
        self._queued = self._written
