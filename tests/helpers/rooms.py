"""Room trees under test: the real actors against the real server, one bot each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs

from actors import ActorRef, ActorState, Backoff, RestartIntensity, WhichChildrenFrame, open_actor
from actors.room import BotFactory, RoomSettings, RoomStats, room_spec
from supervisor.bots.echo import create_bot as echo_bot
from tests.helpers.participants import ServerCredentials
from tests.helpers.probes import wait_until


@attrs.frozen
class RoomUnderTest:
    """A running room tree and what a test reads of it."""

    ref: ActorRef
    settings: RoomSettings
    stats: RoomStats

    async def child(self, name: str) -> ActorRef:
        infos = await self.ref.ask(WhichChildrenFrame())
        return next(info.ref for info in infos if info.name == name)

    async def wait_running(self, name: str, incarnation: int, timeout: float = 20.0) -> None:
        """Wait until child `name` runs its `incarnation`-th life."""
        child = await self.child(name)
        await wait_until(
            lambda: child.incarnation >= incarnation and child.state is ActorState.RUNNING,
            timeout,
        )


def settings_for(
    server: ServerCredentials, room: str, bot: BotFactory = echo_bot, **overrides: Any
) -> RoomSettings:
    return RoomSettings(
        room=room,
        url=server.url,
        api_key=server.api_key,
        api_secret=server.api_secret,
        bot=bot,
        **overrides,
    )


@asynccontextmanager
async def running_room(
    server: ServerCredentials,
    room: str,
    bot: BotFactory = echo_bot,
    *,
    intensity: RestartIntensity = RestartIntensity(max_restarts=10, within_seconds=60),
    backoff: Backoff = Backoff(initial=0.05, maximum=1.0),
    **overrides: Any,
) -> AsyncIterator[RoomUnderTest]:
    """One room's actor tree, joined and serving, stopped on exit."""
    settings = settings_for(server, room, bot, **overrides)
    stats = RoomStats()
    spec = room_spec(settings, stats, intensity=intensity, backoff=backoff)
    async with open_actor(spec) as ref:
        yield RoomUnderTest(ref, settings, stats)
