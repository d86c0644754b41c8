"""`supervisor run CONFIG --workers N`: one worker process per core, each serving a shard.

Python runs one core per process, so a host with many cores runs N workers. A room's
shard is `crc32(name) % N`: stable across runs, restarts and processes (Python's
`hash` is salted per process), so the same room always lands on the same worker and
a SIGHUP that adds or removes rooms never moves the others. Each worker is the
single-process supervisor restricted to its shard, with its own metrics port
(`metrics.listen`'s port + the worker's index).

The parent does no room work. It starts the embedded livekit-server once (when it
applies) and hands its credentials to the workers through the environment variables
the config names, in the child's environment only: never on a command line, never in
a log. A worker then finds the server listening and uses it instead of starting its
own. The parent restarts a worker that dies (any exit it did not ask for) with
exponential backoff and jitter, and the new worker rejoins its rooms; it polls each
worker's `/healthz` (answered off the worker's event loop) and kills a worker whose
loop stays stalled for `[watchdog] restart_after_seconds`, which is then restarted
like any dead worker, while the other workers' rooms go on; SIGINT/SIGTERM
are forwarded (the workers drain; past the shutdown timeout plus a margin they are
killed), a second one kills them at once, and SIGHUP is forwarded (each worker reloads
and keeps its shard). Workers run in their own sessions, so a terminal's Ctrl-C
reaches them once, through the parent, and they die with the parent however it ends:
a cancelled parent kills them, and a worker that sees its parent gone (even killed
with SIGKILL) drains and exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anyio
import attrs
from anyio.abc import Process, TaskGroup, TaskStatus
from yarl import URL

from actors import Backoff
from supervisor.config import Config, ConfigError, LiveKitConfig, MetricsConfig
from supervisor.livekit_server.access import Credentials
from supervisor.livekit_server.source import livekit_credentials
from supervisor.process.recycle import (
    DUE,
    READY,
    RELEASE,
    RELEASED,
    REPORT_FD_ENV,
    SUCCEEDS_ENV,
    TAKE,
    describe,
)

log = logging.getLogger("supervisor")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PARENT_PID_ENV = "SUPERVISOR_WORKER_PARENT_PID"
"""Set in each worker's environment: the pid it watches, to drain and exit when it is gone."""
DRAIN_MARGIN_SECONDS = 5.0
"""A stopping worker gets the rooms' shutdown timeout plus this before it is killed."""
MIN_RESTART_DELAY_SECONDS = 0.5
"""A worker that crashes at start must not respawn in a tight loop, whatever the config."""
PARENT_POLL_SECONDS = 0.5
"""How soon a worker notices that its parent is gone."""
HEALTH_POLL_SECONDS = 1.0
"""At most this long between two polls of a worker's /healthz (less for a short stall limit)."""
SUCCESSOR_READY_SECONDS = 60.0
"""A recycled worker's successor not serving this long after its start is tried again."""
RELEASE_SECONDS = 30.0
"""How long a recycled worker may take to leave its configured rooms to its successor
(rooms leave `[limits] join_concurrency` at a time)."""
HEALTH_TIMEOUT_SECONDS = 2.0
"""A worker's /healthz unanswered this long counts as stalled: something holds its
interpreter (a C call that keeps the GIL), not only its event loop."""


def shard_of(room: str, count: int) -> int:
    """The index of the worker, out of `count`, that serves `room`."""
    return zlib.crc32(room.encode("utf-8")) % count


@attrs.frozen
class Shard:
    """Worker `index` of `count`; the default is the whole set (single-process mode)."""

    index: int = 0
    count: int = 1
    configured: bool = True
    """False once a successor took this worker's configured rooms (`supervisor.process.recycle`)."""

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ConfigError(f"worker index {self.index}: expected 0 <= index < {self.count}")

    def owns(self, room: str) -> bool:
        return self.configured and shard_of(room, self.count) == self.index

    def metrics(self, metrics: MetricsConfig) -> MetricsConfig:
        """This worker's metrics address: the configured port plus its index."""
        port = metrics.port + self.index
        if port > 65535:
            raise ConfigError(
                f"metrics.listen = {metrics.listen!r}: expected a port <= {65535 - self.index} "
                f"so that worker {self.index} can listen on port + {self.index}"
            )
        return attrs.evolve(metrics, listen=f"{metrics.host}:{port}")  # keeps the other keys

    def of(self, config: Config) -> Config:
        """The part of `config` this worker serves: its rooms and its metrics address
        (and the names of the rooms its siblings serve)."""
        rooms = tuple(room for room in config.rooms if self.owns(room.name))
        named = config.sibling_rooms | {room.name for room in config.rooms}
        siblings = named - {room.name for room in rooms}
        return attrs.evolve(
            config, rooms=rooms, metrics=self.metrics(config.metrics), sibling_rooms=siblings
        )


