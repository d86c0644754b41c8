"""The supervisor as a LiveKit agent worker: its session on the server's `/agent` WebSocket
(the protocol livekit-agents speaks): register, answer each offer (`admission`), start
and end jobs (`jobs`), report load, re-register after the socket drops, one registration
per node of a LiveKit cluster (`_Link`), and drain on SIGTERM.

The design (which offers are answered `terminate` and why, how a burst spreads over a
cluster's hosts): docs/architecture/agent-worker.md. Never logged: the token, the API
secret, a job's assignment token.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream
from google.protobuf.message import DecodeError
from livekit import api
from livekit.protocol import agent, models

from actors import ActorRef, Backoff, single_errors
from actors.room import Job, is_rival
from supervisor import __version__
from supervisor.config import Config
from supervisor.dispatch.admission import Accept, Admission, Reject
from supervisor.dispatch.fleet import Fleet, fleet_room
from supervisor.dispatch.jobs import Jobs, bot_identity, job_of
from supervisor.livekit_server.access import (
    API_ERRORS,
    Credentials,
    participants_in,
    remove_participant,
)
from supervisor.process.rooms import RoomSet, WorkerState

log = logging.getLogger("supervisor.dispatch")

STATUS_SECONDS = 2.5
"""How often the worker's load and status are sent when nothing changes (livekit-agents'
interval)."""
LOAD_SAMPLE_SECONDS = 0.5
PING_SECONDS = 10.0
SILENT_SECONDS = 30.0
"""No message from the server (pongs included) for this long: the session is dead."""
RIVAL_CHECK_SECONDS = 2.0
"""How long an offer waits for the server to say who is in the room."""
REGISTER_TIMEOUT_SECONDS = 10.0
"""livekit-server closes a socket that has not registered within 10 s; so do we."""
RECONNECT = Backoff(initial=0.5, maximum=10.0, jitter=0.2)
JOB_TYPES = {
    "room": agent.JobType.JT_ROOM,
    "participant": agent.JobType.JT_PARTICIPANT,
    "publisher": agent.JobType.JT_PUBLISHER,
}
"""`[dispatch] job_type` as the protocol names it."""
OUTBOX = 1024
"""Messages waiting for the socket; more means the server stopped reading."""
OPEN_JOB_STATUSES = (agent.JobStatus.JS_PENDING, agent.JobStatus.JS_RUNNING)
DROPPED_TEXT = 128
"""How much of an unexpected text frame a log line shows."""


def agent_url(url: str) -> str:
    """The server's worker endpoint for its (ws, wss, http or https) URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/agent", "", ""))


class SessionEnded(ConnectionError):
    """The socket closed or went silent: register again."""


@attrs.define(eq=False)
class _Link:
    """The registration with one node: its socket's outbox while registered."""

    url: str
    worker_id: str = ""
    registered: bool = False
    outbox: MemoryObjectSendStream[agent.WorkerMessage] | None = None
    heard_at: float = 0.0
    status: agent.WorkerStatus | None = None
    """As last reported to this node."""
    nudged: anyio.Event = attrs.field(factory=anyio.Event)
    server_api: api.LiveKitAPI | None = None
    """The node's API, while the worker runs: who is in a room offered (`_rival_in_room`)."""

    def send(self, message: agent.WorkerMessage) -> None:
        """Queue a message for the node; dropped while not registered (a new session
        is a new worker to the server, which forgot the old one's jobs)."""
        if self.outbox is None:
            return
        try:
            self.outbox.send_nowait(message)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            log.warning(
                "[dispatch] a %s message to %s was dropped: the server does not read",
                message.WhichOneof("message"),
                self.url,
            )


