"""The project's own livekit-server: find or build v1.13.5, run it on loopback, stop it.

One module serves the test fixture, `supervisor run` (embedded server) and the
Makefile (`python -m supervisor.livekit_server ensure`), so every path starts the
server the same way and media over loopback works the same everywhere.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import attrs

log = logging.getLogger(__name__)

VERSION = "1.13.5"
GO_PACKAGE = "github.com/livekit/livekit-server/cmd/server"
REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


class LiveKitServerError(RuntimeError):
    """The server binary could not be found, built, started or stopped."""


class PortTakenError(LiveKitServerError):
    """The server could not start: another process holds one of its ports."""

    def __init__(self, message: str, protocol: str, port: int) -> None:
        super().__init__(message)
        self.protocol = protocol
        self.port = port


PORT_TAKEN = re.compile(r"listen (tcp|udp)[46]? \S*:(\d+): bind: address already in use")
"""How the server's log says that it could not bind a port (it then exits with code 0)."""
RTC_PORT_ATTEMPTS = 3
"""Starts, each on fresh RTC ports, before an RTC port taken is an error."""


# --- finding and building the binary -------------------------------------------------


def cache_dir() -> Path:
    """Where builds are cached; CI points this at a per-machine folder to share builds."""
    return Path(os.environ.get("LIVEKIT_SERVER_CACHE") or REPO_ROOT / ".cache")


def cached_binary_path() -> Path:
    return cache_dir() / f"livekit-server-v{VERSION}" / "livekit-server"


def binary_version(binary: Path | str) -> str | None:
    """The version a binary reports, or None when it is not a working livekit-server."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    match = re.search(r"version\s+(\S+)", out.stdout + out.stderr)
    return match.group(1) if match else None


def find_binary() -> Path | None:
    """A livekit-server of the pinned version on PATH or in the cache, if there is one."""
    on_path = shutil.which("livekit-server")
    if on_path and binary_version(on_path) == VERSION:
        return Path(on_path)
    cached = cached_binary_path()
    if cached.is_file() and binary_version(cached) == VERSION:
        return cached
    return None


def _go_tool() -> str:
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        raise LiveKitServerError(
            f"livekit-server v{VERSION} is not on PATH nor cached at {cached_binary_path()}, "
            "and the Go toolchain (`go`) needed to build it was not found: install Go "
            f"(1.26+; its go.mod asks for it) or put livekit-server v{VERSION} on PATH"
        )
    return go


def build_binary() -> Path:
    """Build the pinned server into the cache with `go install`.

    The build lands in a temporary folder and is renamed into place, and a file lock
    serialises concurrent callers (parallel CI jobs, `make -j`), so nobody ever runs
    a half-written binary and the build (minutes) happens once.
    """
    target = cached_binary_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent.with_name(target.parent.name + ".lock")
    with lock_path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is building livekit-server; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file() and binary_version(target) == VERSION:
            return target
        go = _go_tool()
        log.warning(
            "building livekit-server v%s with `go install` into %s (2-5 minutes, once)",
            VERSION,
            target.parent,
        )
        with tempfile.TemporaryDirectory(prefix="build-", dir=target.parent) as tmp:
            env = {**os.environ, "GOBIN": tmp}
            cmd = [go, "install", f"{GO_PACKAGE}@v{VERSION}"]
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            built = Path(tmp) / "server"
            if result.returncode != 0 or not built.is_file():
                tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
                raise LiveKitServerError(
                    f"`GOBIN={tmp} {' '.join(cmd)}` failed with exit code "
                    f"{result.returncode}:\n{tail}"
                )
            os.replace(built, target)
    if binary_version(target) != VERSION:
        raise LiveKitServerError(f"{target} was built but does not report version {VERSION}")
    return target


def ensure_binary() -> Path:
    """The path of a livekit-server v1.13.5, building it first if none is found."""
    return find_binary() or build_binary()


# --- settings ------------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on every interface right now (the RTC TCP mux binds all of them)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback `port` now."""
    with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=1):
        return True
    return False


@attrs.frozen
class Ports:
    """The three ports one server needs: signal/HTTP, RTC over TCP, RTC over UDP (muxed)."""

    http: int
    rtc_tcp: int
    rtc_udp: int

    @classmethod
    def free(cls, http: int | None = None) -> Ports:
        """Ports free right now; `http` pins the signal/HTTP port (the URL's)."""
        http = http or free_port()
        rtc_tcp = free_port()
        while rtc_tcp == http:
            rtc_tcp = free_port()
        return cls(http=http, rtc_tcp=rtc_tcp, rtc_udp=free_port(socket.SOCK_DGRAM))


