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
from anyio.abc import Process, TaskGroup
from yarl import URL

from actors import Backoff
from supervisor.access import Credentials
from supervisor.config import Config, ConfigError, LiveKitConfig, MetricsConfig
from supervisor.credentials import livekit_credentials

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

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ConfigError(f"worker index {self.index}: expected 0 <= index < {self.count}")

    def owns(self, room: str) -> bool:
        return shard_of(room, self.count) == self.index

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
        siblings = frozenset(room.name for room in config.rooms) - {room.name for room in rooms}
        return attrs.evolve(
            config, rooms=rooms, metrics=self.metrics(config.metrics), sibling_rooms=siblings
        )


def start_worker(index: int, count: int, config: Config) -> tuple[Shard, Config]:
    """Set this process up as worker `index` of `count`; return its shard and its config."""
    shard = Shard(index, count)
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
    return shard, mine


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


@attrs.define
class WorkerPool:
    """N worker processes kept running until a stop signal, each restarted when it dies."""

    path: Path
    config: Config
    count: int
    log_level: str
    env: dict[str, str] = attrs.field(repr=False)
    processes: dict[int, Process] = attrs.field(factory=dict)
    stopping: anyio.Event = attrs.field(factory=anyio.Event)
    stop_signal: signal.Signals = signal.SIGTERM
    clean: bool = True

    @property
    def backoff(self) -> Backoff:
        sv = self.config.supervision
        initial = max(sv.backoff_initial_seconds, MIN_RESTART_DELAY_SECONDS)
        return Backoff(initial=initial, maximum=max(sv.backoff_max_seconds, initial), jitter=0.2)

    async def keep_running(self, index: int) -> None:
        """Run worker `index` until the pool stops; restart it whenever it dies.

        Backoff counts the restarts of this worker; one that ran longer than the
        supervision window starts over from the initial delay.
        """
        shard = Shard(index, self.count)
        attempt = 0
        while not self.stopping.is_set():
            started = anyio.current_time()
            async with self._worker(shard) as process, anyio.create_task_group() as watch:
                watch.start_soon(self._kill_when_stalled, shard, process)
                code = await process.wait()
                watch.cancel_scope.cancel()
            if self.stopping.is_set():
                level = logging.INFO if code in (0, -self.stop_signal) else logging.WARNING
                log.log(
                    level, "worker %d (pid %d) stopped: %s", index, process.pid, describe_exit(code)
                )
                return
            ran = anyio.current_time() - started
            attempt = 1 if ran > self.config.supervision.within_seconds else attempt + 1
            delay = self.backoff.delay(attempt, random.random)
            log.error(
                "worker %d (pid %d) died after %.1f s (%s): restart %d in %.1f s",
                index, process.pid, ran, describe_exit(code), attempt, delay,
            )  # fmt: skip
            with anyio.move_on_after(delay):
                await self.stopping.wait()

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

    @contextlib.asynccontextmanager
    async def _worker(self, shard: Shard) -> AsyncIterator[Process]:
        """One worker process, listed while it runs and killed if the block is cancelled."""
        with anyio.CancelScope(shield=True):  # a cancel here would orphan a started process
            process = await anyio.open_process(
                worker_command(self.path, shard, self.log_level),
                stdin=subprocess.DEVNULL,
                stdout=None,
                stderr=None,
                env=self.env,
                start_new_session=True,
            )
        self.processes[shard.index] = process
        log.info("worker %d started (pid %d)", shard.index, process.pid)
        if self.stopping.is_set():  # the stop was forwarded while this one was starting
            _send(process, self.stop_signal)
        try:
            yield process
        except BaseException:
            with anyio.CancelScope(shield=True):
                _send(process, signal.SIGKILL)
                await process.wait()
            raise
        finally:
            del self.processes[shard.index]

    def send_all(self, signum: signal.Signals) -> None:
        for process in list(self.processes.values()):
            _send(process, signum)

    async def watch_signals(self, signals: AsyncIterator[signal.Signals], tasks: TaskGroup) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                log.info(
                    "SIGHUP: forwarded to %d worker(s); each reloads %s",
                    len(self.processes),
                    self.path,
                )
                self.send_all(signum)
            elif not self.stopping.is_set():
                deadline = self.config.supervision.shutdown_timeout_seconds + DRAIN_MARGIN_SECONDS
                if self.config.dispatch.enabled:  # each worker's jobs may run on first
                    deadline += self.config.dispatch.drain_seconds
                log.info(
                    "%s: draining %d worker(s) within %g s (a second signal kills them at once)",
                    name, len(self.processes), deadline,
                )  # fmt: skip
                self.stop_signal = signum
                self.stopping.set()
                self.send_all(signum)
                tasks.start_soon(self._kill_after, deadline)
            else:
                log.warning("%s again: killing %d worker(s)", name, len(self.processes))
                self.clean = False
                self.send_all(signal.SIGKILL)

    async def _kill_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        if self.processes:
            log.warning(
                "%d worker(s) still draining after %g s: killing them",
                len(self.processes),
                seconds,
            )
            self.clean = False
            self.send_all(signal.SIGKILL)


async def serve_workers(path: Path, config: Config, count: int, log_level: str) -> bool:
    """Run `count` workers until SIGINT or SIGTERM; True when they all stopped in time.

    The signal receiver is installed before anything starts, as in single-process mode.
    """
    Shard(count - 1, count).of(config)  # every worker's metrics port fits: fail now, not later
    with anyio.open_signal_receiver(*STOP_SIGNALS, signal.SIGHUP) as signals:
        async with livekit_credentials(config.livekit) as credentials:
            env = worker_environment(config.livekit, credentials)
            pool = WorkerPool(path, config, count, log_level, env)
            log.info(
                "starting %d worker(s) for %d room(s) on %s; Ctrl-C or SIGTERM drains",
                count, len(config.rooms), credentials.url,
            )  # fmt: skip
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(pool.watch_signals, signals, tasks)
                async with anyio.create_task_group() as slots:
                    for index in range(count):
                        slots.start_soon(pool.keep_running, index)
                tasks.cancel_scope.cancel()
    return pool.clean
