"""The embedded livekit-server dies with `supervisor run` however it ends, SIGKILL
included, and a start recognises what an earlier run left behind: a server of ours is
stopped and a fresh one started, a process that is not ours is never touched.

A service manager restarting a killed supervisor (after an out-of-memory kill) is the
case that matters: the port must be free again and the next start must serve.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from supervisor.config import load_config
from supervisor.livekit_server.record import ProcessId, ServerRecord
from supervisor.livekit_server.server import (
    LiveKitServer,
    Ports,
    ServerSettings,
    free_port,
    listening,
)
from supervisor.livekit_server.source import _record_path, for_token
from tests.helpers.cli_process import (
    SupervisorProcess,
    supervisor_process,
    write_config,
)
from tests.helpers.participants import ServerCredentials, join
from tests.helpers.probes import wait_until
from tests.helpers.prometheus import get

KEY_ENV = "SUPERVISOR_EMBEDDED_TEST_KEY"
SECRET_ENV = "SUPERVISOR_EMBEDDED_TEST_SECRET"
ROOMS = ("embedded-a", "embedded-b")
FREED_WITHIN_SECONDS = 5.0
"""The issue's promise: a SIGKILLed supervisor's port is free again within this."""


def embedded_config(tmp_path: Path, url: str) -> Path:
    """A config for the embedded server at `url`, with the echo bot in `ROOMS`."""
    rooms = "".join(f'[[rooms]]\nname = "{room}"\n' for room in ROOMS)
    return write_config(
        tmp_path,
        f"""
