"""`supervisor`: the command line. Exit codes: 0 clean, 1 runtime failure, 2 bad usage or config."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import tomllib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio
import attrs
import loguru
from livekit import api

from actors import ChildSpec, RestartIntensity, Supervisor, open_actor
from actors.room import BotFactory, RoomSettings, RoomStats, room_spec
from supervisor import __version__
from supervisor.bots import BotLoadError, load_bot
from supervisor.livekit_server import (
    LiveKitServer,
    LiveKitServerError,
    Ports,
    ServerSettings,
    free_port,
)

log = logging.getLogger("supervisor")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class ConfigError(Exception):
    """A config or environment problem the user must fix; reported in one line, exit 2."""


# --- config (a later issue replaces this with the full attrs config model) ------------


@attrs.frozen
class RunConfig:
    url: str
    api_key_env: str
    api_secret_env: str
    embedded_server: bool
    bot_factory: str
    bot: BotFactory
    rooms: tuple[str, ...]


def _table(doc: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        shown = "missing" if value is None else f"= {value!r}"
        raise ConfigError(f"[{key}] is {shown}: expected a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(
            f"[{key}] {unknown[0]} is not a known key: expected one of {', '.join(sorted(allowed))}"
        )
    return value


def _field(table: dict[str, Any], where: str, key: str, kind: type, expected: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where} {key} is missing: expected {expected}")
    value = table[key]
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise ConfigError(f"{where} {key} = {value!r}: expected {expected}")
    return value


def parse_config(doc: dict[str, Any]) -> RunConfig:
    """Check every key up front so a typo fails at start, not an hour into a run."""
    unknown = sorted(set(doc) - {"livekit", "bot", "rooms"})
    if unknown:
        raise ConfigError(f"{unknown[0]} is not a known key: expected livekit, bot, rooms")
    lk = _table(doc, "livekit", {"url", "api_key_env", "api_secret_env", "embedded_server"})
    url = _field(lk, "[livekit]", "url", str, "a ws:// or wss:// URL")
    if urlsplit(url).scheme not in ("ws", "wss", "http", "https") or not urlsplit(url).hostname:
        raise ConfigError(f"[livekit] url = {url!r}: expected a ws:// or wss:// URL")
    bot = _table(doc, "bot", {"factory"})
    factory = _field(bot, "[bot]", "factory", str, "'module:function'")
    if factory.count(":") != 1:
        raise ConfigError(f"[bot] factory = {factory!r}: expected 'module:function'")
    try:
        bot_factory = load_bot(factory)
    except BotLoadError as err:
        raise ConfigError(f"[bot] factory = {factory!r}: {err}") from err
    rooms = doc.get("rooms", [])
    if not isinstance(rooms, list) or not all(isinstance(room, dict) for room in rooms):
        raise ConfigError(f"rooms = {rooms!r}: expected [[rooms]] tables")
    names: list[str] = []
    for index, room in enumerate(rooms):
        where = f"[[rooms]] #{index + 1}"
        if set(room) - {"name"}:
            key = sorted(set(room) - {"name"})[0]
            raise ConfigError(f"{where} {key} is not a known key: expected name")
        name = _field(room, where, "name", str, "a room name")
        if name in names:
            raise ConfigError(f"{where} name = {name!r}: expected a name not used by another room")
        names.append(name)
    return RunConfig(
        url=url,
        api_key_env=_field(lk, "[livekit]", "api_key_env", str, "an environment variable name"),
        api_secret_env=_field(
            lk, "[livekit]", "api_secret_env", str, "an environment variable name"
        ),
        embedded_server=_field(lk, "[livekit]", "embedded_server", bool, "true or false"),
        bot_factory=factory,
        bot=bot_factory,
        rooms=tuple(names),
    )


def load_config(path: Path) -> RunConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from err
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: TOML syntax error: {err}") from err
    try:
        return parse_config(doc)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


# --- running ------------------------------------------------------------------------


@attrs.frozen
class Credentials:
    url: str
    api_key: str
    api_secret: str = attrs.field(repr=False)


def _embeddable_port(url: str) -> int | None:
    """The port of a URL the embedded server could serve (IPv4 loopback), else None."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        return None
    return parts.port or (443 if parts.scheme in ("wss", "https") else 80)


