"""The metrics' parts alone: histograms, arrival stamps through pipecat's re-chunking,
monotonic totals, the per-room cap, and the [metrics] config keys.

End to end (a real supervisor, a real Prometheus) is tests/livekit/test_observability.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import time
from typing import Any

import anyio
import attrs
import pytest
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import OutputAudioRawFrame

from actors.room import timing
from actors.room.job import Job
from actors.room.room import CURRENT_ROOM
from actors.room.timing import ARRIVAL, HOP_BUCKETS, HOPS, BucketCounts, StampCarrier
from supervisor.config import ConfigError, RecycleConfig, WatchdogConfig
from supervisor.livekit_server.access import Credentials
from supervisor.observability.families import Accumulator
from supervisor.observability.metrics import SupervisorMetrics
from supervisor.observability.watchdog import BEAT_SECONDS
from supervisor.process.recycle import Bounds
from supervisor.process.rooms import RoomSet, WorkerState
from tests.helpers.configs import echo_config, echo_room_set
from tests.helpers.probes import wait_until
from tests.helpers.prometheus import rendered


def test_bucket_counts_put_a_bound_in_its_own_bucket() -> None:
    histogram = BucketCounts((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.002, 0.01, 5.0):
        histogram.observe(seconds)
    assert histogram.counts == [2, 2, 1]  # le=0.001, le=0.01, +Inf
    assert histogram.count == 5
    assert histogram.sum_seconds == pytest.approx(5.0135)


def test_bucket_counts_refuse_unordered_bounds() -> None:
    with pytest.raises(ValueError, match="increasing"):
        BucketCounts((0.01, 0.001))


# --- arrival stamps through pipecat's output transport ---------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A fake `perf_counter_ns` for `actors.room.timing`: set `clock[0]`."""
    now = [10**12]
    monkeypatch.setattr(timing, "perf_counter_ns", lambda: now[0])
    return now


