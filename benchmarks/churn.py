"""Room lifetimes one after another: does a process's memory or CPU grow with rooms served?

    python -m benchmarks.churn supervisor [--lifetimes 200] [--concurrency 1,2,4]
                                          [--workers N] [--extra-config TOML]
                                          [--talk 2] [--count-objects] [--json PATH]
    python -m benchmarks.churn sdk [--lifetimes 150] [--concurrency 1,2,4]
                                   [--usage connect,publish,capture,stream] [--hold 1]
                                   [--linger 3]
                                   [--gather-once] [--unpublish] [--aclose]
                                   [--collect] [--malloc-trim] [--resident]
                                   [--env NAME=VALUE ...] [--python PATH] [--json PATH]

`supervisor` runs `supervisor run` with `[dispatch]` (automatic, `idle_timeout_seconds =
1`) and the echo bot against this harness's own livekit-server, and drives N room
lifetimes, C at a time: a caller (rtc SDK, in this process, narrowed as `supervisor
bench` is) joins a new room, talks until it hears the bot's echo, talks `--talk` seconds
more and leaves; the bot's job ends a second later. A caller that never hears the echo
(within dispatch.DISPATCH_TIMEOUT) is a room not served: `no_bot` (no bot came: refused,
or the server gave the job up), `no_echo` (the bot came and did not answer); `said_full`
counts the supervisor's `[dispatch] full:` lines. `--extra-config` is TOML merged
into the generated config (recycling keys, limits); `--count-objects` counts each
supervisor process's Python objects by type as it serves (`benchmarks/object_counts`).

`sdk` runs the bare SDK instead, `benchmarks/sdk_leak.py` as a child process (any
`--python`, with `--env` added to its environment): each lifetime connects a room, and
by `--usage` publishes, captures, and reads a peer's AudioStream (see that file).

Both sample every process of the measured tree each second, apart (workers come and
go when recycled; a recycled worker is a new row), and this process too in `supervisor`
mode (the callers: the SDK churning on the caller's side). Per process: RSS after the
warm-up (the first WARMUP_LIFETIMES), at the end and at most; its slope in MB per
lifetime (least squares against lifetimes done, from the warm-up on); fds and threads
at the warm-up and the end; CPU per lifetime over the first and the last third of
the lifetimes. The load average is recorded before and after each run: on a shared
machine, CPU per lifetime is the machine's as much as the process's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
from anyio.streams.text import TextReceiveStream

from benchmarks.dispatch import (
    DISPATCH,
    FULL,
    REGISTER_TIMEOUT,
    REGISTERED,
    Caller,
    Plan,
    System,
    call,
    worker_process,
)
from benchmarks.echo import KEY_ENV, REPO_ROOT, SECRET_ENV, config_text, machine, measure_each
from benchmarks.process_tree import command_line, parent_of, sample, tree
from supervisor.bench import RoomResult
from supervisor.config import config_toml
from supervisor.livekit_server.access import Credentials
from supervisor.livekit_server.server import LiveKitServer, free_port
from supervisor.process.rtc_shutdown import release_rtc

WARMUP_LIFETIMES = 20
"""Lifetimes before the figures start: imports, the first rooms' one-off allocations."""
SAMPLE_SECONDS = 1.0
SETTLE_SECONDS = 12.0
"""After the last lifetime, before the final sample: the last jobs end (idle timeout),
and with `--count-objects` one more count comes in."""
OBJECT_COUNTS = REPO_ROOT / "benchmarks" / "object_counts"
SDK_LEAK = REPO_ROOT / "benchmarks" / "sdk_leak.py"
LIFETIME_LINE = re.compile(
    r"^lifetime (\d+) rss_mb [\d.]+ heap_mb (\S+)(?: handles (\d+) objects (\d+))?"
)
TOP_TYPES = 8
TRANSIENT_SAMPLES = 5
SERIES_POINTS = 40
"""Samples kept per process in the JSON, (lifetimes done, RSS MB, fds, threads): the
curve's shape (a plateau, a step at a recycle) which a slope alone hides."""
SWITCHES = ("--gather-once", "--unpublish", "--aclose", "--collect", "--malloc-trim", "--resident")
"""sdk_leak.py's on/off switches, passed through."""


