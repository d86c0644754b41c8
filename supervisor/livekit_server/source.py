"""Where the LiveKit server and its credentials come from: the environment, or the
embedded server the supervisor starts for a loopback URL with nothing listening.

The embedded server's credentials are generated per run. So that `supervisor token`
(another process) can mint tokens for it, they go into the server's runtime record
(`record`), a file only the user can read next to the server's log, removed
when the server stops. The server dies with the supervisor however it ends; a record
a killed supervisor could not remove names a server that is gone, and the next start
removes it, or, should that server still run, stops it and starts a fresh one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio

from supervisor.config import ConfigError, LiveKitConfig
from supervisor.livekit_server.access import Credentials
from supervisor.livekit_server.record import ProcessId, ServerRecord
from supervisor.livekit_server.server import (
    LiveKitServer,
    LiveKitServerError,
    Ports,
    ServerSettings,
    listening,
)

log = logging.getLogger("supervisor")


def embeddable_port(url: str) -> int | None:
    """The port of a URL the embedded server could serve (IPv4 loopback), else None."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        return None
    return parts.port or (443 if parts.scheme in ("wss", "https") else 80)


def _runtime_file(port: int, suffix: str) -> Path:
    return Path(tempfile.gettempdir()) / f"livekit-supervisor-embedded-{port}.{suffix}"


def from_environment(config: LiveKitConfig) -> Credentials:
    values = []
    roles = (("api_key_env", config.api_key_env), ("api_secret_env", config.api_secret_env))
    for role, name in roles:
        value = os.environ.get(name)
        if not value:
            raise ConfigError(
                f"environment variable {name} (named by livekit.{role}) is not set: "
                "expected the LiveKit server's credentials"
            )
        values.append(value)
    return Credentials(url=config.url, api_key=values[0], api_secret=values[1])


def for_token(config: LiveKitConfig) -> Credentials:
    """Credentials for minting a token: the running embedded server's, else the environment's."""
    port = embeddable_port(config.url)
    if config.embedded_server and port is not None:
        record = ServerRecord.read(_record_path(port))
        if record is not None and record.port == port and record.serving():
            return Credentials(config.url, record.api_key, record.api_secret)
    return from_environment(config)


def _record_path(port: int) -> Path:
    return _runtime_file(port, "credentials.json")


def _clear_earlier_run(port: int) -> None:
    """Remove what an earlier embedded run on `port` left behind: its record, and its
    server if that still runs (`record` says why it is stopped, not reused).

    A record of a supervisor that still runs (the `--workers` parent's, found by its
    workers) is left alone, as is anything not recorded as ours.
    """
    path = _record_path(port)
    record = ServerRecord.read(path)
    if record is None or record.owner.alive():
        return
    if record.port == port and record.serving():
        log.warning(
            "livekit-server pid %d was left behind on port %d by an earlier embedded run "
            "(supervisor pid %d, gone): stopping it to start a fresh one",
            record.server.pid, port, record.owner.pid,
        )  # fmt: skip
        record.stop_server()
    path.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def livekit_credentials(config: LiveKitConfig) -> AsyncIterator[Credentials]:
    """Credentials for the configured server, starting the embedded one when it applies."""
    port = embeddable_port(config.url)
    if not config.embedded_server or port is None:
        yield from_environment(config)
        return
    await anyio.to_thread.run_sync(_clear_earlier_run, port)
    if listening(port):
        log.info("a server already listens on %s: using it, not the embedded one", config.url)
        yield from_environment(config)
        return
    # One fixed name per port: re-runs overwrite it instead of piling up temp files,
    # and it stays after a failure for the user to read.
    log_path = _runtime_file(port, "log")
    log_path.unlink(missing_ok=True)
    record_path = _record_path(port)
    log.info("nothing listens on %s: starting the embedded livekit-server", config.url)
    server = LiveKitServer(ServerSettings.generate(Ports.free(http=port)), log_path=log_path)
    await anyio.to_thread.run_sync(server.start)
    try:
        started = ProcessId.of(server.pid or 0)
        if started is None:
            raise LiveKitServerError(f"livekit-server exited just after it started; log {log_path}")
        record = ServerRecord(port, started, ProcessId.current(), server.api_key, server.api_secret)
        record.write(record_path)
        yield Credentials(config.url, server.api_key, server.api_secret)
    finally:
        record_path.unlink(missing_ok=True)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.stop)
        log.info("embedded livekit-server stopped (log: %s)", log_path)
