"""The process's room supervisor: every room a child, and no room can take it down.

Each room is its own rest_for_one tree with the config's restart intensity. A room
that exceeds it escalates here, where the intensity is unlimited: the room is
quarantined (state backoff, its last error a `RestartIntensityError`) and retried
after `quarantine_seconds`, doubling up to ten times that, while every other room goes
on. Rooms join and stop `join_concurrency` at a time.
"""

from __future__ import annotations

import logging

import attrs

from actors import (
    ActorRef,
    Backoff,
    ChildSpec,
    RestartIntensity,
    StartChildFrame,
    StopChildFrame,
    Supervisor,
)
from actors.room import RoomSettings, RoomStats, room_spec
from supervisor.access import Credentials
from supervisor.config import Config, RoomConfig

log = logging.getLogger("supervisor")

ROOMS = "rooms"


def room_settings(room: RoomConfig, credentials: Credentials) -> RoomSettings:
    bot = room.bot
    return RoomSettings(
        room=room.name,
        url=credentials.url,
        api_key=credentials.api_key,
        api_secret=credentials.api_secret,
        bot=bot.load,
        identity=bot.identity,
        name=bot.identity,
        audio_in_sample_rate=bot.audio_in_sample_rate,
        audio_out_sample_rate=bot.audio_out_sample_rate,
        audio_in_user_tracks=bot.audio_in_user_tracks,
        vad=bot.vad,
        e2ee_key=room.e2ee_key,
    )


@attrs.define
class RoomSet:
    """The rooms this process serves and how to build each one's tree."""

    config: Config
    credentials: Credentials
    stats: dict[str, RoomStats] = attrs.field(factory=dict)
    supervisor: Supervisor | None = None
    """The live room supervisor, kept as it is built: the metrics exporter reads its
    children in place (`Supervisor.children()`) without asking it anything (busy
    starting a room, it answers no question until it is done)."""

    def room_spec(self, room: RoomConfig) -> ChildSpec:
        sv = self.config.supervision
        stats = self.stats.setdefault(room.name, RoomStats())
        return room_spec(
            room_settings(room, self.credentials),
            stats,
            intensity=RestartIntensity(sv.max_restarts, sv.within_seconds),
            backoff=Backoff(initial=sv.backoff_initial_seconds, maximum=sv.backoff_max_seconds),
        )

    def supervisor_spec(self) -> ChildSpec:
        sv = self.config.supervision
        children = [self.room_spec(room) for room in self.config.rooms]
        quarantine = Backoff(
            initial=sv.quarantine_seconds, maximum=sv.quarantine_seconds * 10, jitter=0.2
        )

        def build() -> Supervisor:
            self.supervisor = Supervisor(
                children,
                intensity=RestartIntensity(None, within_seconds=sv.quarantine_seconds * 20),
                backoff=quarantine,
                concurrency=self.config.limits.join_concurrency,
            )
            return self.supervisor

        return ChildSpec(ROOMS, build, shutdown_timeout=sv.shutdown_timeout_seconds)

    async def reload(self, rooms: ActorRef, new: Config) -> tuple[list[str], list[str]]:
        """Move the running rooms to `new`: start added rooms, stop removed ones, restart
        changed ones; leave the others untouched (no reconnect, no audio gap)."""
        old = {room.name: room for room in self.config.rooms}
        wanted = {room.name: room for room in new.rooms}
        stopped = [name for name, room in old.items() if wanted.get(name) != room]
        started = [name for name, room in wanted.items() if old.get(name) != room]
        self.config = new
        for name in stopped:
            timeout = new.supervision.shutdown_timeout_seconds + 5
            await rooms.ask(StopChildFrame(name), timeout=timeout)
            log.info("[%s] stopped: no longer configured as it was", name)
        for name in started:
            await rooms.ask(StartChildFrame(self.room_spec(wanted[name])), timeout=60)
            log.info("[%s] started", name)
        return started, stopped
