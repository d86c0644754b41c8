"""Where the LiveKit server and its credentials come from: the environment, or the
embedded server the supervisor starts for a loopback URL with nothing listening.

The embedded server's credentials are generated per run. So that `supervisor token`
(another process) can mint tokens for it, they are written to a file only the user can
read, next to the server's log, and removed when the server stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio

from supervisor.access import Credentials
from supervisor.config import ConfigError, LiveKitConfig
from supervisor.livekit_server import LiveKitServer, Ports, ServerSettings, free_port

log = logging.getLogger("supervisor")


def embeddable_port(url: str) -> int | None:
    """The port of a URL the embedded server could serve (IPv4 loopback), else None."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        return None
    return parts.port or (443 if parts.scheme in ("wss", "https") else 80)


def _something_listens(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _runtime_file(port: int, suffix: str) -> Path:
    return Path(tempfile.gettempdir()) / f"livekit-supervisor-embedded-{port}.{suffix}"


def from_environment(config: LiveKitConfig) -> Credentials:
    values = []
    for role, name in (("api_key_env", config.api_key_env), ("api_secret_env", config.api_secret_env)):
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
        path = _runtime_file(port, "credentials.json")
        with contextlib.suppress(OSError, ValueError, KeyError):
            saved = json.loads(path.read_text())
            return Credentials(config.url, saved["api_key"], saved["api_secret"])
    return from_environment(config)


@contextlib.asynccontextmanager
async def livekit_credentials(config: LiveKitConfig) -> AsyncIterator[Credentials]:
    """Credentials for the configured server, starting the embedded one when it applies."""
    port = embeddable_port(config.url)
    if not config.embedded_server or port is None:
        yield from_environment(config)
        return
    if _something_listens(port):
        log.info("a server already listens on %s: using it, not the embedded one", config.url)
        yield from_environment(config)
        return
    settings = ServerSettings.generate(
        Ports(http=port, rtc_tcp=free_port(), rtc_udp=free_port(socket.SOCK_DGRAM))
    )
    # One fixed name per port: re-runs overwrite it instead of piling up temp files,
    # and it stays after a failure for the user to read.
    log_path = _runtime_file(port, "log")
    log_path.unlink(missing_ok=True)
    secrets_path = _runtime_file(port, "credentials.json")
    server = LiveKitServer(settings, log_path=log_path)
    log.info("nothing listens on %s: starting the embedded livekit-server", config.url)
    try:
        await anyio.to_thread.run_sync(server.start)
        credentials = Credentials(config.url, server.api_key, server.api_secret)
        descriptor = os.open(secrets_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump({"api_key": server.api_key, "api_secret": server.api_secret}, out)
        yield credentials
    finally:
        secrets_path.unlink(missing_ok=True)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.stop)
        log.info("embedded livekit-server stopped (log: %s)", log_path)