@attrs.frozen
class ServerSettings:
    """Everything that defines one server instance; reuse it to restart on the same ports."""

    ports: Ports
    api_key: str
    api_secret: str = attrs.field(repr=False)
    log_level: str = "info"
    redis_address: str | None = None
    """`host:port` of a Redis shared by the nodes of a cluster (LiveKit's multi-node mode:
    rooms are placed on nodes, signalling and agent jobs routed between them); None:
    a single node, which keeps everything in memory."""

    @classmethod
    def generate(
        cls, ports: Ports | None = None, *, redis_address: str | None = None
    ) -> ServerSettings:
        """Fresh credentials, on free ports unless `ports` pins them."""
        return cls(
            ports=ports or Ports.free(),
            api_key="API" + secrets.token_hex(6),
            api_secret=secrets.token_urlsafe(32),
            redis_address=redis_address,
        )

    def another_node(self) -> ServerSettings:
        """A second node of the same cluster: the same key, secret and Redis, its own ports
        (nodes on one host must not share RTC ports)."""
        return attrs.evolve(self, ports=Ports.free())

    def config_yaml(self) -> str:
        """The server config, kept to loopback so no media or STUN leaves the machine.

        - `node_ip` 127.0.0.1 with `use_external_ip: false`: the server advertises
          127.0.0.1 and never asks public STUN servers for its own address.
        - `enable_loopback_candidate` with `ips.includes` 127.0.0.0/8: by default the
          UDP mux skips loopback interfaces and binds only the machine's other
          addresses; this makes it bind 127.0.0.1, and only that.
        - `stun_servers` 127.0.0.1:9 (discard, nothing listens): without any, the
          server hands clients Google's STUN servers and every participant would
          try to reach the internet. It must not be the RTC UDP port: libwebrtc
          treats every packet from a STUN server's address as a STUN reply, so
          ICE over UDP would silently fail and media would fall back to ICE-TCP.
        With `redis_address` the server joins that Redis's cluster (`redis.address`).
        JSON is valid YAML, which spares a YAML dependency and any quoting questions.
        """
        redis = {"redis": {"address": self.redis_address}} if self.redis_address else {}
        return json.dumps(
            {
                **redis,
                "port": self.ports.http,
                "bind_addresses": [LOOPBACK],
                "development": True,
                "keys": {self.api_key: self.api_secret},
                "logging": {"level": self.log_level},
                # the supervisor's unmute_participant goes through the server API
                "room": {"enable_remote_unmute": True},
                "rtc": {
                    "tcp_port": self.ports.rtc_tcp,
                    "udp_port": self.ports.rtc_udp,
                    "node_ip": LOOPBACK,
                    "use_external_ip": False,
                    "enable_loopback_candidate": True,
                    "ips": {"includes": ["127.0.0.0/8"]},
                    "stun_servers": [f"{LOOPBACK}:9"],
                },
            }
        )


# --- running it ----------------------------------------------------------------------

PR_SET_PDEATHSIG = 1
"""prctl(2): the signal a process gets when the thread that forked it exits."""

_SPAWNER = concurrent.futures.ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="livekit-spawner"
)
"""The one thread every server is forked from, so that each dies with this process.

The kernel's parent-death signal fires when the *thread* that forked the child exits,
not the process: forked from a caller's thread (an anyio worker thread, which exits
once idle for a while), the server would be killed mid-run. This thread waits for
work until the interpreter shuts down, so its exit is the process's end, and a process
killed by SIGKILL takes the server with it; nothing in user space survives a SIGKILL
to do that instead (a watchdog process can be killed too, and the Go server cannot
watch a pipe).
"""


def _parent_death_kill() -> Callable[[], None] | None:
    """A `preexec_fn` giving the child SIGKILL when its parent thread ends (Linux only).

    A parent killed between the fork and the prctl would be missed, so the child then
    checks that its parent is still the one that forked it, and exits if not.
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    parent = os.getpid()

    def in_child() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os._exit(1)

    return in_child


def spawn(argv: list[str], *, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a service process that never outlives this one, its output appended to
    `log_path`: forked from `_SPAWNER` with a parent-death SIGKILL, in a session of its
    own (a Ctrl-C in the terminal reaches only our process, which then stops it in
    order). The livekit-server and the tests' Redis start this way."""
    with log_path.open("ab") as log_file:
        return _SPAWNER.submit(
            subprocess.Popen,
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_parent_death_kill(),
        ).result()


def stop_in_order(
    send: Callable[[int], None], exited: Callable[[float | None], bool], timeout: float
) -> None:
    """Stop a livekit-server: SIGTERM, a second SIGTERM, then SIGKILL after `timeout`.

    LiveKit's first SIGTERM drains and waits for participants to leave (polling
    every 5 s); its second forces the shutdown. Each step gets half the time left.
    `send` signals the process and `exited(seconds)` waits up to that long (None:
    for good) and says whether it has exited, so the same order serves a child of
    ours and a server an earlier run left behind.
    """
    deadline = time.monotonic() + timeout
    for sig in (signal.SIGTERM, signal.SIGTERM):
        if exited(0):
            return
        send(sig)
        if exited(max(0.1, (deadline - time.monotonic()) / 2)):
            return
    log.warning("livekit-server did not stop within %.0f s; killing it", timeout)
    send(signal.SIGKILL)
    exited(None)


