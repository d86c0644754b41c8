"""Real voice conversations at once, side by side: the supervisor, pipecat's process
per call, livekit-agents, in one run against one local livekit-server and the same
callers saying the same utterances.

    python -m benchmarks.conversations [--conversations 1,2,4] [--step [--max 64]]
                                       [--systems supervisor,pipecat,agents]
                                       [--bot supervisor.bots.voice:create_bot]
                                       [--warmup 10] [--window 60] [--settle 3] [--idle 3]
                                       [--deadline 10] [--seed 1]
                                       [--json PATH] [--charts DIR] [--logs DIR]
    python -m benchmarks.conversations --medians RUN.json [RUN.json ...] [--charts DIR]

For each number of conversations N and each system, a fresh bot process starts and
waits for rooms: `supervisor` is `supervisor run` with a `[dispatch]` table (rooms on
demand as a LiveKit agent worker) on the bot `--bot` names at 16 kHz both ways;
`pipecat` is pipecat's deployment, a process per call (`benchmarks/pipecat_voice.py`:
a runner told of each room as its caller creates it, starting a bot process on
pipecat's own `LiveKitTransport` with the same cascade, the `conversation()` of
`--bot`'s module); `agents` is livekit-agents' worker (`benchmarks/agents_voice.py`, in
its own venv, `make agents-venv`), automatic dispatch. Once the worker is there and
idle (its baseline), N callers in a process of their own (`benchmarks/callers.py`:
the corpus of `benchmarks/corpus.py`, espeak-ng utterances made here) each create a
room and talk with its bot, turn after turn. After the warm-up, over the window:

- at the callers: voice-to-voice latency p50/p95/p99 (end of the caller's speech to
  the first bot audio above the noise floor), replies missed (none within
  `--deadline`), replies that cut the caller off, the callers' CPU and loop lag (a
  saturated generator shows there);
- at the bot: CPU of its whole process tree per conversation, RSS and PSS per
  conversation (a process per call shares pages that RSS counts once per process),
  and for the supervisor its own histograms from /metrics: the response time
  (`lksup_bot_response_seconds`) and the part of it the process added
  (`lksup_bot_added_seconds`), each service's time to first byte and processing,
  the event loop's lag (bucket bounds);
- the server's CPU, and whether the machine was saturated.

`--step` runs N = 1, 2, 3, 4, 6, 8, ... for each system until its p95 passes
`LIMIT` times its own one-conversation p95, or a reply is missed or a caller fails:
the conversations it held is the largest N before that. A system that cannot run
here (no agents_voice.py, no venv) is reported as not available and the run goes on.

`--medians` reads the JSON of several runs (`--json`) and prints their medians: each
figure the median of the runs' figures for one system and count, turns, missed replies
and cut-offs summed (a reply lost in any run is lost), what each system held on those.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import attrs
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from benchmarks import callers, pipecat_voice
from benchmarks.corpus import corpus
from benchmarks.dispatch import (
    AGENTS_PYTHON,
    DISPATCH,
    REGISTER_TIMEOUT,
    REGISTERED,
    AgentsVenvError,
    Worker,
    agents_versions,
    ensure_agents_venv,
    worker_process,
)
from benchmarks.echo import (
    KEY_ENV,
    REPO_ROOT,
    SATURATED,
    SECRET_ENV,
    add_run_arguments,
    bucket_quantile,
    cell,
    chosen_runs,
    config_text,
    cpu_readings,
    machine,
    measure_each,
    percent,
    scrape_histograms,
)
from benchmarks.process_tree import pss_bytes, rss_bytes
from supervisor.config import config_toml
from supervisor.livekit_server.server import LiveKitServer, free_port
from supervisor.observability.metrics import PREFIX
from supervisor.process.workers import either

DEFAULT_BOT = pipecat_voice.DEFAULT_BOT
"""The full voice bot: VAD, smart-turn, speech recognition, scripted LLM, espeak-ng."""
SINE_BOT = "benchmarks.sine_reply:create_bot"
"""LiveKit's load-test shape: Silero VAD and a sine wave reply."""
AGENTS_SHAPES = {DEFAULT_BOT: "voice", SINE_BOT: "sine"}
"""livekit-agents' peer of each bot (`AGENTS_VOICE_SHAPE` of `benchmarks/agents_voice.py`)."""
SAMPLE_RATE = 16_000
AGENTS_VOICE = REPO_ROOT / "benchmarks" / "agents_voice.py"
LIMIT = 1.25
"""A system holds N conversations while its p95 stays within this times its own p95
at one conversation (and no reply is missed)."""
STEPS = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128)
CALLERS_GRACE = 60.0
"""Seconds the callers may take beyond warm-up and window: joining, the bots' tracks
(dispatch waits up to 30 s), the last turns (up to `--deadline`), leaving."""
RESPONSE = f"{PREFIX}_bot_response_seconds"
ADDED = f"{PREFIX}_bot_added_seconds"
TTFB = f"{PREFIX}_bot_ttfb_seconds"
PROCESSING = f"{PREFIX}_bot_processing_seconds"
LOOP_LAG = f"{PREFIX}_event_loop_lag_seconds"
HISTOGRAMS = {
    RESPONSE: "", ADDED: "", TTFB: "processor", PROCESSING: "processor", LOOP_LAG: ""
}
"""The supervisor's histograms read over the window, with the label each is split by."""
SUPERVISOR_DISPATCH = DISPATCH | {"load_threshold": 1.0, "max_rooms": max(STEPS)}
"""Rooms on demand with no admission limit short of the whole machine: the stepping,
not the worker's own full mark, says how many conversations it holds."""


