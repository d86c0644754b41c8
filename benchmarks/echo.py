"""Echo rooms side by side: the floor, pipecat's LiveKitTransport and the supervisor,
in one run against one local livekit-server and the same load generator.

    python -m benchmarks.echo [--rooms 10,25,50] [--systems floor,pipecat,supervisor]
                              [--warmup 6] [--window 12] [--idle 4] [--idle-only]
                              [--beside N]
                              [--json PATH] [--charts DIR]

For each number of rooms and each system, the harness starts the bot process (a
baseline from `echo_floor.py` / `echo_pipecat.py`, or `supervisor run` on the built-in
echo bot; `supervisor-w2` is the same with `--workers 2`), waits until it has joined
every room, measures it idle, then runs `supervisor bench` (a separate process) with one
talking participant per room. With `--beside N` the bot also serves N idle rooms that
nobody joins, beside the talking ones: what idle rooms cost the talking ones. Over a
window inside the talking it reads, from /proc, the CPU time and resident memory of the
bot process and its children only, and the supervisor's own audio-latency histogram
from its /metrics. Every system gets fresh rooms of its own, the same rates, and the
same time on the machine.

Figures per run: time to join all rooms (from the process's first connect to its last
room joined) and to be ready from spawn (imports included); CPU in core-seconds per
second per room, idle and under load; RSS in all and per room; end-to-end echo latency
p50/p99 from the load generator; the supervisor's internal latency (audio-in arrival to
audio-out capture) p50/p99 as histogram bucket bounds; the load generator's and the
server's CPU, which share the machine and say when it was saturated. The summary puts
each system beside the floor and beside pipecat, as ratios. On a shared machine run it
more than once and read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import attrs
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.process_tree import cpu_seconds, rss_bytes
from supervisor.bench import ALL_SENDING, JOIN_TIMEOUT, SUBSCRIBE_GRACE
from supervisor.config import config_toml
from supervisor.livekit_server.server import LiveKitServer, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 16_000
"""The bot's rate both ways, as `config.toml` runs the echo bot (a common STT rate)."""
KEY_ENV, SECRET_ENV = "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"
READY_TIMEOUT = 180.0
GENERATOR_GRACE = 90.0
"""Seconds the load generator may take beyond its talking: joins (30 s at most per room),
the wait for the bot's track (30 s at most), the last echoes and leaving."""
STOP_TIMEOUT = 30.0
JOINING = re.compile(r"joining \d+ room|metrics on http")
"""The first line a bot process writes once its imports are done and it starts joining."""
READY = re.compile(r"ready: \d+ room")
LATENCY_METRIC = "lksup_audio_latency_seconds"
HOP_METRIC = "lksup_audio_hop_seconds"
LOOP_LAG_METRIC = "lksup_event_loop_lag_seconds"
GC_METRIC = "lksup_gc_pause_seconds"
HISTOGRAMS = {LATENCY_METRIC: "", HOP_METRIC: "hop", LOOP_LAG_METRIC: "", GC_METRIC: "generation"}
"""The supervisor's histograms the harness reads, each with the label it is split by."""
SUM = -1.0
"""The key of a histogram's sum beside its bucket bounds (no bound is negative)."""
SATURATED = 0.85
"""A run whose bot, generator and server together used more than this share of the
machine's cores was starved: its latencies are the machine's, and its CPU per room is
what the bot got, not what it asked for."""


@attrs.frozen
class System:
    name: str
    program: str
    """What runs: `floor`, `pipecat` or `supervisor`."""
    workers: int = 1
    """Processes that each say `ready` once their rooms are joined."""
    frame_ms: int = 20
    """Audio per frame in and out (the supervisor's `audio_frame_ms`; the floor's read
    frames). pipecat's `LiveKitTransport` reads its SDK's default, 10 ms."""

    @property
    def is_supervisor(self) -> bool:
        return self.program == "supervisor"

    def command(self, config: Path, rooms: Sequence[str]) -> list[str]:
        if self.is_supervisor:
            return [sys.executable, "-m", "supervisor.cli", "run", str(config),
                    "--workers", str(self.workers)]
        return [sys.executable, "-m", f"benchmarks.echo_{self.program}",
                "--rooms", ",".join(rooms), "--sample-rate", str(SAMPLE_RATE),
                "--frame-ms", str(self.frame_ms)]


