"""What the metrics cost the audio path, per frame: metrics on against off, in one run.

    python benchmarks/metrics_cost.py [--frames 20000] [--repeats 7]

The audio latency histograms are the only metrics that run per audio frame (everything
else is read at scrape time). Their work: the audio-in actor stamps each frame's
metadata, the pipeline actor stamps it again (for the per-hop histograms), the output
transport carries the stamps across pipecat's re-chunking (`StampCarrier`), and the
audio-out actor observes one pre-bucketed slot of the total's histogram and one of
each hop's.

Three figures, each with metrics on and off over the same pre-built audio:

1. the metric code alone: per frame, the stamps, the carrier's two calls and the
   observations, against the same loop without them; and the same with the total's
   histogram only (no hops), so the hops' own share shows;
2. an audio path through the actor kernel as a room runs it: an audio-in producer
   builds a `UserAudioRawFrame` and tells it (drop-oldest lane) to a pipeline actor,
   which echoes it, resamples 16 kHz -> 24 kHz with pipecat's stream resampler and
   cuts 20 ms chunks as pipecat's output transport does, told (blocking lane) to an
   audio-out actor that counts them. No LiveKit and no pipecat pipeline: those add
   CPU on both sides equally, so this path is a lower bound of a frame's cost and the
   ratio an upper bound of the metrics' share.

3. the bot's observer (`actors.room.bot_metrics`), for a bot that enables pipecat's
   metrics: pipecat's `WorkerObserver` hands every frame a processor processes or
   pushes (first pushes only, for this observer) to each observer through a queue and
   a task of its own; per audio frame processed and pushed once, with the observer
   attached against pipecat's worker observer with none (a bot without metrics).

CPU is the process's CPU time (`time.process_time`), the least disturbed (minimum) of
alternating repeats: other load on a shared machine only ever adds to a run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import OutputAudioRawFrame, UserAudioRawFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.worker_observer import WorkerObserver
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.asyncio.task_manager import TaskManager

from actors import (
    Actor,
    ActorRef,
    ChildSpec,
    MailboxSpec,
    Overflow,
    Supervisor,
    WhichChildrenFrame,
    open_actor,
)
from actors.room.bot_metrics import BotMetricsObserver, observe_response
from actors.room.stats import RoomStats
from actors.room.timing import StampCarrier, observe_latency, stamp, stamp_pipeline_in

RATE_IN, RATE_OUT, FRAME_MS = 16000, 24000, 20
AUDIO = bytes(range(256)) * (2 * RATE_IN * FRAME_MS // 1000 // 256) + bytes(
    2 * RATE_IN * FRAME_MS // 1000 % 256
)
CHUNK_BYTES = 2 * RATE_OUT * FRAME_MS // 1000


# --- 1. the metric code alone ----------------------------------------------------------


def metric_code(frames: int, metrics: bool, hops: bool = True) -> float:
    """CPU seconds for `frames` frames of the per-frame work around the metrics (without
    `hops`: the total's histogram only, as before the per-hop histograms)."""
    stats, carrier = RoomStats(), StampCarrier()
    hop_histograms = stats.audio_hops if hops else ()
    start = time.process_time()
    for _ in range(frames):
        frame = UserAudioRawFrame(audio=AUDIO, sample_rate=RATE_IN, num_channels=1, user_id="p")
        if metrics:
            stamp(frame)
            if hops:
                stamp_pipeline_in(frame)
        echo = OutputAudioRawFrame(audio=frame.audio, sample_rate=RATE_IN, num_channels=1)
        echo.metadata = frame.metadata
        chunk = OutputAudioRawFrame(audio=AUDIO, sample_rate=RATE_IN, num_channels=1)
        if metrics:
            carrier.entering(echo)
            carrier.leaving(chunk)
            received = time.perf_counter_ns() if hops else 0
            observe_latency(chunk, stats.audio_latency, hop_histograms, received)
            observe_response(stats)  # audio-out: the bot's response, when one is due
        stats.audio_frames_out += 1
    return time.process_time() - start


# --- 2. an audio path through the kernel ----------------------------------------------


class AudioOut(Actor):
    def __init__(self, stats: RoomStats, metrics: bool, expected: int, done: anyio.Event) -> None:
        self.stats, self.metrics = stats, metrics
        self.expected, self.done = expected, done

    async def receive(self, frame: Any) -> Any:
        received = time.perf_counter_ns()
        self.stats.audio_frames_out += 1
        if self.metrics:
            observe_latency(frame, self.stats.audio_latency, self.stats.audio_hops, received)
            observe_response(self.stats)
        if self.stats.audio_frames_out >= self.expected:
            self.done.set()


class Pipeline(Actor):
    """Echo, then pipecat's output transport's work: resample, cut into chunks."""

    def __init__(self, out: Callable[[], ActorRef], metrics: bool) -> None:
        self.out, self.metrics = out, metrics
        self.carrier = StampCarrier()
        self.resampler = create_stream_resampler()
        self.buffer = b""

    async def receive(self, frame: Any) -> Any:
        if self.metrics:
            stamp_pipeline_in(frame)
        echo = OutputAudioRawFrame(audio=frame.audio, sample_rate=RATE_IN, num_channels=1)
        echo.metadata = frame.metadata
        if self.metrics:
            self.carrier.entering(echo)
        self.buffer += await self.resampler.resample(echo.audio, RATE_IN, RATE_OUT)
        while len(self.buffer) >= CHUNK_BYTES:
            audio, self.buffer = self.buffer[:CHUNK_BYTES], self.buffer[CHUNK_BYTES:]
            chunk = OutputAudioRawFrame(audio=audio, sample_rate=RATE_OUT, num_channels=1)
            if self.metrics:
                self.carrier.leaving(chunk)
            await self.out().tell(chunk)


async def kernel_path(frames: int, metrics: bool) -> tuple[float, RoomStats]:
    """CPU seconds for `frames` frames from audio-in to audio-out through real actors."""
    stats, done = RoomStats(), anyio.Event()
    # the resampler keeps some
    expected = frames * RATE_OUT * 2 * FRAME_MS // 1000 // CHUNK_BYTES - 10
    refs: dict[str, ActorRef] = {}
    out = MailboxSpec(capacity=8, send_timeout=60)
    children = [
        ChildSpec("audio_out", lambda: AudioOut(stats, metrics, expected, done), mailbox=out),
        ChildSpec(
            "pipeline",
            lambda: Pipeline(lambda: refs["audio_out"], metrics),
            mailbox=MailboxSpec(capacity=frames, overflow=Overflow.DROP_OLDEST),
        ),
    ]
    async with open_actor(ChildSpec("room", lambda: Supervisor(children))) as room:
        for info in await room.ask(WhichChildrenFrame()):
            refs[info.name] = info.ref
        tell = refs["pipeline"].tell_nowait
        start = time.process_time()
        for n in range(frames):
            frame = UserAudioRawFrame(audio=AUDIO, sample_rate=RATE_IN, num_channels=1, user_id="p")
            if metrics:
                stamp(frame)
            stats.audio_frames_in += 1
            tell(frame)
            if n % 8 == 7:
                await anyio.lowlevel.checkpoint()  # as a real stream yields between frames
        with anyio.fail_after(120):
            await done.wait()
        return time.process_time() - start, stats


# --- 3. the bot's observer ------------------------------------------------------------


async def observer_path(frames: int, metrics: bool) -> float:
    """CPU seconds for `frames` audio frames, each processed and pushed once, through
    pipecat's worker observer with (or without) the bot's metrics observer."""
    observers: list[BaseObserver] = [BotMetricsObserver(RoomStats())] if metrics else []
    worker_observer = WorkerObserver(observers=observers)
    await worker_observer.setup(TaskManager())
    processor = FrameProcessor()
    start = time.process_time()
    for n in range(frames):
        frame = UserAudioRawFrame(audio=AUDIO, sample_rate=RATE_IN, num_channels=1, user_id="p")
        await worker_observer.on_process_frame(
            FrameProcessed(processor, frame, FrameDirection.DOWNSTREAM, n)
        )
        await worker_observer.on_push_frame(
            FramePushed(processor, processor, frame, FrameDirection.DOWNSTREAM, n)
        )
        if n % 8 == 7:
            await anyio.lowlevel.checkpoint()  # the pipeline yields between frames
    for proxy in (worker_observer._proxies or {}).values():
        while not proxy.queue.empty():
            await anyio.lowlevel.checkpoint()
    seconds = time.process_time() - start
    await worker_observer.cleanup()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    n = args.frames

    code: dict[bool, list[float]] = {True: [], False: []}
    total_only: list[float] = []
    path: dict[bool, list[float]] = {True: [], False: []}
    observed: dict[bool, list[float]] = {True: [], False: []}
    timed = 0
    for _ in range(args.repeats):
        for metrics in (False, True):  # alternate, so drift in machine load hits both
            code[metrics].append(metric_code(n, metrics) / n)
            if metrics:
                total_only.append(metric_code(n, metrics, hops=False) / n)
            seconds, stats = anyio.run(kernel_path, n, metrics, backend="asyncio")
            path[metrics].append(seconds / n)
            observed[metrics].append(
                anyio.run(observer_path, n, metrics, backend="asyncio") / n
            )
            if metrics:
                timed = stats.audio_latency.count

    def us(values: list[float]) -> float:
        return min(values) * 1e6

    extra = us(code[True]) - us(code[False])
    print(f"frames per run: {n}, repeats: {args.repeats} (CPU time per frame, best of the repeats)")
    print(f"1. metric code alone:   off {us(code[False]):7.2f} us   on {us(code[True]):7.2f} us"
          f"   -> the metrics add {extra:.2f} us per frame")
    hops = us(code[True]) - us(total_only)
    print(f"   of which the per-hop histograms: {hops:.2f} us per frame"
          f" (the total's alone: {us(total_only) - us(code[False]):.2f} us)")
    off, on = us(path[False]), us(path[True])
    print(f"2. kernel audio path:   off {off:7.2f} us   on {on:7.2f} us"
          f"   -> ratio on/off {on / off:.3f} ({(on - off) / off * 100:+.1f} %),"
          f" metrics' share at most {extra / off * 100:.1f} %")
    print(f"   latency observations in the last run: {timed} of {n} frames")
    print(
        f"   per 20 ms frame, {extra:.2f} us is {extra / 20000 * 100:.3f} % of one core per stream"
    )
    off, on = us(observed[False]), us(observed[True])
    print(f"3. bot observer:        off {off:7.2f} us   on {on:7.2f} us"
          f"   -> {on - off:.2f} us per frame processed and pushed, with metrics on")


if __name__ == "__main__":
    main()
