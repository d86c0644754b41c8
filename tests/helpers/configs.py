"""The configs the unit tests build in memory: the echo bot on a server at a loopback URL
nobody dials, with the tables a test adds, and the room set such a config makes (the
process's rooms, without a supervisor running them)."""

from __future__ import annotations

from typing import Any

from supervisor.config import Config, parse_config
from supervisor.livekit_server.access import Credentials
from supervisor.process.rooms import RoomSet

ECHO_BOT = "supervisor.bots.echo:create_bot"
URL = "ws://127.0.0.1:7880"


def echo_config(*room_names: str, **tables: Any) -> Config:
    """`[livekit]` at `URL`, the echo `[bot]`, a `[[rooms]]` entry per name, and `tables`
    (a table given replaces the default one)."""
    doc = {"livekit": {"url": URL}, "bot": {"factory": ECHO_BOT}, **tables}
    if room_names:
        doc["rooms"] = [{"name": name} for name in room_names]
    return parse_config(doc, environ={})


def echo_room_set(*room_names: str, **tables: Any) -> RoomSet:
    """`echo_config`'s room set, with credentials that reach nothing."""
    config = echo_config(*room_names, **tables)
    return RoomSet(config, Credentials(config.livekit.url, "key", "secret-never-shown"))