def frame(index: int, rate: int = 16000, ms: int = 20) -> OutputAudioRawFrame:
    """A bot output frame whose arrival stamp is its index (easy to follow)."""
    out = OutputAudioRawFrame(audio=bytes(2 * rate * ms // 1000), sample_rate=rate, num_channels=1)
    out.metadata[ARRIVAL] = index
    return out


class OutputTransport:
    """What pipecat's output transport does to audio (`handle_audio_frame`): resample
    to its own rate with pipecat's stream resampler, buffer, cut fixed-size chunks."""

    def __init__(self, rate: int = 24000, chunk_ms: int = 20) -> None:
        self.rate = rate
        self.chunk_bytes = 2 * rate * chunk_ms // 1000
        self.resampler = create_stream_resampler()
        self.buffer = b""
        self.carrier = StampCarrier()

    async def send(self, out: OutputAudioRawFrame) -> list[Any]:
        """One bot frame in; the stamps of the chunks it let out (None: no stamp)."""
        self.carrier.entering(out)
        self.buffer += await self.resampler.resample(out.audio, out.sample_rate, self.rate)
        stamps = []
        while len(self.buffer) >= self.chunk_bytes:
            audio, self.buffer = self.buffer[: self.chunk_bytes], self.buffer[self.chunk_bytes :]
            chunk = OutputAudioRawFrame(audio=audio, sample_rate=self.rate, num_channels=1)
            self.carrier.leaving(chunk)
            stamps.append(chunk.metadata.get(ARRIVAL))
        return stamps


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_stamps_follow_frames_through_resampling_and_chunking(clock: list[int]) -> None:
    output = OutputTransport()
    chunks: list[tuple[int, Any]] = []  # (frames sent so far, stamp)
    for index in range(200):
        clock[0] += 20_000_000
        chunks += [(index + 1, stamp) for stamp in await output.send(frame(index))]
    stamps = [stamp for _, stamp in chunks]
    assert len(chunks) >= 190  # pipecat's resampler holds a little back
    assert None not in stamps, "a chunk lost its frame's stamp"
    assert stamps == sorted(set(stamps)), "stamps out of order or repeated"
    # each chunk carries the frame its audio completes: one already sent, at most a
    # resampler block (~100 ms, 5 frames) behind the newest
    assert all(sent - 6 <= stamp < sent for sent, stamp in chunks)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_stamps_realign_after_the_bot_paused(clock: list[int]) -> None:
    output = OutputTransport()
    for index in range(10):
        clock[0] += 20_000_000
        await output.send(frame(index))
    output.buffer = b""  # pipecat drops the partial chunk when the bot stops speaking
    output.resampler = create_stream_resampler()  # and what its resampler held
    clock[0] += StampCarrier.IDLE_NS + 1
    stamps = []
    for index in range(100, 120):
        clock[0] += 20_000_000
        stamps += await output.send(frame(index))
    assert stamps, stamps
    assert all(stamp is not None and stamp >= 100 for stamp in stamps), stamps
    assert stamps[0] <= 105, "the new talk spurt's first chunks were matched to old frames"


def test_frames_without_a_stamp_are_not_timed() -> None:
    histogram = timing.latency_buckets()
    unstamped = OutputAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1)
    timing.observe_latency(unstamped, histogram)
    assert histogram.count == 0
    timing.stamp(unstamped)
    timing.observe_latency(unstamped, histogram)
    assert histogram.count == 1
    assert histogram.counts[0] == 1  # well within 1 ms


def test_each_hop_of_a_passed_through_frame_is_timed(clock: list[int]) -> None:
    """Arrival, pipeline in, bot out, written, audio-out in, captured: five hops whose
    times add up to the total, observed when the chunk is captured."""
    carrier = StampCarrier()
    latency, hops = timing.latency_buckets(), timing.hop_buckets()
    frame = OutputAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1)
    timing.stamp(frame)
    steps_ns = (300_000, 1_500_000, 4_000_000, 30_000_000, 700_000)  # one per hop
    clock[0] += steps_ns[0]
    timing.stamp_pipeline_in(frame)
    clock[0] += steps_ns[1]
    carrier.entering(frame)
    clock[0] += steps_ns[2]
    chunk = OutputAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1)
    carrier.leaving(chunk)
    clock[0] += steps_ns[3]
    received = clock[0]
    clock[0] += steps_ns[4]
    timing.observe_latency(chunk, latency, hops, received)
    assert latency.sum_ns == sum(steps_ns)
    assert [h.sum_ns for h in hops] == list(steps_ns), dict(zip(HOPS, hops, strict=True))
    assert [h.count for h in hops] == [1] * len(HOPS)


def test_a_frame_without_hop_stamps_counts_in_the_total_only(clock: list[int]) -> None:
    """Audio-in stamped it, the pipeline actor did not (a bot fed another way)."""
    carrier, latency, hops = StampCarrier(), timing.latency_buckets(), timing.hop_buckets()
    frame = OutputAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1)
    timing.stamp(frame)
    carrier.entering(frame)
    chunk = OutputAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1)
    carrier.leaving(chunk)
    timing.observe_latency(chunk, latency, hops, clock[0])
    assert latency.count == 1
    assert sum(h.count for h in hops) == 0


# --- process totals and the per-room cap ------------------------------------------------


def test_accumulated_totals_survive_a_rebuilt_slot() -> None:
    acc = Accumulator()

    class Slot:
        pass

    old, new = Slot(), Slot()
    for slot, value in ((old, 3), (old, 5), (new, 1), (new, 4)):
        acc.begin()
        acc.report(slot, "restarts", value, ("restarts", "pipeline"))
        acc.end()
    assert acc.totals[("restarts", "pipeline")] == 5 + 4


def config(rooms: int, **metrics: Any) -> Any:
    return echo_config(*(f"room-{i}" for i in range(rooms)), metrics=metrics)


