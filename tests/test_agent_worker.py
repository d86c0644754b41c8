"""The agent worker's protocol state machine against a fake `/agent` endpoint, and
admission on its own.

The fake server (aiohttp, in the test process) plays livekit-server's side of the
worker protocol message by message, so these tests can send what the real server
never would (garbage, text frames, messages this worker does not know, offers for
rooms it already serves) and check every answer. The real server's side of the same
exchanges is proven in `tests/livekit/test_dispatch.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import anyio
import attrs
import pytest
from aiohttp import WSMsgType, web
from livekit import api
from livekit.protocol import agent, models

from actors import ActorRef
from actors.room import Job, RoomSettings, RoomStats
from supervisor.config import DispatchConfig
from supervisor.dispatch import admission, agent_worker, jobs
from supervisor.dispatch.admission import Accept, Admission, ProcessLoad, Reject
from supervisor.dispatch.agent_worker import AgentWorker, agent_url, dispatching
from supervisor.dispatch.jobs import job_of
from supervisor.livekit_server.access import Credentials
from supervisor.livekit_server.server import free_port
from supervisor.observability.census import RoomCensus
from supervisor.process.rooms import RoomSet
from supervisor.process.workers import Shard, shard_of
from tests.helpers.configs import echo_config

KEY, SECRET = "APIunit", "unit-secret-unit-secret-unit-secret"
TOKEN = "an-assignment-token-never-logged"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # aiohttp


@attrs.define
class Session:
    """One worker connection as the fake server sees it."""

    headers: dict[str, str]
    ws: web.WebSocketResponse
    seen: list[agent.WorkerMessage] = attrs.field(factory=list)
    done: asyncio.Event = attrs.field(factory=asyncio.Event)

    async def expect(self, kind: str, timeout: float = 5.0) -> agent.WorkerMessage:
        """The next worker message of `kind` (others are recorded in `seen` and skipped)."""
        with anyio.fail_after(timeout):
            while True:
                frame = await self.ws.receive()
                assert frame.type is WSMsgType.BINARY, f"the worker sent {frame.type}"
                message = agent.WorkerMessage.FromString(frame.data)
                self.seen.append(message)
                if message.WhichOneof("message") == kind:
                    return message

    async def status(self, status: agent.WorkerStatus.ValueType, since: int = 0) -> int:
        """Once the worker reported `status` (at `seen[since]` or later): its index in `seen`."""
        for index in range(since, len(self.seen)):
            message = self.seen[index]
            if (
                message.WhichOneof("message") == "update_worker"
                and message.update_worker.status == status
            ):
                return index
        while (await self.expect("update_worker")).update_worker.status != status:
            pass
        return len(self.seen) - 1

    async def send(self, message: agent.ServerMessage | bytes | str) -> None:
        if isinstance(message, str):
            await self.ws.send_str(message)
        else:
            data = message if isinstance(message, bytes) else message.SerializeToString()
            await self.ws.send_bytes(data)

    async def register(self, worker_id: str = "AW_fake") -> agent.RegisterWorkerRequest:
        request = (await self.expect("register")).register
        info = models.ServerInfo(version="fake", agent_protocol=1)
        await self.send(
            agent.ServerMessage(
                register=agent.RegisterWorkerResponse(worker_id=worker_id, server_info=info)
            )
        )
        return request

    async def offer(
        self, job_id: str, room: str, participant: str | None = None
    ) -> agent.AvailabilityResponse:
        await self.offer_only(job_id, room, participant)
        while True:
            answer = (await self.expect("availability")).availability
            if answer.job_id == job_id:
                return answer


    async def offer_only(self, job_id: str, room: str, participant: str | None = None) -> None:
        """Offer a job and do not wait for the answer."""
        job = agent.Job(id=job_id, type=agent.JobType.JT_ROOM, room=models.Room(name=room))
        if participant is not None:
            job.type = agent.JobType.JT_PARTICIPANT
            job.participant.identity = participant
        await self.send(agent.ServerMessage(availability=agent.AvailabilityRequest(job=job)))


class FakeAgentServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.sessions: asyncio.Queue[Session] = asyncio.Queue()
        self.participants: dict[str, list[models.ParticipantInfo]] = {}
        """Who is in each room, as the server API lists them (none unless a test says)."""
        self.listing_delay = 0.0
        """How long a listing takes: a busy server's."""

    async def list_participants(self, request: web.Request) -> web.Response:
        """The server API's `ListParticipants`, which a worker asks of a room offered."""
        room = api.ListParticipantsRequest.FromString(await request.read()).room
        await asyncio.sleep(self.listing_delay)
        listing = api.ListParticipantsResponse(participants=self.participants.get(room, []))
        return web.Response(body=listing.SerializeToString(), content_type="application/protobuf")

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = Session(dict(request.headers), ws)
        await self.sessions.put(session)
        await session.done.wait()
        await ws.close()
        return ws

    async def next_session(self, timeout: float = 10.0) -> Session:
        with anyio.fail_after(timeout):
            return await self.sessions.get()