@attrs.frozen
class System:
    name: str
    program: str
    """`supervisor`, `pipecat` or `agents`."""
    bot: str = DEFAULT_BOT
    workers: int = 1
    """The supervisor's `--workers`."""
    env: Mapping[str, str] = attrs.field(factory=dict)
    """Options in the environment (livekit-agents' worker reads its own there)."""
    missing: str | None = None
    """Why it cannot run this bot at all, if so."""

    def command(self, config: Path) -> list[str]:
        if self.program == "supervisor":
            workers = ["--workers", str(self.workers)] if self.workers > 1 else []
            return [sys.executable, "-m", "supervisor.cli", "run", str(config), *workers]
        if self.program == "pipecat":
            return [sys.executable, "-m", "benchmarks.pipecat_voice", "runner", "--bot", self.bot,
                    "--sample-rate", str(SAMPLE_RATE)]  # fmt: skip
        return [str(AGENTS_PYTHON), str(AGENTS_VOICE), "start"]

    def environment(self, server: LiveKitServer) -> dict[str, str]:
        """Credentials in the variables every one of them reads, never on a command line."""
        env = {
            **os.environ,
            "LIVEKIT_URL": server.url,
            KEY_ENV: server.api_key,
            SECRET_ENV: server.api_secret,
        }
        if self.program == "agents":
            env["AGENTS_VOICE_HTTP_PORT"] = str(free_port())
        return env | dict(self.env)

    @property
    def ready(self) -> re.Pattern[str]:
        """Its line once it takes rooms: registered as an agent worker, or the runner's."""
        if self.program == "pipecat":
            return re.compile(re.escape(pipecat_voice.READY))
        return REGISTERED

    @property
    def told_of_rooms(self) -> bool:
        """Told of each room on stdin (pipecat's runner), not dispatched by the server."""
        return self.program == "pipecat"

    def unavailable(self) -> str | None:
        """Why it cannot run here, if it cannot."""
        if self.program != "agents" or self.missing is not None:
            return self.missing
        if not AGENTS_VOICE.exists():
            return f"{AGENTS_VOICE.relative_to(REPO_ROOT)} is not written yet"
        try:
            ensure_agents_venv()
        except AgentsVenvError as err:
            return str(err)
        return None


