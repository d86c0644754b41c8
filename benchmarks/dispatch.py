"""Rooms on demand side by side: livekit-agents' worker and the supervisor, each an agent
worker of one local livekit-server, in one run.

    python -m benchmarks.dispatch [--rooms 1,10,50] [--systems agents,agents-tuned,supervisor]
                                  [--settle 5] [--idle 4] [--warmup 4] [--window 10]
                                  [--second-burst] [--json PATH]

For each number of rooms N and each system, the harness starts the worker (`agents`:
`benchmarks/agents_echo.py start` in livekit-agents' own venv, made by `make
agents-venv`; `supervisor`: `supervisor run` on a config with a `[dispatch]` table and
no `[[rooms]]`), waits until it says it registered, and measures it idle with no job:
its baseline. Then N callers (rtc SDK participants in this process, one per fresh room)
join at once: the first participant creates the room, and the server dispatches it to
the worker. Each caller talks (the load generator's tone bursts, `supervisor.bench`)
from the moment the bot's track is there, so the two dispatch latencies are what a
caller lives through: connected to the bot's audio track subscribed, and to the first
echo heard. A room with no bot after DISPATCH_TIMEOUT is not served. Then the callers fall
silent (idle rooms with a bot in each), then all talk (echo latency, talking CPU).
With `--second-burst`, N more callers join while the first N are still there, as the
probe of issue 12 did.

Figures per run: rooms served (and how many jobs livekit-server gave up: it offers a
job once, to the workers that say they are available, and never again, JOB_FAILED),
dispatch latencies p50/p99, memory per job (the worker's
process tree, RSS and PSS, minus its baseline, per served room: a process per job
shares the pages it forked with, which RSS counts once per job), CPU per idle and per
talking room (minus the baseline), echo latency, when the worker said it was full
(relative to the burst: livekit-agents' default load is the whole machine's CPU, so it
can be full before any job), its loop stalls, and the harness's and server's CPU, which
share the machine. The summary sets each system beside livekit-agents with default
options, as ratios, and says how many rooms each fitted before echo p99 passed
FITS_P99_MS. A system that never registers or never gets its bot into a room is
reported as not available, with the reason, and the run goes on.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

import anyio
import attrs
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from livekit import rtc

from actors.room import narrow_room_events
from benchmarks.echo import (
    KEY_ENV,
    REPO_ROOT,
    SATURATED,
    SECRET_ENV,
    add_run_arguments,
    cell,
    chosen_runs,
    config_text,
    machine,
    measure_each,
    percent,
    ratio,
    settle_seconds,
)
from benchmarks.process_tree import cpu_seconds, pss_bytes, rss_bytes
from supervisor.bench import (
    JOIN_TIMEOUT,
    LOST_AFTER,
    RECEIVE_FRAME_MS,
    RoomResult,
    bot_track,
    listen,
    percentile,
    send_bursts,
)
from supervisor.bench import SAMPLE_RATE as CALLER_RATE
from supervisor.config import config_toml
from supervisor.livekit_server.access import Credentials, join_token
from supervisor.livekit_server.server import LiveKitServer, free_port
from supervisor.process.rtc_shutdown import Closable, end_room, release_rtc

AGENTS_PYTHON = REPO_ROOT / ".venv-agents" / "bin" / "python"
REGISTER_TIMEOUT = 120.0
DISPATCH_TIMEOUT = 30.0
"""Seconds a caller waits for the bot (the issue's probe waited 30 s for the second burst)."""
STOP_TIMEOUT = 15.0
FITS_P99_MS = 500.0
CALLER = "caller"
REGISTERED = re.compile(r"\bregistered (?:as )?worker\b")
"""livekit-agents logs `registered worker`, the supervisor `[dispatch] registered as worker`
(and `not registered (why)` while it retries)."""
FULL = re.compile(r"full capacity|\[dispatch\] full:")
"""livekit-agents: `worker is at full capacity, marking as unavailable`; the supervisor:
`[dispatch] full: why`."""
JOB_FAILED = re.compile(r'failed to send job request.*"error": "([^"]+)"')
"""livekit-server's line for a room's job that no worker took. It offers a job once, to
workers reporting themselves available with a load under its own `agents.target_load`
(0.7), and never again: `no servers available` (none was), `no workers with sufficient
capacity` (the one offered said no), `no response from servers` (none answered in time)."""
STALL = re.compile(r"event loop (?:blocked|stalled) for ([\d.]+) ?(ms|s)\b")
"""livekit-agents' loop monitor (`blocked for 101ms`) and the supervisor's watchdog
(`stalled for 2.1 s`)."""
DISPATCH = {
    "enabled": True,
    "agent_name": "",  # automatic dispatch
    "max_rooms": 100,
    "load_threshold": 0.7,
    "idle_timeout_seconds": 30,
}
"""The supervisor's `[dispatch]` table, beside echo.py's config with no `[[rooms]]`."""


@attrs.frozen
class System:
    name: str
    agents_options: tuple[tuple[str, str], ...] | None = None
    """livekit-agents' worker with these AGENTS_ECHO_* settings (see agents_echo.py);
    None: the supervisor."""
    workers: int = 1
    """The supervisor's `--workers`: its processes serving jobs, each registered."""

    def command(self, config: Path) -> list[str]:
        if self.agents_options is None:
            return [sys.executable, "-m", "supervisor.cli", "run", str(config),
                    "--workers", str(self.workers)]
        return [str(AGENTS_PYTHON), "benchmarks/agents_echo.py", "start", "--drain-timeout", "5"]

    def environment(self, server: LiveKitServer) -> dict[str, str]:
        """Credentials in the variables both read (the supervisor's `api_key_env`
        names the agents CLI's own), never on the command line."""
        env = {
            **os.environ,
            "LIVEKIT_URL": server.url,
            KEY_ENV: server.api_key,
            SECRET_ENV: server.api_secret,
        }
        if self.agents_options is not None:
            env |= dict(self.agents_options) | {"AGENTS_ECHO_HTTP_PORT": str(free_port())}
        return env


OWN_LOAD = (("AGENTS_ECHO_LOAD", "worker"), ("AGENTS_ECHO_LOAD_THRESHOLD", "0.7"))
"""The supervisor's admission rule: its own CPU, not the machine's, against 0.7."""
SYSTEMS = {
    "agents": System("agents", ()),
    "agents-own-load": System("agents-own-load", OWN_LOAD),
    "agents-idle10": System("agents-idle10", (*OWN_LOAD, ("AGENTS_ECHO_IDLE_PROCESSES", "10"))),
    "agents-tuned": System("agents-tuned", (*OWN_LOAD, ("AGENTS_ECHO_EXECUTOR", "thread"))),
    "supervisor": System("supervisor"),
}
"""`agents-tuned` is what tuning found best here (10 rooms at once,
docs/benchmarks/runs/02-dispatch-issue-12.md): the own load, and every job a thread of
the worker (half the dispatch time of a process per job, a quarter of the memory); ten
warm processes instead of two were slower and dearer."""
BASE = "agents"
"""What every ratio is against: livekit-agents as a user gets it."""


@attrs.frozen
class Options:
    settle: float
    """Seconds from registration to the baseline: livekit-agents warms its idle processes."""
    idle: float
    """Seconds of each idle measurement (the baseline, and the rooms joined and silent)."""
    warmup: float
    """Seconds from the callers starting to talk to the CPU window."""
    window: float
    """Seconds of CPU measurement while every room talks."""
    second_burst: bool = False


class AgentsVenvError(RuntimeError):
    """`make agents-venv` failed: livekit-agents could not be installed here."""


def ensure_agents_venv() -> Path:
    """livekit-agents' venv, made once by `make agents-venv` (its pins would clash with
    this project's: it pins an older rtc SDK); seconds when it is already there."""
    done = subprocess.run(
        ["make", "-s", "agents-venv"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not AGENTS_PYTHON.exists():
        raise AgentsVenvError(f"make agents-venv exited {done.returncode}: {done.stderr[-2000:]}")
    return AGENTS_PYTHON


def agents_versions() -> dict[str, str]:
    """livekit-agents' and its rtc SDK's versions, as installed in its venv."""
    script = (
        "import importlib.metadata as m; print(m.version('livekit-agents'), m.version('livekit'))"
    )
    out = subprocess.run(
        [str(AGENTS_PYTHON), "-c", script], capture_output=True, text=True, check=True
    )
    agents, rtc_sdk = out.stdout.split()
    return {"livekit-agents": agents, "livekit (agents venv)": rtc_sdk}


@attrs.define
class Worker:
    """A running worker process and its log, each line with the time it arrived."""

    process: Process
    ready: re.Pattern[str] = REGISTERED
    """The line that says it serves: registered as an agent worker, by default."""
    log: list[tuple[float, str]] = attrs.field(factory=list)
    registered: bool = False
    ended: bool = False
    """Its output closed: it exited (a config it refuses ends it at once)."""

    async def read(self) -> None:
        assert self.process.stdout is not None
        buffer = ""
        async for chunk in TextReceiveStream(self.process.stdout, errors="replace"):
            buffer += chunk
            *lines, buffer = buffer.split("\n")
            for line in lines:
                self.log.append((time.perf_counter(), line))
                if self.ready.search(line):
                    self.registered = True
        self.ended = True

    def times(self, pattern: re.Pattern[str], since: float) -> list[float]:
        """When lines matching `pattern` arrived, in seconds after `since` (negative: before)."""
        return [round(at - since, 2) for at, line in self.log if pattern.search(line)]

    def stalls_ms(self, since: float) -> list[float]:
        found = []
        for at, line in self.log:
            if at >= since and (match := STALL.search(line)):
                found.append(float(match[1]) * (1 if match[2] == "ms" else 1000))
        return found

    def tail(self, lines: int = 15) -> str:
        return "\n".join(line[:400] for _, line in self.log[-lines:])


class Launchable(Protocol):
    """A worker a harness starts: this harness's systems, the conversations harness's."""

    def command(self, config: Path) -> list[str]: ...

    def environment(self, server: LiveKitServer) -> dict[str, str]: ...


@asynccontextmanager
async def worker_process(
    system: Launchable,
    config: Path,
    server: LiveKitServer,
    *,
    ready: re.Pattern[str] = REGISTERED,
    stdin: int = subprocess.DEVNULL,
) -> AsyncIterator[Worker]:
    """The worker, in a process group of its own: livekit-agents' job processes are
    children of its forkserver, and a worker stopped by SIGTERM may leave them behind,
    so the group is killed after the worker's drain. `ready` is its line saying it
    serves; `stdin` a pipe for a worker told of rooms there."""
    process = await anyio.open_process(
        system.command(config), cwd=REPO_ROOT, env=system.environment(server),
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = Worker(process, ready)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(worker.read)
        try:
            yield worker
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    with anyio.move_on_after(STOP_TIMEOUT):
                        await process.wait()
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                tasks.cancel_scope.cancel()
    with anyio.CancelScope(shield=True):
        await process.aclose()


@attrs.define
class Caller:
    """One participant whose joining creates a room, and what it measured."""

    room: str
    result: RoomResult
    connected_at: float | None = None
    track_s: float | None = None
    """From connected to subscribed to the bot's audio track."""
    heard_s: float | None = None
    """From connected to the first echo heard (the caller talks from the start)."""
    talk_from: float | None = None
    dispatch_done: bool = False
    talk_done: bool = False

    def talk_latencies_ms(self) -> tuple[list[float], int]:
        """Echo latencies of the bursts sent while every room talked, and how many were lost."""
        pairs = [
            (sent, latency)
            for sent, latency in zip(self.result.sent, self.result.latencies(), strict=True)
            if self.talk_from is not None and sent >= self.talk_from
        ]
        heard = [latency * 1000 for _, latency in pairs if latency is not None]
        return heard, len(pairs) - len(heard)


@attrs.define
class Plan:
    """What every caller of a burst does after its dispatch: talk when `talk` is set
    (for `talk_seconds`; 0: never), and leave when `leave` is."""

    talk_seconds: float
    talk: anyio.Event = attrs.field(factory=anyio.Event)
    leave: anyio.Event = attrs.field(factory=anyio.Event)


async def agent_identity(room: rtc.Room, *, any_kind: bool = False) -> str:
    """The identity of the first agent participant (the dispatched bot) in the room;
    with `any_kind`, of the first other participant at all (a bot that joins with a
    token of its own, in a room where it is the caller's only company)."""
    found: list[str] = []
    joined = anyio.Event()

    def on_connected(participant: rtc.RemoteParticipant) -> None:
        if any_kind or participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            found.append(participant.identity)
            joined.set()

    room.on("participant_connected", on_connected)
    try:
        for participant in room.remote_participants.values():
            on_connected(participant)
        await joined.wait()
        return found[0]
    finally:
        room.off("participant_connected", on_connected)


async def _hear_bot(room: rtc.Room, caller: Caller, media: list[Closable]) -> None:
    """Wait for the bot's track, then record every onset of its audio until cancelled."""
    assert caller.connected_at is not None
    with anyio.move_on_after(DISPATCH_TIMEOUT):
        track = await bot_track(room, await agent_identity(room))
        caller.track_s = anyio.current_time() - caller.connected_at
    if caller.track_s is None:
        caller.result.error = f"no bot within {DISPATCH_TIMEOUT:g} s"
        return
    stream = rtc.AudioStream(
        track, sample_rate=CALLER_RATE, num_channels=1, frame_size_ms=RECEIVE_FRAME_MS
    )
    media.insert(0, stream)
    await listen(stream, caller.result)


async def _talk_until_heard(source: rtc.AudioSource, caller: Caller) -> None:
    """Once the bot's track is there, tone bursts, a period at a time, until the first
    echo comes back (or none can). Talking before that could not be echoed, and 50
    callers generating audio during their joins starve this process's loop until the
    rtc SDK panics (`timed out waiting for ReadyForRoomEventRequest`)."""
    assert caller.connected_at is not None
    bot_or_none = lambda: caller.track_s is not None or bool(caller.result.error)  # noqa: E731
    await _until(bot_or_none, DISPATCH_TIMEOUT + 1)
    deadline = caller.connected_at + DISPATCH_TIMEOUT + LOST_AFTER
    answered_or_never = lambda: (  # noqa: E731 - no bot: nothing will answer
        bool(caller.result.onsets or caller.result.error) or anyio.current_time() >= deadline
    )
    await send_bursts(source, caller.result, answered_or_never)
    if caller.result.onsets:
        caller.heard_s = caller.result.onsets[0] - caller.connected_at


async def call(credentials: Credentials, caller: Caller, plan: Plan) -> None:
    """Join (creating the room), talk until the bot answers, then follow `plan`; never
    raises for the room's own failure (it is recorded), so one room does not end the run."""
    room = rtc.Room()
    media: list[Closable] = []
    try:
        async with anyio.create_task_group() as tasks:
            try:
                with anyio.fail_after(JOIN_TIMEOUT):
                    began = anyio.current_time()
                    token = join_token(credentials, caller.room, CALLER)
                    await room.connect(credentials.url, token)
                narrow_room_events(room)  # not woken by the other callers' capture callbacks
                caller.connected_at = anyio.current_time()
                caller.result.join_s = caller.connected_at - began
                source = rtc.AudioSource(CALLER_RATE, 1)
                media.append(source)
                track = rtc.LocalAudioTrack.create_audio_track("caller-mic", source)
                publish = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
                await room.local_participant.publish_track(track, publish)
                tasks.start_soon(_hear_bot, room, caller, media)
                await _talk_until_heard(source, caller)
            finally:
                caller.dispatch_done = True
            if plan.talk_seconds > 0 and caller.track_s is not None:
                await plan.talk.wait()
                caller.talk_from = anyio.current_time()
                talk_until = caller.talk_from + plan.talk_seconds
                await send_bursts(source, caller.result, lambda: anyio.current_time() >= talk_until)
                await anyio.sleep(LOST_AFTER)  # the last burst's echo may still be on its way
            caller.talk_done = True
            await plan.leave.wait()
            tasks.cancel_scope.cancel()
    except Exception as err:  # noqa: BLE001 - a room's failure is a measurement, not a crash
        while isinstance(err, ExceptionGroup) and len(err.exceptions) == 1:
            err = err.exceptions[0]  # the task group's one failure says what happened
        caller.result.error = caller.result.error or f"{type(err).__name__}: {err}"
    finally:
        caller.dispatch_done = caller.talk_done = True
        with anyio.CancelScope(shield=True):
            await end_room(room, *media)


def _size(server: LiveKitServer) -> int:
    return server.log_path.stat().st_size


async def _until(done: Callable[[], bool], timeout: float) -> None:
    """Poll `done`: what it reads (other processes' logs, the SDK's state) sets no event."""
    with anyio.move_on_after(timeout):
        while not done():  # noqa: ASYNC110
            await anyio.sleep(0.1)


def _ms_percentiles(seconds: Sequence[float | None]) -> tuple[float | None, float | None]:
    values = [value * 1000 for value in seconds if value is not None]
    return percentile(values, 50), percentile(values, 99)


@attrs.define
class Meter:
    """CPU and memory of the worker's process tree, the server's and this process's own
    (the callers)."""

    worker: int
    server: int

    def cpu(self) -> dict[str, float]:
        return {
            "worker": cpu_seconds(self.worker),
            "server": cpu_seconds(self.server),
            "harness": sum(os.times()[:2]),
            "at": time.perf_counter(),
        }

    async def cores(self, seconds: float) -> dict[str, float]:
        """Cores each used over the next `seconds`."""
        before = self.cpu()
        await anyio.sleep(seconds)
        after = self.cpu()
        elapsed = after["at"] - before["at"]
        names = ("worker", "server", "harness")
        return {name: (after[name] - before[name]) / elapsed for name in names}

    def memory_mb(self) -> tuple[float, float]:
        return rss_bytes(self.worker) / 1e6, pss_bytes(self.worker) / 1e6


def _burst_figures(callers: Sequence[Caller], prefix: str = "") -> dict[str, Any]:
    served = [caller for caller in callers if caller.track_s is not None]
    track_p50, track_p99 = _ms_percentiles([caller.track_s for caller in served])
    heard_p50, heard_p99 = _ms_percentiles([caller.heard_s for caller in served])
    errors = sorted({caller.result.error for caller in callers if caller.result.error})
    return {
        f"{prefix}joined": sum(caller.connected_at is not None for caller in callers),
        f"{prefix}served": len(served),
        f"{prefix}track_p50_ms": track_p50,
        f"{prefix}track_p99_ms": track_p99,
        f"{prefix}heard_p50_ms": heard_p50,
        f"{prefix}heard_p99_ms": heard_p99,
        f"{prefix}errors": errors,
    }


async def measure(
    system: System, rooms: int, server: LiveKitServer, options: Options, workdir: Path
) -> dict[str, Any]:
    """One system dispatched `rooms` rooms at once: the figures of one run, or why the
    system was not available."""
    result: dict[str, Any] = {"system": system.name, "rooms": rooms}
    config = workdir / f"{system.name}-{rooms}.toml"
    config.write_text(config_text(server, (), free_port()) + config_toml({"dispatch": DISPATCH}))
    result["load_1m"] = os.getloadavg()[0]
    async with worker_process(system, config, server) as worker:
        try:
            await _dispatched(system, rooms, server, options, worker, result)
        finally:
            (workdir / f"{system.name}-{rooms}.log").write_text(worker.tail(len(worker.log)))
    return result


async def _dispatched(
    system: System,
    rooms: int,
    server: LiveKitServer,
    options: Options,
    worker: Worker,
    result: dict[str, Any],
) -> None:
    """The measurements of `measure`, into `result`, with the worker running."""
    assert server.pid is not None
    credentials = Credentials(server.url, server.api_key, server.api_secret)
    await _until(lambda: worker.registered or worker.ended, REGISTER_TIMEOUT)
    if not worker.registered:
        state = "exited" if worker.ended else f"not within {REGISTER_TIMEOUT:g} s"
        result["unavailable"] = f"never registered ({state}): {worker.tail(1)}"
        result["log_tail"] = worker.tail()
        return
    meter = Meter(worker.process.pid, server.pid)
    await anyio.sleep(options.settle)
    baseline = await meter.cores(options.idle)
    base_rss, base_pss = meter.memory_mb()
    talk_seconds = options.warmup + options.window + 1.0
    names = [f"{system.name}-{rooms}-{index}" for index in range(rooms)]
    first = [Caller(name, RoomResult(name)) for name in names]
    second = [Caller(f"{name}-b", RoomResult(f"{name}-b")) for name in names]
    plan, late_plan = Plan(talk_seconds), Plan(0.0)
    burst_at = time.perf_counter()
    log_at = server.log_path.stat().st_size
    async with anyio.create_task_group() as tasks:
        for caller in first:
            tasks.start_soon(call, credentials, caller, plan)
        limit = JOIN_TIMEOUT + DISPATCH_TIMEOUT + 2 * LOST_AFTER + 5
        await _until(lambda: all(caller.dispatch_done for caller in first), limit)
        result |= _burst_figures(first)
        result["job_failures"] = job_failures(server.log_path, log_at, _size(server))
        result["burst_s"] = round(time.perf_counter() - burst_at, 2)
        served = result["served"]
        if served:
            await anyio.sleep(settle_seconds(rooms))
            idle = await meter.cores(options.idle)
            rss, pss = meter.memory_mb()
            plan.talk.set()
            await anyio.sleep(options.warmup)
            talking = await meter.cores(options.window)
            await _until(lambda: all(caller.talk_done for caller in first), talk_seconds + 10)
            result |= _room_figures(first, served, baseline, idle, talking)
            result |= {
                "baseline_rss_mb": base_rss, "baseline_pss_mb": base_pss,
                "rss_per_job_mb": (rss - base_rss) / served,
                "pss_per_job_mb": (pss - base_pss) / served,
            }
        else:
            result["unavailable"] = f"no room got its bot within {DISPATCH_TIMEOUT:g} s"
            result["log_tail"] = worker.tail()
        if options.second_burst:
            for caller in second:
                tasks.start_soon(call, credentials, caller, late_plan)
            log_at = _size(server)
            await _until(lambda: all(caller.dispatch_done for caller in second), limit)
            result |= _burst_figures(second, prefix="second_")
            result["second_job_failures"] = job_failures(server.log_path, log_at, _size(server))
        plan.leave.set()
        late_plan.leave.set()
    result["full_at_s"] = worker.times(FULL, burst_at)
    result["baseline_full"] = any(at < 0 for at in result["full_at_s"])
    stalls = worker.stalls_ms(burst_at)
    result["stalls"] = len(stalls)
    result["stall_max_ms"] = max(stalls, default=None)


def job_failures(server_log: Path, start: int, end: int) -> dict[str, int]:
    """Jobs livekit-server gave up between two offsets of its log, by its reason."""
    with server_log.open("rb") as log:
        log.seek(start)
        text = log.read(end - start).decode(errors="replace")
    reasons = [match[1] for match in JOB_FAILED.finditer(text)]
    return {reason: reasons.count(reason) for reason in sorted(set(reasons))}


def _room_figures(
    callers: Sequence[Caller],
    served: int,
    baseline: dict[str, float],
    idle: dict[str, float],
    talking: dict[str, float],
) -> dict[str, Any]:
    """CPU per room over the worker's baseline, and the echo while every room talked."""
    latencies: list[float] = []
    lost = sent = 0
    for caller in callers:
        if caller.track_s is not None:
            heard, missed = caller.talk_latencies_ms()
            latencies += heard
            lost += missed
            sent += len(heard) + missed
    used = talking["worker"] + talking["server"] + talking["harness"]
    return {
        "baseline_cores": baseline["worker"],
        "idle_cpu_per_room": (idle["worker"] - baseline["worker"]) / served,
        "talk_cpu_per_room": (talking["worker"] - baseline["worker"]) / served,
        "echo_p50_ms": percentile(latencies, 50),
        "echo_p99_ms": percentile(latencies, 99),
        "bursts_sent": sent,
        "lost": lost,
        "harness_cores": talking["harness"],
        "server_cores": talking["server"],
        "saturated": used > SATURATED * (os.cpu_count() or 1),
    }


def _served(r: dict[str, Any], prefix: str = "") -> str:
    """Rooms served of those created, how many the server gave up dispatching, and how
    many callers could not even join (the machine, not the worker)."""
    given_up = sum(r.get(prefix + "job_failures", {}).values())
    unjoined = r["rooms"] - r.get(prefix + "joined", r["rooms"])
    return (
        f"{r.get(prefix + 'served', 0)}/{r['rooms']}"
        + (f" ({given_up} given up)" if given_up else "")
        + (f" ({unjoined} never joined)" if unjoined else "")
    )


def fits(results: Sequence[dict[str, Any]], system: str) -> int | None:
    """The most rooms a run of `system` served, every one, with echo p99 within FITS_P99_MS."""
    passing = [
        r["rooms"] for r in results
        if r["system"] == system and r.get("served") == r["rooms"]
        and r.get("echo_p99_ms") is not None and r["echo_p99_ms"] <= FITS_P99_MS
    ]
    return max(passing, default=None)


def format_markdown(results: Sequence[dict[str, Any]]) -> str:
    """Every run as a row, the ratios against livekit-agents' defaults, what each fitted,
    the second bursts, and the systems that were not available: what a run's page records."""
    rows = [
        "| system | rooms | served | to track p50 ms | p99 ms | to echo heard p50 ms | p99 ms | "
        "baseline RSS MB | RSS MB/job | PSS MB/job | idle CPU %/room | talking CPU %/room | "
        "echo p50 ms | echo p99 ms | lost | full at s | loop stalls (max ms) | harness cores | "
        "server cores | load 1m |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    available = [r for r in results if r.get("served")]
    for r in available:
        starved = " (saturated)" if r.get("saturated") else ""
        full = ", ".join(f"{at:+g}" for at in r["full_at_s"][:4]) or "-"
        stalls = f"{r['stalls']} ({cell(r['stall_max_ms'], 0)})" if r["stalls"] else "0"
        rows.append(
            f"| {r['system']} | {r['rooms']}{starved} | {_served(r)} | "
            f"{cell(r['track_p50_ms'], 0)} | {cell(r['track_p99_ms'], 0)} | "
            f"{cell(r['heard_p50_ms'], 0)} | {cell(r['heard_p99_ms'], 0)} | "
            f"{cell(r['baseline_rss_mb'], 0)} | {cell(r['rss_per_job_mb'])} | "
            f"{cell(r['pss_per_job_mb'])} | "
            f"{percent(r['idle_cpu_per_room'])} | {percent(r['talk_cpu_per_room'])} | "
            f"{cell(r['echo_p50_ms'], 0)} | {cell(r['echo_p99_ms'], 0)} | "
            f"{r['lost']}/{r['bursts_sent']} | "
            f"{full} | {stalls} | {cell(r['harness_cores'], 2)} | {cell(r['server_cores'], 2)} | "
            f"{cell(r['load_1m'])} |"
        )
    by_key = {(r["system"], r["rooms"]): r for r in available}
    ratio_rows = [
        "",
        f"| system | rooms | to track p50 vs {BASE} | to echo p50 vs {BASE} | RSS/job vs {BASE} | "
        f"PSS/job vs {BASE} | idle CPU/room vs {BASE} | talking CPU/room vs {BASE} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in available:
        base = by_key.get((BASE, r["rooms"]))
        if r["system"] == BASE or base is None:
            continue
        ratio_rows.append(
            f"| {r['system']} | {r['rooms']} | "
            f"{ratio(r['track_p50_ms'], base['track_p50_ms'])} | "
            f"{ratio(r['heard_p50_ms'], base['heard_p50_ms'])} | "
            f"{ratio(r['rss_per_job_mb'], base['rss_per_job_mb'])} | "
            f"{ratio(r['pss_per_job_mb'], base['pss_per_job_mb'])} | "
            f"{ratio(r['idle_cpu_per_room'], base['idle_cpu_per_room'])} | "
            f"{ratio(r['talk_cpu_per_room'], base['talk_cpu_per_room'])} |"
        )
    systems = list(dict.fromkeys(r["system"] for r in results))
    fitted = [
        f"- {name}: {fits(results, name) or 'none'} of the room counts run"
        for name in systems if any(r["system"] == name and r.get("served") for r in results)
    ]
    seconds = [
        f"| {r['system']} | {r['rooms']} | {_served(r, 'second_')} | "
        f"{cell(r['second_track_p50_ms'], 0)} | "
        f"{cell(r['second_track_p99_ms'], 0)} | {cell(r['second_heard_p50_ms'], 0)} |"
        for r in results if "second_served" in r
    ]
    missing = [
        f"- {r['system']} at {r['rooms']} rooms: not available ({r['unavailable']}"
        + (f"; served {_served(r)})" if "served" in r else ")")
        for r in results if "unavailable" in r
    ]
    errors = [
        f"- {r['system']} at {r['rooms']} rooms: {'; '.join(r['errors'])}"
        for r in results if r.get("errors")
    ]
    sections = [rows if available else [], ratio_rows if len(ratio_rows) > 3 else []]
    if fitted:
        sections.append(
            ["", f"Rooms fitted, every room served and echo p99 <= {FITS_P99_MS:g} ms:", *fitted]
        )
    if seconds:
        sections.append([
            "",
            "| system | rooms | second burst served | to track p50 ms | p99 ms | "
            "to echo heard p50 ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *seconds,
        ])
    if missing:
        sections.append(["", *missing])
    if errors:
        sections.append(["", "Rooms that failed:", *errors])
    return "\n".join(line for section in sections for line in section)


async def run(
    rooms: Sequence[int],
    systems: Sequence[System],
    options: Options,
    json_path: Path | None,
    logs: Path | None = None,
) -> list[dict[str, Any]]:
    """Every (rooms, system) pair in turn against one server, smallest load first;
    each worker's config and log go to `logs` (by default a temporary folder)."""
    described = machine()
    if any(system.agents_options is not None for system in systems):
        ensure_agents_venv()
        described |= {"agents": agents_versions()}
    results = await measure_each(
        rooms,
        systems,
        lambda system, count, server, workdir: measure(system, count, server, options, workdir),
        described,
        json_path,
        logs,
    )
    print(format_markdown(results), flush=True)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, "1,10,50", "agents,agents-tuned,supervisor", SYSTEMS)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--idle", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--second-burst", action="store_true",
                        help="after the talking, as many rooms again join at once")
    parser.add_argument("--logs", type=Path, metavar="DIR",
                        help="keep each worker's config and log here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rooms, systems = chosen_runs(args, SYSTEMS)
    options = Options(args.settle, args.idle, args.warmup, args.window, args.second_burst)
    try:
        anyio.run(run, rooms, systems, options, args.json, args.logs, backend="asyncio")
    finally:
        release_rtc()  # the callers' SDK runtime, before the interpreter's exit (see rtc_shutdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