def room_series(samples: dict[tuple[str, Any], float]) -> set[str]:
    return {dict(labels)["room"] for name, labels in samples if name == "lksup_room_participants"}


def test_per_room_series_are_capped_and_slots_freed_by_removed_rooms() -> None:
    room_set = RoomSet(config(3, max_room_series=2), Credentials("ws://x", "k", "s"))
    metrics = SupervisorMetrics(room_set, room_set.config.metrics)
    samples = rendered(metrics)
    assert room_series(samples) == {"room-0", "room-1"}
    assert samples["lksup_metrics_room_series_refused_total", ()] == 1
    assert samples["lksup_metrics_rooms_unlabelled", ()] == 1
    assert samples["lksup_rooms", (("state", "starting"),)] == 3  # no tree built yet
    assert metrics.readiness() == (
        False,
        "0 of 3 room(s) running; starting: room-0, room-1, room-2",
    )

    # a reload removes room-0: room-2 takes its place, and the refusal stays counted
    room_set.config = attrs.evolve(room_set.config, rooms=room_set.config.rooms[1:])
    samples = rendered(metrics)
    assert room_series(samples) == {"room-1", "room-2"}
    assert samples["lksup_metrics_room_series_refused_total", ()] == 1
    assert samples["lksup_metrics_rooms_unlabelled", ()] == 0


def test_per_room_series_can_be_switched_off() -> None:
    room_set = RoomSet(config(3, per_room_labels=False), Credentials("ws://x", "k", "s"))
    samples = rendered(SupervisorMetrics(room_set, room_set.config.metrics))
    assert room_series(samples) == set()
    assert samples["lksup_metrics_rooms_unlabelled", ()] == 3
    assert samples["lksup_participants", ()] == 0  # the totals are still there


def test_an_ended_jobs_counts_stay_in_the_totals_and_its_room_is_forgotten() -> None:
    """A worker serving dispatched rooms under ever new names keeps one set of totals
    for those that ended, not one `RoomStats` per name for good."""
    room_set = RoomSet(config(1), Credentials("ws://x", "k", "s"))
    metrics = SupervisorMetrics(room_set, room_set.config.metrics)
    room_set.room_spec(room_set.config.rooms[0])
    for index in range(3):
        job = Job(id=f"AJ_{index}", room=f"call-{index}")
        room_set.job_spec(job, "token", "ws://x", "bot")
        stats = room_set.stats[job.room]
        stats.joins += 2
        stats.audio_latency.observe(0.004)
        stats.audio_hops[HOPS.index("capture")].observe(0.0003)
        stats.audio_frames_dropped["late"] += 1
        room_set.job_ended(job)
    room_set.stats["room-0"].joins += 1  # the static room: its own, kept
    assert sorted(room_set.stats) == ["room-0"]
    samples = rendered(metrics)
    assert samples["lksup_participant_joins_total", ()] == 7
    assert samples["lksup_audio_frames_dropped_total", (("reason", "late"),)] == 3
    assert samples["lksup_audio_latency_seconds_count", ()] == 3
    capture = (("hop", "capture"),)
    assert samples["lksup_audio_hop_seconds_count", capture] == 3
    assert samples["lksup_audio_hop_seconds_bucket", (*capture, ("le", "0.0005"))] == 3
    assert samples["lksup_audio_hop_seconds_count", (("hop", "pipeline"),)] == 0
    assert HOP_BUCKETS[-1] == 0.25


def test_a_worker_past_its_recycle_bound_says_so_until_it_is_replaced() -> None:
    room_set = RoomSet(config(1), Credentials("ws://x", "k", "s"))
    metrics = SupervisorMetrics(room_set, room_set.config.metrics)
    assert rendered(metrics)["lksup_recycle_due", ()] == 0  # no parent: no bounds
    room_set.recycle = Bounds(RecycleConfig(max_rooms_served=2), lambda: room_set.rooms_served)
    room_set.rooms_served = 1
    room_set.recycle.check()
    assert rendered(metrics)["lksup_recycle_due", ()] == 0
    room_set.rooms_served = 2
    room_set.recycle.check()
    samples = rendered(metrics)
    assert samples["lksup_recycle_due", ()] == 1
    assert samples["lksup_rooms_served_total", ()] == 2