AGENTS_OWN_LOAD = {"AGENTS_VOICE_LOAD": "worker"}
"""livekit-agents' load by default is the whole machine's CPU, which here includes the
callers and the server: its worker reported itself full (0.7) with one conversation and
the server offered it no more rooms. Its own process tree's CPU is what it would see
on a machine of its own (`benchmarks/agents_options.py`)."""


def systems(bot: str) -> dict[str, System]:
    """Each system by name: the supervisor in one process and with a worker per core;
    pipecat's process per call; livekit-agents' process per job (its defaults but the
    load it measures) and tuned (no preloaded end-of-turn model this bot does not use:
    250 MB of its warm processes), running its peer of `bot` (`AGENTS_SHAPES`)."""
    shape = AGENTS_SHAPES.get(bot)
    agents = AGENTS_OWN_LOAD | {"AGENTS_VOICE_SHAPE": shape or ""}
    missing = None if shape else f"livekit-agents has no peer of {bot}: {list(AGENTS_SHAPES)}"
    return {
        "supervisor": System("supervisor", "supervisor", bot),
        "supervisor-w2": System("supervisor-w2", "supervisor", bot, workers=2),
        "pipecat": System("pipecat", "pipecat", bot),
        "agents": System("agents", "agents", bot, env=agents, missing=missing),
        "agents-tuned": System(
            "agents-tuned", "agents", bot, missing=missing,
            env=agents | {"LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE": "0"},
        ),
    }  # fmt: skip


@attrs.frozen
class Options:
    warmup: float
    """Seconds from every caller talking to the window: the bots' first turns settle."""
    window: float
    settle: float = 3.0
    """Seconds from the worker being ready to its baseline (imports, warm processes)."""
    idle: float = 3.0
    """Seconds of the baseline: the worker ready and no room."""
    deadline: float = 10.0
    seed: int = 1


@attrs.define
class CallersProcess:
    """The callers' process, its progress lines as events, rooms relayed to a runner."""

    process: Process
    relay: Process | None
    all_talking: anyio.Event = attrs.field(factory=anyio.Event)
    opened: anyio.Event = attrs.field(factory=anyio.Event)
    closed: anyio.Event = attrs.field(factory=anyio.Event)
    ended: anyio.Event = attrs.field(factory=anyio.Event)

    async def read(self) -> None:
        assert self.process.stdout is not None
        lines = {
            callers.ALL_TALKING: self.all_talking,
            callers.WINDOW_OPEN: self.opened,
            callers.WINDOW_CLOSED: self.closed,
        }
        buffer = ""
        async for chunk in TextReceiveStream(self.process.stdout, errors="replace"):
            buffer += chunk
            *complete, buffer = buffer.split("\n")
            for line in complete:
                word, _, room = line.partition(" ")
                if word == callers.ROOM_CREATED and self.relay is not None:
                    assert self.relay.stdin is not None
                    await self.relay.stdin.send(f"{room}\n".encode())
                elif line in lines:
                    lines[line].set()
        self.ended.set()


async def measure(
    system: System, conversations: int, server: LiveKitServer, options: Options, workdir: Path
) -> dict[str, Any]:
    """One system holding `conversations` at once: the figures of one run, or why the
    system was not available."""
    result: dict[str, Any] = {
        "system": system.name, "program": system.program, "bot": system.bot,
        "rooms": conversations, "load_1m": os.getloadavg()[0],
    }  # fmt: skip
    if (why := system.unavailable()) is not None:
        return result | {"unavailable": why}
    metrics_port = free_port()
    config = workdir / f"{system.name}-{conversations}.toml"
    config.write_text(
        config_text(server, (), metrics_port, factory=system.bot)
        + config_toml({"dispatch": SUPERVISOR_DISPATCH})
    )
    stdin = subprocess.PIPE if system.told_of_rooms else subprocess.DEVNULL
    async with worker_process(system, config, server, ready=system.ready, stdin=stdin) as worker:
        try:
            await _conversations(system, conversations, server, options, workdir, worker,
                                 metrics_port, result)  # fmt: skip
        finally:
            log = "\n".join(line for _, line in worker.log)
            (workdir / f"{system.name}-{conversations}.log").write_text(log)
    return result


