"""The `supervisor` command as a child process, for tests that drive it as a user would.

Config files (`SupervisorConfig`: a server's rooms with the echo bot, credentials from
the environment; `serving`: `supervisor run` on one until every room is ready), a port
probe, and `SupervisorProcess`: a running `supervisor run` whose stderr (the log) is read
as it comes, so the child never blocks on a full pipe and a test can wait for a log line
with a timeout instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import attrs
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from supervisor.config import config_toml
from supervisor.livekit_server.server import free_port
from tests.helpers.configs import ECHO_BOT
from tests.helpers.participants import ServerCredentials
from tests.helpers.prometheus import get

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The child runs here, so a config can name test bots as `tests.helpers.bots:...`."""


def write_config(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


_TIED_TO_PARENT = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the test process died before the prctl
    sys.exit(1)
os.execv(sys.executable, [sys.executable, "-m", "supervisor.cli", *sys.argv[2:]])
"""
"""Run as `python -c`: the supervisor, sent SIGTERM (a drain) when the test process that
started it dies, killed or crashed, instead of serving on with nobody to stop it."""


def supervisor_command(*args: str) -> list[str]:
    """`supervisor ARGS` with this interpreter, as `python -m` (no console script needed),
    ended with the test process that runs it (Linux's parent-death signal)."""
    return [sys.executable, "-c", _TIED_TO_PARENT, str(os.getpid()), *args]


@attrs.define
class SupervisorProcess:
    """A running `supervisor` child and every log line it has written so far."""

    process: Process
    started_at: float
    """`time.perf_counter()` just before the child was started."""
    lines: list[str] = attrs.field(factory=list)
    grew: anyio.Event = attrs.field(factory=anyio.Event)
    ended: bool = False

    async def pump(self) -> None:
        assert self.process.stderr is not None
        pending = ""
        async for text in TextReceiveStream(self.process.stderr, errors="replace"):
            *complete, pending = (pending + text).split("\n")
            self.lines.extend(complete)
            self.grew.set()
            self.grew = anyio.Event()
        self.ended = True
        self.grew.set()

    def matches(self, pattern: str) -> list[re.Match[str]]:
        return [m for line in self.lines if (m := re.search(pattern, line))]

    async def wait_for(
        self, pattern: str, *, count: int = 1, timeout: float = 60
    ) -> list[re.Match[str]]:
        """The first `count` log lines matching `pattern`, once there are that many."""
        with anyio.move_on_after(timeout):
            while len(found := self.matches(pattern)) < count and not self.ended:
                await self.grew.wait()
            if len(found) >= count:
                return found[:count]
        raise AssertionError(
            f"{count} x {pattern!r} not logged within {timeout} s or before the end "
            f"(exit code {self.process.returncode}); log tail:\n{self.tail()}"
        )

    @property
    def metrics_url(self) -> str:
        """Its metrics listener, as its log says (`http://127.0.0.1:PORT`)."""
        return self.matches(r"metrics on (http://127\.0\.0\.1:\d+)/metrics")[0][1]

    def status(self) -> dict[str, Any]:
        """Its `/status` document, now."""
        return dict(json.loads(get(f"{self.metrics_url}/status")[1]))

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.lines[-lines:])

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait(self, timeout: float) -> int:
        """The exit code, failing with the log's tail if the child runs past `timeout`."""
        with anyio.move_on_after(timeout):
            return await self.process.wait()
        raise AssertionError(f"still running after {timeout} s; log tail:\n{self.tail()}")

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `signum` (a drain, by default) and wait for the exit code."""
        self.send_signal(signum)
        return await self.wait(timeout)


@contextlib.asynccontextmanager
async def supervisor_process(
    *args: str, env: Mapping[str, str] | None = None, unset: tuple[str, ...] = ()
) -> AsyncIterator[SupervisorProcess]:
    """Run `supervisor ARGS`; on exit leave no process behind (SIGTERM, then SIGKILL).

    `env` is added to this process's environment, in the child's only: how a test
    hands it the server's credentials, as a deployment would; `unset` names variables
    the child must not inherit.
    """
    started_at = time.perf_counter()
    environ = {name: value for name, value in os.environ.items() if name not in unset}
    process = await anyio.open_process(
        supervisor_command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env={**environ, **(env or {})},
    )
    run = SupervisorProcess(process, started_at)
    pump = asyncio.create_task(run.pump())
    try:
        yield run
    except BaseException:
        print(f"supervisor {' '.join(args)}: log tail\n{run.tail(200)}")  # shown on failure
        raise
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(20):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            await process.aclose()  # close the pipes now, not in __del__ after the loop


KEY_ENV = "SUPERVISOR_TEST_KEY"
SECRET_ENV = "SUPERVISOR_TEST_SECRET"

GOOD_CONFIG = """
[livekit]
url = "ws://127.0.0.1:{port}"
api_key_env = "SUPERVISOR_TEST_KEY"
api_secret_env = "SUPERVISOR_TEST_SECRET"
embedded_server = true

[bot]
factory = "supervisor.bots.echo:create_bot"

[[rooms]]
name = "lobby"
[[rooms]]
name = "support"
"""
"""A valid config for the CLI tests: two rooms with the echo bot on an embedded server
(format it with its `port`)."""


@attrs.frozen
class SupervisorConfig:
    """A config for `server` whose credentials come from the environment (no embedded
    server); `evolve` it to rewrite the file for a reload, keeping the metrics port."""

    server: ServerCredentials
    rooms: tuple[str, ...]
    bot: str = ECHO_BOT
    supervision: Mapping[str, float] = attrs.field(factory=dict)
    watchdog: Mapping[str, float] = attrs.field(factory=dict)
    dispatch: Mapping[str, Any] = attrs.field(factory=dict)
    """A `[dispatch]` table's keys (and a `bot` subtable); none: no table (dispatch off)."""
    room_bots: Mapping[str, str] = attrs.field(factory=dict)
    """Rooms whose bot is not `bot`: room name -> factory."""
    web: Mapping[str, Any] = attrs.field(factory=dict)
    """A `[web]` table's keys; none: no table (the defaults)."""
    recycle: Mapping[str, int] = attrs.field(factory=lambda: {"max_rooms_served": 0})
    """A `[recycle]` table's keys. Off unless a test says otherwise: with `[dispatch]`
    the default bound runs the rooms in a worker under a parent (`supervisor.process.recycle`),
    and the tests of one process's behaviour (a SIGKILL of the host, its pid) want one."""
    cluster_urls: tuple[str, ...] = ()
    """`[livekit] cluster_urls`: the other nodes of the server's cluster."""
    metrics_port: int = attrs.field(factory=free_port)

    @property
    def metrics_url(self) -> str:
        """The supervisor's listener: /metrics, /status, /readyz, /healthz, the try-it page."""
        return f"http://127.0.0.1:{self.metrics_port}"

    def text(self) -> str:
        return config_toml(
            {
                "livekit": {
                    "url": self.server.url,
                    "api_key_env": KEY_ENV,
                    "api_secret_env": SECRET_ENV,
                    "embedded_server": False,
                    **({"cluster_urls": list(self.cluster_urls)} if self.cluster_urls else {}),
                },
                "bot": {"factory": self.bot},
                "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
                "supervision": dict(self.supervision),
                "watchdog": dict(self.watchdog),
                **({"dispatch": dict(self.dispatch)} if self.dispatch else {}),
                **({"web": dict(self.web)} if self.web else {}),
                "recycle": dict(self.recycle),
                "rooms": [
                    {"name": room, **({"bot": {"factory": self.room_bots[room]}}
                                      if room in self.room_bots else {})}
                    for room in self.rooms
                ],
            }
        )

    def env(self) -> dict[str, str]:
        """The credentials, in the variables the config names: the child's env only."""
        return {KEY_ENV: self.server.api_key, SECRET_ENV: self.server.api_secret}


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, config: SupervisorConfig, env: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[SupervisorProcess, Path]]:
    """`supervisor run` on `config`, once it has logged that every room is ready."""
    path = write_config(tmp_path, config.text())
    async with supervisor_process(
        "run", str(path), env={**config.env(), **(env or {})}
    ) as run:
        await run.wait_for(rf"ready: {len(config.rooms)} room\(s\)", timeout=90)
        yield run, path