def _something_listens(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _env_credentials(config: RunConfig) -> Credentials:
    values = []
    for role, name in (
        ("api_key_env", config.api_key_env),
        ("api_secret_env", config.api_secret_env),
    ):
        value = os.environ.get(name)
        if not value:
            raise ConfigError(
                f"environment variable {name} (named by [livekit] {role}) is not set: "
                "expected the LiveKit server's credentials"
            )
        values.append(value)
    return Credentials(url=config.url, api_key=values[0], api_secret=values[1])


@contextlib.asynccontextmanager
async def livekit_credentials(config: RunConfig) -> AsyncIterator[Credentials]:
    """Credentials for the configured server, starting the embedded one when it applies."""
    port = _embeddable_port(config.url)
    if not config.embedded_server or port is None:
        yield _env_credentials(config)
        return
    if _something_listens(port):
        log.info("a server already listens on %s: using it, not the embedded one", config.url)
        yield _env_credentials(config)
        return
    settings = ServerSettings.generate(
        Ports(http=port, rtc_tcp=free_port(), rtc_udp=free_port(socket.SOCK_DGRAM))
    )
    # One fixed name per port: re-runs overwrite it instead of piling up temp files,
    # and it stays after a failure for the user to read.
    log_path = Path(tempfile.gettempdir()) / f"livekit-supervisor-embedded-{port}.log"
    log_path.unlink(missing_ok=True)
    server = LiveKitServer(settings, log_path=log_path)
    log.info("nothing listens on %s: starting the embedded livekit-server", config.url)
    try:
        await anyio.to_thread.run_sync(server.start)
        yield Credentials(url=server.url, api_key=server.api_key, api_secret=server.api_secret)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.stop)
        log.info("embedded livekit-server stopped (log: %s)", log_path)


async def create_rooms(credentials: Credentials, rooms: Sequence[str]) -> None:
    async with api.LiveKitAPI(credentials.url, credentials.api_key, credentials.api_secret) as lk:
        for name in rooms:
            room = await lk.room.create_room(api.CreateRoomRequest(name=name))
            log.info("room %s: ready on the server (sid %s)", name, room.sid)


async def run(config: RunConfig) -> None:
    """Serve until SIGINT, SIGTERM or SIGHUP.

    The signal receiver is installed before any work starts, so a Ctrl-C during
    start-up is not a KeyboardInterrupt halfway through: start-up finishes, then
    everything stops in order. SIGHUP (terminal closed) stops cleanly too, since
    the embedded server runs in its own session and would otherwise outlive us.
    """
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with livekit_credentials(config) as credentials:
            await create_rooms(credentials, config.rooms)
            async with open_actor(_rooms_spec(config, credentials)):
                log.info(
                    "ready: %d room(s) on %s with bot %s; Ctrl-C or SIGTERM stops",
                    len(config.rooms),
                    credentials.url,
                    config.bot_factory,
                )
                async for signum in signals:
                    log.info("%s received: stopping", signal.Signals(signum).name)
                    break


def _rooms_spec(config: RunConfig, credentials: Credentials) -> ChildSpec:
    """One supervisor over every room, each room its own rest_for_one tree.

    Not yet the process-level room supervisor of the design (quarantine of a room
    past its intensity, bounded-concurrency joins): until then a generous intensity
    keeps a failing room from taking the others down.
    """
    rooms = [
        room_spec(
            RoomSettings(
                room=name,
                url=credentials.url,
                api_key=credentials.api_key,
                api_secret=credentials.api_secret,
                bot=config.bot,
            ),
            RoomStats(),
        )
        for name in config.rooms
    ]
    return ChildSpec(
        "rooms",
        lambda: Supervisor(rooms, intensity=RestartIntensity(max_restarts=1000, within_seconds=60)),
        shutdown_timeout=None,
    )


# --- entry point --------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supervisor",
        description="Run a pipecat voice bot in many LiveKit rooms from one supervised process.",
        epilog="Exit codes: 0 clean stop, 1 runtime failure, 2 bad usage or config.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_parser = sub.add_parser("run", help="create the configured rooms and serve them")
    run_parser.add_argument("config", type=Path, metavar="CONFIG", help="path to config.toml")
    run_parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="stdlib logging level (default: info)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pipecat logs through loguru, at DEBUG unless told otherwise
    loguru.logger.remove()
    loguru.logger.add(sys.stderr, level="DEBUG" if args.log_level == "debug" else "WARNING")
    try:
        config = load_config(args.config)
        anyio.run(run, config, backend="asyncio")
    except ConfigError as err:
        print(f"supervisor: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (LiveKitServerError, api.TwirpError, aiohttp.ClientError, OSError) as err:
        log.error("%s: %s", type(err).__name__, err)
        return EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
