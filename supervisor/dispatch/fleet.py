"""The fleet: the workers of one agent, in a LiveKit room of their own (`fleet_room`),
each one's record (the jobs it serves, its probe) in its metadata and a beat in lossy
data. A member silent for `restore_after_seconds` whose probe does not answer as itself
is dead, and each of its jobs is restored by one survivor, its owner (rendezvous hashing,
`FleetView.owner`); a draining member hands each running job over, make before break
(`Fleet.hand_over`, the taker's side in `Fleet._take_over`). This module is a member's
I/O; the wire format is `fleet_record`, the rules of who is dead and who owns a job
`fleet_view`, which does no I/O.

The design, and why no room gets two bots however the survivors see it:
docs/architecture/fleet.md.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import socket
from collections.abc import Iterable
from contextlib import AsyncExitStack

import aiohttp
import anyio
import attrs
from livekit import api, rtc
from livekit.protocol import models

from actors import Backoff, single_errors
from actors.room import Job, narrow_room_events
from supervisor.config import Config
from supervisor.dispatch.fleet_record import (
    RECORD_BYTES,
    Record,
    RecordError,
    decode_handoff,
    decode_record,
    encode_handoff,
    encode_record,
)
from supervisor.dispatch.fleet_view import FleetView, Member
from supervisor.dispatch.jobs import Jobs, ServedJob, serves_someone
from supervisor.livekit_server.access import (
    API_ERRORS,
    Credentials,
    agent_token,
    participants_in,
    remove_participant,
)
from supervisor.process.rooms import FleetState, WorkerState
from supervisor.process.rtc_shutdown import end_room
from supervisor.process.workers import either

log = logging.getLogger("supervisor.dispatch.fleet")

FLEET_ROOM = "lksup-fleet"
BEAT_SECONDS = 0.5
BEAT_TOPIC = "lksup.fleet.beat"
LOOK_SECONDS = 0.25
"""How often a member looks for the dead."""
STALL_SECONDS = 1.0
"""A look this late means this process was not listening: nobody is judged then."""
SEND_SECONDS = 5.0
"""How long a beat or a record's update may take to leave."""
PROBE_SECONDS = 1.0
"""How long a silent member's probe may take to answer: it answers from its listener's
thread even while its loop is stalled."""
ROOM_CHECK_SECONDS = 2.0
"""How long a restore waits for the server to say who is in the room."""
JOIN_TIMEOUT_SECONDS = 10.0
REJOIN = Backoff(initial=0.5, maximum=5.0, jitter=0.2)
HANDOFF_TOPIC = "lksup.fleet.handoff"
DECLINED_TOPIC = "lksup.fleet.declined"
"""A member's answer to a handoff it does not take (it drains too, is full, ...), so that
the giver asks the next member at once rather than after `HANDOFF_SECONDS`."""
NOBODY_TO_SERVE = "nobody to serve"
"""A decline no other member would answer otherwise: the job ends by itself."""
HANDOFF_SECONDS = 12.0
"""How long a draining member waits for the member it handed a job to to take it (its
bot out of the room) before it asks the next one."""
TAKEOVER_SECONDS = 8.0
"""How long a member taking a job over waits for its bot's track to be published, within
the giver's `HANDOFF_SECONDS`: a bot not published by then leaves, and the old one talks
on until the giver asks the next member."""
SUBSCRIBED_SECONDS = 2.0
"""How long a member taking a job over waits, once its bot's track is published, for a
participant to subscribe to it before removing the old bot anyway (a caller that
subscribes to nothing hears neither). With `TAKEOVER_SECONDS`, within the giver's
`HANDOFF_SECONDS`."""
HANDOFFS_AT_ONCE = 1
"""Jobs a draining member hands over at a time. A taker starting many rooms at once is
late with each new bot's audio, which the caller hears as the handoff's gap: five rooms
handed over at once here had gaps of p50 591 ms and p99 4.5 s, one after another p50 245
ms and p99 639 ms, for about a second more of drain
(docs/benchmarks/runs/14-handoff-one-at-a-time.md)."""
HANDOFF_BACKLOG = 1000
"""Handoffs received and not yet taken up, at most (more are refused: logged)."""
SUCCESSOR_SUFFIX = "~2"


