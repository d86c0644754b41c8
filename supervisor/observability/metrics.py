"""Prometheus metrics of one supervisor process, read from the live actor tree at scrape time.

Nothing on the audio path touches prometheus-client: the actors keep plain counters
and pre-bucketed arrays in each room's `RoomStats` (see `actors.room.timing`), and the
supervisors keep their children's state, restarts and mailboxes anyway
(`Supervisor.children()`). A scrape runs on the event loop, between two frames of any
actor, and reads all of it in place: a consistent snapshot without a lock and without
asking an actor a question (a supervisor busy joining a room answers none until it is
done, and a scrape must not wait for that).

Names follow Prometheus conventions under one prefix, `lksup_`: base units,
`_seconds`, `_total` for counters, help text on each. Process totals carry no room
label; per-room series (`lksup_room_*`, label `room`) exist only while
`[metrics] per_room_labels` is on, for at most `max_room_series` rooms (the first
seen keep their series), so thousands of rooms cannot blow up a Prometheus. Rooms
left out are counted by `lksup_metrics_rooms_unlabelled` and
`lksup_metrics_room_series_refused_total`.

Counters kept by actor slots (mailbox drops, restarts) start again at 0 when a room's
tree is rebuilt after a quarantine; `families.Accumulator` turns them into process totals
that only grow, as Prometheus expects of a counter.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from supervisor.config import MetricsConfig, WatchdogConfig
from supervisor.observability.census import RoomCensus
from supervisor.observability.dispatch_metrics import DispatchCollector
from supervisor.observability.families import PREFIX
from supervisor.observability.gc_pauses import GCPauses
from supervisor.observability.loop_metrics import GCPausesCollector, LoopWatchdogCollector
from supervisor.observability.room_metrics import RoomSetCollector
from supervisor.observability.watchdog import BEAT_SECONDS, LoopWatchdog
from supervisor.process.rooms import RoomSet

LOOP_LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class SupervisorMetrics:
    """The process's registry: the room set, the event loop's lag and stalls, the process.

    `registry` is scraped on the loop; `stall_registry`, its parts that are safe to
    read from another thread, answers a scrape while the loop is stalled.
    """

    def __init__(
        self,
        room_set: RoomSet,
        config: MetricsConfig,
        watchdog_config: WatchdogConfig = WatchdogConfig(),
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.stall_registry = CollectorRegistry(auto_describe=False)
        self.loop_lag = Histogram(
            f"{PREFIX}_event_loop_lag_seconds",
            f"How late the event loop ran a task due after {BEAT_SECONDS:g} s of sleep.",
            buckets=LOOP_LAG_BUCKETS,
            registry=self.registry,
        )
        self.watchdog = LoopWatchdog(watchdog_config, on_beat=self.loop_lag.observe)
        """Its heartbeat is the lag probe; `run` it for both."""
        self.gc_pauses = GCPauses()
        """Times collections while `installed`."""
        self.census = RoomCensus(room_set)
        """The rooms by state, which `/readyz` and `/status` read too."""
        self.rooms = RoomSetCollector(self.census, config)
        self.registry.register(self.rooms)
        self.registry.register(LoopWatchdogCollector(self.watchdog, self.rooms))
        self.registry.register(DispatchCollector(room_set))
        gc_pauses = GCPausesCollector(self.gc_pauses)
        self.registry.register(gc_pauses)
        self.stall_registry.register(LoopWatchdogCollector(self.watchdog, None))
        for collector in (
            ProcessCollector(registry=self.registry),
            PlatformCollector(registry=self.registry),
            GCCollector(registry=self.registry),
            gc_pauses,
            self.loop_lag,
        ):
            self.stall_registry.register(collector)

    def render(self, accept: str | None, *, stalled: bool = False) -> tuple[bytes, str]:
        """The exposition in the format the scraper asked for (text or OpenMetrics);
        `stalled`: only what can be read off the loop."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.stall_registry if stalled else self.registry), content_type

    def readiness(self) -> tuple[bool, str]:
        return self.census.readiness()