@attrs.define
class Progress:
    """Lifetimes done so far, and every sample of the measured processes."""

    done: int = 0
    samples: list[tuple[float, int, dict[int, dict[str, float]]]] = attrs.field(factory=list)
    """(time, lifetimes done, per pid: `process_tree.sample`)."""
    labels: dict[int, str] = attrs.field(factory=dict)
    root: int | None = None
    """The measured process: reported however briefly it lived."""

    async def sample_forever(
        self, root: int, label: Callable[[int], str], also: Sequence[int] = ()
    ) -> None:
        """Every process under `root`, and `also`, each second, each named by `label`;
        nothing once `root` has exited (its pid, reaped, may be another process's)."""
        self.root = root
        while (root_now := sample(root)) is not None:
            readings = {root: root_now}
            for pid in [*tree(root)[1:], *also]:
                if (found := sample(pid)) is not None:
                    readings[pid] = found
            for pid in readings.keys() - self.labels.keys():
                self.labels[pid] = label(pid)
            self.samples.append((time.time(), self.done, readings))
            await anyio.sleep(SAMPLE_SECONDS)


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y against x; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def _cpu_per_lifetime(
    series: Sequence[tuple[int, dict[str, float]]], start: int, end: int
) -> float | None:
    """CPU ms per lifetime between the first samples at `start` and at `end` lifetimes
    done, or None if the process did not live through both."""
    first = next(((done, s) for done, s in series if done >= start), None)
    last = next(((done, s) for done, s in series if done >= end), None)
    if first is None or last is None or last[0] <= first[0]:
        return None
    return (last[1]["cpu_s"] - first[1]["cpu_s"]) * 1000 / (last[0] - first[0])