@contextlib.asynccontextmanager
async def fake_server() -> AsyncIterator[FakeAgentServer]:
    server = FakeAgentServer()
    app = web.Application()
    app.router.add_get("/agent", server.handle)
    app.router.add_post("/twirp/livekit.RoomService/ListParticipants", server.list_participants)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    try:
        yield server
    finally:
        while not server.sessions.empty():
            server.sessions.get_nowait().done.set()
        await runner.cleanup()


def room_set(port: int, *cluster_ports: int, **dispatch: Any) -> RoomSet:
    cluster_urls = [f"http://127.0.0.1:{other}" for other in cluster_ports]
    config = echo_config(
        "static-1",
        livekit={
            "url": f"http://127.0.0.1:{port}",
            "embedded_server": False,
            **({"cluster_urls": cluster_urls} if cluster_urls else {}),
        },
        dispatch={"enabled": True, "agent_name": "unit", **dispatch},
    )
    return RoomSet(config, Credentials(f"http://127.0.0.1:{port}", KEY, SECRET))


@contextlib.asynccontextmanager
async def running_worker(rooms: RoomSet) -> AsyncIterator[AgentWorker]:
    """The worker, without a room supervisor: no assignment may reach it here."""
    async with dispatching(rooms.config, rooms.credentials, rooms, cast(ActorRef, None)) as worker:
        assert worker is not None
        yield worker


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        agent_worker, "RECONNECT", attrs.evolve(agent_worker.RECONNECT, initial=0.05)
    )
    monkeypatch.setattr(agent_worker, "PING_SECONDS", 0.1)


def test_agent_url_follows_the_server_url() -> None:
    assert agent_url("ws://127.0.0.1:7880") == "ws://127.0.0.1:7880/agent"
    assert agent_url("https://lk.example.com/") == "wss://lk.example.com/agent"


@pytest.mark.anyio
async def test_registers_as_a_room_worker_with_an_agent_token() -> None:
    async with fake_server() as server:
        rooms = room_set(server.port)
        async with running_worker(rooms) as worker:
            session = await server.next_session()
            request = await session.register()
            assert request.type == agent.JobType.JT_ROOM
            assert request.agent_name == "unit"
            assert request.allowed_permissions.agent
            assert request.allowed_permissions.can_publish
            scheme, _, jwt = session.headers["Authorization"].partition(" ")
            claims = api.TokenVerifier(KEY, SECRET).verify(jwt)
            assert scheme == "Bearer"
            assert claims.video.agent
            status = (await session.expect("update_worker")).update_worker
            assert status.status == agent.WorkerStatus.WS_AVAILABLE
            await session.expect("ping")
            assert worker.state.registered
            session.done.set()