class AgentWorker:
    """One registration at a time with the server, and how this process answers it."""

    def __init__(
        self,
        config: Config,
        credentials: Credentials,
        admission: Admission,
        state: WorkerState,
    ) -> None:
        self.config = config
        self.dispatch = config.dispatch
        self.credentials = credentials
        self.admission = admission
        self.state = state
        self.jobs: Jobs | None = None
        """Set by `dispatching` before `run`."""
        self.fleet: Fleet | None = None
        """The fleet membership, with `[dispatch] restore`: a drain hands its jobs over
        there, with `[dispatch] handoff`."""
        self.links = [_Link(url) for url in (credentials.url, *config.livekit.cluster_urls)]
        self._job_links: dict[str, _Link] = {}
        """The link of each job assigned and not yet ended: its status goes there."""
        self._deciding: dict[str, anyio.Event] = {}
        """The offers being answered, by `Job.key`: set once each is answered."""

    @property
    def worker_id(self) -> str:
        """The worker id of the first node's registration ("" before one)."""
        return self.links[0].worker_id

    # --- what the jobs and the CLI call ----------------------------------------------

    def send(self, message: agent.WorkerMessage) -> None:
        """A job's status, for the node that assigned the job (`supervisor.dispatch.jobs`)."""
        job_id = message.update_job.job_id
        link = self._job_links.get(job_id)
        if link is None:
            return
        if message.update_job.status not in OPEN_JOB_STATUSES:
            del self._job_links[job_id]
        link.send(message)

    async def drain(self) -> None:
        """No new jobs; the running ones are handed over to the fleet (`[dispatch]
        handoff`) or may end by themselves within `drain_seconds`."""
        assert self.jobs is not None
        self.state.draining = True
        self.nudge()
        log.info(
            "[dispatch] draining: no new jobs; %d running job(s) may go on for %g s",
            len(self.jobs.running),
            self.dispatch.drain_seconds,
        )
        with anyio.move_on_after(self.dispatch.drain_seconds):
            if self.fleet is not None and self.dispatch.handoff and self.jobs.running:
                await self.fleet.hand_over()
            await self.jobs.wait_idle()
        if self.jobs.running:
            log.info("[dispatch] drain_seconds passed: ending %d job(s)", len(self.jobs.running))
            self.jobs.end_all("the worker drained")
            await self.jobs.wait_idle()

    # --- the connection --------------------------------------------------------------

    async def run(self) -> None:
        """Keep a registration with every node, for ever."""
        handshake = aiohttp.ClientTimeout(total=REGISTER_TIMEOUT_SECONDS)
        key, secret = self.credentials.api_key, self.credentials.api_secret
        async with (
            aiohttp.ClientSession(timeout=handshake) as http,
            AsyncExitStack() as apis,
            anyio.create_task_group() as tasks,
        ):
            for link in self.links:
                link.server_api = await apis.enter_async_context(
                    api.LiveKitAPI(link.url, key, secret)
                )
                tasks.start_soon(self._keep_registered, http, link)

    async def _keep_registered(self, http: aiohttp.ClientSession, link: _Link) -> None:
        """Register with `link`'s node, serve the session, and register again after it
        ends."""
        attempt = 0
        while True:
            try:
                with single_errors():
                    await self._session(http, link)
            except (SessionEnded, aiohttp.ClientError, OSError, TimeoutError) as err:
                reason = str(err) or type(err).__name__
            except Exception as err:
                log.exception("[dispatch] the session failed")
                reason = repr(err)
            else:
                reason = "the session ended"
            if link.registered:
                attempt = 0  # it worked: start the backoff over
            link.registered = False
            self._update_registered()
            attempt += 1
            delay = RECONNECT.delay(attempt, random.random)
            log.warning(
                "[dispatch] not registered with %s (%s): trying again in %.1f s",
                link.url,
                reason,
                delay,
            )
            await anyio.sleep(delay)

    def _update_registered(self) -> None:
        self.state.registered = any(link.registered for link in self.links)

    async def _session(self, http: aiohttp.ClientSession, link: _Link) -> None:
        token = (
            api.AccessToken(self.credentials.api_key, self.credentials.api_secret)
            .with_grants(api.VideoGrants(agent=True))
            .to_jwt()
        )
        url = agent_url(link.url)
        async with http.ws_connect(
            url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientWSTimeout(ws_close=2),
        ) as ws:
            await ws.send_bytes(self._register().SerializeToString())
            with anyio.fail_after(REGISTER_TIMEOUT_SECONDS):
                while (first := await self._next(ws, link)) is None:
                    pass
            if first.WhichOneof("message") != "register":
                answer = first.WhichOneof("message")
                raise SessionEnded(f"the server answered the registration with {answer}")
            link.worker_id = first.register.worker_id
            # one id per node this process is registered with (`/status`)
            self.state.worker_id = " ".join(n.worker_id for n in self.links if n.worker_id)
            info = first.register.server_info
            log.info(
                "[dispatch] registered as worker %s with %s (livekit-server %s, agent "
                "protocol %d) for %s",
                link.worker_id,
                url,
                info.version,
                info.agent_protocol,
                f"agent {self.dispatch.agent_name!r}"
                if self.dispatch.agent_name
                else "every new room",
            )
            send, outgoing = anyio.create_memory_object_stream[agent.WorkerMessage](OUTBOX)
            link.outbox, link.status = send, None
            if not self.state.registered:
                self.admission.load.restart()
            link.registered = True
            self._update_registered()
            try:
                async with outgoing, anyio.create_task_group() as tasks:
                    tasks.start_soon(self._send_all, ws, outgoing)
                    tasks.start_soon(self._report_status, link)
                    tasks.start_soon(self._ping, link)
                    await self._receive_all(ws, link, tasks)
            finally:
                link.outbox = None
                send.close()

    def _register(self) -> agent.WorkerMessage:
        request = agent.RegisterWorkerRequest(
            type=JOB_TYPES[self.dispatch.job_type],
            agent_name=self.dispatch.agent_name,
            version=__version__,
            allowed_permissions=models.ParticipantPermission(
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
                can_update_metadata=True,
                agent=True,
            ),
        )
        return agent.WorkerMessage(register=request)

    async def _next(
        self, ws: aiohttp.ClientWebSocketResponse, link: _Link
    ) -> agent.ServerMessage | None:
        """The next server message; None for a frame that is not one (logged)."""
        frame = await ws.receive()
        if frame.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            raise SessionEnded(f"the server closed the socket ({ws.close_code})")
        link.heard_at = time.monotonic()
        if frame.type is not aiohttp.WSMsgType.BINARY:
            log.warning(
                "[dispatch] unexpected %s frame from the server, ignored: %.*r",
                frame.type.name,
                DROPPED_TEXT,
                frame.data,
            )
            return None
        message = agent.ServerMessage()
        try:
            message.ParseFromString(frame.data)
        except DecodeError as err:
            log.warning(
                "[dispatch] malformed server message (%d bytes), ignored: %s", len(frame.data), err
            )
            return None
        return message

    async def _receive_all(
        self, ws: aiohttp.ClientWebSocketResponse, link: _Link, tasks: TaskGroup
    ) -> None:
        assert self.jobs is not None
        while True:
            message = await self._next(ws, link)
            which = message.WhichOneof("message") if message is not None else None
            if message is None:
                continue
            if which == "availability":
                tasks.start_soon(self._answer, message.availability, link)
            elif which == "assignment":
                assignment = message.assignment
                if not assignment.HasField("url"):
                    assignment.url = link.url  # the bot joins through the node that assigned
                self._job_links[assignment.job.id] = link
                self.jobs.assigned(assignment)
            elif which == "termination":
                self.jobs.terminate(message.termination.job_id)
            elif which == "pong":
                pass  # `_next` noted that the server is there
            else:
                log.warning(
                    "[dispatch] unexpected server message %s, ignored",
                    which or "(none this worker knows)",
                )

    async def _send_all(
        self, ws: aiohttp.ClientWebSocketResponse, outgoing: AsyncIterator[agent.WorkerMessage]
    ) -> None:
        async for message in outgoing:
            await ws.send_bytes(message.SerializeToString())

    async def _ping(self, link: _Link) -> None:
        while True:
            await anyio.sleep(PING_SECONDS)
            if time.monotonic() - link.heard_at > SILENT_SECONDS:
                raise SessionEnded(f"no word from the server for {SILENT_SECONDS:g} s")
            link.send(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=int(time.time() * 1000))))

    # --- availability and status -------------------------------------------------------

    async def _answer(self, request: agent.AvailabilityRequest, link: _Link) -> None:
        """Yes or no to one offer, after any other offer of the same room (participant,
        for a participant's job) is answered: the server may offer a room's dispatches at
        once, and while the first is being decided (a rival looked for, the accept hook
        asked) its reservation is no "this process serves the room" (`terminate`, which
        would leave the second dispatch without a bot if the first is declined); the
        second is answered as the first's outcome has it."""
        job = job_of(request.job)
        while (earlier := self._deciding.get(job.key)) is not None:
            await earlier.wait()
        self._deciding[job.key] = decided = anyio.Event()
        try:
            await self._decide(job, link)
        finally:
            del self._deciding[job.key]
            decided.set()

    async def _decide(self, job: Job, link: _Link) -> None:
        """Yes or no to `job`'s offer; a yes reserves its place until the assignment."""
        assert self.jobs is not None
        answer = agent.AvailabilityResponse(job_id=job.id)
        if gone := self.jobs.end_made_anew(job):
            # its bot out of the room before the yes, as `_make_way` would take it out
            with anyio.move_on_after(RIVAL_CHECK_SECONDS):
                for event in gone:
                    await event.wait()
        why_not = self._why_not(job)
        if why_not is not None:
            self._decline(link, answer, job, *why_not)
            return
        self.jobs.reserve(job)
        decision: Accept | Reject = Reject("the session ended")
        try:
            rival = await self._rival_in_room(job, link)
            if rival is not None:
                there = f"{rival}, a bot of this agent, is there"
                self._decline(link, answer, job, "served", there, ask_others=True)
                return
            decision = await self.admission.decide(job)
            if isinstance(decision, Accept):
                decision = self.jobs.identity_clash(job, decision) or decision
        finally:
            if isinstance(decision, Reject):
                self.jobs.release(job.id)  # rejected, or the session ended meanwhile
        if isinstance(decision, Reject):
            self.state.offers["rejected"] += 1
            log.info("[%s] job %s rejected: %s", job.key, job.id, decision.reason)
            link.send(agent.WorkerMessage(availability=answer))
            return
        identity = bot_identity(job, decision, self.config.dispatch_bot.identity)
        answer.available = True
        answer.participant_identity = identity
        answer.participant_name = decision.name or identity
        answer.participant_metadata = decision.metadata
        answer.participant_attributes.update(decision.attributes)
        self.jobs.accept(job, decision)
        self.state.offers["accepted"] += 1
        log.info("[%s] job %s accepted (dispatch %s)", job.key, job.id, job.dispatch_id or "-")
        link.send(agent.WorkerMessage(availability=answer))

    def _decline(
        self,
        link: _Link,
        answer: agent.AvailabilityResponse,
        job: Job,
        kind: str,
        reason: str,
        *,
        ask_others: bool = False,
    ) -> None:
        """Say no to an offer: `kind` is one of `OFFER_ANSWERS`. A room this process
        serves already is answered `terminate`, so that the server offers it to no other
        worker; one served by a bot of another process (`ask_others`) is answered "not
        available", so that the server offers it to the next worker: that bot's own
        process declines it in turn if its bot stays, and takes it if its bot is leaving
        (`Jobs.leaving`), or the room would keep no bot."""
        answer.terminate = kind == "served" and not ask_others
        self.state.offers[kind] += 1
        log.info("[%s] job %s declined: %s", job.key, job.id, reason)
        link.send(agent.WorkerMessage(availability=answer))

    async def _rival_in_room(self, job: Job, link: _Link) -> str | None:
        """A bot of this agent already in a room job's room (`is_rival`): it came back
        to the room a restarted server lost, by itself or through another worker; one
        is enough. None when there is none, or the server does not say in time. Asked of
        the node that offers the job (any node of a cluster knows every room). This
        process's own bot of a job that is ending is none once it is out (`_make_way`)."""
        assert self.jobs is not None
        if job.participant is not None or link.server_api is None:
            return None
        try:
            participants = await participants_in(link.server_api, job.room, RIVAL_CHECK_SECONDS)
        except API_ERRORS as err:
            log.warning("[%s] job %s: who is in the room is unknown (%s)", job.key, job.id, err)
            return None
        agent_kind = models.ParticipantInfo.Kind.AGENT
        for participant in participants:
            if not is_rival(job, participant.kind == agent_kind, participant.attributes):
                continue
            identity = participant.identity
            if not self.jobs.leaving(job.room, identity) or not await self._make_way(
                job, link.server_api, identity
            ):
                return identity
        return None

    async def _make_way(self, job: Job, server_api: api.LiveKitAPI, identity: str) -> bool:
        """Take this process's bot of a job that is ending out of the room the server
        offers again, before the yes; whether it is out.

        livekit-server keys a room's jobs by their bot's identity: the new job, taken
        while that bot is still in the room, would be ended ("agent left the room") as
        soon as that bot leaves, under the same identity. Its goodbye is cut short: the
        room has a job again (and the server would remove it within 3 s of a dispatch
        deleted anyway). Its tree stops as before; the new one starts after (`_serve`)."""
        log.info(
            "[%s] job %s: %s, this process's bot of a job that is ending, is there: "
            "removing it first",
            job.key,
            job.id,
            identity,
        )
        try:
            await remove_participant(server_api, job.room, identity, RIVAL_CHECK_SECONDS)
        except API_ERRORS as err:
            log.warning("[%s] job %s: %s was not removed (%s)", job.key, job.id, identity, err)
            return False
        return True

    def _why_not(self, job: Job) -> tuple[str, str] | None:
        """Why an offer of `job` is declined: one of `OFFER_ANSWERS`, and the reason."""
        assert self.jobs is not None
        if self.state.draining:
            return "draining", "the worker is draining"
        if job.room == fleet_room(self.dispatch.agent_name):
            return "served", "the room is the fleet's own (`supervisor.dispatch.fleet`)"
        if self.jobs.serves(job):
            what = "room" if job.participant is None else "participant"
            return "served", f"this process already serves the {what}"
        if job.key in self.jobs.room_set.config.sibling_rooms:
            return "served", "another worker process of this config serves the room"
        full = self.admission.full(len(self.jobs.running), len(self.jobs.starting))
        return None if full is None else ("full", full)

    def nudge(self) -> None:
        """The jobs changed (or the worker drains): report the status now if it changed."""
        for link in self.links:
            link.nudged.set()

    async def _report_status(self, link: _Link) -> None:
        """Load and status every `STATUS_SECONDS`, and as soon as the status changes."""
        assert self.jobs is not None
        sent_at = 0.0
        while True:
            load = self.admission.load.sample()
            running, starting = len(self.jobs.running), len(self.jobs.starting)
            full = "draining" if self.state.draining else self.admission.full(running, starting)
            status = agent.WorkerStatus.WS_FULL if full else agent.WorkerStatus.WS_AVAILABLE
            now = time.monotonic()
            if status != link.status or now - sent_at >= STATUS_SECONDS:
                if status != link.status and link.status is not None and link is self.links[0]:
                    log.info("[dispatch] %s", f"full: {full}" if full else "available again")
                link.status, sent_at = status, now
                self.state.full, self.state.load = bool(full), min(load, 1.0)
                update = agent.UpdateWorkerStatus(
                    status=status,
                    load=min(load, 1.0),
                    job_count=running,
                )
                link.send(agent.WorkerMessage(update_worker=update))
            with anyio.move_on_after(LOAD_SAMPLE_SECONDS):
                await link.nudged.wait()
            if link.nudged.is_set():
                link.nudged = anyio.Event()