def per_process(progress: Progress, lifetimes: int) -> list[dict[str, Any]]:
    """The figures of each process sampled (see the module's docstring), but for children
    seen in fewer than TRANSIENT_SAMPLES samples: the SDK runs `lsb_release -a` (a shell
    script, and its children) as it connects, which has no trend to fit."""
    warmup = min(WARMUP_LIFETIMES, lifetimes // 5)
    rows = []
    for pid, label in progress.labels.items():
        series = [
            (done, readings[pid]) for _, done, readings in progress.samples if pid in readings
        ]
        if len(series) < TRANSIENT_SAMPLES and pid != progress.root:
            continue
        after = [(done, s) for done, s in series if done >= warmup] or series[-1:]
        warm, final = after[0][1], series[-1][1]
        per_lifetime = slope([(done, s["rss_mb"]) for done, s in after])
        third = lifetimes // 3
        rows.append({
            "process": label, "pid": pid,
            "lifetimes_seen": [series[0][0], series[-1][0]],
            "warm_rss_mb": round(warm["rss_mb"], 1), "final_rss_mb": round(final["rss_mb"], 1),
            "max_rss_mb": round(max(s["rss_mb"] for _, s in series), 1),
            "mb_per_lifetime": None if per_lifetime is None else round(per_lifetime, 3),
            "fds": [warm["fds"], final["fds"]], "threads": [warm["threads"], final["threads"]],
            "cpu_ms_per_lifetime_first_third": _round(_cpu_per_lifetime(series, 0, third)),
            "cpu_ms_per_lifetime_last_third": _round(
                _cpu_per_lifetime(series, lifetimes - third, lifetimes)
            ),
            "rss_series": [
                [done, round(s["rss_mb"], 1), s["fds"], s["threads"]]
                for done, s in series[:: max(1, len(series) // SERIES_POINTS)]
            ],
        })  # fmt: skip
    return rows


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _label(root: int, name: str) -> Callable[[int], str]:
    """Names a sampled process: the root `name`, a worker by its index, this process. A
    worker is a child of the root: the rtc SDK forks a worker to run `lsb_release -a` at
    each room's connect, and until its exec that child has the worker's command line."""

    def label(pid: int) -> str:
        if pid == root:
            return name
        if pid == os.getpid():
            return "harness (callers)"
        arguments = command_line(pid)
        if "--worker-index" in arguments and parent_of(pid) == root:
            return f"worker {arguments[arguments.index('--worker-index') + 1]}"
        return Path(arguments[0]).name if arguments else "?"

    return label


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra`'s keys over it, tables merged key by key."""
    result = dict(base)
    for key, value in extra.items():
        inner = result.get(key)
        both_tables = isinstance(inner, Mapping) and isinstance(value, Mapping)
        result[key] = merged(inner, value) if both_tables else value
    return result


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in this process's environment for the block, then as it was."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@attrs.frozen
class SupervisorRun:
    """`supervisor run` as the churn measures it."""

    lifetimes: int
    workers: int
    extra_config: str
    talk_seconds: float
    count_objects: bool

    @property
    def name(self) -> str:
        return f"supervisor-w{self.workers}" + (" +config" if self.extra_config else "")

    def config(self, server: LiveKitServer) -> str:
        dispatch = DISPATCH | {"idle_timeout_seconds": 1}
        doc = tomllib.loads(config_text(server, (), free_port()))
        return config_toml(merged(doc | {"dispatch": dispatch}, tomllib.loads(self.extra_config)))


async def measure_supervisor(
    run: SupervisorRun, concurrency: int, server: LiveKitServer, workdir: Path
) -> dict[str, Any]:
    """`run.lifetimes` dispatched room lifetimes, `concurrency` at a time."""
    prefix = f"churn-{uuid.uuid4().hex[:6]}"
    config = workdir / f"{prefix}.toml"
    config.write_text(run.config(server))
    system = System("supervisor", workers=run.workers)
    counts = workdir / f"{prefix}-objects"
    counting: dict[str, str] = {}
    if run.count_objects:
        counts.mkdir()
        path = os.pathsep.join(filter(None, [str(OBJECT_COUNTS), os.environ.get("PYTHONPATH")]))
        counting = {"LKSUP_OBJECT_COUNTS": str(counts), "PYTHONPATH": path}
    result: dict[str, Any] = {
        "mode": "supervisor", "system": run.name, "usage": "dispatch+echo",
        "concurrency": concurrency, "lifetimes": run.lifetimes, "workers": run.workers,
        "extra_config": run.extra_config, "load_before": os.getloadavg()[0],
    }  # fmt: skip
    credentials = Credentials(server.url, server.api_key, server.api_secret)
    progress = Progress()
    callers: list[Caller] = []
    with _environ(counting):  # the worker's environment copies ours
        async with worker_process(system, config, server) as worker:
            registered = lambda: len(worker.times(REGISTERED, 0)) >= run.workers  # noqa: E731
            with anyio.move_on_after(REGISTER_TIMEOUT):
                while not (registered() or worker.ended):  # noqa: ASYNC110 - a log, no event
                    await anyio.sleep(0.1)
            if not registered():
                result["unavailable"] = f"never registered: {worker.tail(3)}"
                return result
            plan = Plan(run.talk_seconds)
            plan.talk.set()
            plan.leave.set()
            limiter = anyio.CapacityLimiter(concurrency)

            async def lifetime(index: int) -> None:
                async with limiter:
                    caller = Caller(f"{prefix}-{index}", RoomResult(f"{prefix}-{index}"))
                    await call(credentials, caller, plan)
                    callers.append(caller)
                    progress.done += 1

            async with anyio.create_task_group() as sampling:
                sampling.start_soon(
                    progress.sample_forever, worker.process.pid,
                    _label(worker.process.pid, "supervisor"), [os.getpid()],
                )  # fmt: skip
                started = time.perf_counter()
                async with anyio.create_task_group() as tasks:
                    for index in range(run.lifetimes):
                        tasks.start_soon(lifetime, index)
                result["seconds"] = round(time.perf_counter() - started, 1)
                await anyio.sleep(SETTLE_SECONDS)
                sampling.cancel_scope.cancel()
            (workdir / f"{prefix}.log").write_text(worker.tail(len(worker.log)))
            full = len(worker.times(FULL, 0))
    heard = [caller for caller in callers if caller.heard_s is not None]
    errors = Counter(caller.result.error for caller in callers if caller.result.error)
    result |= {
        "served": len(heard),
        "no_bot": sum(caller.track_s is None for caller in callers),
        "no_echo": sum(caller.track_s is not None and caller.heard_s is None for caller in callers),
        "errors": dict(errors.most_common(5)),
        "said_full": full,
        "load_after": os.getloadavg()[0],
        "processes": per_process(progress, run.lifetimes),
    }
    if run.count_objects:
        result["objects"] = object_growth(counts, progress, run.lifetimes)
    return result


def object_growth(folder: Path, progress: Progress, lifetimes: int) -> dict[str, Any]:
    """Per process counted: tracked Python objects after the warm-up and at the end, and
    the types that grew most between the two."""
    warmup = min(WARMUP_LIFETIMES, lifetimes // 5)
    warm_at = next((at for at, done, _ in progress.samples if done >= warmup), 0.0)
    found = {}
    for path in sorted(folder.glob("*.jsonl")):
        snapshots = [json.loads(line) for line in path.read_text().splitlines()]
        after = [snapshot for snapshot in snapshots if snapshot["at"] >= warm_at]
        if len(after) < 2:
            continue
        first, last = Counter(after[0]["counts"]), Counter(after[-1]["counts"])
        grown = Counter({name: last[name] - first[name] for name in last | first})
        label = progress.labels.get(int(path.stem), path.stem)
        found[f"{label} ({path.stem})"] = {
            "objects": [first.total(), last.total()],
            "grew_most": dict(grown.most_common(TOP_TYPES)),
        }
    return found


@attrs.frozen
class SdkRun:
    """`benchmarks/sdk_leak.py` with one usage and the switches common to the run."""

    usage: str
    lifetimes: int
    hold: float
    switches: tuple[str, ...]
    """Of SWITCHES, as given."""
    env: tuple[tuple[str, str], ...]
    python: str
    linger: float
    """Seconds the reproducer stays after its last lifetime: the final samples, and
    whether memory comes back once its rooms are long gone."""

    @property
    def name(self) -> str:
        settings = [*self.switches, *(f"{name}={value}" for name, value in self.env)]
        return " ".join([self.usage, *settings])


async def measure_sdk(
    run: SdkRun, concurrency: int, server: LiveKitServer, workdir: Path
) -> dict[str, Any]:
    """The reproducer run once, sampled from outside; its own lines give the lifetimes
    done and glibc's heap in use."""
    command = [
        run.python, str(SDK_LEAK), "--url", server.url, "--lifetimes", str(run.lifetimes),
        "--concurrency", str(concurrency), "--usage", run.usage, "--hold", str(run.hold),
        "--linger", str(run.linger), *run.switches,
    ]  # fmt: skip
    env = {**os.environ, KEY_ENV: server.api_key, SECRET_ENV: server.api_secret, **dict(run.env)}
    result: dict[str, Any] = {
        "mode": "sdk", "system": run.name, "usage": run.usage, "concurrency": concurrency,
        "lifetimes": run.lifetimes, "python": run.python, "load_before": os.getloadavg()[0],
    }  # fmt: skip
    progress = Progress()
    heap: list[tuple[int, float]] = []
    held: list[tuple[int, int, int]] = []
    """(lifetimes done, the SDK's live handles, tracked Python objects)."""
    errors = workdir / f"sdk-{uuid.uuid4().hex[:6]}.stderr"
    with errors.open("w") as stderr:
        process = await anyio.open_process(
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stderr=stderr
        )
    async with process, anyio.create_task_group() as sampling:
        sampling.start_soon(progress.sample_forever, process.pid, _label(process.pid, "sdk"))
        assert process.stdout is not None
        buffer = ""
        async for chunk in TextReceiveStream(process.stdout, errors="replace"):
            buffer += chunk
            *lines, buffer = buffer.split("\n")
            for line in lines:
                if match := LIFETIME_LINE.match(line):
                    progress.done = int(match[1])
                    if match[2] != "-":
                        heap.append((progress.done, float(match[2])))
                    if match[3] is not None:
                        held.append((progress.done, int(match[3]), int(match[4])))
                elif line.startswith("{"):
                    summary = json.loads(line)
                    result["versions"] = {"livekit": summary["livekit"]}
                    result["heap_end_mb"] = summary.get("heap_end_mb")
        sampling.cancel_scope.cancel()  # before the reap: its pid may be reused after
        await process.wait()
    tail = errors.read_text(errors="replace").strip().splitlines()
    result |= {
        "served": progress.done,
        "exit": process.returncode,
        "stderr_tail": [line[:300] for line in tail[-3:]] if process.returncode else [],
        "load_after": os.getloadavg()[0],
        "processes": per_process(progress, run.lifetimes),
    }
    warmup = min(WARMUP_LIFETIMES, run.lifetimes // 5)
    heap_after = [(done, mb) for done, mb in heap if done >= warmup]
    if heap_after:
        result["heap_mb"] = [heap_after[0][1], heap_after[-1][1]]
        result["heap_mb_per_lifetime"] = _round3(slope(heap_after))
    held_after = [row for row in held if row[0] >= warmup]
    if held_after:
        result["live_handles"] = [held_after[0][1], held_after[-1][1]]
        result["py_objects"] = [held_after[0][2], held_after[-1][2]]
    return result


def _round3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def format_markdown(results: Sequence[dict[str, Any]]) -> str:
    """A row per process of each run: what a run's page records."""
    rows = [
        "| mode | system | C | process | served | RSS warm -> end (max) MB | MB/lifetime | "
        "heap MB/lifetime | fds | threads | CPU ms/lifetime first -> last third | load |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        served = f"{r.get('served', 0)}/{r['lifetimes']}"
        if r.get("exit"):
            served += f" (exit {r['exit']})"
        load = f"{r['load_before']:.1f}-{r.get('load_after', r['load_before']):.1f}"
        for p in r.get("processes", []):
            heap = r.get("heap_mb_per_lifetime") if r["mode"] == "sdk" else None
            rows.append(
                f"| {r['mode']} | {r['system']} | {r['concurrency']} | {p['process']} | "
                f"{served} | {p['warm_rss_mb']:.0f} -> {p['final_rss_mb']:.0f} "
                f"({p['max_rss_mb']:.0f}) | {_cell(p['mb_per_lifetime'], 2)} | {_cell(heap, 2)} | "
                f"{p['fds'][0]} -> {p['fds'][1]} | {p['threads'][0]} -> {p['threads'][1]} | "
                f"{_cell(p['cpu_ms_per_lifetime_first_third'], 0)} -> "
                f"{_cell(p['cpu_ms_per_lifetime_last_third'], 0)} | {load} |"
            )
    notes = []
    for r in results:
        for why in ("unavailable", "stderr_tail", "errors", "said_full", "objects"):
            if r.get(why):
                notes.append(f"- {r['system']} C={r['concurrency']} {why}: {json.dumps(r[why])}")
    return "\n".join(rows + (["", *notes] if notes else []))


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    for mode, lifetimes, what in (("supervisor", 200, "supervisor run"), ("sdk", 150, "the SDK")):
        sub = modes.add_parser(mode, help=f"churn {what}")
        sub.add_argument("--lifetimes", type=int, default=lifetimes)
        sub.add_argument("--concurrency", default="1,2,4", help="comma-separated: a run each")
        sub.add_argument("--json", type=Path, metavar="PATH")
        sub.add_argument("--logs", type=Path, metavar="DIR", help="keep configs and logs here")
    supervisor = modes.choices["supervisor"]
    supervisor.add_argument("--workers", type=int, default=1)
    supervisor.add_argument("--extra-config", default="", metavar="TOML",
                            help="TOML merged into the generated config")
    supervisor.add_argument("--talk", type=float, default=2.0,
                            help="seconds each caller talks after the first echo")
    supervisor.add_argument("--count-objects", action="store_true",
                            help="count each supervisor process's Python objects by type")
    sdk = modes.choices["sdk"]
    sdk.add_argument("--usage", default="connect,publish,capture,stream",
                     help="comma-separated, of sdk_leak.py's --usage: a run each")
    sdk.add_argument("--hold", type=float, default=1.0)
    sdk.add_argument("--linger", type=float, default=3.0,
                     help="seconds the reproducer stays after its last lifetime")
    for switch in SWITCHES:
        sdk.add_argument(switch, action="store_true", help=f"sdk_leak.py's {switch}")
    sdk.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                     help="for the reproducer's environment, e.g. MALLOC_ARENA_MAX=2")
    sdk.add_argument("--python", default=sys.executable,
                     help="the interpreter to run it with (another venv: another SDK version)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    concurrencies = [int(count) for count in args.concurrency.split(",")]
    runs: list[Any]
    if args.mode == "supervisor":
        runs = [SupervisorRun(args.lifetimes, args.workers, args.extra_config, args.talk,
                              args.count_objects)]
        measure_one: Callable[..., Any] = measure_supervisor
    else:
        switches = tuple(s for s in SWITCHES if getattr(args, s[2:].replace("-", "_")))
        env = tuple(tuple(pair.split("=", 1)) for pair in args.env)
        runs = [SdkRun(usage, args.lifetimes, args.hold, switches, env, args.python, args.linger)
                for usage in args.usage.split(",")]
        measure_one = measure_sdk

    async def run() -> None:
        results = await measure_each(
            concurrencies, runs, measure_one, machine(), args.json, args.logs
        )
        print(format_markdown(results), flush=True)

    try:
        anyio.run(run, backend="asyncio")
    finally:
        release_rtc()  # the callers' SDK runtime, before the interpreter's exit (see rtc_shutdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