@pytest.mark.anyio
async def test_malformed_and_unknown_messages_are_logged_and_survived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "supervisor.dispatch")
    async with fake_server() as server:
        rooms = room_set(server.port)
        async with running_worker(rooms):
            session = await server.next_session()
            await session.register()
            await session.send(b"\xff\xff\xff\x00garbage")
            await session.send("a text frame")
            await session.send(agent.ServerMessage())  # no message this worker knows
            await session.send(b"\xfa\x06\x03abc")  # field 111, unknown to the schema
            await session.send(agent.ServerMessage(termination=agent.JobTermination(job_id="AJ_x")))
            await session.send(
                agent.ServerMessage(
                    assignment=agent.JobAssignment(
                        job=agent.Job(id="AJ_never_offered", room=models.Room(name="r")),
                        token=TOKEN,
                    )
                )
            )
            answer = await session.offer("AJ_1", "unit-1")
            assert answer.available
            assert answer.participant_identity == "bot"
            session.done.set()
    logged = caplog.text
    assert "malformed server message" in logged
    assert "unexpected TEXT frame" in logged
    assert "unexpected server message (none this worker knows)" in logged
    assert "termination of job AJ_x, which does not run here" in logged
    assert "assignment for job AJ_never_offered, which this worker did not accept" in logged
    assert TOKEN not in logged


@pytest.mark.anyio
async def test_a_room_already_served_is_declined_for_every_worker() -> None:
    sibling = Shard(1 - shard_of("static-1", 2), 2)  # with --workers 2, the other worker
    async with fake_server() as server:
        alone = room_set(server.port)
        for served in (alone, attrs.evolve(alone, config=sibling.of(alone.config))):
            async with running_worker(served):
                session = await server.next_session()
                await session.register()
                answer = await session.offer("AJ_s", "static-1")
                assert not answer.available
                assert answer.terminate
                session.done.set()


@pytest.mark.anyio
async def test_a_room_with_another_process_bot_in_it_is_left_to_the_next_worker() -> None:
    """Only the bot's own process knows whether its bot stays (it then declines with
    `terminate`) or is on its way out (it then takes the job): another worker answers
    "not available", so that the server asks the next worker instead of giving up."""
    async with fake_server() as server, running_worker(room_set(server.port)):
        bot = models.ParticipantInfo(
            identity="bot", kind=models.ParticipantInfo.Kind.AGENT, attributes={"lk.agent_name": ""}
        )
        server.participants["rival-1"] = [models.ParticipantInfo(identity="caller"), bot]
        session = await server.next_session()
        await session.register()
        answer = await session.offer("AJ_r", "rival-1")
        assert (answer.available, answer.terminate) == (False, False)
        assert (await session.offer("AJ_n", "nobody-1")).available
        session.done.set()


@pytest.mark.anyio
async def test_offers_of_one_room_at_once_are_each_answered_as_the_room_stands() -> None:
    """The server offers a room's dispatches at once: the second is answered once the
    first is decided, not declined as served (`terminate`) on the first's reservation
    while that one is still looking for a rival. Here both find the other process's bot
    and leave the room to the next worker."""
    async with fake_server() as server, running_worker(room_set(server.port)):
        bot = models.ParticipantInfo(
            identity="bot", kind=models.ParticipantInfo.Kind.AGENT, attributes={"lk.agent_name": ""}
        )
        server.participants["rival-1"] = [models.ParticipantInfo(identity="caller"), bot]
        server.listing_delay = 0.3
        session = await server.next_session()
        await session.register()
        for job_id in ("AJ_1", "AJ_2"):
            await session.offer_only(job_id, "rival-1")
        answers = {}
        while len(answers) < 2:
            answer = (await session.expect("availability")).availability
            answers[answer.job_id] = (answer.available, answer.terminate)
        assert answers == {"AJ_1": (False, False), "AJ_2": (False, False)}
        session.done.set()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("job_type", "registered"),
    [("participant", agent.JobType.JT_PARTICIPANT), ("publisher", agent.JobType.JT_PUBLISHER)],
)
async def test_a_participant_worker_takes_a_job_per_participant_each_bot_its_own_identity(
    job_type: str, registered: agent.JobType.ValueType
) -> None:
    async with fake_server() as server, running_worker(room_set(server.port, job_type=job_type)):
        session = await server.next_session()
        assert (await session.register()).type == registered
        alice = await session.offer("AJ_a", "static-1", "alice")  # the room's bot serves the room
        bob = await session.offer("AJ_b", "static-1", "bob")
        again = await session.offer("AJ_c", "static-1", "alice")
        assert (alice.available, alice.participant_identity) == (True, "bot-AJ_a")
        assert (bob.available, bob.participant_identity) == (True, "bot-AJ_b")
        assert not again.available  # alice's bot is on its way: the server offers it no one
        assert again.terminate
        session.done.set()


