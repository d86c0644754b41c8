"""Silero VAD for many rooms in one process: each room's windows run alone, or in
batches across rooms (`actors.room.models.BatchingSession`), side by side in one go.

    python -m benchmarks.vad_batching [--rooms 1,4,8,16] [--seconds 20] [--gather-ms 8]

For each room count, N analyzers (`SharedSileroVADAnalyzer`, one session per process)
are fed 20 ms frames of 16 kHz audio in real time, each room at its own phase, through
pipecat's own `analyze_audio` (its thread per analyzer), as rooms' VAD processors feed
them: once with every window run alone, once batched. Reported: the process's CPU per
room (% of a core), the time an `analyze_audio` call takes (p50/p99: what batching
costs each window), the mean batch, and the batched CPU as a ratio of the lone.
The modes alternate, alone first, so a drift of the machine's load falls on both.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np

from actors.room.models import BatchingSession, SharedSileroVADAnalyzer, silero_session

RATE = 16_000
FRAME_SECONDS = 0.02


def audio(seconds: float, seed: int) -> bytes:
    """Noise and a tone that come and go: content changes nothing of Silero's cost."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    wave = 0.2 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.3 * t) > 0)
    wave += 0.02 * rng.standard_normal(len(t))
    return (wave * 32767).astype("<i2").tobytes()


async def room(analyzer: SharedSileroVADAnalyzer, pcm: bytes, until: float,
               calls: list[float]) -> None:  # fmt: skip
    """One room's input: a frame every 20 ms from a random phase, each analysed."""
    frame_bytes = round(FRAME_SECONDS * RATE) * 2
    await asyncio.sleep(random.random() * FRAME_SECONDS)
    next_at, at = time.perf_counter(), 0
    while next_at < until:
        started = time.perf_counter()
        await analyzer.analyze_audio(pcm[at : at + frame_bytes])
        calls.append(time.perf_counter() - started)
        at = (at + frame_bytes) % (len(pcm) - frame_bytes)
        next_at += FRAME_SECONDS
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


async def measure(rooms: int, seconds: float, gather: float | None) -> dict[str, float]:
    """`rooms` fed for `seconds`; `gather` None runs each window alone."""
    batches = None if gather is None else BatchingSession(silero_session(), gather)
    analyzers = []
    for _ in range(rooms):
        analyzer = SharedSileroVADAnalyzer(sample_rate=RATE)
        analyzer.set_sample_rate(RATE)
        if batches is not None:
            analyzer._model.session = batches
            batches.join()
        analyzers.append(analyzer)
    pcm = audio(10.0, seed=rooms)
    calls: list[float] = []
    cpu, until = time.process_time(), time.perf_counter() + seconds
    await asyncio.gather(*(room(a, pcm, until, calls) for a in analyzers))
    cpu = time.process_time() - cpu
    quantiles = statistics.quantiles(calls, n=100)
    return {
        "cpu_per_room": cpu / seconds / rooms,
        "call_p50_ms": quantiles[49] * 1000,
        "call_p99_ms": quantiles[98] * 1000,
        "batch": batches.windows / batches.batches if batches and batches.batches else 1.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", default="1,4,8,16")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--gather-ms", type=float, default=8.0)
    args = parser.parse_args(argv)
    silero_session()  # loaded before any measurement
    print("| rooms | mode | CPU %/room | analyze p50 ms | p99 ms | mean batch | batched/alone |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for rooms in (int(n) for n in args.rooms.split(",")):
        alone = asyncio.run(measure(rooms, args.seconds, None))
        batched = asyncio.run(measure(rooms, args.seconds, args.gather_ms / 1000))
        for mode, r in (("alone", alone), ("batched", batched)):
            ratio = r["cpu_per_room"] / alone["cpu_per_room"]
            print(
                f"| {rooms} | {mode} | {r['cpu_per_room'] * 100:.2f} | {r['call_p50_ms']:.2f} | "
                f"{r['call_p99_ms']:.2f} | {r['batch']:.1f} | {ratio:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