def check_ports_free(config: Config, count: int) -> None:
    """Fail at start, naming the setting, when a worker's metrics port is taken: a
    worker that cannot listen exits at once, and the parent would restart it for ever."""
    for index in range(count):
        metrics = Shard(index, count).metrics(config.metrics)
        family = socket.AF_INET6 if ":" in metrics.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener
            try:
                probe.bind((metrics.host, metrics.port))
            except OSError as err:
                raise metrics.cannot_listen(err) from err


def start_worker(index: int, count: int, config: Config) -> Shard:
    """Set this process up as worker `index` of `count`; return its shard (a recycled
    worker's successor takes its configured rooms only when told, `supervisor.process.recycle`)."""
    shard = Shard(index, count, configured=SUCCEEDS_ENV not in os.environ)
    _tag_logs(f"[worker {index}] ")
    _die_with_parent()
    mine = shard.of(config)
    log.info(
        "worker %d/%d (pid %d) serves %d of %d room(s): %s; its metrics address: %s",
        index,
        count,
        os.getpid(),
        len(mine.rooms),
        len(config.rooms),
        ", ".join(room.name for room in mine.rooms) or "none",
        mine.metrics.listen,
    )
    return shard


class _Tagged(logging.Formatter):
    """Prefixes another formatter's lines, so the workers' shared stderr stays readable."""

    def __init__(self, inner: logging.Formatter, tag: str) -> None:
        super().__init__()
        self.inner = inner
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        return self.tag + self.inner.format(record)


def _tag_logs(tag: str) -> None:
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_Tagged(handler.formatter or logging.Formatter(), tag))