[livekit]
url = "{url}"
api_key_env = "{KEY_ENV}"
api_secret_env = "{SECRET_ENV}"
embedded_server = true
[bot]
factory = "supervisor.bots.echo:create_bot"
[metrics]
listen = "127.0.0.1:{free_port()}"
{rooms}""",
    )


@contextlib.asynccontextmanager
async def running(
    path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[SupervisorProcess]:
    """`supervisor run` on `path`, without the credentials variables unless `env` has them."""
    async with supervisor_process("run", str(path), env=env, unset=(KEY_ENV, SECRET_ENV)) as run:
        yield run


def readyz(path: Path) -> int:
    return get(f"http://{load_config(path).metrics.listen}/readyz")[0]


async def assert_serving(
    run: SupervisorProcess, path: Path, credentials: ServerCredentials | None = None
) -> ServerCredentials:
    """Every room is ready, and a person meets the bot there, with `credentials` or else
    those `supervisor token` uses (the embedded server's); returns the credentials."""
    await run.wait_for(rf"ready: {len(ROOMS)} room\(s\)", timeout=90)
    assert await anyio.to_thread.run_sync(readyz, path) == 200
    credentials = credentials or for_token(load_config(path).livekit)
    for room in ROOMS:
        async with join(credentials, room, "alice", timeout=30) as person:
            await wait_until(lambda: "bot" in person.remote_participants, timeout=30)
    return credentials


def live_process(pid: int | None) -> ProcessId:
    assert pid is not None
    found = ProcessId.of(pid)
    assert found is not None, f"pid {pid} does not run"
    return found


async def ended_process() -> ProcessId:
    """A process that has ended, as a killed supervisor has."""
    process = await anyio.open_process(["sleep", "60"])
    ended = live_process(process.pid)
    process.kill()
    await process.wait()
    return ended


@contextlib.contextmanager
def foreign_listener(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Another program listening on `port` on loopback (a `sleep` holding the socket)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        process = subprocess.Popen(["sleep", "600"], pass_fds=(sock.fileno(),))
    try:
        yield process
    finally:
        process.kill()
        process.wait()


# --- the tests ------------------------------------------------------------------------


def test_a_server_started_from_a_thread_that_ended_keeps_running(tmp_path: Path) -> None:
    """The parent-death signal fires when the thread that forked the server exits, so a
    server forked from a caller's thread (anyio's, which exit when idle) would die then."""
    server = LiveKitServer(log_path=tmp_path / "livekit.log")
    native_ids: list[int] = []

    def start() -> None:
        native_ids.append(threading.get_native_id())
        server.start()

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    try:
        assert server.running
        task = Path(f"/proc/self/task/{native_ids[0]}")
        deadline = time.monotonic() + 10
        while task.exists():  # join() returns before the thread has left the kernel
            assert time.monotonic() < deadline, "the starting thread never exited"
            time.sleep(0.01)
        with urllib.request.urlopen(server.http_url + "/", timeout=5) as answer:
            assert answer.status == 200
        assert server.running
    finally:
        server.stop()


@pytest.mark.anyio
async def test_a_killed_supervisor_takes_its_server_along_and_the_next_start_serves(
    tmp_path: Path,
) -> None:
    port = free_port()
    path = embedded_config(tmp_path, f"ws://127.0.0.1:{port}")
    async with running(path) as run:
        await run.wait_for(rf"ready: {len(ROOMS)} room\(s\)", timeout=90)
        first = ServerRecord.read(_record_path(port))
        assert first is not None
        assert first.serving()
        run.process.kill()
        await run.process.wait()
        killed = time.perf_counter()
        await wait_until(lambda: not listening(port), timeout=FREED_WITHIN_SECONDS)
        freed_after = time.perf_counter() - killed
        assert not first.server.alive(), "the port is free but the server still runs"

    async with running(path) as run:
        # Only the record was left (a SIGKILLed process removes nothing): it names a
        # server that is gone, so there is nothing to stop.
        credentials = await assert_serving(run, path)
        assert credentials.api_key != first.api_key
        assert not run.matches("left behind")
        assert await run.stop() == 0
    assert not listening(port)
    assert not _record_path(port).exists()
    print(f"\nSIGKILLed supervisor: its server's port free {freed_after * 1000:.0f} ms later")


@pytest.mark.anyio
async def test_a_server_left_behind_by_an_earlier_run_is_stopped_and_replaced(
    tmp_path: Path,
) -> None:
    """As after a kill the parent-death signal did not reach: our server, its supervisor gone."""
    port = free_port()
    settings = ServerSettings.generate(
        Ports(http=port, rtc_tcp=free_port(), rtc_udp=free_port(socket.SOCK_DGRAM))
    )
    leftover = LiveKitServer(settings, log_path=tmp_path / "leftover.log")
    await anyio.to_thread.run_sync(leftover.start)
    try:
        server = live_process(leftover.pid)
        record = ServerRecord(
            port, server, await ended_process(), leftover.api_key, leftover.api_secret
        )
        record.write(_record_path(port))
        path = embedded_config(tmp_path, leftover.url)

        async with running(path) as run:
            await run.wait_for(
                rf"livekit-server pid {server.pid} was left behind on port {port} by an earlier "
                rf"embedded run \(supervisor pid {record.owner.pid}, gone\): stopping it"
            )
            credentials = await assert_serving(run, path)
            assert credentials.api_key != leftover.api_key, "the leftover's credentials were reused"
            assert not leftover.running
            assert await run.stop() == 0
        assert not listening(port)
    finally:
        await anyio.to_thread.run_sync(leftover.stop)
        _record_path(port).unlink(missing_ok=True)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "recorded", [False, True], ids=["no-record", "recorded-as-another-program"]
)
async def test_a_foreign_listener_is_never_killed(tmp_path: Path, recorded: bool) -> None:
    """Whatever a record claims, a process that is not our livekit-server keeps the port,
    and the supervisor takes the path of a server it did not start, with its clear error."""
    port = free_port()
    path = embedded_config(tmp_path, f"ws://127.0.0.1:{port}")
    with foreign_listener(port) as listener:
        if recorded:  # its true pid and start time, a supervisor that is gone: all but the exe
            ServerRecord(
                port, live_process(listener.pid), await ended_process(), "key", "secret"
            ).write(_record_path(port))
        try:
            async with running(path) as run:
                assert await run.wait(30) == 2
                await run.wait_for(rf"a server already listens on ws://127.0.0.1:{port}: using it")
                await run.wait_for(
                    rf"environment variable {KEY_ENV} \(named by livekit.api_key_env\) is not set"
                )
            assert listener.poll() is None, "the supervisor killed a process that is not its server"
            assert listening(port)
            assert not _record_path(port).exists(), "a record naming no server of ours was kept"
        finally:
            _record_path(port).unlink(missing_ok=True)


@pytest.mark.anyio
async def test_a_recorded_pid_with_another_start_time_is_not_ours(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    """A livekit-server whose pid matches a record but whose start time does not (the pid
    was reused) is another server: it is used with the environment's credentials."""
    port = livekit_server.settings.ports.http
    server = live_process(livekit_server.pid)
    reused = ProcessId(server.pid, server.start_time + 1)
    ServerRecord(port, reused, await ended_process(), "key", "secret").write(_record_path(port))
    path = embedded_config(tmp_path, livekit_server.url)
    env = {KEY_ENV: livekit_server.api_key, SECRET_ENV: livekit_server.api_secret}
    try:
        async with running(path, env=env) as run:
            await assert_serving(run, path, livekit_server)
            assert run.matches(rf"a server already listens on {livekit_server.url}: using it")
            assert not run.matches("left behind")
            assert await run.stop() == 0
        assert livekit_server.running
    finally:
        _record_path(port).unlink(missing_ok=True)


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM], ids=["tcp", "udp"])
def test_an_rtc_port_taken_before_the_server_binds_it_is_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: int
) -> None:
    """The RTC ports are picked free and bound a second later by the server; on a busy
    host another process (an rtc client's ICE socket) can take one in between. The
    HTTP port, the URL's, is kept."""
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        held = taken.getsockname()[1]
        picks = Ports.free()
        if kind == socket.SOCK_STREAM:
            rtc_tcp, rtc_udp = held, picks.rtc_udp
        else:
            rtc_tcp, rtc_udp = picks.rtc_tcp, held
        settings = ServerSettings.generate(Ports(picks.http, rtc_tcp, rtc_udp))
        server = LiveKitServer(settings, log_path=tmp_path / "livekit.log")
        server.start()
    try:
        assert server.running
        assert server.settings.ports.http == picks.http
        assert held not in (server.settings.ports.rtc_tcp, server.settings.ports.rtc_udp)
        assert f"RTC port {held} was taken as it started: trying others" in caplog.text
    finally:
        server.stop()