SYSTEMS = {
    "floor": System("floor", "floor"),
    "floor-40": System("floor-40", "floor", frame_ms=40),
    "pipecat": System("pipecat", "pipecat"),
    "supervisor": System("supervisor", "supervisor"),
    "supervisor-40": System("supervisor-40", "supervisor", frame_ms=40),
    "supervisor-w2": System("supervisor-w2", "supervisor", workers=2),
}
"""`-40`: 40 ms frames, compared with the floor of the same frame size."""


@attrs.frozen
class Options:
    warmup: float
    """Seconds from the load generator's start to the window: its joins, and the first
    echoes settling."""
    window: float
    """Seconds of measurement while every room talks."""
    idle: float
    """Seconds of measurement with every room joined and nobody else in them."""
    settle: float | None = None
    """Seconds from the last join to the idle measurement; None: `settle_seconds`."""
    idle_only: bool = False
    """Join and measure idle only: no load generator (for room counts the machine
    cannot load)."""
    beside: int = 0
    """Idle rooms the bot serves beside the talking ones, nobody in them. The per-room
    figures under load stay per talking room; the idle ones are per room served."""


def config_text(
    server: LiveKitServer,
    rooms: Sequence[str],
    metrics_port: int,
    frame_ms: int = 20,
    factory: str = "supervisor.bots.echo:create_bot",
) -> str:
    """The supervisor's config, on the echo bot unless `factory` names another; the load
    generator reads its rooms and the bot identity."""
    return config_toml(
        {
            "livekit": {
                "url": server.url,
                "api_key_env": KEY_ENV,
                "api_secret_env": SECRET_ENV,
                "embedded_server": False,
            },
            "bot": {
                "factory": factory,
                "audio_in_sample_rate": SAMPLE_RATE,
                "audio_out_sample_rate": SAMPLE_RATE,
                "audio_frame_ms": frame_ms,
            },
            "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
            "limits": {"max_rooms": max(1000, len(rooms))},
            "rooms": [{"name": room} for room in rooms],
        }
    )


@attrs.define
class BotProcess:
    """A running bot process and the times its progress lines arrived."""

    process: Process
    spawned: float
    joining: float | None = None
    ready_lines: int = 0
    ready: anyio.Event = attrs.field(factory=anyio.Event)
    ready_at: float | None = None
    log: list[str] = attrs.field(factory=list)
    on_joining: Callable[[int], None] | None = None
    """Called with the process's pid when its joining line comes (the join cost reads
    its CPU there)."""

    async def read(self, workers: int) -> None:
        assert self.process.stderr is not None
        buffer = ""
        async for chunk in TextReceiveStream(self.process.stderr):
            buffer += chunk
            *lines, buffer = buffer.split("\n")
            for line in lines:
                now = time.perf_counter()
                self.log.append(line)
                if self.joining is None and JOINING.search(line):
                    self.joining = now
                    if self.on_joining is not None:
                        self.on_joining(self.process.pid)
                if READY.search(line):
                    self.ready_lines += 1
                    if self.ready_lines == workers:
                        self.ready_at = now
                        self.ready.set()