def _die_with_parent() -> None:
    """Drain (one SIGTERM to ourselves) when the parent is gone, however it ended.

    A thread polls the parent pid rather than asking the kernel (prctl's
    PR_SET_PDEATHSIG): the kernel may signal again at each exit of a thread the worker
    is reparented to, so a multi-threaded parent's death can arrive as several SIGTERMs,
    the second of which would stop the worker at once instead of draining it. A
    parent already gone when this runs makes the worker exit before it serves anything.
    """
    parent = int(os.environ.get(PARENT_PID_ENV) or os.getppid())

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        log.error("the parent supervisor (pid %d) is gone: draining", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    if os.getppid() != parent:
        log.error("the parent supervisor (pid %d) is gone: exiting", parent)
        raise SystemExit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_environment(livekit: LiveKitConfig, credentials: Credentials) -> dict[str, str]:
    """The workers' environment: ours plus the server's credentials under the names the
    config gives them (the embedded server's are generated, so only this carries them)."""
    same_name = livekit.api_key_env == livekit.api_secret_env
    if same_name and credentials.api_key != credentials.api_secret:
        raise ConfigError(
            f"livekit.api_secret_env = {livekit.api_secret_env!r}: expected a variable other "
            "than livekit.api_key_env, to hand the workers the embedded server's credentials"
        )
    return {
        **os.environ,
        livekit.api_key_env: credentials.api_key,
        livekit.api_secret_env: credentials.api_secret,
        PARENT_PID_ENV: str(os.getpid()),
    }


def worker_command(path: Path, shard: Shard, log_level: str) -> list[str]:
    return [
        sys.executable, "-m", "supervisor.cli", "--log-level", log_level,
        "run", str(path.resolve()),
        "--worker-index", str(shard.index), "--worker-count", str(shard.count),
    ]  # fmt: skip


def describe_exit(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


async def _stalled(session: aiohttp.ClientSession, url: URL) -> str | None:
    """What a worker's /healthz says is wrong with its event loop; None: nothing (or
    nobody listening yet)."""
    try:
        async with session.get(url) as response:
            if response.status == 503:
                return (await response.text()).strip()
            return None
    except TimeoutError:
        return f"{url} did not answer within {HEALTH_TIMEOUT_SECONDS:g} s"
    except aiohttp.ClientError:
        return None


def _send(process: Process, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signum)


@attrs.define(eq=False)
class _Worker:
    """One worker process of a slot, and what it reported (`supervisor.process.recycle`)."""

    shard: Shard
    process: Process
    reports: int
    """The read end of its report pipe."""
    started_at: float
    ready: anyio.Event = attrs.field(factory=anyio.Event)
    due: anyio.Event = attrs.field(factory=anyio.Event)
    released: anyio.Event = attrs.field(factory=anyio.Event)
    exited: anyio.Event = attrs.field(factory=anyio.Event)
    code: int = 0
    holds_port: anyio.Event = attrs.field(factory=anyio.Event)
    """Set once the slot's metrics port is this worker's: its stall watch starts then."""
    watch: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    """Its stall watch, cancelled once its port is its successor's."""


async def either(*events: anyio.Event) -> None:
    """Return as soon as one of `events` is set."""
    async with anyio.create_task_group() as tasks:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tasks.cancel_scope.cancel()

        for event in events:
            tasks.start_soon(wait, event)


@attrs.define
class WorkerPool:
    """N worker slots kept running until a stop signal: a slot's worker is restarted
    when it dies and replaced, make before break, when it reports itself due
    (`supervisor.process.recycle`)."""

    path: Path
    config: Config
    count: int
    log_level: str
    env: dict[str, str] = attrs.field(repr=False)
    workers: set[_Worker] = attrs.field(factory=set)
    stopping: anyio.Event = attrs.field(factory=anyio.Event)
    stop_signal: signal.Signals = signal.SIGTERM
    clean: bool = True
    recycled: int = 0
    one_recycle: anyio.Lock = attrs.field(factory=anyio.Lock)
    """Successors start one at a time: workers that reach their bound together (they
    share the load) would otherwise start at once, on the cores their rooms use."""

    @property
    def backoff(self) -> Backoff:
        sv = self.config.supervision
        initial = max(sv.backoff_initial_seconds, MIN_RESTART_DELAY_SECONDS)
        return Backoff(initial=initial, maximum=max(sv.backoff_max_seconds, initial), jitter=0.2)

    @property
    def drain_deadline(self) -> float:
        """How long a draining worker may take before it is killed."""
        deadline = self.config.supervision.shutdown_timeout_seconds + DRAIN_MARGIN_SECONDS
        if self.config.dispatch.enabled:  # its jobs may run on first
            deadline += self.config.dispatch.drain_seconds
        return deadline

    async def keep_running(self, index: int) -> None:
        """Run slot `index`'s worker until the pool stops: restart it whenever it dies,
        replace it whenever it is due.

        Backoff counts the restarts of this slot; a worker that ran longer than the
        supervision window starts over from the initial delay.
        """
        shard = Shard(index, self.count)
        attempt = 0
        async with anyio.create_task_group() as slot:
            current: _Worker = await slot.start(self._run, shard, None)
            while True:
                await either(current.exited, current.due)
                if current.due.is_set() and not current.exited.is_set():
                    if self.stopping.is_set():
                        await current.exited.wait()
                    else:
                        async with self.one_recycle:
                            current = await self._recycle(slot, current)
                    continue
                if self.stopping.is_set():
                    return
                ran = anyio.current_time() - current.started_at
                attempt = 1 if ran > self.config.supervision.within_seconds else attempt + 1
                delay = self.backoff.delay(attempt, random.random)
                log.error(
                    "worker %d (pid %d) died after %.1f s (%s): restart %d in %.1f s",
                    index, current.process.pid, ran, describe_exit(current.code), attempt, delay,
                )  # fmt: skip
                with anyio.move_on_after(delay):
                    await self.stopping.wait()
                if self.stopping.is_set():
                    return
                current = await slot.start(self._run, shard, None)

    async def _recycle(self, slot: TaskGroup, old: _Worker) -> _Worker:
        """Replace `old`, which is due: its successor serves before it drains.

        The successor registers for jobs while the old worker serves on; then the old one
        lets its configured rooms and metrics port go (`RELEASE`), the successor takes
        them (`TAKE`) and the old one drains. A successor that does not report ready
        within `SUCCESSOR_READY_SECONDS`, or dies, is killed and tried again with backoff
        while the old worker serves on; the old worker is returned as it is when it dies
        meanwhile or the pool stops.
        """
        if old.exited.is_set() or self.stopping.is_set():  # while waiting for its turn
            return old
        index = old.shard.index
        attempt = 0
        while True:
            new: _Worker = await slot.start(self._run, old.shard, old.process.pid)
            with anyio.move_on_after(SUCCESSOR_READY_SECONDS):
                await either(new.ready, new.exited, old.exited, self.stopping)
            if new.ready.is_set() and not new.exited.is_set():
                break
            if self.stopping.is_set():
                return old
            if old.exited.is_set():  # died meanwhile: the slot is the successor's, all of it
                if not new.exited.is_set():
                    _send(new.process, TAKE)
                    new.holds_port.set()
                    return new
                return old
            attempt += 1
            delay = self.backoff.delay(attempt, random.random)
            log.error(
                "worker %d's successor (pid %d) did not serve within %g s (%s): pid %d goes "
                "on; another successor in %.1f s",
                index, new.process.pid, SUCCESSOR_READY_SECONDS,
                describe_exit(new.code) if new.exited.is_set() else "no ready report",
                old.process.pid, delay,
            )  # fmt: skip
            _send(new.process, signal.SIGKILL)
            await new.exited.wait()
            with anyio.move_on_after(delay):
                await either(old.exited, self.stopping)
            if old.exited.is_set() or self.stopping.is_set():
                return old
        old.watch.cancel()  # its port is about to be the successor's
        _send(old.process, RELEASE)
        with anyio.move_on_after(RELEASE_SECONDS):
            await either(old.released, old.exited)
        if not old.released.is_set():
            log.warning(
                "worker %d (pid %d) did not let go of its configured rooms within %g s: "
                "its successor (pid %d) takes them anyway",
                index, old.process.pid, RELEASE_SECONDS, new.process.pid,
            )  # fmt: skip
        _send(new.process, TAKE)
        new.holds_port.set()
        log.info(
            "worker %d (pid %d) serves: its predecessor (pid %d) drains",
            index, new.process.pid, old.process.pid,
        )  # fmt: skip
        _send(old.process, signal.SIGTERM)
        self.recycled += 1
        slot.start_soon(self._retire, old)
        return new

    async def _retire(self, old: _Worker) -> None:
        """Wait for a replaced worker's drain; kill it past the drain deadline."""
        with anyio.move_on_after(self.drain_deadline):
            await old.exited.wait()
        if not old.exited.is_set():
            log.warning(
                "worker %d's predecessor (pid %d) still draining after %g s: killing it",
                old.shard.index, old.process.pid, self.drain_deadline,
            )  # fmt: skip
            _send(old.process, signal.SIGKILL)
            await old.exited.wait()
        level = logging.INFO if old.code in (0, -signal.SIGTERM) else logging.WARNING
        log.log(level, "worker %d (pid %d) retired: %s", old.shard.index, old.process.pid,
                describe_exit(old.code))

    async def _run(
        self,
        shard: Shard,
        succeeds: int | None,
        *,
        task_status: TaskStatus[_Worker] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """One worker process, from its start to its exit; killed if cancelled."""
        reports, write_end = os.pipe()
        os.set_blocking(reports, False)
        env = {**self.env, REPORT_FD_ENV: str(write_end)}
        if succeeds is not None:
            env[SUCCEEDS_ENV] = str(succeeds)
        try:
            with anyio.CancelScope(shield=True):  # a cancel here would orphan a started process
                process = await anyio.open_process(
                    worker_command(self.path, shard, self.log_level),
                    stdin=subprocess.DEVNULL,
                    stdout=None,
                    stderr=None,
                    env=env,
                    start_new_session=True,
                    pass_fds=(write_end,),
                )
        finally:
            os.close(write_end)  # the worker's own copy: its exit ends the reports
        worker = _Worker(shard, process, reports, anyio.current_time())
        if succeeds is None:
            worker.holds_port.set()
        self.workers.add(worker)
        log.info(
            "worker %d started (pid %d)%s", shard.index, process.pid,
            "" if succeeds is None else f" to succeed pid {succeeds}",
        )  # fmt: skip
        if self.stopping.is_set():  # the stop was forwarded while this one was starting
            _send(process, self.stop_signal)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._read_reports, worker)
                tasks.start_soon(self._watch, worker)
                task_status.started(worker)
                worker.code = await process.wait()
                tasks.cancel_scope.cancel()
            if self.stopping.is_set():
                level = logging.INFO if worker.code in (0, -self.stop_signal) else logging.WARNING
                log.log(level, "worker %d (pid %d) stopped: %s",
                        shard.index, process.pid, describe_exit(worker.code))
        except BaseException:
            with anyio.CancelScope(shield=True):
                _send(process, signal.SIGKILL)
                await process.wait()
            raise
        finally:
            self.workers.discard(worker)
            os.close(reports)
            worker.exited.set()

    async def _read_reports(self, worker: _Worker) -> None:
        """Read the worker's report lines until it closes the pipe."""
        pending = b""
        while True:
            await anyio.wait_readable(worker.reports)
            try:
                chunk = os.read(worker.reports, 4096)
            except BlockingIOError:
                continue
            if not chunk:
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                kind, _, detail = line.decode(errors="replace").partition(" ")
                if kind == READY:
                    worker.ready.set()
                elif kind == RELEASED:
                    worker.released.set()
                elif kind == DUE and not worker.due.is_set():
                    log.info("worker %d (pid %d) is due for recycling: %s",
                             worker.shard.index, worker.process.pid, detail)
                    worker.due.set()

    async def _watch(self, worker: _Worker) -> None:
        with worker.watch:
            await worker.holds_port.wait()
            await self._kill_when_stalled(worker.shard, worker.process)

    async def _kill_when_stalled(self, shard: Shard, process: Process) -> None:
        """SIGKILL the worker once its event loop has been stalled `restart_after_seconds`.

        Its /healthz turns 503 `stall_seconds` into a stall, so the stall is counted from
        that long before the first 503 seen. A refused connection (a worker still
        starting) is not a stall.
        """
        watchdog = self.config.watchdog
        metrics = shard.metrics(self.config.metrics)
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(metrics.host, metrics.host)
        url = URL.build(scheme="http", host=host, port=metrics.port, path="/healthz")
        poll = min(watchdog.stall_seconds / 2, HEALTH_POLL_SECONDS)
        stalled_since: float | None = None
        timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self.stopping.is_set():
                await anyio.sleep(poll)
                detail = await _stalled(session, url)
                if detail is None:
                    stalled_since = None
                    continue
                now = anyio.current_time()
                if stalled_since is None:
                    stalled_since = now - watchdog.stall_seconds
                    log.warning(
                        "worker %d (pid %d) is stalled: %s", shard.index, process.pid, detail
                    )
                if now - stalled_since >= watchdog.restart_after_seconds:
                    log.error(
                        "worker %d (pid %d) stalled for %.1f s (watchdog.restart_after_seconds = "
                        "%g): killing it; %s",
                        shard.index, process.pid, now - stalled_since,
                        watchdog.restart_after_seconds, detail,
                    )  # fmt: skip
                    _send(process, signal.SIGKILL)
                    return

    def send_all(self, signum: signal.Signals) -> None:
        for worker in list(self.workers):
            _send(worker.process, signum)

    async def watch_signals(self, signals: AsyncIterator[signal.Signals], tasks: TaskGroup) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                log.info(
                    "SIGHUP: forwarded to %d worker(s); each reloads %s",
                    len(self.workers),
                    self.path,
                )
                self.send_all(signum)
            elif not self.stopping.is_set():
                deadline = self.drain_deadline
                log.info(
                    "%s: draining %d worker(s) within %g s (a second signal kills them at once)",
                    name, len(self.workers), deadline,
                )  # fmt: skip
                self.stop_signal = signum
                self.stopping.set()
                self.send_all(signum)
                tasks.start_soon(self._kill_after, deadline)
            else:
                log.warning("%s again: killing %d worker(s)", name, len(self.workers))
                self.clean = False
                self.send_all(signal.SIGKILL)

    async def _kill_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        if self.workers:
            log.warning(
                "%d worker(s) still draining after %g s: killing them",
                len(self.workers),
                seconds,
            )
            self.clean = False
            self.send_all(signal.SIGKILL)


async def serve_workers(path: Path, config: Config, count: int, log_level: str) -> bool:
    """Run `count` workers until SIGINT or SIGTERM; True when they all stopped in time.

    The signal receiver is installed before anything starts, as in single-process mode.
    """
    Shard(count - 1, count).of(config)  # every worker's metrics port fits: fail now, not later
    check_ports_free(config, count)
    with anyio.open_signal_receiver(*STOP_SIGNALS, signal.SIGHUP) as signals:
        async with livekit_credentials(config.livekit) as credentials:
            env = worker_environment(config.livekit, credentials)
            pool = WorkerPool(path, config, count, log_level, env)
            log.info(
                "starting %d worker(s) for %d room(s) on %s; Ctrl-C or SIGTERM drains",
                count, len(config.rooms), credentials.url,
            )  # fmt: skip
            log.info("recycle: %s", describe(config))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(pool.watch_signals, signals, tasks)
                async with anyio.create_task_group() as slots:
                    for index in range(count):
                        slots.start_soon(pool.keep_running, index)
                tasks.cancel_scope.cancel()
    return pool.clean