async def _ready(worker: Worker, timeout: float) -> bool:
    """Poll the worker's log for its ready line (it sets no event) within `timeout`."""
    with anyio.move_on_after(timeout):
        while not (worker.registered or worker.ended):  # noqa: ASYNC110 - another process's log
            await anyio.sleep(0.1)
    return worker.registered


async def _conversations(
    system: System,
    conversations: int,
    server: LiveKitServer,
    options: Options,
    workdir: Path,
    worker: Worker,
    metrics_port: int,
    result: dict[str, Any],
) -> None:
    """The measurements of `measure`, into `result`, with the worker running."""
    assert server.pid is not None
    if not await _ready(worker, REGISTER_TIMEOUT):
        state = "exited" if worker.ended else f"not within {REGISTER_TIMEOUT:g} s"
        result["unavailable"] = f"never ready ({state}): {worker.tail(3)}"
        return
    await anyio.sleep(options.settle)
    pid = worker.process.pid
    idle_before, idle_at = cpu_readings({"bot": pid}), time.perf_counter()
    await anyio.sleep(options.idle)
    idle_after = cpu_readings({"bot": pid})
    result["baseline_cores"] = (idle_after["bot"] - idle_before["bot"]) / (
        time.perf_counter() - idle_at
    )
    result["baseline_rss_mb"], result["baseline_pss_mb"] = _memory_mb(pid)
    # new rooms, whatever ran on this server before: a room that still exists (another
    # harness's "supervisor-2-0", say) would be joined, not created, and dispatch no job
    run = secrets.token_hex(3)
    rooms = [f"conv-{system.name}-{conversations}-{run}-{i}" for i in range(conversations)]
    out = workdir / f"{system.name}-{conversations}-callers.json"
    command = [
        sys.executable, "-m", "benchmarks.callers", "--rooms", ",".join(rooms), "--out", str(out),
        "--seed", str(options.seed), "--warmup", str(options.warmup),
        "--window", str(options.window), "--deadline", str(options.deadline),
    ]  # fmt: skip
    scraped = system.program == "supervisor"
    with (workdir / f"{system.name}-{conversations}-callers.log").open("wb") as errors:
        process = await anyio.open_process(
            command, cwd=REPO_ROOT, env=system.environment(server),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
        )  # fmt: skip
        talk = CallersProcess(process, worker.process if system.told_of_rooms else None)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(talk.read)
                processes = {"bot": pid, "server": server.pid, "callers": process.pid}
                await either(talk.opened, talk.ended)
                before, started = cpu_readings(processes), time.perf_counter()
                histograms_before = await _scrape(system, metrics_port) if scraped else {}
                await either(talk.closed, talk.ended)
                after, elapsed = cpu_readings(processes), time.perf_counter() - started
                histograms_after = await _scrape(system, metrics_port) if scraped else {}
                result["rss_mb"], result["pss_mb"] = _memory_mb(pid)
                with anyio.move_on_after(options.deadline + CALLERS_GRACE):
                    await process.wait()
                tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
    if not talk.closed.is_set() or not out.exists():
        tail = (workdir / f"{system.name}-{conversations}-callers.log").read_text(errors="replace")
        result["unavailable"] = f"the callers exited {process.returncode}: {tail[-600:]}"
        return
    result |= callers.summary(json.loads(out.read_text()))
    cores = {name: (after[name] - before[name]) / elapsed for name in before}
    result |= {
        "bot_cores": cores["bot"],
        "bot_loop_cores": cores["bot_loop"],
        "cpu_per_conversation": cores["bot"] / conversations,
        "callers_cores": cores["callers"],
        "server_cores": cores["server"],
        "rss_per_conversation_mb": (result["rss_mb"] - result["baseline_rss_mb"]) / conversations,
        "pss_per_conversation_mb": (result["pss_mb"] - result["baseline_pss_mb"]) / conversations,
        "saturated": sum(cores[name] for name in ("bot", "callers", "server"))
        > SATURATED * (os.cpu_count() or 1),
    }
    if scraped:
        result |= _bot_figures(histograms_before, histograms_after)