@asynccontextmanager
async def bot_process(
    system: System,
    config: Path,
    rooms: Sequence[str],
    env: dict[str, str],
    on_joining: Callable[[int], None] | None = None,
) -> AsyncIterator[BotProcess]:
    """The bot, until every room is joined; stopped with SIGTERM (then killed) after."""
    spawned = time.perf_counter()
    process = await anyio.open_process(
        system.command(config, rooms), cwd=REPO_ROOT, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    bot = BotProcess(process, spawned, on_joining=on_joining)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(bot.read, system.workers)
        try:
            with anyio.fail_after(READY_TIMEOUT):
                await bot.ready.wait()
            yield bot
        except TimeoutError as err:
            tail = "\n".join(bot.log[-20:])
            raise RuntimeError(
                f"{system.name}: not ready after {READY_TIMEOUT:g} s:\n{tail}"
            ) from err
        finally:
            await stop_process(process, STOP_TIMEOUT)
            tasks.cancel_scope.cancel()


async def stop_process(process: Process, timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout` s: a harness's bot process, however its
    block ends (shielded: a cancelled run still stops it)."""
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(timeout):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


HistogramKey = tuple[str, str]
"""(metric name, its one label's value or ""): one histogram of a scrape."""


async def scrape_histograms(
    ports: Sequence[int], histograms: Mapping[str, str] = HISTOGRAMS
) -> dict[HistogramKey, dict[float, float]]:
    """The supervisor's histograms a harness reads (each with the label it is split by;
    this one's `HISTOGRAMS` by default), cumulative counts by upper bound, summed over
    its workers; a labelled family (the per-hop times, GC pauses by generation) one
    histogram per value of its label."""
    buckets: dict[HistogramKey, dict[float, float]] = {}
    async with aiohttp.ClientSession() as session:
        for port in ports:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            for family in text_string_to_metric_families(text):
                label = histograms.get(family.name)
                if label is None:
                    continue
                for sample in family.samples:
                    if sample.name == f"{family.name}_bucket":
                        bound = float(sample.labels["le"])
                    elif sample.name == f"{family.name}_sum":
                        bound = SUM
                    else:
                        continue
                    key = (family.name, sample.labels.get(label, "") if label else "")
                    found = buckets.setdefault(key, {})
                    found[bound] = found.get(bound, 0.0) + sample.value
    return buckets


def bucket_quantile(
    before: dict[float, float], after: dict[float, float], q: float
) -> float | None:
    """The upper bound of the bucket holding quantile `q` of what was observed between two
    scrapes (inf when it is past the last bound), or None if nothing was."""
    deltas = sorted(
        (bound, after[bound] - before.get(bound, 0.0)) for bound in after if bound != SUM
    )
    if not deltas or deltas[-1][1] <= 0:
        return None
    wanted = q * deltas[-1][1]
    return next(bound for bound, count in deltas if count >= wanted)


SETTLE_SECONDS_PER_ROOM = 0.4
SETTLE_MIN, SETTLE_MAX = 8.0, 45.0


def settle_seconds(rooms: int) -> float:
    """How long to wait after the last join before measuring idle rooms. The rtc SDK
    keeps working well after `connect` returns (measured: 50 idle supervisor rooms use
    a whole core for 15-20 s after the last join, then an eighth of one), so an idle
    figure taken at once would measure connection set-up, not rooms."""
    return min(SETTLE_MAX, max(SETTLE_MIN, SETTLE_SECONDS_PER_ROOM * rooms))


async def _all_sending(log: Path) -> None:
    """Wait until the load generator says every room sends (or it cannot: a room whose
    bot never came), so the warm-up and the window start with every room talking
    however long the joins took on a busy machine."""
    with anyio.move_on_after(JOIN_TIMEOUT + SUBSCRIBE_GRACE):
        # the generator is another process, writing to a file: nothing to wait on but it
        while ALL_SENDING not in await anyio.Path(log).read_text(errors="replace"):  # noqa: ASYNC110
            await anyio.sleep(0.1)


def cpu_readings(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process tree, and by the bot's Python
    loops alone (`bot_loop`)."""
    readings = {name: cpu_seconds(pid) for name, pid in processes.items()}
    readings["bot_loop"] = cpu_seconds(processes["bot"], main_threads=True)
    return readings


def _per_second(used: float, seconds: float) -> float:
    return used / seconds if seconds > 0 else math.nan


async def measure(
    system: System, rooms: int, server: LiveKitServer, options: Options, workdir: Path
) -> dict[str, Any]:
    """One system serving `rooms` echo rooms, idle and then (unless `options.idle_only`)
    under load: the figures of one run."""
    talking = [f"{system.name}-{rooms}-{index}" for index in range(rooms)]
    names = talking + [f"{system.name}-{rooms}-idle-{index}" for index in range(options.beside)]
    metrics_port = free_port()
    config = workdir / f"{system.name}-{rooms}.toml"
    config.write_text(config_text(server, names, metrics_port, system.frame_ms))
    load_config = workdir / f"{system.name}-{rooms}-load.toml"  # the generator's rooms
    load_config.write_text(config_text(server, talking, metrics_port))
    env = {
        **os.environ,
        KEY_ENV: server.api_key,
        SECRET_ENV: server.api_secret,
        "LIVEKIT_URL": server.url,
    }
    result: dict[str, Any] = {
        "system": system.name, "program": system.program, "rooms": rooms,
        "beside": options.beside, "frame_ms": system.frame_ms, "load_1m": os.getloadavg()[0],
    }  # fmt: skip
    async with bot_process(system, config, names, env) as bot:
        pid = bot.process.pid
        assert bot.ready_at is not None
        assert bot.joining is not None
        result["join_all_s"] = round(bot.ready_at - bot.joining, 3)
        result["ready_from_spawn_s"] = round(bot.ready_at - bot.spawned, 3)
        await anyio.sleep(settle_seconds(len(names)) if options.settle is None else options.settle)
        idle_cpu = cpu_seconds(pid)
        idle_started = time.perf_counter()
        await anyio.sleep(options.idle)
        idle_used = cpu_seconds(pid) - idle_cpu
        idle_seconds = time.perf_counter() - idle_started
        result["idle_cpu_per_room"] = _per_second(idle_used, idle_seconds) / len(names)
        result["idle_rss_mb"] = rss_bytes(pid) / 1e6
        if not options.idle_only:
            ports = [metrics_port + index for index in range(system.workers)]
            result |= await _under_load(
                system, rooms, pid, server, ports, load_config, env, options
            )
    return result


async def _under_load(
    system: System,
    rooms: int,
    pid: int,
    server: LiveKitServer,
    metrics_ports: Sequence[int],
    config: Path,
    env: dict[str, str],
    options: Options,
) -> dict[str, Any]:
    """Run the load generator on `config`'s rooms and measure the bot over a window
    while they talk."""
    assert server.pid is not None
    out = config.with_suffix(".json")
    seconds = options.warmup + options.window + 1.0
    log = config.with_suffix(".log")
    with log.open("wb") as log_file:
        generator = await anyio.open_process(
            [sys.executable, "-m", "supervisor.cli", "bench", str(config),
             "--seconds", str(seconds), "--json", str(out)],
            cwd=REPO_ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        )
    processes = {"bot": pid, "generator": generator.pid, "server": server.pid}
    result: dict[str, Any] = {}
    try:
        await _all_sending(log)
        await anyio.sleep(options.warmup)
        before, started = cpu_readings(processes), time.perf_counter()
        histograms_before = await scrape_histograms(metrics_ports) if system.is_supervisor else {}
        await anyio.sleep(options.window)
        after, elapsed = cpu_readings(processes), time.perf_counter() - started
        histograms_after = await scrape_histograms(metrics_ports) if system.is_supervisor else {}
        cores = {name: _per_second(after[name] - before[name], elapsed) for name in before}
        result["cpu_cores"] = cores["bot"]
        result["cpu_per_room"] = cores["bot"] / rooms
        result["loop_cpu_per_room"] = cores["bot_loop"] / rooms
        result["rss_mb"] = rss_bytes(pid) / 1e6
        result["rss_per_room_mb"] = result["rss_mb"] / rooms
        result["generator_cores"] = cores["generator"]
        result["server_cores"] = cores["server"]
        if system.is_supervisor:
            result |= _internal(histograms_before, histograms_after, elapsed)
        with anyio.move_on_after(seconds + GENERATOR_GRACE):
            await generator.wait()
    finally:
        if generator.returncode is None:
            generator.kill()
            with anyio.CancelScope(shield=True):
                await generator.wait()
    used = result["cpu_cores"] + result["generator_cores"] + result["server_cores"]
    result["saturated"] = used > SATURATED * (os.cpu_count() or 1)
    if not out.exists():  # the generator could not finish: say why, keep the run's figures
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        result["load_error"] = f"load generator exited {generator.returncode}: " + " / ".join(tail)
        return result
    summary = json.loads(out.read_text())
    failed = [room["error"] for room in summary["per_room"] if room["error"]]
    if failed:
        result["load_error"] = f"{len(failed)} of {rooms} rooms failed, e.g. {failed[0]}"
    result["echo_p50_ms"] = summary["latency_ms"]["p50"]
    result["echo_p99_ms"] = summary["latency_ms"]["p99"]
    result["bursts_sent"] = summary["bursts_sent"]
    result["lost"] = summary["lost"]
    result["generator_lag_p99_ms"] = summary["generator_lag_ms"]["p99"]
    return result


def _internal(
    before: dict[HistogramKey, dict[float, float]],
    after: dict[HistogramKey, dict[float, float]],
    seconds: float,
) -> dict[str, Any]:
    """The supervisor's own figures over the window: internal latency p50/p99, each
    hop's, the loop lag's, and the share of the window the garbage collector held the
    interpreter, by generation."""
    result: dict[str, Any] = {}

    def quantiles(key: HistogramKey, name: str) -> None:
        if key in after:
            for q in (50, 99):
                found = bucket_quantile(before.get(key, {}), after[key], q / 100)
                result[f"{name}_p{q}_ms"] = _ms(found)

    quantiles((LATENCY_METRIC, ""), "internal")
    quantiles((LOOP_LAG_METRIC, ""), "loop_lag")
    for (name, hop) in after:  # exposition order: the hops in path order
        if name == HOP_METRIC:
            quantiles((name, hop), f"hop_{hop}")
        elif name == GC_METRIC:
            held = after[name, hop].get(SUM, 0.0) - before.get((name, hop), {}).get(SUM, 0.0)
            result[f"gc{hop}_share"] = _per_second(held, seconds)
            collections = after[name, hop].get(math.inf, 0.0)
            result[f"gc{hop}_count"] = collections - before.get((name, hop), {}).get(math.inf, 0.0)
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_before": os.getloadavg()[0],
        "versions": {
            name: metadata.version(name) for name in ("livekit", "pipecat-ai", "anyio")
        },
    }


def cell(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def percent(share: float | None) -> str:
    return cell(None if share is None else share * 100, 2)


def ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "-"
    return f"{value / base:.2f}"


def rooms_cell(result: dict[str, Any]) -> str:
    """The talking rooms, and the idle ones beside them if any (`Options.beside`)."""
    beside = result.get("beside", 0)
    return f"{result['rooms']} (+{beside} idle)" if beside else str(result["rooms"])


def format_markdown(results: Sequence[dict[str, Any]]) -> str:
    """Every run as one table row, then the ratios: what a run's page records."""
    rows = [
        "| system | rooms | join all s | ready s | idle CPU %/room | CPU %/room | "
        "of it Python loop | RSS MB | RSS MB/room | echo p50 ms | echo p99 ms | lost | "
        "internal p50 ms | internal p99 ms | generator cores | server cores | load 1m |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        starved = " (saturated)" if r.get("saturated") else ""
        lost = f"{r['lost']}/{r['bursts_sent']}" if "lost" in r else "-"
        rows.append(
            f"| {r['system']} | {rooms_cell(r)}{starved} | {cell(r['join_all_s'], 2)} | "
            f"{cell(r['ready_from_spawn_s'], 2)} | {percent(r['idle_cpu_per_room'])} | "
            f"{percent(r.get('cpu_per_room'))} | {percent(r.get('loop_cpu_per_room'))} | "
            f"{cell(r.get('rss_mb', r['idle_rss_mb']), 0)} | "
            f"{cell(r.get('rss_per_room_mb'), 2)} | {cell(r.get('echo_p50_ms'))} | "
            f"{cell(r.get('echo_p99_ms'))} | {lost} | "
            f"{cell(r.get('internal_p50_ms'))} | {cell(r.get('internal_p99_ms'))} | "
            f"{cell(r.get('generator_cores'), 2)} | {cell(r.get('server_cores'), 2)} | "
            f"{cell(r.get('load_1m'), 2)} |"
        )
    by_key = {(r["system"], r["rooms"]): r for r in results}
    floors = {  # each system against the floor of its own frame size
        (r["frame_ms"], r["rooms"]): r for r in results if r["program"] == "floor"
    }
    ratio_rows = [
        "",
        "| system | rooms | idle CPU/room vs floor | CPU/room vs floor | CPU/room vs pipecat | "
        "Python loop vs floor | RSS/room vs floor | echo p50 vs floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r["program"] == "floor":
            continue
        floor = floors.get((r["frame_ms"], r["rooms"]), {})
        pipecat = by_key.get(("pipecat", r["rooms"]), {}) if r["system"] != "pipecat" else {}
        ratio_rows.append(
            f"| {r['system']} | {rooms_cell(r)} | "
            f"{ratio(r['idle_cpu_per_room'], floor.get('idle_cpu_per_room'))} | "
            f"{ratio(r.get('cpu_per_room'), floor.get('cpu_per_room'))} | "
            f"{ratio(r.get('cpu_per_room'), pipecat.get('cpu_per_room'))} | "
            f"{ratio(r.get('loop_cpu_per_room'), floor.get('loop_cpu_per_room'))} | "
            f"{ratio(r.get('rss_per_room_mb'), floor.get('rss_per_room_mb'))} | "
            f"{ratio(r.get('echo_p50_ms'), floor.get('echo_p50_ms'))} |"
        )
    errors = [
        f"- {r['system']} at {r['rooms']} rooms: {r['load_error']}"
        for r in results
        if "load_error" in r
    ]
    return "\n".join(
        rows
        + (ratio_rows if len(ratio_rows) > 3 else [])
        + _where_the_time_goes(results)
        + _marginal_memory(results)
        + (["", "Load generator failures:", *errors] if errors else [])
    )


def _where_the_time_goes(results: Sequence[dict[str, Any]]) -> list[str]:
    """The supervisor's runs, hop by hop (p50/p99 bucket bounds, ms), with its loop's
    lag and the share of the window each GC generation held the interpreter."""
    runs = [r for r in results if "internal_p99_ms" in r]
    if not runs:
        return []
    hops = [key[len("hop_") : -len("_p99_ms")] for key in runs[0]
            if key.startswith("hop_") and key.endswith("_p99_ms")]  # fmt: skip
    lines = [
        "",
        "| system | rooms | load 1m | internal p50/p99 | "
        + " | ".join(f"{hop} p50/p99" for hop in hops)
        + " | loop lag p50/p99 | GC held % (gen 0/1/2) | GC collections (gen 0/1/2) |",
        "| --- | ---: | ---: | ---: | "
        + " | ".join("---:" for _ in hops)
        + " | ---: | ---: | ---: |",
    ]

    def pair(r: dict[str, Any], name: str) -> str:
        return f"{cell(r.get(f'{name}_p50_ms'), 2)} / {cell(r.get(f'{name}_p99_ms'), 2)}"

    for r in runs:
        gc_held = " / ".join(percent(r.get(f"gc{g}_share")) for g in range(3))
        gc_count = " / ".join(cell(r.get(f"gc{g}_count"), 0) for g in range(3))
        lines.append(
            f"| {r['system']} | {rooms_cell(r)} | {cell(r.get('load_1m'), 2)} | "
            f"{pair(r, 'internal')} | " + " | ".join(pair(r, f"hop_{hop}") for hop in hops)
            + f" | {pair(r, 'loop_lag')} | {gc_held} | {gc_count} |"
        )
    return lines


def _marginal_memory(results: Sequence[dict[str, Any]]) -> list[str]:
    """RSS per added room (joined, idle), from each system's smallest to its largest run:
    what a room costs once the process's fixed share (interpreter, SDK, pipecat) is paid."""
    lines = []
    for system in dict.fromkeys(r["system"] for r in results):
        runs = sorted((r for r in results if r["system"] == system), key=lambda r: r["rooms"])
        if len(runs) > 1 and runs[-1]["rooms"] > runs[0]["rooms"]:
            added = runs[-1]["rooms"] - runs[0]["rooms"]
            slope = (runs[-1]["idle_rss_mb"] - runs[0]["idle_rss_mb"]) / added
            lines.append(
                f"- {system}: {slope:.2f} MB per added room "
                f"({runs[0]['rooms']} to {runs[-1]['rooms']} rooms)"
            )
    return ["", "Memory per added room:", *lines] if lines else []


async def run(
    rooms: Sequence[int],
    systems: Sequence[System],
    options: Options,
    json_path: Path | None,
    charts: Path | None = None,
) -> list[dict[str, Any]]:
    """Every (rooms, system) pair in turn against one server, smallest load first."""
    results = await measure_each(
        rooms,
        systems,
        lambda system, count, server, workdir: measure(system, count, server, options, workdir),
        machine(),
        json_path,
    )
    print(format_markdown(results), flush=True)
    if charts is not None:
        from benchmarks.charts import draw  # matplotlib: the `bench` extra

        for path in draw([results], charts, "echo", ""):
            print(f"chart: {path}", flush=True)
    return results


async def measure_each(
    rooms: Sequence[int],
    systems: Sequence[Any],
    measure_one: Callable[[Any, int, LiveKitServer, Path], Awaitable[dict[str, Any]]],
    described: dict[str, Any],
    json_path: Path | None,
    workdir: Path | None = None,
    keep_going: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Every (rooms, system) pair in turn against one server, smallest load first: the
    machine (`described`) printed first as a JSON line, then each result as it comes,
    with the JSON file rewritten each time, so a run cut short keeps what it measured.
    The server's log and each run's files go to `workdir` (a temporary folder if None).
    With `keep_going`, a system whose last result it refuses (the results so far) runs
    no larger count: a stepping harness's stop. Serves every harness: echo, join cost,
    dispatch, conversations."""
    print(json.dumps(described), flush=True)
    results: list[dict[str, Any]] = []
    stopped: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="lksup-bench-") as tmp:
        folder = Path(tmp) if workdir is None else workdir
        folder.mkdir(parents=True, exist_ok=True)
        with LiveKitServer(log_path=folder / "livekit-server.log") as server:
            for count in rooms:
                for index, system in enumerate(systems):
                    if index in stopped:
                        continue
                    result = await measure_one(system, count, server, folder)
                    results.append(result)
                    if keep_going is not None and not keep_going(results):
                        stopped.add(index)
                    print(json.dumps(result), flush=True)
                    if json_path is not None:
                        await anyio.Path(json_path).write_text(
                            json.dumps({"machine": described, "runs": results}, indent=2) + "\n"
                        )
    return results


T = TypeVar("T")


def add_run_arguments(
    parser: argparse.ArgumentParser,
    rooms: str,
    systems: str,
    known: Mapping[str, Any],
    counts: str = "rooms",
) -> None:
    """`--rooms` (or `--COUNTS`: what a harness counts), `--systems` (of `known`) and
    `--json`, which every harness takes (`measure_each`); `chosen_runs` reads them back."""
    parser.add_argument(f"--{counts}", dest="rooms", default=rooms,
                        help=f"comma-separated {counts} counts")
    parser.add_argument("--systems", default=systems,
                        help=f"comma-separated, of {', '.join(known)}")
    parser.add_argument("--json", type=Path, metavar="PATH")


def chosen_runs(args: argparse.Namespace, known: Mapping[str, T]) -> tuple[list[int], list[T]]:
    """The room counts and systems `add_run_arguments` read; an unknown system exits."""
    try:
        systems = [known[name] for name in args.systems.split(",")]
    except KeyError as err:
        raise SystemExit(
            f"--systems: unknown system {err}; expected some of {', '.join(known)}"
        ) from None
    return [int(count) for count in args.rooms.split(",")], systems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, "10,25,50", "floor,pipecat,supervisor", SYSTEMS)
    parser.add_argument("--warmup", type=float, default=6.0)
    parser.add_argument("--window", type=float, default=12.0)
    parser.add_argument("--idle", type=float, default=4.0)
    parser.add_argument("--idle-only", action="store_true",
                        help="join and measure idle only, without the load generator")
    parser.add_argument("--beside", type=int, default=0, metavar="N",
                        help="also serve N idle rooms beside the talking ones")
    parser.add_argument("--charts", type=Path, metavar="DIR",
                        help="draw PNG charts of this run into DIR (needs the bench extra)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rooms, systems = chosen_runs(args, SYSTEMS)
    options = Options(
        args.warmup, args.window, args.idle, idle_only=args.idle_only, beside=args.beside
    )
    anyio.run(run, rooms, systems, options, args.json, args.charts, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
