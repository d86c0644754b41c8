"""The agent worker's metrics (`lksup_dispatch_*`, `lksup_fleet_*`)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from supervisor.observability.families import PREFIX, histogram_family
from supervisor.process.rooms import JOB_ENDS, OFFER_ANSWERS, RoomSet


class DispatchCollector(Collector):
    """The agent worker (`lksup_dispatch_*`), while `[dispatch]` is enabled: read from its
    `WorkerState` at scrape time. Dispatched rooms are rooms: they count in the room
    metrics above."""

    def __init__(self, room_set: RoomSet) -> None:
        self.room_set = room_set

    def capacity_used(self) -> float:
        """Why not `full` alone: a fleet's `full` flips from 0 to 1 per worker, so a sum of
        it says nothing until workers are already refusing; this says how close each is."""
        state, limits = self.room_set.worker, self.room_set.config.dispatch
        if state is None or state.full or state.draining:
            return 1.0
        rooms = len(self.room_set.dispatched) / limits.max_rooms
        return min(1.0, max(rooms, state.load / limits.load_threshold))

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        state = self.room_set.worker
        if state is None:
            return
        yield GaugeMetricFamily(
            f"{PREFIX}_dispatch_registered",
            "1 while the agent worker is registered with the server.",
            value=int(state.registered),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_dispatch_full",
            "1 while the worker reports itself full (or drains): no new job.",
            value=int(state.full or state.draining),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_dispatch_load",
            "The load last reported to the server (CPU per core, 0 to 1).",
            value=state.load,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_dispatch_rooms", "Rooms this worker serves for a dispatched job.",
            value=len(self.room_set.dispatched),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_dispatch_capacity_used",
            "The share of this worker's capacity in use, 0 to 1: the larger of dispatched "
            "rooms over max_rooms and reported load over load_threshold; 1 while full or "
            "draining. Averaged over a fleet's workers, how near it is to taking no job.",
            value=self.capacity_used(),
        )
        offers = CounterMetricFamily(
            f"{PREFIX}_dispatch_offers",
            "Jobs the server offered, by answer: accepted, rejected (by the accept hook), "
            "full, draining, served (this process already serves the room).",
            labels=["answer"],
        )
        for answer in OFFER_ANSWERS:
            offers.add_metric([answer], state.offers[answer])
        yield offers
        ended = CounterMetricFamily(
            f"{PREFIX}_dispatch_jobs_ended",
            "Jobs ended, by the status reported: succeeded, failed.",
            labels=["status"],
        )
        for status in JOB_ENDS:
            ended.add_metric([status], state.ended[status])
        yield ended
        for name, doc, times in (
            ("join", "its bot joined the room", state.join_time),
            ("track", "its bot's audio track published in the room", state.track_time),
            (
                "first_audio",
                "its bot's first audio captured into that track (first heard)",
                state.first_audio_time,
            ),
        ):
            yield histogram_family(
                f"{PREFIX}_dispatch_{name}_seconds",
                f"From a job's offer accepted to {doc}.",
                times.bounds, times.counts, times.sum_ns,
            )  # fmt: skip
        fleet = self.room_set.fleet
        if fleet is None:
            return
        yield GaugeMetricFamily(
            f"{PREFIX}_fleet_members",
            "Workers of this agent heard in the fleet's room, this one included; 0 while "
            "this one is not in it (no restores either way).",
            value=fleet.members,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_fleet_dead",
            "Fleet members this worker found dead (not heard for restore_after_seconds).",
            value=fleet.dead,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_fleet_restored",
            "Jobs of dead fleet members this worker restored (its bot back in the room).",
            value=fleet.restored,
        )
        handoffs = CounterMetricFamily(
            f"{PREFIX}_fleet_handoffs",
            "Jobs handed over between fleet members ([dispatch] handoff), by direction: "
            "given (as this worker drained: the taker's bot removed this one's), taken, "
            "failed (no member took it: it drained here, and was cut at drain_seconds if "
            "its call went on).",
            labels=["direction"],
        )
        handoffs.add_metric(["given"], fleet.handed)
        handoffs.add_metric(["taken"], fleet.taken)
        handoffs.add_metric(["failed"], fleet.not_handed)
        yield handoffs
        for name, doc, times in (
            (
                "handoff",
                "from its bot's join beside the old bot to its audio track published, when "
                "the old bot is removed (the caller hears the old bot meanwhile)",
                fleet.handoff_time,
            ),
            (
                "handoff_removal",
                "from its request removing the old bot to the server's answer, from which "
                "its own bot is heard. A caller hears neither bot for about this long plus "
                "the new bot's media path (~0.1-0.2 s): the part of the gap the handoff "
                "itself adds",
                fleet.removal_time,
            ),
        ):
            yield histogram_family(
                f"{PREFIX}_fleet_{name}_seconds",
                f"In each job this worker took over from a draining one: {doc}.",
                times.bounds, times.counts, times.sum_ns,
            )  # fmt: skip
