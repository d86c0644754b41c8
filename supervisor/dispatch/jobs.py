"""Dispatched rooms: each agent job from its offer to its last status.

A job accepted is *starting* until its assignment comes (the server sends it right
after our yes; one that does not come within `ASSIGNMENT_TIMEOUT_SECONDS` is
forgotten), then a room tree under the process's room supervisor, like a configured
room's, joined with the assignment's token. Its task watches the tree and the room and
decides how the job ends:

- succeeded: the bot was alone (or with other agents only) for `idle_timeout_seconds`, the job ran
  `max_duration_seconds`, the server ended the room (closed, deleted, the bot removed),
  the server terminated the job (a dispatch deleted), or the worker drained;
- and a participant's job (`job_type` participant or publisher) succeeded once its
  participant left: at once when they left deliberately (`DELIBERATE_LEAVES`, as
  livekit-agents closes its session then), else (their connection failed) after
  `idle_timeout_seconds` without them, time to come back. The server does not end
  such a job itself: it ends a job when the job's *bot* leaves;
- failed, with the error: the room tree was quarantined (past its restart intensity).

The status is reported before the bot leaves: livekit-server marks a job whose agent
leaves the room while it still runs as failed ("agent worker left the room").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Set

import anyio
import attrs
from anyio.abc import TaskGroup
from livekit.protocol import agent

from actors import ActorError, ActorRef, ActorState, StartChildFrame, StopChildFrame
from actors.room import AGENT_NAME_ATTRIBUTE, Job, RoomStats
from supervisor.config import Config
from supervisor.dispatch.admission import Accept, Reject
from supervisor.process.rooms import RoomSet

log = logging.getLogger("supervisor.dispatch")

ASSIGNMENT_TIMEOUT_SECONDS = 10.0
"""livekit-server sends the assignment at once after a yes, or gives up after 10 s."""
WATCH_SECONDS = 0.25
"""How often a job looks at its room: idle and duration limits are this precise..."""
JOIN_WATCH_SECONDS = 0.05
"""...and until the bot joined, this often (the join time is a metric)."""
START_TIMEOUT_SECONDS = 30.0
"""The room supervisor answers a start at once, unless busy reloading configured rooms."""
DELIBERATE_LEAVES = frozenset({"client_initiated", "participant_removed", "user_rejected"})
"""Disconnect reasons of a participant who is gone for good: hung up, removed by the
server API, declined the call."""


def bot_identity(job: Job, accept: Accept, identity: str) -> str:
    """Who the bot is in the job's room: the accept hook's choice, else `identity` (the
    dispatched rooms' bot's) for a room job, `identity-JOBID` for a participant's job.

    Several bots of a participant's jobs share a room, and two with one identity
    cannot: the second's join replaces the first (livekit-server's duplicate identity),
    and the server, which keys the jobs of a room by their bot's identity, would end the
    wrong job as the first bot leaves."""
    if accept.identity:
        return accept.identity
    return identity if job.participant is None else f"{identity}-{job.id}"


def job_of(job: agent.Job) -> Job:
    """The frozen view of a server's job, for the accept hook and the bot."""
    return Job(
        id=job.id,
        room=job.room.name,
        room_sid=job.room.sid,
        room_metadata=job.room.metadata,
        dispatch_id=job.dispatch_id,
        metadata=job.metadata,
        agent_name=job.agent_name,
        participant=job.participant.identity if job.HasField("participant") else None,
        attributes=dict(job.attributes),
    )