def test_per_room_hop_series_are_a_count_and_a_sum() -> None:
    room_set = RoomSet(config(1), Credentials("ws://x", "k", "s"))
    metrics = SupervisorMetrics(room_set, room_set.config.metrics)
    room_set.room_spec(room_set.config.rooms[0])
    room_set.stats["room-0"].audio_hops[HOPS.index("output")].observe(0.002)
    samples = rendered(metrics)
    labels = (("hop", "output"), ("room", "room-0"))
    assert samples["lksup_room_audio_hop_seconds_count", labels] == 1
    assert samples["lksup_room_audio_hop_seconds_sum", labels] == pytest.approx(0.002)
    assert not any(
        name == "lksup_room_audio_hop_seconds_bucket" for name, _ in samples
    ), "per-room buckets"


def test_garbage_collections_are_timed_while_installed() -> None:
    import gc

    metrics = watchdog_metrics()
    with metrics.gc_pauses.installed():
        gc.collect()
    gc.collect()  # not timed: uninstalled
    samples = rendered(metrics)
    assert samples["lksup_gc_pause_seconds_count", (("generation", "2"),)] == 1
    assert samples["lksup_gc_pause_seconds_sum", (("generation", "2"),)] > 0
    stalled = rendered(metrics, stalled=True)  # read off the loop too
    assert stalled["lksup_gc_pause_seconds_count", (("generation", "2"),)] == 1


