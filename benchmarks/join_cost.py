"""What joining costs: core-seconds per room, by thread, for the floor and the supervisor.

    python -m benchmarks.join_cost [--rooms 20] [--systems floor,supervisor]
                                   [--seconds 45] [--tail 10] [--json PATH]

For each system the harness starts the bot process on N fresh rooms (nobody else in
them), and from the moment it starts joining (its `joining` line: imports done) reads
the CPU time of every thread of its process tree from /proc each second for
`--seconds`. A joined room keeps costing (the rtc SDK's connection upkeep), so the
join cost is what the process used over the whole span less what it uses once
settled (its rate over the last `--tail` seconds, times the span): the work a join
adds, however long after `connect` returned the SDK keeps doing it. Split by thread:
the SDK's `tokio-rt-worker` threads, the Python main thread (the event loop), and the
rest (the SDK's media and signalling threads, the interpreter's helpers).

Systems are the echo harness's (`benchmarks.echo`), each with its own fresh rooms.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from benchmarks.echo import (
    KEY_ENV,
    SECRET_ENV,
    SYSTEMS,
    System,
    add_run_arguments,
    bot_process,
    chosen_runs,
    config_text,
    machine,
    measure_each,
)
from benchmarks.process_tree import CLOCK_TICKS, tree
from supervisor.livekit_server.server import LiveKitServer, free_port

KINDS = ("tokio", "main", "other")
"""Thread groups: the SDK's tokio-rt-worker threads, each process's main thread (the
Python event loop), everything else."""


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds used so far by the threads of the tree under `pid`, by `KINDS`
    (threads that ended are not counted: a short-lived thread's work can be missed)."""
    totals = dict.fromkeys(KINDS, 0.0)
    for member in tree(pid):
        try:
            threads = os.listdir(f"/proc/{member}/task")
        except OSError:
            continue
        for tid in threads:
            try:
                text = Path(f"/proc/{member}/task/{tid}/stat").read_text()
            except OSError:
                continue
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text[text.rindex(")") + 2 :].split()
            used = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            if int(tid) == member:
                totals["main"] += used
            else:
                totals["tokio" if name.startswith("tokio") else "other"] += used
    return totals


async def measure(
    system: System, rooms: int, server: LiveKitServer, workdir: Path, seconds: float, tail: float
) -> dict[str, Any]:
    names = [f"{system.name}-join-{rooms}-{index}" for index in range(rooms)]
    config = workdir / f"{system.name}-join-{rooms}.toml"
    config.write_text(config_text(server, names, free_port()))
    env = {
        **os.environ,
        KEY_ENV: server.api_key,
        SECRET_ENV: server.api_secret,
        "LIVEKIT_URL": server.url,
    }
    result: dict[str, Any] = {"system": system.name, "rooms": rooms, "load_1m": os.getloadavg()[0]}
    at_joining: dict[str, float] = {}
    samples: list[tuple[float, dict[str, float]]] = []

    def joining(pid: int) -> None:
        at_joining.update(thread_cpu(pid))

    async with bot_process(system, config, names, env, on_joining=joining) as bot:
        assert bot.joining is not None
        assert bot.ready_at is not None
        result["join_all_s"] = round(bot.ready_at - bot.joining, 3)
        while (since := time.perf_counter() - bot.joining) < seconds:
            samples.append((since, thread_cpu(bot.process.pid)))
            await anyio.sleep(1.0)
        samples.append((time.perf_counter() - bot.joining, thread_cpu(bot.process.pid)))
    span, last = samples[-1]
    settled_at, settled = next((t, c) for t, c in samples if t >= span - tail)
    first = at_joining
    for kind in KINDS:
        rate = (last[kind] - settled[kind]) / (span - settled_at)
        used = last[kind] - first[kind]
        result[f"{kind}_core_s_per_room"] = (used - rate * span) / rooms
        result[f"{kind}_settled_cores_per_room"] = rate / rooms
    result["core_s_per_room"] = sum(result[f"{kind}_core_s_per_room"] for kind in KINDS)
    result["settled_cores_per_room"] = sum(
        result[f"{kind}_settled_cores_per_room"] for kind in KINDS
    )
    result["span_s"] = round(span, 1)
    return result


def format_markdown(results: Sequence[dict[str, Any]]) -> str:
    rows = [
        "| system | rooms | load 1m | join all s | join core-s/room | of it tokio | main thread | "
        "other | settled % of a core/room |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        rows.append(
            f"| {r['system']} | {r['rooms']} | {r['load_1m']:.2f} | {r['join_all_s']:.2f} | "
            f"{r['core_s_per_room']:.3f} | {r['tokio_core_s_per_room']:.3f} | "
            f"{r['main_core_s_per_room']:.3f} | {r['other_core_s_per_room']:.3f} | "
            f"{r['settled_cores_per_room'] * 100:.2f} |"
        )
    return "\n".join(rows)


async def run(args: argparse.Namespace) -> None:
    rooms, systems = chosen_runs(args, SYSTEMS)
    results = await measure_each(
        rooms,
        systems,
        lambda system, count, server, workdir: measure(
            system, count, server, workdir, args.seconds, args.tail
        ),
        machine(),
        args.json,
    )
    print(format_markdown(results), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, "20", "floor,supervisor", SYSTEMS)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--tail", type=float, default=10.0)
    args = parser.parse_args(argv)
    anyio.run(run, args, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