def successor_identity(identity: str) -> str:
    """The identity of the bot that takes a job over from the bot `identity`: the two
    alternate (`bot` hands over to `bot~2`, which hands over to `bot`), as two bots of a
    job must be in its room at once for a moment, and one identity admits one."""
    if identity.endswith(SUCCESSOR_SUFFIX):
        return identity.removesuffix(SUCCESSOR_SUFFIX)
    return identity + SUCCESSOR_SUFFIX


def fleet_room(agent_name: str) -> str:
    """The fleet's LiveKit room: workers of one agent name serve the same bot, so any of
    them can restore another's jobs."""
    return f"{FLEET_ROOM}.{agent_name}" if agent_name else FLEET_ROOM


def probe_url(config: Config) -> str:
    """This process's `/status` as other hosts reach it: the metrics listener's address,
    or this host's name when it listens on every address."""
    host = config.metrics.host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.metrics.port}/status"


class Fleet:
    """This process's membership of the fleet, and the restores it owns."""

    def __init__(
        self,
        config: Config,
        credentials: Credentials,
        jobs: Jobs,
        worker: WorkerState,
        state: FleetState,
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.jobs = jobs
        self.worker = worker
        self.state = state
        self.room_name = fleet_room(config.dispatch.agent_name)
        suffix = secrets.token_hex(3)
        state.identity = f"fleet-{socket.gethostname()}-{os.getpid()}-{suffix}"
        self.view = FleetView(state.identity, config.dispatch.restore_after_seconds)
        self.urls = (credentials.url, *config.livekit.cluster_urls)
        self.probe = probe_url(config)
        self._room: rtc.Room | None = None
        self._published = ""
        self._handed, self._handoffs = anyio.create_memory_object_stream[
            tuple[str, rtc.TextStreamReader]
        ](HANDOFF_BACKLOG)
        """Jobs other members hand to this one, as their streams open, with who hands each."""
        self._handing: dict[str, _Handing] = {}
        """The jobs this member hands over now, by id."""
        self.tried = anyio.Event()
        """Set once the first join ended, joined or not: the worker registers after it
        (`dispatching`), so that the join's CPU (the SDK's runtime starting) is not
        counted in the load the worker first reports, nor makes it full then."""

    async def run(self) -> None:
        """Be in the fleet for ever, joining again (through the next node of a cluster)
        whenever the connection is lost."""
        attempt = 0
        key, secret = self.credentials.api_key, self.credentials.api_secret
        async with AsyncExitStack() as stack:
            apis = [
                await stack.enter_async_context(api.LiveKitAPI(url, key, secret))
                for url in self.urls
            ]
            while True:
                node = attempt % len(self.urls)
                url = self.urls[node]
                try:
                    with single_errors():
                        await self._member(url, apis[node])  # rooms asked of the same node
                    attempt = 0
                except (rtc.ConnectError, TimeoutError) as err:
                    log.warning(
                        "[%s] cannot join the fleet through %s: %s", self.room_name, url, err
                    )
                except Exception:  # a membership is not worth the process: join again
                    log.exception("[%s] the fleet membership failed", self.room_name)
                finally:
                    self.tried.set()
                self.state.connected = False
                self.state.members = 0
                self.state.others = []
                attempt += 1
                await anyio.sleep(REJOIN.delay(attempt, random.random))

    async def leave(self) -> None:
        """Say bye (this process's jobs ended on purpose) and leave the fleet."""
        room = self._room
        if room is None or not room.isconnected():
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await room.local_participant.publish_data(
                json.dumps({"bye": True}), reliable=True, topic=BEAT_TOPIC
            )
            await end_room(room)

    async def _member(self, url: str, server_api: api.LiveKitAPI) -> None:
        """One membership, until the connection is lost."""
        room = rtc.Room()
        lost = anyio.Event()
        now = anyio.current_time

        def on_data(packet: rtc.DataPacket) -> None:
            if packet.topic not in (BEAT_TOPIC, DECLINED_TOPIC) or packet.participant is None:
                return
            try:
                message = json.loads(packet.data)
            except ValueError:
                return
            identity = packet.participant.identity
            if packet.topic == DECLINED_TOPIC:
                self._was_declined(identity, message)
            elif isinstance(message, dict) and message.get("bye") is True:
                self.view.said_bye(identity)
            elif isinstance(message, dict):
                self.view.heard(identity, now(), full=message.get("full") is True)

        def on_metadata(participant: rtc.Participant, _: str, metadata: str) -> None:
            self._read_record(participant.identity, metadata)

        def on_joined(participant: rtc.RemoteParticipant) -> None:
            self._read_record(participant.identity, participant.metadata)

        def on_left(participant: rtc.RemoteParticipant) -> None:
            self.view.left(participant.identity)

        room.on("data_received", on_data)
        room.register_text_stream_handler(HANDOFF_TOPIC, self._received)
        room.on("participant_metadata_changed", on_metadata)
        room.on("participant_connected", on_joined)
        room.on("participant_disconnected", on_left)
        room.on("reconnected", lambda: self.view.forget_times(now()))
        room.on("disconnected", lambda *_: lost.set())
        # the server forwards data packets to participants that may subscribe
        token = agent_token(self.credentials, self.room_name, self.state.identity)
        try:
            with anyio.fail_after(JOIN_TIMEOUT_SECONDS):
                await room.connect(url, token, rtc.RoomOptions(auto_subscribe=False))
            narrow_room_events(room)  # not woken by the process's rooms' capture callbacks
            self._room = room
            self._published = ""
            for participant in room.remote_participants.values():
                on_joined(participant)
            self.view.forget_times(now())
            self.state.connected = True
            self.tried.set()  # joined: the worker may register now
            log.info(
                "[%s] in the fleet as %s through %s: %d other member(s)",
                self.room_name,
                self.state.identity,
                url,
                len(room.remote_participants),
            )
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._beat, room)
                tasks.start_soon(self._record, room)
                tasks.start_soon(self._find_the_dead, server_api)
                tasks.start_soon(self._take_handoffs, server_api)
                await lost.wait()
                tasks.cancel_scope.cancel()
            log.warning("[%s] the fleet connection was lost: joining again", self.room_name)
        finally:
            self._room = None
            await end_room(room)

    async def hand_over(self) -> None:
        """Hand every job running here to another member, as this one drains, one after
        another (`HANDOFFS_AT_ONCE`): each to its highest ranked taker
        (`FleetView.takers`), whose bot, once in the room and publishing, removes this
        member's (`_take_over`). A job declined, or still here `HANDOFF_SECONDS` later,
        goes to the next taker; one that nobody takes stays, and drains here."""
        room = self._room
        if room is None or not room.isconnected():
            log.warning("[%s] not in the fleet: the jobs drain here", self.room_name)
            return
        limit = anyio.CapacityLimiter(HANDOFFS_AT_ONCE)

        async def hand(served: ServedJob) -> None:
            async with limit:
                await self._hand(room, served)

        async with anyio.create_task_group() as handing:
            for served in self.jobs.served_jobs():
                handing.start_soon(hand, served)

    async def _hand(self, room: rtc.Room, served: ServedJob) -> None:
        job = served.job
        for taker in self.view.takers(job.key):
            ended = self.jobs.ended(job.id)
            if ended is None or not self.jobs.runs(job.id):  # it ends by itself
                return
            state = self.jobs.offered_state(job.id)
            log.info("[%s] job %s: handing it over to %s%s", job.key, job.id, taker,
                     f" with {len(state)} bytes of state" if state else "")
            handing = self._handing[job.id] = _Handing()
            try:
                with anyio.move_on_after(SEND_SECONDS):
                    await room.local_participant.send_text(
                        encode_handoff(served, state), topic=HANDOFF_TOPIC,
                        destination_identities=[taker],
                    )  # fmt: skip
                with anyio.move_on_after(HANDOFF_SECONDS):
                    await either(ended, handing.declined)
            finally:
                del self._handing[job.id]
            if ended.is_set():
                self.state.handed += 1
                log.info("[%s] job %s: handed over to %s", job.key, job.id, taker)
                return
            if handing.why == NOBODY_TO_SERVE:
                log.info("[%s] job %s: not handed over, %s: it ends here", job.key, job.id,
                         NOBODY_TO_SERVE)
                return
            if not handing.declined.is_set():
                log.warning("[%s] job %s: %s did not take it over within %g s",
                            job.key, job.id, taker, HANDOFF_SECONDS)
        if self.jobs.runs(job.id):
            self.state.not_handed += 1
            log.warning("[%s] job %s: no member took it over: it drains here", job.key, job.id)

    def _was_declined(self, taker: str, answer: object) -> None:
        """A member's answer that it does not take a job handed to it (`_decline`)."""
        if not isinstance(answer, dict) or not isinstance(answer.get("job"), str):
            return
        handing = self._handing.get(answer["job"])
        if handing is not None:
            handing.why = str(answer.get("why"))
            log.info("[%s] job %s: %s declined it: %s", self.room_name, answer["job"], taker,
                     handing.why)
            handing.declined.set()

    async def _decline(self, giver: str, job: Job, why: str) -> None:
        """Tell `giver` that this member does not take `job` (why), so it asks the next."""
        room = self._room
        if room is None or not room.isconnected():
            return  # the giver asks the next after HANDOFF_SECONDS
        answer = json.dumps({"job": job.id, "why": why})
        with anyio.move_on_after(SEND_SECONDS):
            await room.local_participant.publish_data(
                answer, reliable=True, topic=DECLINED_TOPIC, destination_identities=[giver]
            )

    def _received(self, reader: rtc.TextStreamReader, giver: str) -> None:
        """A handoff's stream opened (the SDK's callback): read it in `_take_handoffs`."""
        try:
            self._handed.send_nowait((giver, reader))
        except anyio.WouldBlock:
            log.warning("[%s] a job handed over by %s: refused, %d handoffs pending",
                        self.room_name, giver, HANDOFF_BACKLOG)

    async def _take_handoffs(self, server_api: api.LiveKitAPI) -> None:
        async with anyio.create_task_group() as taking:
            async for giver, reader in self._handoffs:
                taking.start_soon(self._take_handoff, giver, reader, server_api)

    async def _take_handoff(
        self, giver: str, reader: rtc.TextStreamReader, server_api: api.LiveKitAPI
    ) -> None:
        try:
            with anyio.fail_after(SEND_SECONDS):
                served, state = decode_handoff(await reader.read_all())
        except (RecordError, TimeoutError) as err:
            log.warning("[%s] a job handed over by %s: %s; ignored", self.room_name, giver,
                        str(err) or "not read in time")
            return
        why = await self._restore(served, server_api, giver, state)
        if why is not None:
            await self._decline(giver, served.job, why)

    def _read_record(self, identity: str, metadata: str) -> None:
        try:
            record = decode_record(metadata)
        except RecordError as err:
            log.warning("[%s] member %s: %s; its jobs are not known", self.room_name, identity, err)
            record = Record()
        self.view.recorded(identity, anyio.current_time(), record)

    async def _beat(self, room: rtc.Room) -> None:
        """A beat every `BEAT_SECONDS`, whatever the record's update is doing."""
        while True:
            beat = json.dumps({"full": self.worker.full or self.worker.draining})
            with anyio.move_on_after(SEND_SECONDS):
                await room.local_participant.publish_data(beat, reliable=False, topic=BEAT_TOPIC)
            await anyio.sleep(BEAT_SECONDS)

    async def _record(self, room: rtc.Room) -> None:
        """The record, when it changed, looked at every `BEAT_SECONDS`. An update the
        server does not confirm within `SEND_SECONDS` is sent again."""
        while True:
            record, left_out, states_out = encode_record(self._current_record())
            if record != self._published:
                if left_out or states_out:
                    log.warning(
                        "[%s] %d job(s) and %d state(s) left out of this member's record "
                        "(over %d bytes): they would not be restored",
                        self.room_name,
                        left_out,
                        states_out,
                        RECORD_BYTES,
                    )
                with anyio.move_on_after(SEND_SECONDS) as timed:
                    await room.local_participant.set_metadata(record)
                    self._published = record
                if timed.cancelled_caught:
                    log.warning("[%s] the record's update was not confirmed: again", self.room_name)
            await anyio.sleep(BEAT_SECONDS)

    def _current_record(self) -> Record:
        """The jobs served here, with `[dispatch] checkpoint` each with the state its bot
        offered last."""
        jobs = tuple(self.jobs.served_jobs())
        if not self.config.dispatch.checkpoint:
            return Record(jobs, self.probe)
        states = {s.job.id: state for s in jobs if (state := self.jobs.offered_state(s.job.id))}
        return Record(jobs, self.probe, states)

    async def _find_the_dead(self, server_api: api.LiveKitAPI) -> None:
        """Find the silent every `LOOK_SECONDS`, and restore the jobs this member owns
        of those that are dead."""
        last = anyio.current_time()
        async with aiohttp.ClientSession() as http, anyio.create_task_group() as judging:
            while True:
                await anyio.sleep(LOOK_SECONDS)
                now = anyio.current_time()
                late, last = now - last > STALL_SECONDS, now
                if late:
                    self.view.forget_times(now)
                    continue
                for identity, member in self.view.take_silent(now):
                    judging.start_soon(self._dead_or_alive, identity, member, http, server_api)
                self.state.members = len(self.view.live())
                self.state.others = [
                    (identity, len(m.record.jobs), m.full)
                    for identity, m in self.view.members.items()
                    if not m.bye
                ]

    async def _dead_or_alive(
        self, identity: str, member: Member, http: aiohttp.ClientSession, server_api: api.LiveKitAPI
    ) -> None:
        """A member silent in the fleet is dead unless its probe answers as itself (a
        member that lost its fleet connection, e.g. through a LiveKit node that died,
        serves on); then restore the dead one's jobs this member owns."""
        silence = self.view.restore_after
        if await self._probe_answers(member.record.probe, identity, http):
            log.warning(
                "[%s] member %s silent for %g s but its probe answers: alive",
                self.room_name, identity, silence,
            )  # fmt: skip
            self.view.revive(identity, member, anyio.current_time())
            return
        self.state.dead += 1
        jobs = member.record.jobs
        mine = [s for s in jobs if self.view.owner(s.job.key, self.worker.full) == self.view.me]
        log.warning(
            "[%s] member %s not heard for %g s and its probe does not answer: dead; of its "
            "%d job(s) this member restores %d",
            self.room_name, identity, silence, len(jobs), len(mine),
        )  # fmt: skip
        async with anyio.create_task_group() as restores:
            for served in mine:
                state = member.record.states.get(served.job.id, "")  # [dispatch] checkpoint
                restores.start_soon(self._restore, served, server_api, None, state)

    async def _probe_answers(self, probe: str, identity: str, http: aiohttp.ClientSession) -> bool:
        """Whether `probe` answers as the member `identity` (a process started since on
        its port is another member)."""
        if not probe:
            return False
        try:
            with anyio.fail_after(PROBE_SECONDS):
                async with http.get(probe) as response:
                    status = await response.json(content_type=None)
            return status["worker"]["fleet"]["identity"] == identity
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, TypeError):
            return False

    async def _restore(
        self,
        served: ServedJob,
        server_api: api.LiveKitAPI,
        giver: str | None = None,
        state: str = "",
    ) -> str | None:
        """Run a dead member's job here, or one a draining member (`giver`) hands over,
        with the `state` its bot offered last (a handoff's, or with `[dispatch]
        checkpoint` the dead member's record's), if its room still has someone it
        serves; why not, if not.

        A dead member's ghost is removed first (`_remove_ghost`) and its bot comes back
        under the same identity; unless a bot of the job is in the room under its other
        identity (the dead member was handing it over, or taking it over). A draining
        member's bot talks on while this one's starts, under the other identity, and
        leaves once this one is published (`_take_over`)."""
        job = served.job
        whose = "of a dead member" if giver is None else f"handed over by {giver}"
        if self.worker.draining:  # it beats as full, but every member may be full
            log.info("[%s] job %s %s: not taken, draining", job.key, job.id, whose)
            return "draining"
        if self.jobs.serves(job):
            log.info("[%s] job %s %s: served here already", job.key, job.id, whose)
            return "served here already"
        try:
            participants = await participants_in(server_api, job.room, ROOM_CHECK_SECONDS)
        except API_ERRORS as err:
            log.warning("[%s] job %s %s not taken: who is in the room is unknown (%s)",
                        job.key, job.id, whose, err)
            return "who is in the room is unknown"
        if not _listing_has_company(job, participants):
            log.info("[%s] job %s %s: %s, not taken", job.key, job.id, whose, NOBODY_TO_SERVE)
            return NOBODY_TO_SERVE
        present = {p.identity for p in participants}
        other = successor_identity(served.identity)
        predecessor = None
        if giver is not None:
            predecessor = served.identity
            served = attrs.evolve(served, identity=other)
        elif other in present:
            log.info("[%s] job %s %s: its bot %s is in the room, not restored", job.key,
                     job.id, whose, other)
            return f"its bot {other} is in the room"
        elif served.identity in present:
            await self._remove_ghost(job, served.identity, server_api)
        token = agent_token(
            self.credentials,
            job.room,
            served.identity,
            name=served.name,
            metadata=served.metadata,
            attributes=served.token_attributes(),
        )
        if giver is None:
            self.state.restored += 1
        else:
            self.state.taken += 1
        log.info("[%s] taking job %s %s as %s", job.key, job.id, whose, served.identity)
        self.jobs.restore(served, token, self.credentials.url, predecessor, state)
        if predecessor is None:
            return None
        return await self._take_over(job, predecessor, server_api)

    async def _take_over(
        self, job: Job, predecessor: str, server_api: api.LiveKitAPI
    ) -> str | None:
        """Remove the bot `predecessor` once this member's bot of `job` has published its
        track and a participant subscribed to it (or `SUBSCRIBED_SECONDS` passed): from
        its departure on this one is heard, its track already playing at the caller's,
        where removed at the publication the caller would first subscribe and hear
        nothing meanwhile. A bot not published within `TAKEOVER_SECONDS`, or whose
        predecessor cannot be removed, leaves, and the old bot talks on (its member asks
        the next one); why, in that case."""
        published: bool | None = None  # None: not within TAKEOVER_SECONDS
        with anyio.move_on_after(TAKEOVER_SECONDS):
            published = await self.jobs.published(job.id)
        if published:
            with anyio.move_on_after(SUBSCRIBED_SECONDS):
                published = await self.jobs.subscribed(job.id)
        if published is False:
            return "its job here ended before it took over"
        if published is None:
            why = f"not published within {TAKEOVER_SECONDS:g} s"
        else:
            asked = anyio.current_time()
            try:
                await remove_participant(server_api, job.room, predecessor, ROOM_CHECK_SECONDS)
            except API_ERRORS as err:
                why = f"{predecessor} not removed ({str(err) or type(err).__name__})"
            else:
                self.jobs.predecessor_removed(job.id)
                self.state.removal_time.observe(anyio.current_time() - asked)
                log.info("[%s] job %s: published, %s removed", job.key, job.id, predecessor)
                return None
        if not await self._still_there(job, predecessor, server_api):
            return None  # gone meanwhile: this bot is the room's one bot, and stays
        log.warning("[%s] job %s: not taken over, %s: this bot leaves", job.key, job.id, why)
        self.jobs.end(job.id, f"not taken over: {why}")
        return why

    async def _still_there(self, job: Job, identity: str, server_api: api.LiveKitAPI) -> bool:
        """Whether `identity` is in the job's room, as far as the server says (True when
        it does not say)."""
        try:
            participants = await participants_in(server_api, job.room, ROOM_CHECK_SECONDS)
        except API_ERRORS:
            return True
        return any(p.identity == identity for p in participants)

    async def _remove_ghost(self, job: Job, identity: str, server_api: api.LiveKitAPI) -> None:
        """Remove the dead bot's ghost through the server API before joining under its
        identity, so the server and the callers see the plain path, a leave then a
        join: a join replacing the ghost
        (`duplicate_identity`) was followed, once in a dozen runs here, by a restored
        bot whose requests the server did not answer and whose track the caller never
        got. A removal that fails (the ghost gone already,
        or removed by another survivor) is no matter: the join replaces what is there."""
        try:
            await remove_participant(server_api, job.room, identity, ROOM_CHECK_SECONDS)
        except API_ERRORS as err:
            log.info("[%s] the dead bot %s was not removed (%s)", job.key, identity, err)


@attrs.define
class _Handing:
    """A job this member hands over, as the member asked now answers."""

    declined: anyio.Event = attrs.field(factory=anyio.Event)
    why: str = ""


def _listing_has_company(job: Job, participants: Iterable[models.ParticipantInfo]) -> bool:
    """Whether the room has someone the job's bot serves (the dead bot's ghost, an
    agent, is no one)."""
    agent_kind = models.ParticipantInfo.Kind.AGENT
    present = {p.identity for p in participants}
    return serves_someone(job, present, {p.identity for p in participants if p.kind == agent_kind})