def _memory_mb(pid: int) -> tuple[float, float]:
    """RSS and PSS of the tree under `pid`, in MB."""
    return rss_bytes(pid) / 1e6, pss_bytes(pid) / 1e6


async def _scrape(system: System, port: int) -> dict[tuple[str, str], dict[float, float]]:
    """Every worker's histograms, summed (worker i listens on the port + i)."""
    return await scrape_histograms([port + i for i in range(system.workers)], HISTOGRAMS)


def _bot_figures(
    before: Mapping[tuple[str, str], dict[float, float]],
    after: Mapping[tuple[str, str], dict[float, float]],
) -> dict[str, Any]:
    """The supervisor's histograms over the window: the response time and the part of it
    the process added p50/p95/p99, each service's TTFB and processing p50/p95, the loop
    lag p99 (bucket upper bounds, ms)."""
    figures: dict[str, Any] = {}

    def quantile(key: tuple[str, str], q: int) -> float | None:
        found = bucket_quantile(before.get(key, {}), after[key], q / 100)
        return None if found is None else found * 1000

    for (name, label) in after:
        if name in (RESPONSE, ADDED):
            kind = "response" if name == RESPONSE else "added"
            figures |= {f"{kind}_p{q}_ms": quantile((name, label), q) for q in (50, 95, 99)}
        elif name == LOOP_LAG:
            figures["loop_lag_p99_ms"] = quantile((name, label), 99)
        elif name in (TTFB, PROCESSING):
            kind = "ttfb" if name == TTFB else "processing"
            for q in (50, 95):
                figures.setdefault(f"{kind}_p{q}_ms", {})[label] = quantile((name, label), q)
    return figures


def held(results: Sequence[dict[str, Any]], system: str) -> int | None:
    """The most conversations `system` held: every reply heard and no caller failed,
    p95 within `LIMIT` times its own one-conversation p95, at every count up to it."""
    runs = sorted((r for r in results if r["system"] == system), key=lambda r: r["rooms"])
    base = next((r.get("v2v_p95_ms") for r in runs if r["rooms"] == 1), None)
    found = None
    for r in runs:
        if not _holds(r, base):
            break
        found = r["rooms"]
    return found


def _holds(r: dict[str, Any], base: float | None) -> bool:
    p95 = r.get("v2v_p95_ms")
    return (
        "unavailable" not in r and not r.get("caller_errors") and r.get("missed") == 0
        and p95 is not None and base is not None and p95 <= LIMIT * base
    )  # fmt: skip


def keep_stepping(results: list[dict[str, Any]]) -> bool:
    """`--step`: go on to the next count for the last result's system while it holds."""
    last = results[-1]
    ones = [r for r in results if r["system"] == last["system"] and r["rooms"] == 1]
    return bool(ones) and _holds(last, ones[0].get("v2v_p95_ms"))


def _services(r: dict[str, Any], kind: str) -> str:
    """Each service's p50/p95 of `kind` (ttfb, processing), by processor."""
    p50, p95 = r.get(f"{kind}_p50_ms") or {}, r.get(f"{kind}_p95_ms") or {}
    return ", ".join(f"{name} {cell(p50.get(name), 0)}/{cell(p95.get(name), 0)}" for name in p95)