@pytest.mark.anyio
async def test_jobs_accepted_and_not_yet_assigned_count_until_they_expire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "ASSIGNMENT_TIMEOUT_SECONDS", 0.5)
    async with fake_server() as server, running_worker(room_set(server.port, max_rooms=1)):
        session = await server.next_session()
        await session.register()
        since = len(session.seen)
        first, second = (
            await session.offer("AJ_a", "burst-1"),
            await session.offer("AJ_b", "burst-2"),
        )
        assert first.available
        assert not second.available
        assert not second.terminate
        full = await session.status(agent.WorkerStatus.WS_FULL, since)
        # never assigned: forgotten, and the worker is available again
        await session.status(agent.WorkerStatus.WS_AVAILABLE, full)
        assert (await session.offer("AJ_c", "burst-3")).available
        session.done.set()


@pytest.mark.anyio
async def test_a_dropped_socket_registers_again_and_readyz_follows() -> None:
    async with fake_server() as server:
        rooms = room_set(server.port)
        readiness = RoomCensus(rooms).readiness
        # before the worker starts (the configured rooms may all run by then): not ready
        # for its sake either
        assert readiness()[1].endswith("; agent worker not registered, 0 dispatched room(s)")
        async with running_worker(rooms) as worker:
            first = await server.next_session()
            assert not readiness()[0]
            assert "agent worker not registered" in readiness()[1]
            await first.register("AW_1")
            with anyio.fail_after(5):
                while not worker.state.registered:
                    await anyio.sleep(0.01)
            first.done.set()  # the server goes away
            second = await server.next_session()
            assert not worker.state.registered
            await second.register("AW_2")
            with anyio.fail_after(5):
                while worker.worker_id != "AW_2" or not worker.state.registered:
                    await anyio.sleep(0.01)
            worker.state.draining = True
            assert "agent worker draining" in readiness()[1]
            second.done.set()


@pytest.mark.anyio
async def test_with_cluster_urls_it_registers_with_every_node_and_outlives_one() -> None:
    """Each node gets the worker's registration, status and answers; one node gone,
    the worker stays registered with the other and offers there are still answered."""
    async with fake_server() as one, fake_server() as two:
        rooms = room_set(one.port, two.port)
        async with running_worker(rooms) as worker:
            first, second = await one.next_session(), await two.next_session()
            await first.register("AW_one")
            await second.register("AW_two")
            for session in (first, second):
                status = (await session.expect("update_worker")).update_worker
                assert status.status == agent.WorkerStatus.WS_AVAILABLE
            first.done.set()  # node one goes away
            with anyio.fail_after(5):
                while worker.links[0].registered:
                    await anyio.sleep(0.01)
            assert worker.state.registered
            assert (await second.offer("AJ_two", "via-two")).available
            assert (await one.next_session()).headers["Authorization"].startswith("Bearer ")
            second.done.set()


# --- admission --------------------------------------------------------------------


def test_the_load_is_cpu_per_core_over_the_window() -> None:
    now, cpu = [0.0], [0.0]
    load = ProcessLoad(clock=lambda: now[0], cpu=lambda: cpu[0], cores=2)
    for _ in range(10):  # one core busy for 5 s
        now[0] += 0.5
        cpu[0] += 0.5
        value = load.sample()
    assert value == pytest.approx(0.5)
    for _ in range(10):  # then idle: the window forgets the busy seconds
        now[0] += 0.5
        value = load.sample()
    assert value == pytest.approx(0.0, abs=0.1)


