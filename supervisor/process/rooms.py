"""The process's room supervisor: every room a child, and no room can take it down.

Each room is its own rest_for_one tree with the config's restart intensity. A room
that exceeds it escalates here, where the intensity is unlimited: the room is
quarantined (state backoff, its last error a `RestartIntensityError`) and retried
after `quarantine_seconds`, doubling up to ten times that, while every other room goes
on. Rooms join and stop `join_concurrency` at a time.
"""

from __future__ import annotations

import logging
from collections import Counter

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
from actors.room import BucketCounts, Job, RoomSettings, RoomStats, room_spec
from supervisor.config import Config, RoomConfig
from supervisor.livekit_server.access import Credentials
from supervisor.process.recycle import Bounds

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
        audio_frame_ms=bot.audio_frame_ms,
        audio_in_user_tracks=bot.audio_in_user_tracks,
        vad=bot.vad,
        vad_batch_ms=bot.vad_batch_ms,
        e2ee_key=room.e2ee_key,
    )


OFFER_ANSWERS = ("accepted", "rejected", "full", "draining", "served")
"""How the worker answered an offer: accepted; rejected by the accept hook; declined
because the worker was full, draining, or already serving the room."""
JOB_ENDS = ("succeeded", "failed")
DISPATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
"""Seconds from an offer accepted to the bot joined, its track published, its first
audio: finest around the 1 s aim (one room takes 0.1 s here, a burst of 20 up to 4 s),
with bounds at the alert's 2 s and at 3 s so its quantiles are not interpolated far."""


@attrs.define
class WorkerState:
    """The agent worker's state for `/readyz` and the metrics (`supervisor.dispatch.agent_worker`
    and `supervisor.dispatch.jobs` keep it)."""

    registered: bool = False
    worker_id: str = ""
    """The server's id of the current registration (of the last one while not registered)."""
    draining: bool = False
    full: bool = False
    """As last reported to the server (WS_FULL)."""
    load: float = 0.0
    """As last reported to the server."""
    offers: Counter[str] = attrs.field(factory=Counter)
    """By answer, one of `OFFER_ANSWERS`."""
    ended: Counter[str] = attrs.field(factory=Counter)
    """Jobs ended, by status, one of `JOB_ENDS`."""
    join_time: BucketCounts = attrs.field(factory=lambda: BucketCounts(DISPATCH_BUCKETS))
    """From an offer accepted to the bot joined in the room."""
    track_time: BucketCounts = attrs.field(factory=lambda: BucketCounts(DISPATCH_BUCKETS))
    """From an offer accepted to the bot's audio track first published in the room."""
    first_audio_time: BucketCounts = attrs.field(factory=lambda: BucketCounts(DISPATCH_BUCKETS))
    """From an offer accepted to the bot's first audio captured into its track."""


HANDOFF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
"""Seconds of a handoff's steps: finest below the 0.5 s a caller may hear of one."""


@attrs.define
class FleetState:
    """The fleet membership's (`supervisor.dispatch.fleet`), for `/status` and the metrics."""

    identity: str = ""
    connected: bool = False
    members: int = 0
    """Live members heard, this one included (0 while not in the fleet)."""
    others: list[tuple[str, int, bool]] = attrs.field(factory=list)
    """The other live members: identity, jobs in its record, full."""
    restored: int = 0
    """Jobs this process restored."""
    handed: int = 0
    """Jobs this process handed over to another member as it drained (`[dispatch] handoff`)."""
    taken: int = 0
    """Jobs this process took over from a draining member."""
    not_handed: int = 0
    """Jobs this process, draining, could hand to no member: they drained here."""
    handoff_time: BucketCounts = attrs.field(factory=lambda: BucketCounts(HANDOFF_BUCKETS))
    """In each job this process took over: from its bot's join beside the draining
    member's to its audio track published there (the caller hears the old bot meanwhile)."""
    removal_time: BucketCounts = attrs.field(factory=lambda: BucketCounts(HANDOFF_BUCKETS))
    """In each job this process took over: from its request removing the old bot to the
    server's answer, from which its own bot is heard. The caller hears neither bot for
    about this long plus the new bot's media path (~0.1-0.2 s): the part of the gap the
    handoff itself adds."""
    dead: int = 0
    """Members this process found dead."""