def format_markdown(results: Sequence[dict[str, Any]]) -> str:
    """Every run as a row, the supervisor's own figures, what each system held, and the
    systems not available: what a run's page records."""
    rows = [
        "| system | conversations | turns | v2v p50 ms | p95 ms | p99 ms | missed | cut off | "
        "CPU %/conv | conv/core | RSS MB/conv | PSS MB/conv | baseline PSS MB | "
        "callers cores | callers lag p99 ms | server cores | load 1m |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: | ---: | ---: | ---: |",
    ]
    measured = [r for r in results if "turns" in r]
    for r in measured:
        starved = " (saturated)" if r.get("saturated") else ""
        per_core = r["rooms"] / r["bot_cores"] if r.get("bot_cores") else None
        rows.append(
            f"| {r['system']} | {r['rooms']}{starved} | {r['turns']} | "
            f"{cell(r['v2v_p50_ms'], 0)} | {cell(r['v2v_p95_ms'], 0)} | "
            f"{cell(r['v2v_p99_ms'], 0)} | {r['missed']} | {r['cut_off']} | "
            f"{percent(r['cpu_per_conversation'])} | {cell(per_core)} | "
            f"{cell(r['rss_per_conversation_mb'])} | {cell(r['pss_per_conversation_mb'])} | "
            f"{cell(r['baseline_pss_mb'], 0)} | {cell(r['callers_cores'], 2)} | "
            f"{cell(r['callers_lag_p99_ms'], 0)} | {cell(r['server_cores'], 2)} | "
            f"{cell(r['load_1m'], 2)} |"
        )
    bot_side = [
        f"| {r['system']} | {r['rooms']} | {cell(r.get('response_p50_ms'), 0)} / "
        f"{cell(r.get('response_p95_ms'), 0)} / {cell(r.get('response_p99_ms'), 0)} | "
        f"{cell(r.get('added_p50_ms'), 0)} / {cell(r.get('added_p95_ms'), 0)} / "
        f"{cell(r.get('added_p99_ms'), 0)} | "
        f"{_services(r, 'ttfb')} | {_services(r, 'processing')} | "
        f"{cell(r.get('loop_lag_p99_ms'), 1)} |"
        for r in measured if "response_p50_ms" in r
    ]
    sections = [rows]
    if bot_side:
        sections.append([
            "",
            "| system | conversations | response p50/p95/p99 ms | added p50/p95/p99 ms | "
            "TTFB p50/p95 ms | processing p50/p95 ms | loop lag p99 ms |",
            "| --- | ---: | ---: | ---: | --- | --- | ---: |",
            *bot_side,
        ])
    names = list(dict.fromkeys(r["system"] for r in measured))
    sections.append([
        "",
        f"Conversations held (every reply heard, p95 within {LIMIT:g}x the one-conversation "
        "p95):",
        *(f"- {name}: {held(results, name) or 'none'} of the counts run" for name in names),
    ])
    failures = [
        f"- {r['system']} at {r['rooms']}: " + "; ".join(r.get("caller_errors", []))
        for r in measured if r.get("caller_errors")
    ] + [f"- {r['system']} at {r['rooms']}: not available ({r['unavailable']})"
         for r in results if "unavailable" in r]  # fmt: skip
    if failures:
        sections.append(["", *failures])
    return "\n".join(line for section in sections for line in section)


SUMMED = ("turns", "missed", "cut_off")
"""Counts that add up over runs; every other number is a median."""