def test_start_up_work_before_registering_is_not_load() -> None:
    """A worker busy starting (imports, its configured rooms joining) registers
    available: a room created at that moment is offered once, and only once."""
    now, cpu = [0.0], [0.0]
    load = ProcessLoad(clock=lambda: now[0], cpu=lambda: cpu[0], cores=1)
    now[0] += 1.0
    cpu[0] += 1.0  # start-up: a core busy
    assert load.sample() == pytest.approx(1.0)
    load.restart()  # registered
    assert load.value == 0.0
    now[0] += 0.02
    cpu[0] += 0.03  # the SDK's threads finishing a join: 1.5 cores over 20 ms
    assert load.sample() == 0.0  # too short a span to say
    now[0] += 0.48
    cpu[0] += 0.02
    assert load.sample() == 0.0
    now[0] += 0.5
    cpu[0] += 0.05
    assert load.sample() == pytest.approx(0.1)


def test_jobs_starting_count_against_both_limits() -> None:
    gate = Admission(DispatchConfig(enabled=True, max_rooms=30, load_threshold=0.5))
    gate.load.value = 0.4  # two rooms running: 0.2 each
    assert gate.full(running=2, starting=0) is None
    assert gate.full(running=2, starting=1) == "load 0.60 >= load_threshold 0.5"
    gate.load.value = 0.0  # nothing runs yet: a burst is cut at 25 x 0.02
    assert gate.full(running=0, starting=24) is None
    assert gate.full(running=0, starting=25) == "load 0.50 >= load_threshold 0.5"
    assert gate.full(running=20, starting=10) == "max_rooms (30) reached"


async def _hanging(job: Job) -> bool:
    await anyio.sleep_forever()
    return True


def _blocking(job: Job) -> bool:
    import time

    time.sleep(1)
    return True


def _raising(job: Job) -> bool:
    raise ValueError("no")


async def _named(job: Job) -> Accept:
    return Accept(identity=f"bot-{job.room}")


def _bad_attributes(job: Job) -> Accept:
    return Accept(attributes={"seats": 3})  # type: ignore[dict-item]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("hook", "answer"),
    [
        (lambda job: True, Accept()),
        (lambda job: False, Reject()),
        (_named, Accept(identity="bot-r")),
        (lambda job: "yes", Reject("the accept hook gave no answer")),
        (_raising, Reject("the accept hook raised")),
        (_bad_attributes, Reject("the accept hook raised")),
        (_hanging, Reject("the accept hook timed out")),
        (_blocking, Reject("the accept hook timed out")),
    ],
)
async def test_the_accept_hook_decides_and_a_bad_one_rejects(
    monkeypatch: pytest.MonkeyPatch, hook: Any, answer: Accept | Reject
) -> None:
    monkeypatch.setattr(admission, "HOOK_TIMEOUT_SECONDS", 0.2)
    gate = Admission(DispatchConfig(enabled=True, accept="tests:hook", accept_hook=hook))
    assert await gate.decide(Job(id="AJ_1", room="r")) == answer


@pytest.mark.anyio
async def test_an_offer_pending_when_the_socket_drops_is_not_counted_any_more() -> None:
    async with fake_server() as server:
        rooms = room_set(server.port, accept="tests.helpers.dispatch_hooks:choosy")
        async with running_worker(rooms) as worker:
            assert worker.jobs is not None
            session = await server.next_session()
            await session.register()
            job = agent.Job(id="AJ_h", type=agent.JobType.JT_ROOM, room=models.Room(name="hang-2"))
            await session.send(agent.ServerMessage(availability=agent.AvailabilityRequest(job=job)))
            with anyio.fail_after(5):
                while "AJ_h" not in worker.jobs.starting:
                    await anyio.sleep(0.01)
            session.done.set()  # the hook still deciding
            await (await server.next_session()).register()
            assert not worker.jobs.starting


# --- a job's token ----------------------------------------------------------------