@attrs.define
class RoomSet:
    """The rooms this process serves and how to build each one's tree."""

    config: Config
    credentials: Credentials
    stats: dict[str, RoomStats] = attrs.field(factory=dict)
    retired: RoomStats = attrs.field(factory=RoomStats)
    """The counts of dispatched rooms whose jobs ended, added up (`job_ended`)."""
    supervisor: Supervisor | None = None
    """The live room supervisor, kept as it is built: the metrics exporter reads its
    children in place (`Supervisor.children()`) without asking it anything (busy
    starting a room, it answers no question until it is done)."""

    rooms_served: int = 0
    """Room trees this process started and saw end: dispatched (and restored) jobs
    ended, configured rooms a reload stopped. What `[recycle] max_rooms_served` bounds:
    the rtc SDK's memory grows with rooms gone, not with rooms running."""
    recycle: Bounds | None = None
    """This worker's `[recycle]` bounds, when a parent can replace it: once one is
    passed (`Bounds.due`) it serves on until its successor takes over."""
    dispatched: dict[str, Job] = attrs.field(factory=dict)
    """The room trees running for an agent job (`supervisor.dispatch.jobs`), by tree name
    (`Job.key`: the room's name, or `room:participant` for a participant's job)."""
    worker: WorkerState | None = attrs.field()
    """The agent worker's state while `[dispatch]` is enabled. Built with the set, not
    with the worker: between the configured rooms running and the worker starting,
    `/readyz` must already say the worker is not registered, not that there is none."""
    fleet: FleetState | None = attrs.field()
    """The fleet membership's, with `[dispatch] restore`."""

    @worker.default
    def _worker_if_dispatching(self) -> WorkerState | None:
        return WorkerState() if self.config.dispatch.enabled else None

    @fleet.default
    def _fleet_if_restoring(self) -> FleetState | None:
        dispatch = self.config.dispatch
        return FleetState() if dispatch.enabled and dispatch.restore else None

    def room_names(self) -> list[str]:
        """Every room tree this process runs now: the configured, then the dispatched."""
        return [room.name for room in self.config.rooms] + list(self.dispatched)

    def room_spec(self, room: RoomConfig) -> ChildSpec:
        return self._spec(room_settings(room, self.credentials))

    def job_spec(
        self,
        job: Job,
        token: str,
        url: str,
        identity: str,
        handed_state: str = "",
        predecessor: str | None = None,
    ) -> ChildSpec:
        """A dispatched room's tree: the dispatched rooms' bot (`Config.dispatch_bot`),
        joined with the job assignment's token (which names the bot `identity`), given
        the state its `predecessor` bot offered if the room was handed over; counted as
        served until `job_ended`."""
        static = room_settings(RoomConfig(job.room, self.config.dispatch_bot), self.credentials)
        livekit = self.config.livekit
        others = tuple(u for u in (self.credentials.url, *livekit.cluster_urls) if u != url)
        settings = attrs.evolve(
            static,
            url=url,
            join_token=token,
            job=job,
            handed_state=handed_state,
            predecessor=predecessor,
            identity=identity,
            name=identity,
            fallback_urls=others if livekit.cluster_urls else (),
        )
        self.dispatched[job.key] = job
        return self._spec(settings)

    def job_ended(self, job: Job) -> None:
        """The job's room is stopped: its counts join `retired` (a static room of the
        same name keeps its own)."""
        self.rooms_served += 1
        self.dispatched.pop(job.key, None)
        if all(room.name != job.key for room in self.config.rooms):
            ended = self.stats.pop(job.key, None)
            if ended is not None:
                self.retired.absorb(ended)

    def _spec(self, settings: RoomSettings) -> ChildSpec:
        sv = self.config.supervision
        stats = self.stats.setdefault(settings.key, RoomStats())
        stats.ended = None  # a room name used again by a later job
        return room_spec(
            settings,
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
            self.rooms_served += 1
            log.info("[%s] stopped: no longer configured as it was", name)
        for name in started:
            if name in self.dispatched:  # one tree per room name
                log.warning("[%s] not started: a dispatched job serves the room; reload "
                            "again once it ended", name)
                continue
            await rooms.ask(StartChildFrame(self.room_spec(wanted[name])), timeout=60)
            log.info("[%s] started", name)
        return started, stopped
