"""Building blocks of the collectors' metric families: the prefix every name carries,
histograms from pre-bucketed counts, and process totals from counters that restart with
their actor slot."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from prometheus_client.metrics_core import HistogramMetricFamily, Metric

from actors.room import BucketCounts

PREFIX = "lksup"


class Accumulator:
    """Process totals from counters that restart with their slot.

    Each scrape reports every slot's current value under the slot's number
    (`ChildStatistics.slot`, unique for the process's life); the growth since the last
    scrape is added to the totals. Slots not reported any more are forgotten. What a
    slot counted after the last scrape and before it was replaced is lost: a rebuilt
    room's last moments.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[int, str], int] = {}
        self._seen: dict[tuple[int, str], int] = {}
        self.totals: Counter[tuple[str, ...]] = Counter()

    def begin(self) -> None:
        self._seen = {}

    def report(self, slot: int, field: str, value: int, *totals: tuple[str, ...]) -> None:
        key = (slot, field)
        before = self._last.get(key, 0)
        self._seen[key] = value
        if value > before:
            for total in totals:
                self.totals[total] += value - before

    def end(self) -> None:
        self._last = self._seen



def cumulative(bounds: Sequence[float], counts: list[int]) -> list[tuple[str, float]]:
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(bounds, counts, strict=False):
        running += n
        cumulative.append((repr(bound), running))
    cumulative.append(("+Inf", running + counts[-1]))
    return cumulative


def histogram_family(
    name: str, doc: str, bounds: Sequence[float], counts: list[int], sum_ns: int
) -> Metric:
    return HistogramMetricFamily(
        name, doc, buckets=cumulative(bounds, counts), sum_value=sum_ns / 1e9
    )


def sum_histograms(
    histograms: Iterable[BucketCounts], bounds: Sequence[float]
) -> tuple[list[int], int]:
    counts, total_ns = [0] * (len(bounds) + 1), 0
    for histogram in histograms:
        total_ns += histogram.add_to(counts)
    return counts, total_ns
