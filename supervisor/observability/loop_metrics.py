"""The event loop's and the interpreter's metrics that are safe to collect off the loop
(the stall answer does): the watchdog's stalls and the garbage collector's pauses."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from supervisor.observability.families import PREFIX, cumulative
from supervisor.observability.gc_pauses import GC_PAUSE_BUCKETS, GENERATIONS, GCPauses
from supervisor.observability.room_metrics import RoomSetCollector
from supervisor.observability.watchdog import LoopWatchdog


class LoopWatchdogCollector(Collector):
    """The loop watchdog's stalls; safe to collect off the loop, as the stall answer
    does (`rooms` None: without the per-room series, which read the room set)."""

    def __init__(self, watchdog: LoopWatchdog, rooms: RoomSetCollector | None) -> None:
        self.watchdog = watchdog
        self.rooms = rooms

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        counts = self.watchdog.counts()
        yield CounterMetricFamily(
            f"{PREFIX}_event_loop_stalls",
            "Stalls: code held the event loop past watchdog.stall_seconds, and every room waited.",
            value=sum(counts.values()),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_event_loop_stalled",
            "1 while the event loop is stalled (answered off the loop), else 0.",
            value=int(self.watchdog.stall is not None),
        )
        labelled = self.rooms.labelled if self.rooms is not None else []
        if labelled:
            per_room = CounterMetricFamily(
                f"{PREFIX}_room_event_loop_stalls",
                "Event loop stalls caught while the room's code (its bot) was running.",
                labels=["room"],
            )
            for name in labelled:
                per_room.add_metric([name], counts.get(name, 0))
            yield per_room


class GCPausesCollector(Collector):
    """Collection times (`supervisor.observability.gc_pauses`); safe to collect off the loop."""

    def __init__(self, pauses: GCPauses) -> None:
        self.pauses = pauses

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            f"{PREFIX}_gc_pause_seconds",
            "How long each garbage collection held the interpreter (and so every room), "
            "by generation.",
            labels=["generation"],
        )
        for generation, histogram in zip(GENERATIONS, self.pauses.pauses, strict=True):
            family.add_metric(
                [str(generation)], cumulative(GC_PAUSE_BUCKETS, histogram.counts),
                sum_value=histogram.sum_seconds,
            )  # fmt: skip
        yield family