@asynccontextmanager
async def dispatching(
    config: Config, credentials: Credentials, room_set: RoomSet, rooms: ActorRef
) -> AsyncIterator[AgentWorker | None]:
    """The agent worker for the block's duration when `[dispatch]` is enabled, else None.

    With `[dispatch] restore` the process is also a member of its agent's fleet
    (`supervisor.dispatch.fleet`) for the block's duration; leaving the block says bye there.
    Leaving the block ends the session and every job's task; the room trees are the
    room supervisor's, which stops them as it stops (`AgentWorker.drain` first, for a
    clean end)."""
    if not config.dispatch.enabled:
        yield None
        return
    state = room_set.worker
    assert state is not None  # built with the set, as `[dispatch]` is enabled
    worker = AgentWorker(config, credentials, Admission(config.dispatch), state)
    async with anyio.create_task_group() as tasks:
        jobs = worker.jobs = Jobs(
            config, room_set, rooms, credentials.url, tasks, worker.send, worker.nudge
        )
        fleet = None
        if room_set.fleet is not None:  # `[dispatch] restore`
            fleet = worker.fleet = Fleet(config, credentials, jobs, state, room_set.fleet)
            tasks.start_soon(fleet.run)
            await fleet.tried.wait()  # see `Fleet.tried`
        tasks.start_soon(worker.run)
        try:
            yield worker
        finally:
            if fleet is not None:
                await fleet.leave()
            tasks.cancel_scope.cancel()
