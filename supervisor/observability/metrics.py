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
tree is rebuilt after a quarantine; `_Accumulator` turns them into process totals
that only grow, as Prometheus expects of a counter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from actors import ActorState, ChildStatistics, RestartIntensityError
from actors.room import (
    CONNECT_BUCKETS,
    HOP_BUCKETS,
    HOPS,
    LATENCY_BUCKETS,
    RESPONSE_BUCKETS,
    SERVICE_BUCKETS,
    BucketCounts,
    RoomStats,
)
from supervisor import __version__
from supervisor.config import MetricsConfig, WatchdogConfig
from supervisor.observability.gc_pauses import GC_PAUSE_BUCKETS, GENERATIONS, GCPauses
from supervisor.observability.watchdog import BEAT_SECONDS, LoopWatchdog
from supervisor.process.rooms import JOB_ENDS, OFFER_ANSWERS, RoomSet

PREFIX = "lksup"
ROOM_STATES = ("starting", "running", "reconnecting", "backoff", "failed", "stopping")
"""A room's state: joining for the first time (`starting`), serving (`running`: its tree
runs and its connection is joined), its tree running but its connection resuming or
rejoining (`reconnecting`: the server went away, or the SDK gave up and the connection
actor restarted), waiting to restart (`backoff`), quarantined after too many restarts
(`failed`), or leaving (`stopping`)."""
READINESS_NAMES = 5
"""How many rooms of each state `/readyz` names when not ready."""
DROP_REASONS = (
    "overflow", "not_ready", "stale", "output_full", "unheard", "late", "handoff"
)
"""Why audio frames were dropped: the pipeline's drop-oldest lane was full (`overflow`),
the bot had not started (`not_ready`), the bot stalled (`stale`), audio-out's lane
stayed full (`output_full`), the bot spoke to an empty room (`unheard`: its track is
published only while someone listens), live audio passed through arrived too late to
play (`late`, see `RoomSettings.passthrough_delay_ms`), the bot spoke while the bot it
takes a room over from was still there (`handoff`, `RoomSettings.predecessor`)."""
ACTOR_KINDS = ("room", "connection", "events", "audio_in", "audio_out", "pipeline")
"""`room` is a room's own supervisor (its restarts are quarantine retries)."""
_RESPONSE_HELP = (
    "From the user's speech ending (the VAD's stop, less the silence it waited for; else "
    "pipecat's turn end) to the bot's first audio captured into the room after it."
)
_HOP_HELP = (
    "The time of the same frames as lksup_audio_latency_seconds, hop by hop: to_pipeline "
    "(the pipeline actor's lane), pipeline (pacing, pipecat's input transport and the bot's "
    "processors), output (pipecat's output transport: its queue, resampling, re-chunking), "
    "to_audio_out (the audio-out lane), capture (capture_frame, waiting while the source's "
    "buffer is full)."
)
_TOKENS_HELP = "LLM tokens the bot's services reported, by kind: prompt, completion."
_SERVICE_TIMES = (
    ("ttfb", "bot_ttfb", "Time to first byte of the bot's services, as pipecat reports it, "
     "by processor (its class name; at most 8 per room, the rest as other)."),
    ("processing", "bot_processing", "Processing time of the bot's services, as pipecat "
     "reports it, by processor (its class name; at most 8 per room, the rest as other)."),
)
"""(name, `RoomStats` field, help) of the per-processor service times."""
_BOT_COUNTERS = (
    ("tts_characters", "bot_tts_characters", "Characters the bot's TTS services spoke."),
    ("turns", "bot_turns", "User turns ended (pipecat's UserStoppedSpeakingFrame)."),
    ("interruptions", "bot_interruptions", "Times the user interrupted the bot speaking."),
)
"""(name without `_total`, `RoomStats` field, help) of the bot's plain counters."""
LOOP_LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def room_state(cell: ChildStatistics | None, stats: RoomStats | None) -> str:
    """A room's state for `lksup_rooms` and `/readyz` (see `ROOM_STATES`), from its slot
    (None: not built yet) and its connection.

    A room in backoff because it exceeded its restart intensity is quarantined, i.e.
    `failed`. A running tree counts as `running` only while its connection is joined:
    the SDK resuming a lost link, or a connection actor rejoining after it gave up,
    leaves the tree running but serves nobody.
    """
    if cell is None:
        return "starting"
    state = cell.state
    if state is ActorState.BACKOFF:
        return "failed" if isinstance(cell.last_error, RestartIntensityError) else "backoff"
    if state in (ActorState.STOPPING, ActorState.STOPPED):
        return "stopping"
    if state is ActorState.RUNNING and (stats is None or stats.connection != "connected"):
        return "reconnecting"
    return state.value


