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

The same frame is also timed hop by hop (`HOPS`), so an operator can tell which part of
the path holds a slow frame: the pipeline actor stamps it when it takes the frame from
its lane (`PIPELINE_IN`), the carrier notes when it reaches the bot's output transport
and when that transport writes the chunk, and audio-out, which knows when it took the
chunk from its lane and when `capture_frame` returned, observes the five differences
with the total. Two clock reads per frame beyond the total's (the carrier reads the
clock anyway), measured by `benchmarks/metrics_cost.py`.
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
PIPELINE_IN = "lksup_pipeline_in_ns"
"""`frame.metadata` key: when the pipeline actor took the frame from its lane."""
HOP_STAMPS = "lksup_hop_stamps_ns"
"""`chunk.metadata` key, set by `StampCarrier`: (pipeline in, bot out, written) of the
frame whose arrival the chunk carries."""

HOPS = ("to_pipeline", "pipeline", "output", "to_audio_out", "capture")
"""A passed-through frame's path, in order: audio-in to the pipeline actor (its
drop-oldest lane), the pipeline actor to the bot's output transport (pacing, pipecat's
input transport and the bot's processors), through the output transport (its queue,
resampling, re-chunking) until it writes the chunk, the audio-out lane, and
`capture_frame` (waiting while the source's buffer is full)."""
HOP_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
)
"""Seconds of one hop: 0.1 ms (a task switch) to 250 ms (a stalled loop)."""

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

ADDED_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
"""Seconds a response spent beyond its services' own time: a process keeping up adds
milliseconds to tens of them, a saturated one hundreds (the goal is a p95 of 150 ms)."""


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


def added_buckets() -> BucketCounts:
    return BucketCounts(ADDED_BUCKETS)


def hop_buckets() -> tuple[BucketCounts, ...]:
    """One histogram per hop, in the order of `HOPS`."""
    return tuple(BucketCounts(HOP_BUCKETS) for _ in HOPS)


def stamp(frame: Any) -> None:
    """Mark a frame's arrival (the audio-in actor, once per frame)."""
    frame.metadata[ARRIVAL] = perf_counter_ns()


def stamp_pipeline_in(frame: Any) -> None:
    """Mark the pipeline actor taking a frame from its lane."""
    frame.metadata[PIPELINE_IN] = perf_counter_ns()


def observe_latency(
    frame: Any,
    histogram: BucketCounts,
    hops: Sequence[BucketCounts] = (),
    received_ns: int = 0,
) -> None:
    """Time a captured frame that carries an arrival stamp (the audio-out actor): its
    total into `histogram` and, when it carries the carrier's stamps, each hop into
    `hops` (`hop_buckets`), audio-out's own from `received_ns`, when it took the frame."""
    metadata = frame.metadata
    arrival = metadata.get(ARRIVAL)
    if arrival is None:
        return
    now = perf_counter_ns()
    histogram.observe_ns(now - arrival)
    stamps = metadata.get(HOP_STAMPS)
    if stamps is None or not hops:
        return
    pipeline_in, bot_out, written = stamps
    to_pipeline, pipeline, output, to_audio_out, capture = hops
    to_pipeline.observe_ns(pipeline_in - arrival)
    pipeline.observe_ns(bot_out - pipeline_in)
    output.observe_ns(written - bot_out)
    to_audio_out.observe_ns(received_ns - written)
    capture.observe_ns(now - received_ns)


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
    A frame the pipeline actor stamped (`PIPELINE_IN`) also gives the chunk the hop
    stamps (`HOP_STAMPS`): pipeline in, and the two moments the carrier sees.

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
        self._pending: deque[tuple[float, int, int | None, int]] = deque()
        self._queued = 0.0
        self._written = 0.0
        self._last_seen = 0

    def entering(self, frame: Any) -> None:
        now = perf_counter_ns()
        if now - self._last_seen > self.IDLE_NS:
            self.clear()
        self._last_seen = now
        self._queued += _seconds(frame)
        metadata = frame.metadata
        arrival = metadata.get(ARRIVAL)
        if arrival is not None:
            self._pending.append((self._queued, arrival, metadata.get(PIPELINE_IN), now))

    def leaving(self, chunk: Any) -> None:
        now = self._last_seen = perf_counter_ns()
        self._written += _seconds(chunk)
        pending = self._pending
        if pending and pending[0][0] <= self._written + self.TOLERANCE:
            _, arrival, pipeline_in, entered = pending.popleft()
            chunk.metadata[ARRIVAL] = arrival
            if pipeline_in is not None:
                chunk.metadata[HOP_STAMPS] = (pipeline_in, entered, now)
            while pending and pending[0][0] <= self._written + self.TOLERANCE:
                pending.popleft()

    def clear(self) -> None:
        """Forget the stamps of audio pipecat discarded (interrupted, or idle)."""
        self._pending.clear()
        self._queued = self._written
