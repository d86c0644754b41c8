"""The rooms' metrics (`lksup_rooms*`, `lksup_room_*`, audio, data, mailboxes, the bot's
figures), collected from a `RoomCensus` and the rooms' `RoomStats` at scrape time, with
per-room series for at most `max_room_series` rooms."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from actors.room import (
    ADDED_BUCKETS,
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
from supervisor.config import MetricsConfig
from supervisor.observability.census import ROOM_STATES, RoomCensus
from supervisor.observability.families import PREFIX, cumulative, histogram_family, sum_histograms

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
_ADDED_HELP = (
    "The part of each response the process added beyond its services' own time: the "
    "response (to the bot's first audio pushed to the output) less the VAD's wait, the "
    "longer of speech recognition's processing and the turn model's prediction, and the "
    "LLM's and TTS's times to first byte; a turn the turn model judged unfinished counts "
    "from its end only. A shared process's event loop or decoders falling behind show here."
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


class RoomSetCollector(Collector):
    """Exports a `RoomSet`: its rooms' states, stats, mailboxes and restarts."""

    def __init__(self, census: RoomCensus, config: MetricsConfig) -> None:
        self.census = census
        self.room_set = census.room_set
        self.config = config
        self._labelled: dict[str, None] = {}  # ordered: the first rooms seen keep series
        self._refused: set[str] = set()
        self._refusals = 0

    def describe(self) -> list[Metric]:
        return []  # names are fixed, but a describe must not read a half-built tree

    def collect(self) -> Iterator[Metric]:
        room_set = self.room_set
        configured = room_set.room_names()
        slots = self.census.slots()
        labelled = self._labelled_rooms(configured)
        depth, deepest = self.census.scan(slots)  # first: the totals below use it

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
        yield from self._rooms(self.census.states(slots), labelled)
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
        reasons["overflow"] += self.census.totals[("dropped", "pipeline")]
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

        counts, sum_ns = sum_histograms((s.audio_latency for s in everything), LATENCY_BUCKETS)
        yield histogram_family(
            f"{PREFIX}_audio_latency_seconds",
            "From a frame's arrival in the audio-in actor to its capture by the audio-out "
            "actor, for the frames the bot passes through (one per captured chunk).",
            LATENCY_BUCKETS, counts, sum_ns,
        )  # fmt: skip
        hops = HistogramMetricFamily(f"{PREFIX}_audio_hop_seconds", _HOP_HELP, labels=["hop"])
        for index, hop in enumerate(HOPS):
            counts, sum_ns = sum_histograms((s.audio_hops[index] for s in everything), HOP_BUCKETS)
            hops.add_metric([hop], cumulative(HOP_BUCKETS, counts), sum_value=sum_ns / 1e9)
        yield hops
        counts, sum_ns = sum_histograms((s.connect_time for s in everything), CONNECT_BUCKETS)
        yield histogram_family(
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
        counts, sum_ns = sum_histograms((s.bot_response for s in everything), RESPONSE_BUCKETS)
        yield histogram_family(
            f"{PREFIX}_bot_response_seconds", _RESPONSE_HELP,
            RESPONSE_BUCKETS, counts, sum_ns,
        )  # fmt: skip
        counts, sum_ns = sum_histograms((s.bot_added for s in everything), ADDED_BUCKETS)
        yield histogram_family(
            f"{PREFIX}_bot_added_seconds", _ADDED_HELP, ADDED_BUCKETS, counts, sum_ns
        )
        for name, field, doc in _SERVICE_TIMES:
            family = HistogramMetricFamily(
                f"{PREFIX}_bot_{name}_seconds", doc, labels=["processor"]
            )
            by_label: dict[str, list[BucketCounts]] = {}
            for s in everything:
                for label, histogram in getattr(s, field).items():
                    by_label.setdefault(label, []).append(histogram)
            for label in sorted(by_label):
                counts, sum_ns = sum_histograms(by_label[label], SERVICE_BUCKETS)
                family.add_metric(
                    [label], cumulative(SERVICE_BUCKETS, counts), sum_value=sum_ns / 1e9
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
        added = SummaryMetricFamily(
            f"{PREFIX}_room_bot_added_seconds", _ADDED_HELP, labels=["room"]
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
                [room], cumulative(RESPONSE_BUCKETS, histogram.counts),
                sum_value=histogram.sum_seconds,
            )  # fmt: skip
            added.add_metric([room], s.bot_added.count, s.bot_added.sum_seconds)
            for summary, (_, field, _) in zip(times, _SERVICE_TIMES, strict=True):
                for label, histogram in sorted(getattr(s, field).items()):
                    summary.add_metric([room, label], histogram.count, histogram.sum_seconds)
            room_tokens.add_metric([room, "prompt"], s.bot_llm_prompt_tokens)
            room_tokens.add_metric([room, "completion"], s.bot_llm_completion_tokens)
            for counter, (_, field, _) in zip(counters, _BOT_COUNTERS, strict=True):
                counter.add_metric([room], getattr(s, field))
        yield from (response, added, *times, room_tokens, *counters)

    def _slots(
        self, depth: Counter[str], deepest: Counter[str], labelled: list[str]
    ) -> Iterator[Metric]:
        totals = self.census.totals

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
            overflow.add_metric([kind], totals[("dropped", kind)])
            dead.add_metric([kind], totals[("dead", kind)])
            restarts.add_metric([kind], totals[("restarts", kind)])
        yield from (gauge, peak, overflow, dead, restarts)
        if labelled:
            per_room = CounterMetricFamily(
                f"{PREFIX}_room_restarts", "Restarts of the room's actors and of the room itself.",
                labels=["room"],
            )
            for name in labelled:
                per_room.add_metric([name], totals[("room", name)])
            yield per_room

    @property
    def labelled(self) -> list[str]:
        """The rooms with per-room series now."""
        return list(self._labelled)

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