def _assignment_token(ttl: timedelta) -> str:
    """A token as livekit-server builds one for a job (protocol's BuildAgentToken)."""
    grants = api.VideoGrants(room_join=True, room="call-1", agent=True, can_publish=True)
    return (
        api.AccessToken(KEY, SECRET).with_identity("helper").with_name("Helper")
        .with_kind("agent").with_attributes({"lk.agent_name": "unit"})
        .with_grants(grants).with_ttl(ttl).to_jwt()
    )  # fmt: skip


def test_a_dispatched_room_joins_with_the_assignment_token_then_renews_it() -> None:
    settings = RoomSettings(room="call-1", url="ws://x", api_key=KEY, api_secret=SECRET,
                            bot=lambda transport: None)  # fmt: skip
    fresh = _assignment_token(timedelta(hours=1))
    assert attrs.evolve(settings, join_token=fresh).token() == fresh
    renewed = attrs.evolve(settings, join_token=_assignment_token(timedelta(seconds=-5))).token()
    claims = api.TokenVerifier(KEY, SECRET).verify(renewed)  # valid again
    assert (claims.identity, claims.name, claims.kind) == ("helper", "Helper", "agent")
    assert claims.video.agent
    assert claims.video.room == "call-1"
    assert claims.attributes == {"lk.agent_name": "unit"}
    assert SECRET not in repr(attrs.evolve(settings, join_token=fresh))
    assert fresh not in repr(attrs.evolve(settings, join_token=fresh))


def test_a_job_tree_is_named_by_room_and_participant_and_a_slash_is_escaped() -> None:
    """An actor's name has no '/', a LiveKit room's may: such a room's job once failed
    the worker's whole session as its tree was named."""
    rooms = room_set(free_port())
    room_job = job_of(agent.Job(id="AJ_r", room=models.Room(name="sales/eu")))
    participant = agent.Job(id="AJ_p", room=models.Room(name="call-7"))
    participant.participant.identity = "sip/+1555"
    participant_job = job_of(participant)
    assert (room_job.key, participant_job.key) == ("sales%2Feu", "call-7:sip%2F+1555")
    for job in (room_job, participant_job):
        spec = rooms.job_spec(job, TOKEN, "ws://127.0.0.1:1", "bot")
        assert spec.name == job.key
        assert rooms.dispatched[job.key] is job


def test_a_reconnecting_bot_is_not_alone_however_empty_the_room_looks() -> None:
    """The SDK reconnecting reports every participant gone: the idle timeout must not run."""
    job = Job(id="AJ_1", room="call")
    stats = RoomStats(connection="connected", participants={"caller"})
    assert jobs._has_company(job, stats)
    stats.participants.clear()
    assert not jobs._has_company(job, stats)
    stats.connection = "reconnecting"
    assert jobs._has_company(job, stats)


@pytest.mark.anyio
async def test_an_offer_for_a_room_made_anew_ends_the_job_of_the_room_that_is_gone() -> None:
    """A job's room made anew (its node stopped; the node never ends the job) is
    offered under another sid: that job ends and its bot is on its way out, so the
    offer is this process's to take; an offer under the job's own sid is served."""
    rooms = room_set(free_port())
    async with anyio.create_task_group() as tasks:
        running = jobs.Jobs(rooms.config, rooms, cast(ActorRef, None), "ws://x", tasks,
                            report=lambda message: None, on_change=lambda: None)  # fmt: skip
        old = Job(id="AJ_old", room="call-9", room_sid="RM_gone")
        running.running[old.id] = jobs._Running(old, 0.0, "bot", Accept())
        same = Job(id="AJ_same", room="call-9", room_sid="RM_gone")
        assert running.end_made_anew(same) == []
        assert running.serves(same)
        assert not running.leaving("call-9", "bot")
        anew = Job(id="AJ_anew", room="call-9", room_sid="RM_anew")
        assert running.end_made_anew(anew) == [running.running[old.id].gone]
        assert running.running[old.id].reason == "its room was made anew (RM_anew)"
        assert not running.serves(anew)
        assert running.leaving("call-9", "bot")
        assert running.end_made_anew(Job(id="AJ_other", room="call-8", room_sid="RM_x")) == []