def exit_waiter(process: subprocess.Popen[bytes]) -> Callable[[float | None], bool]:
    """`stop_in_order`'s `exited` for `process`: whether it exited within the seconds given."""
    def exited(seconds: float | None) -> bool:
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    return exited


class LiveKitServer:
    """One livekit-server child process on loopback, which never outlives this process.

    The config (with the secret) goes in through the LIVEKIT_CONFIG environment
    variable, which the server reads as `--config-body`: a command-line argument
    would show the secret to anyone running `ps`. The server is forked from one
    long-lived thread with a parent-death SIGKILL (see `_SPAWNER`), so `start()` may be
    called from any thread and a SIGKILLed owner (an out-of-memory kill) leaves no
    server holding the port.
    """

    def __init__(
        self,
        settings: ServerSettings | None = None,
        *,
        log_path: Path | None = None,
    ) -> None:
        self.settings = settings or ServerSettings.generate()
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="livekit-server-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        # Kept after stop: it is what explains a failed run.
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"LiveKitServer(url={self.url!r}, log_path={str(self.log_path)!r})"

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.settings.ports.http}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.settings.ports.http}"

    @property
    def api_key(self) -> str:
        return self.settings.api_key

    @property
    def api_secret(self) -> str:
        return self.settings.api_secret

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self._process is not None and self.running else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and return once its HTTP port answers.

        The RTC ports were free when picked, but another process can bind one before
        the server does, a second later (on a busy host, rtc clients' ICE sockets take
        port after port): the server then starts on fresh ones, which clients learn
        as they join. The HTTP port is the URL's: taken, it is an error.
        """
        if self.running:
            raise LiveKitServerError(f"{self!r} is already running")
        attempt = 1
        while True:
            try:
                self._start_once(timeout)
                return
            except PortTakenError as err:
                http_taken = (err.protocol, err.port) == ("tcp", self.settings.ports.http)
                if http_taken or attempt == RTC_PORT_ATTEMPTS:
                    raise
                log.warning(
                    "livekit-server's RTC port %d was taken as it started: trying others",
                    err.port,
                )
            ports = Ports.free(http=self.settings.ports.http)
            self.settings = attrs.evolve(self.settings, ports=ports)
            attempt += 1

    def _start_once(self, timeout: float) -> None:
        binary = ensure_binary()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._process = spawn([str(binary)], env=self._server_env(), log_path=self.log_path)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("livekit-server ready at %s (log: %s)", self.url, self.log_path)

    def _server_env(self) -> dict[str, str]:
        """Our environment minus what livekit-server reads as flags.

        A LIVEKIT_*, NODE_IP, UDP_PORT or REDIS_* variable in the user's shell would
        override the config and silently move the server off loopback.
        """
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("LIVEKIT_", "REDIS_")) and name not in ("NODE_IP", "UDP_PORT")
        }
        env["LIVEKIT_CONFIG"] = self.settings.config_yaml()
        return env

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._process.poll()
            if code is not None:
                tail = self.log_tail()
                message = (
                    f"livekit-server exited with code {code} while starting; "
                    f"log {self.log_path}:\n{tail}"
                )
                if taken := PORT_TAKEN.search(tail):
                    raise PortTakenError(message, taken[1], int(taken[2]))
                raise LiveKitServerError(message)
            try:
                with urllib.request.urlopen(self.http_url + "/", timeout=1) as response:
                    answered = response.status == 200
            except (urllib.error.URLError, OSError):
                answered = False
            if answered:
                # The server marks itself running 100 ms after it starts serving and
                # ignores a stop signal before then; wait that out so a stop right
                # after start is not lost. Then make sure the answer was ours and not
                # from another process that already held the port.
                time.sleep(0.2)
                if self._process.poll() is None:
                    return
                continue
            if time.monotonic() > deadline:
                raise LiveKitServerError(
                    f"livekit-server did not answer on {self.http_url} within {timeout:.0f} s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server in order (`stop_in_order`): drain, force, kill after `timeout`."""
        process = self._process
        if process is None:
            return
        stop_in_order(process.send_signal, exit_waiter(process), timeout)
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: no goodbye to anyone connected.

        For tests of clients that must survive the server; `start()` works again after.
        """
        process = self._process
        if process is not None:
            process.kill()
            process.wait()
        self._process = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> LiveKitServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.livekit_server",
        description=f"Find or build livekit-server v{VERSION}.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ensure", help="print the binary's path, building it into the cache if needed")
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(ensure_binary())
    except LiveKitServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0