def _strings(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


@attrs.frozen
class ServedJob:
    """A job this process serves, with what a token for the same bot needs: what a
    survivor restores when this process dies (`supervisor.dispatch.fleet`)."""

    job: Job
    identity: str
    name: str
    metadata: str
    attributes: Mapping[str, str] = attrs.field(converter=_strings)
    """The bot's (the accept hook's), `lk.agent_name` aside."""

    def token_attributes(self) -> dict[str, str]:
        """The bot's attributes as the server gives them: its own and its agent name."""
        return {**self.attributes, AGENT_NAME_ATTRIBUTE: self.job.agent_name}


@attrs.frozen
class Outcome:
    status: agent.JobStatus
    reason: str


@attrs.frozen
class _Starting:
    """A job accepted (or being decided on) and not yet assigned."""

    job: Job
    accept: Accept
    since: float


@attrs.define
class _Running:
    job: Job
    accepted_at: float
    identity: str
    """The bot's, in the job's room."""
    accept: Accept
    restored: bool = False
    """Restored from a dead member of the fleet, not assigned by the server: no status
    to report, no dispatch latency to observe."""
    predecessor: str | None = None
    """Taken over from a draining member, whose bot this is (`RoomSettings.predecessor`)..."""
    handed_state: str = ""
    """...with the state that bot offered (`RoomTransport.offer_state`), for this one."""
    ended: anyio.Event = attrs.field(factory=anyio.Event)
    """Set once the job's end is decided: it is ending, its tree stopping."""
    reason: str = ""
    stats: RoomStats | None = None
    """Its tree's, once built (after a previous job of the same key stopped)."""
    gone: anyio.Event = attrs.field(factory=anyio.Event)
    """Set once its tree is stopped and its name free."""
    timed: set[str] = attrs.field(factory=set)
    """The dispatch latencies observed so far (`Jobs._time_media`), each once a job."""

    def end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.reason = reason
            self.ended.set()

    def serving(self) -> bool:
        """Not ending, and (a participant's job) its participant not gone for good."""
        stats = self.stats
        gone = stats is not None and _left_for_good(self.job, stats) is not None
        return not self.ended.is_set() and not gone


class Jobs:
    """The jobs of this process: starting (accepted, awaiting assignment) and running."""

    def __init__(
        self,
        config: Config,
        room_set: RoomSet,
        rooms: ActorRef,
        url: str,
        tasks: TaskGroup,
        report: Callable[[agent.WorkerMessage], None],
        on_change: Callable[[], None],
    ) -> None:
        self.config = config
        self.room_set = room_set
        self.rooms = rooms
        self.url = url
        self.tasks = tasks
        self.report = report
        self.on_change = on_change
        self.starting: dict[str, _Starting] = {}
        self.running: dict[str, _Running] = {}
        self._changed_event = anyio.Event()

    def serves(self, job: Job) -> bool:
        """Whether a bot of this process serves what `job` asks for, or is on its way:
        the room for a room job, the (room, participant) pair (`Job.key`) for a
        participant's job; a configured room serves the room.

        A job that is ending serves no longer, nor one whose participant left for good
        (known as the leave arrives, before its job's next look at the room): a caller
        who hangs up and calls again at once gets a new job, not a refusal, and its
        tree waits for the old one's to stop (`_serve`)."""
        key = job.key
        return (
            any(room.name == key for room in self.room_set.config.rooms)
            or any(entry.job.key == key for entry in self.starting.values())
            or any(r.job.key == key and r.serving() for r in self.running.values())
        )

    def end_made_anew(self, job: Job) -> list[anyio.Event]:
        """End this process's jobs of `job.key` whose room is gone, and return each
        one's `gone`: the server offers the room under another sid, so it was made
        anew (its node stopped, or the server restarted) while they ran.

        The node that assigned such a job may be gone with its room and never end it,
        while the job's bot, its SDK reconnecting by itself, comes into the room made
        anew. Declined as served, that room would get no job of its own and keep no bot
        once this one leaves at its idle timeout: a caller coming back would find
        nobody. Ended, its bot is on its way out (`leaving`) and the offer is this
        process's to take."""
        ended = []
        for running in self.running.values():
            old = running.job.room_sid
            if running.job.key != job.key or not running.serving():
                continue
            if old and job.room_sid and old != job.room_sid:
                log.info("[%s] job %s: the room was made anew (%s, was %s): this job ends",
                         job.key, running.job.id, job.room_sid, old)
                running.end(f"its room was made anew ({job.room_sid})")
                ended.append(running.gone)
        return ended

    def leaving(self, room: str, identity: str) -> bool:
        """Whether `identity` in `room` is the bot of a room job of this process that is
        ending: a bot on its way out, not one that serves the room.

        Its tree leaves last (its bot may say goodbye first), and until then the bot
        may even be back in a room made anew: when its room's node stops, the server may
        end the job while the SDK, reconnecting by itself through a node that lives,
        creates the room again. That room's offer is this process's to take
        (`AgentWorker._make_way`; the new tree starts once this one stopped, `_serve`),
        or the room keeps no bot once this one is gone."""
        return any(
            r.job.participant is None
            and r.job.room == room
            and r.identity == identity
            and not r.serving()
            for r in self.running.values()
        )

    def identity_clash(self, job: Job, accept: Accept) -> Reject | None:
        """A no for `accept` when its bot identity is another bot's of this process in
        the job's room (an accept hook naming every participant's bot alike): the
        second join would replace the first (`bot_identity`). A job of the same key
        does not count: its tree starts once the earlier one's stopped."""
        identity = self._identity(job, accept)
        others = [
            *((e.job, self._identity(e.job, e.accept)) for e in self.starting.values()),
            *((r.job, r.identity) for r in self.running.values()),
        ]
        for other, taken in others:
            if other.room == job.room and other.key != job.key and taken == identity:
                return Reject(f"the bot identity {identity!r} is job {other.id}'s in that room")
        return None

    def _identity(self, job: Job, accept: Accept) -> str:
        return bot_identity(job, accept, self.config.dispatch_bot.identity)

    def reserve(self, job: Job) -> None:
        """Count `job` as starting while the accept hook decides."""
        self.starting[job.id] = _Starting(job, Accept(), anyio.current_time())
        self._changed()

    def accept(self, job: Job, accept: Accept) -> None:
        """The yes is on its way to the server: expect the assignment."""
        self.starting[job.id] = _Starting(job, accept, anyio.current_time())
        self.tasks.start_soon(self._expire, job.id)

    def release(self, job_id: str) -> None:
        if self.starting.pop(job_id, None) is not None:
            self._changed()

    def assigned(self, assignment: agent.JobAssignment) -> None:
        """Start the assigned job's room, joined with the assignment's token."""
        entry = self.starting.pop(assignment.job.id, None)
        if entry is None:
            log.warning(
                "[%s] assignment for job %s, which this worker did not accept: ignored",
                assignment.job.room.name,
                assignment.job.id,
            )
            return
        job = entry.job
        identity = self._identity(job, entry.accept)
        running = _Running(job, entry.since, identity, entry.accept)
        self.running[job.id] = running
        url = assignment.url or self.url
        self.tasks.start_soon(self._serve, running, assignment.token, url, identity)

    def restore(
        self,
        served: ServedJob,
        token: str,
        url: str,
        predecessor: str | None = None,
        handed_state: str = "",
    ) -> None:
        """Run a dead fleet member's job here, or one a draining member handed over
        (its bot `predecessor`, with `handed_state`, the state it offered), joined with
        `token` (minted for `served.identity`)."""
        accept = Accept(name=served.name, metadata=served.metadata, attributes=served.attributes)
        running = _Running(served.job, anyio.current_time(), served.identity, accept, True)
        running.predecessor, running.handed_state = predecessor, handed_state
        self.running[served.job.id] = running
        self.tasks.start_soon(self._serve, running, token, url, served.identity)
        self._changed()

    def served_jobs(self) -> list[ServedJob]:
        """The jobs running here and not ending, for the fleet's record."""
        return [
            ServedJob(
                r.job,
                r.identity,
                r.accept.name or r.identity,
                r.accept.metadata,
                r.accept.attributes,
            )
            for r in self.running.values()
            if r.serving()
        ]

    def offered_state(self, job_id: str) -> str:
        """The state the bot of the job running as `job_id` last offered for a handoff
        (JSON text), or ""."""
        running = self.running.get(job_id)
        stats = None if running is None else running.stats
        return "" if stats is None else stats.offered_state

    async def published(self, job_id: str) -> bool:
        """Wait until the bot of the job running as `job_id` has published its track
        (True), or the job ended (False)."""
        return await self._until(job_id, lambda stats: stats.track_published_at)

    async def subscribed(self, job_id: str) -> bool:
        """Wait until a participant subscribed to the track of the bot of the job running
        as `job_id` (True), or the job ended (False)."""
        return await self._until(job_id, lambda stats: stats.track_subscribed_at)

    async def _until(
        self, job_id: str, moment: Callable[[RoomStats], float | None]
    ) -> bool:
        """Wait until the room of the job running as `job_id` noted `moment` (True), or
        the job ended (False)."""
        while (running := self.running.get(job_id)) is not None and running.serving():
            stats = running.stats
            if stats is not None and moment(stats) is not None:
                return True
            with anyio.move_on_after(JOIN_WATCH_SECONDS):
                await running.ended.wait()
        return False

    def predecessor_removed(self, job_id: str) -> None:
        """The server removed the bot that the job running as `job_id` takes over from:
        its bot is heard from now on (`RoomStats.predecessor_removed`)."""
        running = self.running.get(job_id)
        if running is not None and running.stats is not None:
            running.stats.predecessor_removed = True

    def end(self, job_id: str, reason: str) -> None:
        """End the job running as `job_id`, if it runs here: its bot leaves."""
        running = self.running.get(job_id)
        if running is not None:
            running.end(reason)

    def runs(self, job_id: str) -> bool:
        """Whether the job `job_id` runs here and serves (`_Running.serving`)."""
        running = self.running.get(job_id)
        return running is not None and running.serving()

    def ended(self, job_id: str) -> anyio.Event | None:
        """Set once the end of the job running as `job_id` is decided; None when no such
        job runs here."""
        running = self.running.get(job_id)
        return None if running is None else running.ended

    def terminate(self, job_id: str) -> None:
        """The server ended the job (its dispatch deleted): the bot leaves."""
        running = self.running.get(job_id)
        if running is None:
            log.info("termination of job %s, which does not run here: ignored", job_id)
            return
        running.end("terminated by the server")

    def end_all(self, reason: str) -> None:
        for running in self.running.values():
            running.end(reason)

    async def wait_idle(self) -> None:
        """Until no job is starting or running."""
        while self.starting or self.running:
            await self._changed_event.wait()

    def _changed(self) -> None:
        """A job started or ended: the worker's status may change."""
        self._changed_event.set()
        self._changed_event = anyio.Event()
        self.on_change()

    async def _expire(self, job_id: str) -> None:
        await anyio.sleep(ASSIGNMENT_TIMEOUT_SECONDS)
        if job_id in self.starting:
            job = self.starting[job_id].job
            log.warning("[%s] job %s accepted but never assigned: forgotten", job.key, job_id)
            self.release(job_id)

    async def _serve(self, running: _Running, token: str, url: str, identity: str) -> None:
        job = running.job
        try:
            for earlier in [r for r in self.running.values() if r.job.key == job.key]:
                if earlier is not running:  # ending (see `serves`): its tree has the name
                    await earlier.gone.wait()
            spec = self.room_set.job_spec(
                job, token, url, identity, running.handed_state, running.predecessor
            )
            stats = running.stats = self.room_set.stats[job.key]
            log.info("[%s] job %s assigned: joining", job.key, job.id)
            try:
                # joins beside the other rooms' (up to `limits.join_concurrency`)
                start = StartChildFrame(spec, wait=False)
                ref = await self.rooms.ask(start, timeout=START_TIMEOUT_SECONDS)
            except ActorError as err:
                self._report(
                    job, Outcome(agent.JobStatus.JS_FAILED, f"the room did not start: {err}")
                )
                return
            outcome = await self._watch(running, ref, stats)
            self._time_media(running, stats)  # a first audio in the last moment
            running.end(outcome.reason)
            log.info(
                "[%s] job %s ends (%s): %s",
                job.key,
                job.id,
                agent.JobStatus.Name(outcome.status),
                outcome.reason,
            )
            self._report(job, outcome)
            try:
                # leaves beside the other rooms' starts and leaves (a drain ends them together)
                await self.rooms.ask(
                    StopChildFrame(job.key, wait=False),
                    timeout=self.config.supervision.shutdown_timeout_seconds + 5,
                )
            except ActorError as err:
                log.warning("[%s] job %s: stopping the room failed: %s", job.key, job.id, err)
        finally:
            if running.stats is not None:
                self.room_set.job_ended(job)
            del self.running[job.id]
            running.gone.set()
            self._changed()

    async def _watch(self, running: _Running, ref: ActorRef, stats: RoomStats) -> Outcome:
        """How the job ends, looking at the room every `WATCH_SECONDS`."""
        dispatch = self.config.dispatch
        job = running.job
        started = anyio.current_time()
        joined = False
        alone_since: float | None = None
        while not running.ended.is_set():
            now = anyio.current_time()
            if ref.state is ActorState.BACKOFF:  # a room tree fails only past its intensity
                return Outcome(agent.JobStatus.JS_FAILED, self._last_error(job.key))
            if stats.ended is not None:
                return Outcome(
                    agent.JobStatus.JS_SUCCESS, f"the server ended the room ({stats.ended})"
                )
            if not joined and ref.state is ActorState.RUNNING and stats.connection == "connected":
                joined = True
                alone_since = now
                if self.room_set.worker is not None and not running.restored:
                    self.room_set.worker.join_time.observe(now - running.accepted_at)
                self._report(job, Outcome(agent.JobStatus.JS_RUNNING, ""))
            if dispatch.max_duration_seconds and now - started >= dispatch.max_duration_seconds:
                return Outcome(
                    agent.JobStatus.JS_SUCCESS,
                    f"max_duration_seconds ({dispatch.max_duration_seconds:g}) reached",
                )
            if joined:
                self._time_media(running, stats)
                if (gone := _left_for_good(job, stats)) is not None:
                    return Outcome(agent.JobStatus.JS_SUCCESS, gone)
                if _has_company(job, stats):
                    alone_since = None
                elif alone_since is None:
                    alone_since = now
                elif now - alone_since >= dispatch.idle_timeout_seconds:
                    limit = dispatch.idle_timeout_seconds
                    alone = "alone" if job.participant is None else f"without {job.participant}"
                    return Outcome(
                        agent.JobStatus.JS_SUCCESS, f"{alone} for idle_timeout_seconds ({limit:g})"
                    )
            with anyio.move_on_after(WATCH_SECONDS if joined else JOIN_WATCH_SECONDS):
                await running.ended.wait()
        return Outcome(agent.JobStatus.JS_SUCCESS, running.reason)

    def _time_media(self, running: _Running, stats: RoomStats) -> None:
        """Observe the offer accepted to the bot's track published and to its first
        audio, once each, at the moments the room's tree noted them (`RoomStats`): the
        interval of the look does not blur them."""
        fleet, joined, published = self.room_set.fleet, stats.joined_at, stats.track_published_at
        if (
            running.predecessor is not None
            and joined is not None
            and published is not None
            and fleet is not None
            and "handoff" not in running.timed
        ):
            running.timed.add("handoff")
            fleet.handoff_time.observe(published - joined)
        worker = self.room_set.worker
        if worker is None or running.restored:
            return
        for moment, at, histogram in (
            ("track", stats.track_published_at, worker.track_time),
            ("audio", stats.first_audio_at, worker.first_audio_time),
        ):
            if at is not None and moment not in running.timed:
                running.timed.add(moment)
                histogram.observe(at - running.accepted_at)

    def _last_error(self, room: str) -> str:
        supervisor = self.room_set.supervisor
        for child in supervisor.children() if supervisor else ():
            if child.name == room and child.last_error is not None:
                return f"the room was quarantined: {child.last_error}"
        return "the room was quarantined"

    def _report(self, job: Job, outcome: Outcome) -> None:
        worker = self.room_set.worker
        if worker is not None and outcome.status != agent.JobStatus.JS_RUNNING:
            worker.ended[
                "failed" if outcome.status == agent.JobStatus.JS_FAILED else "succeeded"
            ] += 1
        update = agent.UpdateJobStatus(job_id=job.id, status=outcome.status)
        if outcome.status == agent.JobStatus.JS_FAILED:
            update.error = outcome.reason
        self.report(agent.WorkerMessage(update_job=update))


def serves_someone(job: Job, present: Set[str], agents: Set[str]) -> bool:
    """Whether a room with `present` in it (`agents` among them) has someone the job's
    bot serves: its participant, for a participant's job; anyone but an agent, else."""
    if job.participant is not None:
        return job.participant in present
    return bool(present - agents)


def _has_company(job: Job, stats: RoomStats) -> bool:
    """Whether the bot has someone to serve. While its connection is not joined it
    cannot tell, and counts as served: the SDK reconnecting reports everyone gone, so
    an idle timeout would otherwise end a job whose callers never left."""
    return stats.connection != "connected" or serves_someone(job, stats.participants, stats.agents)


def _left_for_good(job: Job, stats: RoomStats) -> str | None:
    """Why a participant's job ends at once: its participant left deliberately."""
    reason = None if job.participant is None else stats.left.get(job.participant)
    if reason not in DELIBERATE_LEAVES:
        return None
    return f"participant {job.participant} left ({reason})"