class _Accumulator:
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


def _cumulative(bounds: Sequence[float], counts: list[int]) -> list[tuple[str, float]]:
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(bounds, counts, strict=False):
        running += n
        cumulative.append((repr(bound), running))
    cumulative.append(("+Inf", running + counts[-1]))
    return cumulative


def _histogram(
    name: str, doc: str, bounds: Sequence[float], counts: list[int], sum_ns: int
) -> Metric:
    return HistogramMetricFamily(
        name, doc, buckets=_cumulative(bounds, counts), sum_value=sum_ns / 1e9
    )


def _sum_histograms(
    histograms: Iterable[BucketCounts], bounds: Sequence[float]
) -> tuple[list[int], int]:
    counts, total_ns = [0] * (len(bounds) + 1), 0
    for histogram in histograms:
        total_ns += histogram.add_to(counts)
    return counts, total_ns


class RoomSetCollector(Collector):
    """Exports a `RoomSet`: its rooms' states, stats, mailboxes and restarts."""

    def __init__(self, room_set: RoomSet, config: MetricsConfig) -> None:
        self.room_set = room_set
        self.config = config
        self._slots_acc = _Accumulator()
        self._labelled: dict[str, None] = {}  # ordered: the first rooms seen keep series
        self._refused: set[str] = set()
        self._refusals = 0

    # --- what the endpoints need ---------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """Ready while every configured room runs (its tree started, its connection
        joined); otherwise which rooms are in which state, a few names each."""
        states = self._states(self._room_slots())
        by_state: dict[str, list[str]] = {}
        for room in self.room_set.config.rooms:
            by_state.setdefault(states[room.name], []).append(room.name)
        running = len(by_state.pop("running", []))
        detail = f"{running} of {len(self.room_set.config.rooms)} room(s) running"
        for state in ROOM_STATES:
            names = by_state.get(state, [])
            if names:
                more = len(names) - READINESS_NAMES
                listed = ", ".join(names[:READINESS_NAMES])
                if more > 0:
                    listed += f" (+{more} more)"
                detail += f"; {state}: {listed}"
        worker = self.room_set.worker
        if worker is None:
            return not by_state, detail
        dispatch = (
            "draining" if worker.draining
            else "registered" if worker.registered
            else "not registered"
        )
        detail += f"; agent worker {dispatch}, {len(self.room_set.dispatched)} dispatched room(s)"
        return not by_state and worker.registered and not worker.draining, detail

    def rooms_now(self) -> list[tuple[str, str, int]]:
        """Every room of the process, its state (as `lksup_rooms` counts it) and its
        restarts (as `lksup_room_restarts_total`), in start order: for `/status`."""
        cells = self._room_slots()
        self._scan_slots(cells)  # the restarts since the last scrape, into the totals
        totals = self._slots_acc.totals
        states = self._states(cells)
        return [(name, state, totals[("room", name)]) for name, state in states.items()]

    # --- the scrape ------------------------------------------------------------------

    def _room_slots(self) -> dict[str, ChildStatistics]:
        """Every room's slot, with the slots of its tree, read in place (see the module
        docstring)."""
        supervisor = self.room_set.supervisor
        return {room.name: room for room in supervisor.children()} if supervisor else {}

    def _states(self, cells: dict[str, ChildStatistics]) -> dict[str, str]:
        """The state of every room with a slot (a removed one still stopping too), then
        of every room served and not yet built (`starting`)."""
        stats = self.room_set.stats
        states = {name: room_state(cell, stats.get(name)) for name, cell in cells.items()}
        for name in self.room_set.room_names():
            states.setdefault(name, "starting")
        return states

    def describe(self) -> list[Metric]:
        return []  # names are fixed, but a describe must not read a half-built tree

    def collect(self) -> Iterator[Metric]:
        room_set = self.room_set
        configured = room_set.room_names()
        room_cells = self._room_slots()
        labelled = self._labelled_rooms(configured)
        depth, deepest = self._scan_slots(room_cells)  # first: the totals below use it

        yield from self._identity(len(configured))
        yield CounterMetricFamily(
            f"{PREFIX}_rooms_served",
            "Room trees this process started and saw end (what [recycle] max_rooms_served "
            "bounds).",
            value=room_set.rooms_served,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_recycle_due",
            "1 while this worker is past a [recycle] bound and serves on until its successor "
            "takes over (seconds, normally); else 0.",
            value=room_set.recycle is not None and room_set.recycle.due is not None,
        )
        yield from self._rooms(self._states(room_cells), labelled)
        yield from self._stats(room_set.stats, room_set.retired, configured, labelled)
        yield from self._bot(room_set.stats, room_set.retired, labelled)
        yield from self._slots(depth, deepest, labelled)
        yield from self._cardinality()

    def _identity(self, configured: int) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            f"{PREFIX}_build_info", "Always 1; the supervisor's version as a label.",
            labels=["version"],
        )
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            f"{PREFIX}_rooms_configured", "Rooms this process is configured to serve.",
            value=configured,
        )

    def _rooms(self, state_of: dict[str, str], labelled: list[str]) -> Iterator[Metric]:
        states = Counter(state_of.values())
        rooms = GaugeMetricFamily(
            f"{PREFIX}_rooms",
            "Rooms by state: starting (joining), running (joined and serving), reconnecting "
            "(the connection resuming or rejoining), backoff (waiting to restart), failed "
            "(quarantined after too many restarts), stopping.",
            labels=["state"],
        )
        for state in ROOM_STATES:
            rooms.add_metric([state], states[state])
        yield rooms
        if labelled:
            running = GaugeMetricFamily(
                f"{PREFIX}_room_running",
                "1 while the room runs (its actor tree started, its connection joined), else 0.",
                labels=["room"],
            )
            for name in labelled:
                running.add_metric([name], int(state_of.get(name) == "running"))
            yield running

    def _stats(
        self,
        stats: dict[str, RoomStats],
        retired: RoomStats,
        configured: list[str],
        labelled: list[str],
    ) -> Iterator[Metric]:
        # Counters sum over every room ever served (a removed room's counts stay in the
        # totals, an ended job's in `retired`); gauges over the rooms served now.
        everything = [*stats.values(), retired]
        current = [stats[name] for name in configured if name in stats]

        yield GaugeMetricFamily(
            f"{PREFIX}_participants", "Remote participants in all rooms, the bot not counted.",
            value=sum(len(s.participants) for s in current),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_participant_joins", "Remote participants who joined a room.",
            value=sum(s.joins for s in everything),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_participant_leaves", "Remote participants who left a room.",
            value=sum(s.leaves for s in everything),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_signalling_lost",
            "Rejoins because the server stopped reading a bot's signalling: a participant's "
            "audio track listed and never delivered to the bot, or the bot's own track "
            "publication unanswered.",
            value=sum(len(s.undelivered) + s.unanswered_publishes for s in everything),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_audio_frames_in",
            "Audio frames (of the bot's audio_frame_ms) read from participants' tracks.",
            value=sum(s.audio_frames_in for s in everything),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_audio_frames_out", "Audio frames captured into the bot's published track.",
            value=sum(s.audio_frames_out for s in everything),
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}_audio_frames_dropped",
            "Audio frames dropped, by reason: overflow (the bot's drop-oldest lane was full), "
            "not_ready (the bot had not started), stale (the bot stalled), output_full "
            "(the audio-out lane stayed full), unheard (the bot spoke to an empty room), late "
            "(passed-through audio too late to play), handoff (the bot spoke while the bot it "
            "takes the room over from was still there).",
            labels=["reason"],
        )
        reasons: Counter[str] = Counter()
        for s in everything:
            reasons.update(s.audio_frames_dropped)
        reasons["overflow"] += self._slots_acc.totals[("dropped", "pipeline")]
        for reason in DROP_REASONS:
            dropped.add_metric([reason], reasons[reason])
        yield dropped

        data_in = CounterMetricFamily(
            f"{PREFIX}_data_messages_in",
            "Data messages received, by kind: json (a JSON object), raw (delivered as bytes: "
            "not UTF-8 or not a JSON object), oversized (refused), unattributed (dropped: "
            "the SDK named no sender and the server could not tell which newcomer sent it).",
            labels=["kind"],
        )
        data_in.add_metric(["json"], sum(s.data_in - s.data_malformed for s in everything))
        data_in.add_metric(["raw"], sum(s.data_malformed for s in everything))
        data_in.add_metric(["oversized"], sum(s.data_oversized for s in everything))
        data_in.add_metric(["unattributed"], sum(s.data_unattributed for s in everything))
        yield data_in
        data_out = CounterMetricFamily(
            f"{PREFIX}_data_messages_out", "Data messages the bots sent, by kind: reliable, lossy.",
            labels=["kind"],
        )
        data_out.add_metric(["reliable"], sum(s.data_out - s.data_out_lossy for s in everything))
        data_out.add_metric(["lossy"], sum(s.data_out_lossy for s in everything))
        yield data_out

        counts, sum_ns = _sum_histograms((s.audio_latency for s in everything), LATENCY_BUCKETS)
        yield _histogram(
            f"{PREFIX}_audio_latency_seconds",
            "From a frame's arrival in the audio-in actor to its capture by the audio-out "
            "actor, for the frames the bot passes through (one per captured chunk).",
            LATENCY_BUCKETS, counts, sum_ns,
        )  # fmt: skip
        hops = HistogramMetricFamily(f"{PREFIX}_audio_hop_seconds", _HOP_HELP, labels=["hop"])
        for index, hop in enumerate(HOPS):
            counts, sum_ns = _sum_histograms((s.audio_hops[index] for s in everything), HOP_BUCKETS)
            hops.add_metric([hop], _cumulative(HOP_BUCKETS, counts), sum_value=sum_ns / 1e9)
        yield hops
        counts, sum_ns = _sum_histograms((s.connect_time for s in everything), CONNECT_BUCKETS)
        yield _histogram(
            f"{PREFIX}_room_connect_seconds",
            "How long joining a room took (each successful rtc connect, rejoins included).",
            CONNECT_BUCKETS, counts, sum_ns,
        )  # fmt: skip

        if labelled:
            participants = GaugeMetricFamily(
                f"{PREFIX}_room_participants", "Remote participants in the room.", labels=["room"]
            )
            frames_in = CounterMetricFamily(
                f"{PREFIX}_room_audio_frames_in", "Audio frames read in the room.", labels=["room"]
            )
            frames_out = CounterMetricFamily(
                f"{PREFIX}_room_audio_frames_out", "Audio frames the bot sent in the room.",
                labels=["room"],
            )
            # a count and a sum per hop (a summary): buckets per room and hop would
            # multiply the series; the process's histogram carries the quantiles
            room_hops = SummaryMetricFamily(
                f"{PREFIX}_room_audio_hop_seconds", _HOP_HELP, labels=["room", "hop"]
            )
            for name in labelled:
                s = stats.get(name) or RoomStats()
                participants.add_metric([name], len(s.participants))
                frames_in.add_metric([name], s.audio_frames_in)
                frames_out.add_metric([name], s.audio_frames_out)
                for hop, histogram in zip(HOPS, s.audio_hops, strict=True):
                    room_hops.add_metric([name, hop], histogram.count, histogram.sum_seconds)
            yield from (participants, frames_in, frames_out, room_hops)

    def _bot(
        self, stats: dict[str, RoomStats], retired: RoomStats, labelled: list[str]
    ) -> Iterator[Metric]:
        """The bots' own figures (`actors.room.bot_metrics`), for bots that enable
        pipecat's metrics. Per room, the service times are a count and a sum (a
        summary): a histogram per room and processor would multiply the series by the
        buckets, and the process's histograms carry the quantiles."""
        everything = [*stats.values(), retired]
        counts, sum_ns = _sum_histograms((s.bot_response for s in everything), RESPONSE_BUCKETS)
        yield _histogram(
            f"{PREFIX}_bot_response_seconds", _RESPONSE_HELP,
            RESPONSE_BUCKETS, counts, sum_ns,
        )  # fmt: skip
        for name, field, doc in _SERVICE_TIMES:
            family = HistogramMetricFamily(
                f"{PREFIX}_bot_{name}_seconds", doc, labels=["processor"]
            )
            by_label: dict[str, list[BucketCounts]] = {}
            for s in everything:
                for label, histogram in getattr(s, field).items():
                    by_label.setdefault(label, []).append(histogram)
            for label in sorted(by_label):
                counts, sum_ns = _sum_histograms(by_label[label], SERVICE_BUCKETS)
                family.add_metric(
                    [label], _cumulative(SERVICE_BUCKETS, counts), sum_value=sum_ns / 1e9
                )
            yield family
        tokens = CounterMetricFamily(
            f"{PREFIX}_bot_llm_tokens", _TOKENS_HELP, labels=["kind"]
        )
        tokens.add_metric(["prompt"], sum(s.bot_llm_prompt_tokens for s in everything))
        tokens.add_metric(["completion"], sum(s.bot_llm_completion_tokens for s in everything))
        yield tokens
        for name, field, doc in _BOT_COUNTERS:
            yield CounterMetricFamily(
                f"{PREFIX}_bot_{name}", doc, value=sum(getattr(s, field) for s in everything)
            )
        if not labelled:
            return

        response = HistogramMetricFamily(
            f"{PREFIX}_room_bot_response_seconds", _RESPONSE_HELP, labels=["room"]
        )
        times = [
            SummaryMetricFamily(
                f"{PREFIX}_room_bot_{name}_seconds", doc, labels=["room", "processor"]
            )
            for name, _, doc in _SERVICE_TIMES
        ]
        room_tokens = CounterMetricFamily(
            f"{PREFIX}_room_bot_llm_tokens", _TOKENS_HELP, labels=["room", "kind"]
        )
        counters = [
            CounterMetricFamily(f"{PREFIX}_room_bot_{name}", doc, labels=["room"])
            for name, _, doc in _BOT_COUNTERS
        ]
        for room in labelled:
            s = stats.get(room) or RoomStats()
            histogram = s.bot_response
            response.add_metric(
                [room], _cumulative(RESPONSE_BUCKETS, histogram.counts),
                sum_value=histogram.sum_seconds,
            )  # fmt: skip
            for summary, (_, field, _) in zip(times, _SERVICE_TIMES, strict=True):
                for label, histogram in sorted(getattr(s, field).items()):
                    summary.add_metric([room, label], histogram.count, histogram.sum_seconds)
            room_tokens.add_metric([room, "prompt"], s.bot_llm_prompt_tokens)
            room_tokens.add_metric([room, "completion"], s.bot_llm_completion_tokens)
            for counter, (_, field, _) in zip(counters, _BOT_COUNTERS, strict=True):
                counter.add_metric([room], getattr(s, field))
        yield from (response, *times, room_tokens, *counters)

    def _scan_slots(self, rooms: dict[str, ChildStatistics]) -> tuple[Counter[str], Counter[str]]:
        """Every room's slots: mailbox depth now (sum and max by kind); drops, dead
        letters and restarts into the accumulated totals."""
        depth: Counter[str] = Counter()
        deepest: Counter[str] = Counter()
        acc = self._slots_acc
        acc.begin()
        for name, room in rooms.items():
            for kind, slot in [("room", room), *((child.name, child) for child in room.children)]:
                mailbox = slot.mailbox
                depth[kind] += mailbox.depth
                deepest[kind] = max(deepest[kind], mailbox.depth)
                acc.report(slot.slot, "dropped", mailbox.dropped, ("dropped", kind))
                acc.report(slot.slot, "dead", mailbox.dead_letters, ("dead", kind))
                acc.report(slot.slot, "restarts", slot.restarts, ("restarts", kind), ("room", name))
        acc.end()
        return depth, deepest

    def _slots(
        self, depth: Counter[str], deepest: Counter[str], labelled: list[str]
    ) -> Iterator[Metric]:
        acc = self._slots_acc

        gauge = GaugeMetricFamily(
            f"{PREFIX}_mailbox_depth",
            "Frames queued in the mailboxes of all actors of this kind.", labels=["actor"],
        )
        peak = GaugeMetricFamily(
            f"{PREFIX}_mailbox_depth_max",
            "Frames queued in the fullest mailbox of an actor of this kind.", labels=["actor"],
        )
        overflow = CounterMetricFamily(
            f"{PREFIX}_mailbox_dropped",
            "Frames a full drop-oldest mailbox dropped (overflow), by actor kind.",
            labels=["actor"],
        )
        dead = CounterMetricFamily(
            f"{PREFIX}_mailbox_dead_letters",
            "Frames sent to a stopped actor, by actor kind.", labels=["actor"],
        )
        restarts = CounterMetricFamily(
            f"{PREFIX}_actor_restarts",
            "Actor restarts by kind (room: a quarantined room's tree rebuilt).", labels=["actor"],
        )
        for kind in ACTOR_KINDS:
            gauge.add_metric([kind], depth[kind])
            peak.add_metric([kind], deepest[kind])
            overflow.add_metric([kind], acc.totals[("dropped", kind)])
            dead.add_metric([kind], acc.totals[("dead", kind)])
            restarts.add_metric([kind], acc.totals[("restarts", kind)])
        yield from (gauge, peak, overflow, dead, restarts)
        if labelled:
            per_room = CounterMetricFamily(
                f"{PREFIX}_room_restarts", "Restarts of the room's actors and of the room itself.",
                labels=["room"],
            )
            for name in labelled:
                per_room.add_metric([name], acc.totals[("room", name)])
            yield per_room

    # --- cardinality -------------------------------------------------------------------

    def _labelled_rooms(self, configured: list[str]) -> list[str]:
        """The rooms with per-room series: the first `max_room_series` seen, kept stable."""
        if not self.config.per_room_labels:
            return []
        present = set(configured)
        for name in [n for n in self._labelled if n not in present]:
            del self._labelled[name]  # removed from the config: its slot is free again
        self._refused &= present
        for name in configured:
            if name in self._labelled:
                continue
            if len(self._labelled) < self.config.max_room_series:
                self._labelled[name] = None
                self._refused.discard(name)
            elif name not in self._refused:
                self._refused.add(name)
                self._refusals += 1
        return list(self._labelled)

    def _cardinality(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            f"{PREFIX}_metrics_rooms_unlabelled",
            "Configured rooms without per-room series (metrics.max_room_series reached, "
            "or metrics.per_room_labels off); they still count in every total.",
            value=len(self.room_set.room_names()) - len(self._labelled),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_metrics_room_series_refused",
            "Rooms refused per-room series because metrics.max_room_series was reached.",
            value=self._refusals,
        )


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
        labelled = list(self.rooms._labelled) if self.rooms is not None else []
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
                [str(generation)], _cumulative(GC_PAUSE_BUCKETS, histogram.counts),
                sum_value=histogram.sum_seconds,
            )  # fmt: skip
        yield family


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
            yield _histogram(
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
        gap = fleet.handoff_time
        yield _histogram(
            f"{PREFIX}_fleet_handoff_seconds",
            "In each job this worker took over from a draining one: from its bot's join "
            "beside the old bot to its audio track published, when the old bot is removed "
            "(the caller hears the old bot meanwhile).",
            gap.bounds, gap.counts, gap.sum_ns,
        )  # fmt: skip


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
        self.rooms = RoomSetCollector(room_set, config)
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
        return self.rooms.readiness()