def median_results(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One result per system and count over several runs (`--medians`): `SUMMED`
    summed, caller errors gathered, a per-processor figure the median per processor,
    any other number the median of the runs that measured it; `runs` says how many did.
    A pair no run measured keeps its first run's reason."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for results in runs:
        for r in results:
            grouped.setdefault((r["system"], r["rooms"]), []).append(r)
    merged = []
    for (system, rooms), group in grouped.items():
        measured = [r for r in group if "turns" in r]
        if not measured:
            merged.append(group[0])
            continue
        row: dict[str, Any] = {"system": system, "rooms": rooms, "runs": len(measured)}
        for key in dict.fromkeys(key for r in measured for key in r if key not in row):
            values = [r[key] for r in measured if r.get(key) is not None]
            if key in SUMMED:
                row[key] = sum(values)
            elif key == "caller_errors":
                row[key] = sorted({error for errors in values for error in errors})
            elif values and all(isinstance(v, dict) for v in values):
                labels = dict.fromkeys(label for v in values for label in v)
                row[key] = {
                    label: statistics.median(v[label] for v in values if v.get(label) is not None)
                    for label in labels
                }
            elif values and all(isinstance(v, int | float) and not isinstance(v, bool)
                                for v in values):  # fmt: skip
                row[key] = statistics.median(values)
            elif key == "saturated":
                row[key] = any(values)
            else:
                row[key] = values[0] if values else None
        merged.append(row)
    return merged


CHART_LINES = (("v2v_p95_ms", "-", " voice-to-voice p95"),)


async def run(
    counts: Sequence[int],
    chosen: Sequence[System],
    options: Options,
    json_path: Path | None,
    *,
    step: bool = False,
    charts: Path | None = None,
    logs: Path | None = None,
) -> list[dict[str, Any]]:
    """Every (conversations, system) pair in turn against one server, fewest first;
    with `step`, each system until it no longer holds (`keep_stepping`)."""
    corpus()  # made before any window, once
    described = machine() | {"bot": chosen[0].bot if chosen else None}
    if any(system.program == "agents" and system.unavailable() is None for system in chosen):
        described |= {"agents": agents_versions()}
    results = await measure_each(
        counts,
        chosen,
        lambda system, count, server, workdir: measure(system, count, server, options, workdir),
        described,
        json_path,
        logs,
        keep_going=keep_stepping if step else None,
    )
    print(format_markdown(results), flush=True)
    if charts is not None:
        print(f"chart: {draw_chart([results], charts)}", flush=True)
    return results


def _parser(known: Mapping[str, System]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, "1,2,4", "supervisor,pipecat", known, counts="conversations")
    parser.add_argument("--bot", default=DEFAULT_BOT,
                        help="module:function of the bot (its module has conversation())")
    parser.add_argument("--step", action="store_true",
                        help=f"1, 2, 3, 4, 6, ... until p95 passes {LIMIT:g}x its own at 1")
    parser.add_argument("--max", type=int, default=64, help="--step's largest count")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--deadline", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--charts", type=Path, metavar="DIR",
                        help="draw the PNG chart of this run into DIR (needs the bench extra)")
    parser.add_argument("--logs", type=Path, metavar="DIR",
                        help="keep each worker's config and log and the callers' turns here")
    parser.add_argument("--medians", type=Path, nargs="+", metavar="RUN.json",
                        help="run nothing: print the medians of these runs' --json files")
    return parser


def summarise(paths: Sequence[Path], charts: Path | None) -> None:
    """`--medians`: the medians of the runs in `paths`, as a run's page records them,
    and their chart (each point the median of the runs' p95)."""
    runs = [json.loads(path.read_text())["runs"] for path in paths]
    print(f"Medians of {len(runs)} run{'s' if len(runs) != 1 else ''}:\n")
    print(format_markdown(median_results(runs)), flush=True)
    if charts is not None:
        print(f"chart: {draw_chart(runs, charts)}", flush=True)


def draw_chart(runs: Sequence[Sequence[dict[str, Any]]], charts: Path) -> Path:
    """The voice-to-voice p95 against conversations, a curve per system (each point the
    median of `runs`)."""
    from benchmarks.charts import line_chart  # matplotlib: the `bench` extra

    return line_chart(
        runs, charts / "conversations-latency.png", CHART_LINES,
        xlabel="conversations at once", ylabel="ms",
        title="Voice-to-voice latency p95 against conversations",
        cap_ms=None,  # measured at the callers, not read off a histogram
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser(systems(DEFAULT_BOT)).parse_args(argv)
    if args.medians:
        summarise(args.medians, args.charts)
        return 0
    counts, chosen = chosen_runs(args, systems(args.bot))
    if args.step:
        counts = [count for count in STEPS if count <= args.max]
    options = Options(
        args.warmup, args.window, args.settle, args.idle, args.deadline, args.seed
    )
    anyio.run(
        partial(run, step=args.step, charts=args.charts, logs=args.logs),
        counts, chosen, options, args.json, backend="asyncio",
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