def test_capacity_used_is_the_nearer_of_the_room_and_load_limits() -> None:
    room_set = echo_room_set(dispatch={"enabled": True, "max_rooms": 4, "load_threshold": 0.5})
    room_set.worker = WorkerState(registered=True, load=0.1)
    metrics = SupervisorMetrics(room_set, room_set.config.metrics)

    def used() -> float:
        return rendered(metrics)["lksup_dispatch_capacity_used", ()]

    assert used() == pytest.approx(0.2)  # load 0.1 of 0.5; no room of 4
    for index in range(3):
        room_set.dispatched[f"call-{index}"] = Job(id=f"AJ_{index}", room=f"call-{index}")
    assert used() == pytest.approx(0.75)  # 3 rooms of 4
    room_set.worker.load = 0.45
    assert used() == pytest.approx(0.9)
    room_set.worker.load = 0.6  # past the threshold, not yet reported full
    assert used() == 1
    room_set.worker.load, room_set.worker.draining = 0.0, True
    assert used() == 1


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"per_room_labels": "yes"}, "metrics.per_room_labels = 'yes': expected true or false"),
        ({"max_room_series": -1}, "metrics.max_room_series = -1: expected a whole number >= 0"),
        ({"max_room_series": 2.5}, "metrics.max_room_series = 2.5: expected a whole number"),
        ({"room_labels": True}, "metrics.room_labels is not a known key"),
        ({"listen": "9464"}, "metrics.listen = '9464': expected 'host:port'"),
    ],
)
def test_bad_metrics_keys_are_refused(metrics: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        config(1, **metrics)


def test_metrics_keys_default_to_bounded_per_room_series() -> None:
    metrics = config(1).metrics
    assert (metrics.listen, metrics.per_room_labels, metrics.max_room_series) == (
        "127.0.0.1:9464", True, 500,
    )  # fmt: skip


# --- the event loop probe ---------------------------------------------------------------


def watchdog_metrics() -> SupervisorMetrics:
    room_set = RoomSet(config(0), Credentials("ws://x", "k", "s"))
    watchdog = WatchdogConfig(stall_seconds=0.2, restart_after_seconds=1.0)
    return SupervisorMetrics(room_set, room_set.config.metrics, watchdog)


BLOCK_SECONDS = 1.0
"""How long the tests below block the loop: well past the 0.2 s threshold, so the
watchdog's thread (which checks every 0.02 s) sees the stall on a busy machine too.
(The watchdog reads asyncio's handles: asyncio only, as the supervisor is.)"""


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_lag_probe_ticks_and_the_watchdog_sees_the_loop_stall(anyio_backend: str) -> None:
    metrics = watchdog_metrics()
    watchdog = metrics.watchdog
    async with anyio.create_task_group() as tasks:
        await tasks.start(watchdog.run)
        assert watchdog.health() == (True, "ok")
        time.sleep(BLOCK_SECONDS)  # noqa: ASYNC251 - blocks the loop: what the watchdog is there for
        healthy, detail = watchdog.health()
        assert not healthy, detail
        assert detail.startswith("event loop stalled for 1."), detail
        assert "outside any room, at " in detail, detail
        assert "test_metrics.py" in detail, detail
        assert rendered(metrics, stalled=True)["lksup_event_loop_stalled", ()] == 1
        await wait_until(lambda: watchdog.health() == (True, "ok"))
        await wait_until(lambda: rendered(metrics)["lksup_event_loop_lag_seconds_count", ()] >= 2)
        tasks.cancel_scope.cancel()
    samples = rendered(metrics)
    assert samples["lksup_event_loop_stalls_total", ()] == 1
    assert samples["lksup_event_loop_stalled", ()] == 0
    # the heartbeat is the lag probe: the beat the block held back woke that much late
    assert samples["lksup_event_loop_lag_seconds_sum", ()] >= BLOCK_SECONDS - BEAT_SECONDS
    assert metrics.readiness() == (True, "0 of 0 room(s) running")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_watchdog_names_the_room_whose_task_blocks(anyio_backend: str) -> None:
    metrics = watchdog_metrics()

    async def bot_step() -> None:
        time.sleep(BLOCK_SECONDS)  # noqa: ASYNC251 - a bot that blocks the loop

    async def room_code() -> None:
        CURRENT_ROOM.set("lobby")  # as a room's supervisor does for its whole tree
        async with anyio.create_task_group() as tree:
            tree.start_soon(bot_step)  # a task of the tree inherits its room

    async with anyio.create_task_group() as tasks:
        await tasks.start(metrics.watchdog.run)
        await room_code()
        stall = metrics.watchdog.stall
        tasks.cancel_scope.cancel()
    assert stall is not None
    assert stall.room == "lobby"
    assert stall.where.startswith(f"{__file__}:")
    assert stall.where.endswith(" in bot_step")
    assert metrics.watchdog.counts() == {"lobby": 1}



class StarvingSelector(selectors.DefaultSelector):
    """A selector whose next poll takes `starve` seconds: a loop that gets no CPU."""

    starve = 0.0

    def select(self, timeout: float | None = None) -> Any:
        seconds, self.starve = self.starve, 0.0
        time.sleep(seconds)
        return super().select(timeout)


def test_a_loop_starved_in_its_selector_is_not_a_stall() -> None:
    """No code blocks it, and nothing a restart would fix: the lag histogram's business."""
    metrics = watchdog_metrics()
    selector = StarvingSelector()

    async def main() -> None:
        watchdog = asyncio.create_task(metrics.watchdog.run())
        await asyncio.sleep(0.1)
        selector.starve = BLOCK_SECONDS
        started = time.monotonic()
        await asyncio.sleep(0)  # the loop polls, and waits
        assert time.monotonic() - started >= BLOCK_SECONDS
        assert metrics.watchdog.health() == (True, "ok")
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog

    loop = asyncio.SelectorEventLoop(selector)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert metrics.watchdog.counts() == {}
