"""Agent dispatch against the real livekit-server: `supervisor run` as a registered worker.

Each test runs `supervisor run` with a `[dispatch]` table and no `[[rooms]]` as a child
process, and participants (the rtc SDK in the test process) create rooms by joining
them, as callers would; the server offers each new room to the worker, whose bot must
arrive and echo. Explicit dispatch (an agent name in the token's room configuration,
or `CreateDispatch`), admission, the ends of a job, a server restart and a drain are
proven the same way, as are the dispatch latency histograms and `/status`. Waits are
for log lines and conditions, never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from livekit import api, rtc

from supervisor.livekit_server.server import LiveKitServer
from supervisor.process.rtc_shutdown import end_room
from tests.helpers.cli_process import (
    SupervisorConfig,
    SupervisorProcess,
    serving,
    supervisor_process,
    write_config,
)
from tests.helpers.configs import ECHO_BOT
from tests.helpers.goodbye_bot import GOODBYE_SECONDS_ENV
from tests.helpers.participants import (
    ServerCredentials,
    hears_echo,
    is_tone,
    join,
    listen_for_tone,
    publishing_tone,
    subscribed_audio_track,
)
from tests.helpers.probes import eventually, wait_until
from tests.helpers.prometheus import Samples, get, scrape

REGISTERED = r"\[dispatch\] registered as worker"
DISPATCH_BOT = "tests.helpers.dispatch_bot:create_bot"
"""The echo bot, which also tells the room which job it serves (see the module)."""
SLOW_GOODBYE_BOT = "tests.helpers.goodbye_bot:slow_goodbye_bot"
"""The echo bot, whose goodbye keeps it in the room for seconds after its job ended."""


def dispatch_config(
    server: ServerCredentials, rooms: tuple[str, ...] = (), **dispatch: Any
) -> SupervisorConfig:
    """`[dispatch]` on, with the test bot. It leaves 1 s after it is alone, unless a
    test says otherwise: a worker's drain, as a test ends, waits for its jobs."""
    dispatch = {"enabled": True, "idle_timeout_seconds": 1, **dispatch}
    return SupervisorConfig(server, rooms=rooms, bot=DISPATCH_BOT, dispatch=dispatch)


@contextlib.asynccontextmanager
async def dispatch_worker(
    tmp_path: Path,
    server: ServerCredentials,
    name: str = "config",
    config: SupervisorConfig | None = None,
    **dispatch: Any,
) -> AsyncIterator[SupervisorProcess]:
    """`supervisor run` on `config` (default: `dispatch_config`, no `[[rooms]]`), once
    its worker registered."""
    folder = tmp_path / name
    folder.mkdir()
    async with serving(folder, config or dispatch_config(server, **dispatch)) as (run, _):
        await run.wait_for(REGISTERED, timeout=30)
        yield run


def token_with_dispatch(
    server: ServerCredentials, room: str, identity: str, agent_name: str, metadata: str
) -> str:
    """A participant's token whose room configuration asks for an agent by name."""
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
    return (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .with_room_config(
            api.RoomConfiguration(
                agents=[api.RoomAgentDispatch(agent_name=agent_name, metadata=metadata)]
            )
        )
        .to_jwt()
    )


@pytest.mark.anyio
@pytest.mark.smoke
async def test_automatic_dispatch_brings_the_bot_to_a_room_nobody_created(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """...beside a configured room, with the same metrics and readiness."""
    config = dispatch_config(livekit_server, rooms=("static-side",))
    metrics = config.metrics_url
    async with dispatch_worker(tmp_path, livekit_server, config=config) as run:
        async with join(livekit_server, "auto-1", "caller") as room:
            arrived = await hears_echo(room)
            assert bot_job(room)["room"] == "auto-1"
            samples = Samples(get(metrics + "/metrics")[1])
            assert samples["lksup_room_participants", {"room": "auto-1"}] == 1
            assert samples["lksup_rooms", {"state": "running"}] == 2
            assert samples["lksup_dispatch_registered"] == 1
            assert samples["lksup_dispatch_rooms"] == 1
            assert samples["lksup_dispatch_offers_total", {"answer": "accepted"}] == 1
            assert samples["lksup_dispatch_join_seconds_count"] == 1
            # the caller talked and heard the bot: its track and its first audio, once each
            samples = await eventually(
                lambda: Samples(get(metrics + "/metrics")[1]),
                lambda s: s["lksup_dispatch_first_audio_seconds_count"] == 1,
                "the first audio counted",
                timeout=15,
            )
            assert samples["lksup_dispatch_track_seconds_count"] == 1
            track = samples["lksup_dispatch_track_seconds_sum"]
            first_audio = samples["lksup_dispatch_first_audio_seconds_sum"]
            assert 0 < track <= first_audio  # (the join is polled: it may look later)
            assert get(metrics + "/readyz") == (
                200,
                "ready: 1 of 1 room(s) running; agent worker registered, 1 dispatched room(s)\n",
            )
        async with join(livekit_server, "static-side", "caller") as room:
            await hears_echo(room)
        await run.wait_for(r"\[auto-1\] job \S+ accepted")
        await run.wait_for(r"\[auto-1\] joined as bot")
        ended = Samples(get(metrics + "/metrics")[1])
        assert ended["lksup_dispatch_track_seconds_count"] == 1
        assert ended["lksup_dispatch_first_audio_seconds_count"] == 1
        print(
            f"dispatch: participant joined -> bot track subscribed in {arrived:.2f} s; "
            f"offer accepted -> track published {track:.3f} s, -> first audio {first_audio:.3f} s"
        )


@pytest.mark.anyio
async def test_status_shows_configured_and_dispatched_rooms_and_a_server_gone(
    tmp_path: Path,
) -> None:
    """`/status` beside `/metrics`: both kinds of room with their state and the job;
    the server killed, the worker unregistered and no room running. (A server of its
    own, which it kills.)"""
    server = LiveKitServer(log_path=tmp_path / "livekit.log")
    await anyio.to_thread.run_sync(server.start)
    try:
        config = dispatch_config(
            server, rooms=("status-static",), idle_timeout_seconds=30, drain_seconds=1
        )
        url = config.metrics_url + "/status"

        def rooms(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
            return {room["name"]: room for room in document["rooms"]}

        async with dispatch_worker(tmp_path, server, config=config) as run:
            async with join(server, "status-call", "caller") as room:
                await hears_echo(room)
                job = bot_job(room)["job"]
                up = await eventually(
                    lambda: json.loads(get(url)[1]),
                    lambda d: rooms(d)["status-call"]["participants"] == 1,
                    "the caller in /status",
                    timeout=15,
                )
            assert (up["ready"], up["stale"]) == (True, False), up
            worker = up["worker"]
            assert (worker["enabled"], worker["registered"]) == (True, True), worker
            (worker_id,) = {m[1] for m in run.matches(r"registered as worker (\S+)")}
            assert worker["worker_id"] == worker_id
            assert (worker["rooms"], worker["offers"]["accepted"]) == (1, 1), worker
            by_name = rooms(up)
            assert sorted(by_name) == ["status-call", "status-static"]
            static, call = by_name["status-static"], by_name["status-call"]
            assert (static["kind"], static["state"]) == ("configured", "running")
            assert static["job"] is None
            assert (call["kind"], call["state"], call["connection"]) == (
                "dispatched", "running", "connected",
            )  # fmt: skip
            assert call["job"]["id"] == job, call
            assert call["job"]["agent_name"] == "", call  # automatic dispatch
            assert call["job"]["dispatch_id"].startswith("AD_"), call

            server.kill()
            down = await eventually(
                lambda: json.loads(get(url)[1]),
                lambda d: not d["worker"]["registered"]
                and all(room["state"] != "running" for room in d["rooms"]),
                "the worker unregistered and no room running",
                timeout=15,
            )
            assert down["ready"] is False, down
            assert sorted(rooms(down)) == ["status-call", "status-static"]  # they go on
            assert all(room["connection"] != "connected" for room in down["rooms"]), down
            print(f"\n/status with the server gone: {json.dumps(down['rooms'])}")
    finally:
        await anyio.to_thread.run_sync(server.stop)


def server_api(server: ServerCredentials) -> api.LiveKitAPI:
    return api.LiveKitAPI(server.url, server.api_key, server.api_secret)


def bot_job(room: rtc.Room, bot: str = "bot") -> dict[str, str]:
    """The job the bot says it serves (tests/helpers/dispatch_bot.py sets it as its metadata)."""
    return json.loads(room.remote_participants[bot].metadata or "{}")


async def bot_leaves(room: rtc.Room, bot: str = "bot", timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        while bot in room.remote_participants:
            await anyio.sleep(0.05)


async def server_ended_job(server: LiveKitServer, run: SupervisorProcess, room: str) -> str:
    """Once the supervisor logged that its job in `room` ended, the server's own word on
    it (its log's "job ended" line for that job id), e.g. `JS_SUCCESS`.

    The server's dispatch listing is no help: v1.13.5 keeps each job there as it was
    assigned (`JS_RUNNING`) whatever the worker reports later."""
    (ended,) = await run.wait_for(rf"\[{room}\] job (\S+) ends")
    pattern = re.compile(rf'job ended\t.*"jobID": "{ended[1]}", "status": "(\w+)"')
    with anyio.move_on_after(10):
        while not (found := pattern.findall(server.log_path.read_text(errors="replace"))):
            await anyio.sleep(0.1)
        return found[0]
    raise AssertionError(f"the server never logged the end of job {ended[1]}")


@pytest.mark.anyio
async def test_explicit_dispatch_by_token_and_a_worker_of_another_name_gets_nothing(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    async with (
        dispatch_worker(tmp_path, livekit_server, "named", agent_name="echo-agent") as named,
        dispatch_worker(tmp_path, livekit_server, "other", agent_name="other-agent") as other,
    ):
        token = token_with_dispatch(
            livekit_server, "named-1", "caller", "echo-agent", '{"lang": "fr"}'
        )
        room = rtc.Room()
        await room.connect(livekit_server.url, token)
        try:
            await hears_echo(room)
            job = bot_job(room)
            assert job["room"] == "named-1", job
            assert job["metadata"] == '{"lang": "fr"}', job
        finally:
            await room.disconnect()
        await named.wait_for(r"\[named-1\] job \S+ ends \(JS_SUCCESS\)")
    assert not other.matches(r"job \S+ (accepted|declined|rejected)"), other.tail()


@pytest.mark.anyio
async def test_create_dispatch_with_metadata_then_delete_dispatch_stops_the_bot(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    async with (
        dispatch_worker(tmp_path, livekit_server, agent_name="api-agent") as run,
        server_api(livekit_server) as lk,
    ):
        await lk.room.create_room(api.CreateRoomRequest(name="api-1"))
        dispatch = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name="api-agent", room="api-1", metadata="vip")
        )
        async with join(livekit_server, "api-1", "caller") as room:
            await hears_echo(room)
            job = bot_job(room)
            assert job["metadata"] == "vip", job
            await lk.agent_dispatch.delete_dispatch(dispatch.id, "api-1")
            await bot_leaves(room)
        await run.wait_for(
            rf"\[api-1\] job {job['job']} ends \(JS_SUCCESS\): terminated by the server"
        )


@pytest.mark.anyio
async def test_a_room_dispatched_again_while_its_bot_leaves_gets_a_bot_again(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """The new job is offered while the old job's bot, its job ended, is still in the
    room (here its goodbye takes seconds; in a cluster, a bot whose room's node stopped
    may even be back in the room made anew by its SDK). That bot is on its way out: the
    worker takes it out of the room and the job, instead of declining the job as served
    (the room would keep no bot) or taking it with that bot still there (the server,
    which keys a room's jobs by their bot's identity, would end the new job as the old
    bot leaves). The new bot joins once the old one left: a bot again, one at a time."""
    config = attrs.evolve(dispatch_config(livekit_server, agent_name="again"), bot=SLOW_GOODBYE_BOT)
    dispatch = api.CreateAgentDispatchRequest(agent_name="again", room="redispatch-1")
    async with (
        serving(tmp_path, config, env={GOODBYE_SECONDS_ENV: "5"}) as (run, _),
        server_api(livekit_server) as lk,
    ):
        await run.wait_for(REGISTERED, timeout=30)
        await lk.room.create_room(api.CreateRoomRequest(name="redispatch-1"))
        first = await lk.agent_dispatch.create_dispatch(dispatch)
        async with join(livekit_server, "redispatch-1", "caller") as room:
            await hears_echo(room)
            old = room.remote_participants["bot"].sid
            await lk.agent_dispatch.delete_dispatch(first.id, "redispatch-1")
            await run.wait_for(r"\[redispatch-1\] goodbye: holding the EndFrame", timeout=20)
            await lk.agent_dispatch.create_dispatch(dispatch)
            with anyio.fail_after(30):
                while (bot := room.remote_participants.get("bot")) is None or bot.sid == old:
                    await anyio.sleep(0.05)
            await hears_echo(room)
            listing = await lk.room.list_participants(
                api.ListParticipantsRequest(room="redispatch-1")
            )
            assert sorted(p.identity for p in listing.participants) == ["bot", "caller"]
            assert len(run.matches(r"\[redispatch-1\] job \S+ ends")) == 1, run.tail()
    # the old bot was still there when the job was offered again
    assert run.matches(r"\[redispatch-1\] job \S+: bot, this process's bot of a job that is ending")
    lines = [line for line in run.lines if "[redispatch-1]" in line]
    left = next(i for i, line in enumerate(lines) if line.endswith("[redispatch-1] left"))
    joined = [i for i, line in enumerate(lines) if "[redispatch-1] joined as bot" in line]
    assert len(joined) == 2, "\n".join(lines)
    assert joined[0] < left < joined[1], "\n".join(lines)


@pytest.mark.anyio
async def test_the_accept_hook_rejects_and_a_raising_or_hanging_hook_rejects_only_that_job(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    config = dispatch_config(livekit_server, accept="tests.helpers.dispatch_hooks:choosy")
    async with dispatch_worker(tmp_path, livekit_server, config=config) as run:
        for name, why in [
            ("private-1", "private rooms get no bot"),
            ("raise-1", "the accept hook raised"),
            ("hang-1", "the accept hook timed out"),
        ]:
            async with join(livekit_server, name, "caller"):
                await run.wait_for(rf"\[{name}\] job \S+ rejected: {why}")
        assert run.matches(r"\[raise-1\] .*RuntimeError\(.the hook's backend is down")
        async with join(livekit_server, "fine-1", "caller") as room:
            await hears_echo(room, bot="helper")
            attributes = room.remote_participants["helper"].attributes
            assert attributes.get("role") == "echo", attributes
        assert not run.matches(r"\[(private|raise|hang)-1\] joined"), run.tail()
        samples = scrape(config.metrics_url)
        assert samples["lksup_dispatch_offers_total", {"answer": "rejected"}] == 3


@pytest.mark.anyio
async def test_a_blocking_sync_hook_holds_a_thread_not_the_loop(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    async with dispatch_worker(
        tmp_path, livekit_server, accept="tests.helpers.dispatch_hooks:blocking"
    ) as run:
        async with join(livekit_server, "sync-hang-1", "caller"):
            await run.wait_for(r"\[sync-hang-1\] job \S+ rejected: the accept hook timed out")
        async with join(livekit_server, "sync-fine-1", "caller") as room:
            await hears_echo(room)


@pytest.mark.anyio
async def test_a_full_worker_declines_and_the_next_room_goes_to_a_second_process(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    async with (
        dispatch_worker(tmp_path, livekit_server, "first", max_rooms=1) as first,
        join(livekit_server, "full-1", "caller") as room_1,
    ):
        await hears_echo(room_1)
        await first.wait_for(r"\[dispatch\] full: max_rooms \(1\) reached")
        async with (
            dispatch_worker(tmp_path, livekit_server, "second") as second,
            join(livekit_server, "full-2", "caller") as room_2,
        ):
            await hears_echo(room_2)
            await second.wait_for(r"\[full-2\] job \S+ accepted")
        assert not first.matches(r"\[full-2\] job \S+ accepted"), first.tail()


@pytest.mark.anyio
async def test_idle_timeout_ends_the_job_as_succeeded(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """...when the last caller left, though another agent stays."""
    agent_token = (
        api.AccessToken(livekit_server.api_key, livekit_server.api_secret)
        .with_identity("other-bot")
        .with_kind("agent")
        .with_grants(api.VideoGrants(room_join=True, room="idle-1"))
        .to_jwt()
    )
    other_bot = rtc.Room()
    try:
        async with dispatch_worker(tmp_path, livekit_server, idle_timeout_seconds=1) as run:
            async with join(livekit_server, "idle-1", "caller") as room:
                await hears_echo(room)
                await other_bot.connect(livekit_server.url, agent_token)
                await run.wait_for(r"\[idle-1\] participant other-bot joined")
            await run.wait_for(r"\[idle-1\] job \S+ ends \(JS_SUCCESS\): alone for idle_timeout")
            assert await server_ended_job(livekit_server, run, "idle-1") == "JS_SUCCESS"
            await run.wait_for(r"\[idle-1\] left")
    finally:
        await end_room(other_bot)


@pytest.mark.anyio
async def test_max_duration_ends_the_job_while_the_caller_stays(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """(Judged by the log and the room, not by an echo, which a busy machine could
    delay past the limit.)"""
    async with (
        dispatch_worker(tmp_path, livekit_server, max_duration_seconds=3) as run,
        join(livekit_server, "short-1", "caller") as room,
    ):
        await run.wait_for(r"\[short-1\] joined as bot")
        await run.wait_for(
            r"\[short-1\] job \S+ ends \(JS_SUCCESS\): max_duration_seconds \(3\)"
        )
        await bot_leaves(room)
        assert await server_ended_job(livekit_server, run, "short-1") == "JS_SUCCESS"


@pytest.mark.anyio
async def test_drain_takes_no_new_job_and_lets_the_running_one_finish(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    async with dispatch_worker(tmp_path, livekit_server, idle_timeout_seconds=1) as run:
        async with join(livekit_server, "drain-1", "caller") as room:
            await hears_echo(room)
            run.send_signal(signal.SIGTERM)
            await run.wait_for(r"\[dispatch\] draining: no new jobs; 1 running job")
            async with join(livekit_server, "drain-2", "caller") as late:
                # the server is told at once; give it a moment to offer the room anyway
                with anyio.move_on_after(3):
                    await subscribed_audio_track(late, "bot", timeout=10)
                    raise AssertionError("a draining worker's bot came to a new room")
            await hears_echo(room)  # the running job goes on
        assert await run.wait(timeout=30) == 0
    await run.wait_for(r"\[drain-1\] job \S+ ends \(JS_SUCCESS\): alone for idle_timeout")
    assert not run.matches(r"\[drain-2\] job \S+ accepted"), run.tail()


@pytest.mark.anyio
async def test_after_a_server_restart_the_worker_registers_again_and_rooms_have_their_bot(
    tmp_path: Path,
) -> None:
    server = LiveKitServer(log_path=tmp_path / "livekit-1.log")
    await anyio.to_thread.run_sync(server.start)
    rooms = ("phoenix-1", "phoenix-2")
    try:
        async with dispatch_worker(
            tmp_path, server, idle_timeout_seconds=30, drain_seconds=1
        ) as run:
            async with contextlib.AsyncExitStack() as callers:
                for name in rooms:
                    await hears_echo(
                        await callers.enter_async_context(join(server, name, "caller"))
                    )
                server.kill()
                killed = time.perf_counter()
                await run.wait_for(r"\[dispatch\] not registered")
                server = LiveKitServer(server.settings, log_path=tmp_path / "livekit-2.log")
                await anyio.to_thread.run_sync(server.start)
                await run.wait_for(REGISTERED, count=2, timeout=30)
                registered = time.perf_counter() - killed
            back: dict[str, float] = {}
            for name in rooms:  # the callers come back, as their apps would
                async with join(server, name, "caller") as room:
                    back[name] = await hears_echo(room, timeout=60)
            assert run.process.returncode is None
        print("\n".join(line for line in run.lines if "phoenix" in line or "dispatch]" in line))
        assert not run.matches(r"quarantined|RestartIntensityError"), run.tail()
        print(
            f"\nregistered again {registered:.2f} s after the kill; bot track within "
            + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in back.items())
            + " of the caller's rejoin"
        )
    finally:
        await anyio.to_thread.run_sync(server.stop)


async def a_bot_of(room: rtc.Room, prefix: str = "bot-") -> str:
    """The identity of the first participant in `room` whose identity starts with `prefix`."""
    await wait_until(
        lambda: any(p.startswith(prefix) for p in room.remote_participants), timeout=30
    )
    return next(p for p in room.remote_participants if p.startswith(prefix))


@pytest.mark.anyio
async def test_after_a_server_restart_each_room_has_one_bot_whichever_worker_serves_it(
    tmp_path: Path,
) -> None:
    """Two workers; the server restarts and loses its rooms. A bot whose room is gone
    does not bring it back, so the room a caller creates again gets one new job, from
    either worker, and never a second bot beside a rejoined one."""
    server = LiveKitServer(log_path=tmp_path / "livekit-1.log")
    await anyio.to_thread.run_sync(server.start)
    rooms = ("twin-1", "twin-2")

    def config(identity: str) -> SupervisorConfig:
        return dispatch_config(
            server, idle_timeout_seconds=30, drain_seconds=1, bot={"identity": identity}
        )

    try:
        async with (
            dispatch_worker(tmp_path, server, "a", config=config("bot-a")) as a,
            dispatch_worker(tmp_path, server, "b", config=config("bot-b")) as b,
        ):
            async with contextlib.AsyncExitStack() as callers:
                for name in rooms:
                    room = await callers.enter_async_context(join(server, name, "caller"))
                    await hears_echo(room, await a_bot_of(room))
                server.kill()
                for worker in (a, b):
                    await worker.wait_for(r"\[dispatch\] not registered")
                server = LiveKitServer(server.settings, log_path=tmp_path / "livekit-2.log")
                await anyio.to_thread.run_sync(server.start)
                for worker in (a, b):
                    await worker.wait_for(REGISTERED, count=2, timeout=30)
            async with contextlib.AsyncExitStack() as callers:
                for name in rooms:  # the callers come back, as their apps would
                    room = await callers.enter_async_context(join(server, name, "caller"))
                    await hears_echo(room, await a_bot_of(room), timeout=60)
                async with server_api(server) as lk:
                    for name in rooms:
                        listing = await lk.room.list_participants(
                            api.ListParticipantsRequest(room=name)
                        )
                        bots = [p.identity for p in listing.participants if p.identity != "caller"]
                        assert len(bots) == 1, (name, bots, a.tail(), b.tail())
    finally:
        await anyio.to_thread.run_sync(server.stop)


@pytest.mark.anyio
async def test_a_second_dispatch_of_the_agent_to_a_room_with_its_bot_is_declined(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """Whichever of two workers is offered it: the one whose bot is there serves the
    room already (`terminate`: the server asks no other worker); the other sees that
    bot among the room's participants and answers "not available", leaving it to the
    next worker (only the bot's own process knows whether it stays or leaves). So each
    dispatch ends at the bot's process, declined."""

    def config(identity: str) -> SupervisorConfig:
        return dispatch_config(livekit_server, bot={"identity": identity})

    served = r"\[rival-1\] job \S+ declined: this process already serves the room"
    async with (
        dispatch_worker(tmp_path, livekit_server, "a", config=config("bot-a")) as a,
        dispatch_worker(tmp_path, livekit_server, "b", config=config("bot-b")) as b,
        join(livekit_server, "rival-1", "caller") as room,
        server_api(livekit_server) as lk,
    ):
        first = await a_bot_of(room)
        owner, other = (a, b) if first == "bot-a" else (b, a)
        for _ in range(3):
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name="", room="rival-1")
            )
        # each dispatch may pass through the other worker first (a room listing, up to
        # RIVAL_CHECK_SECONDS), then the server's next offer: seconds on a busy machine
        await wait_until(lambda: len(owner.matches(served)) == 3, timeout=30)
        listing = await lk.room.list_participants(api.ListParticipantsRequest(room="rival-1"))
        assert sorted(p.identity for p in listing.participants) == sorted(["caller", first])
        assert not other.matches(r"\[rival-1\] job \S+ (accepted|declined: this process)")
        print(f"declined by the other worker first: {len(other.matches(r'rival-1.*is there'))}")


@pytest.mark.anyio
async def test_each_worker_process_registers_on_its_own(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    config = dispatch_config(livekit_server)
    path = write_config(tmp_path, config.text())
    async with supervisor_process("run", str(path), "--workers", "2", env=config.env()) as run:
        await run.wait_for(r"\[worker 0\] .*" + REGISTERED, timeout=60)
        await run.wait_for(r"\[worker 1\] .*" + REGISTERED, timeout=60)
        ids = {m[1] for m in run.matches(r"registered as worker (\S+)")}
        assert len(ids) == 2, run.tail()
        async with join(livekit_server, "workers-1", "caller") as room:
            await hears_echo(room)
        run.send_signal(signal.SIGTERM)
        assert await run.wait(timeout=60) == 0


@pytest.mark.anyio
async def test_a_configured_room_is_declined_by_the_worker_that_does_not_serve_it(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """With `--workers 2` each configured room is one worker's; the other must not take
    its job when the room is created again (here: deleted, and the bot rejoins)."""
    rooms = tuple(f"shared-{n}" for n in range(4))
    config = dispatch_config(livekit_server, rooms=rooms)
    path = write_config(tmp_path, config.text())
    declined = r"\[shared-\d\] job \S+ declined"
    async with (
        supervisor_process("run", str(path), "--workers", "2", env=config.env()) as run,
        server_api(livekit_server) as lk,
    ):
        await run.wait_for(r"\[worker 0\] .*" + REGISTERED, timeout=60)
        await run.wait_for(r"\[worker 1\] .*" + REGISTERED, timeout=60)
        await run.wait_for(r"\[shared-\d\] joined as bot", count=len(rooms), timeout=60)
        before = len(run.matches(declined))
        for room in rooms:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        # `before` may miss a start-up offer's answer logged after the joins: the
        # declines are a floor, and the rooms are waited for until their bots are back
        await run.wait_for(declined, count=before + len(rooms), timeout=60)

        async def listed(room: str) -> list[str]:
            listing = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            return [p.identity for p in listing.participants]

        with anyio.move_on_after(60):
            for room in rooms:
                while await listed(room) != ["bot"]:  # its bot rejoining (backoff)
                    await anyio.sleep(0.1)
        assert not run.matches(r"\[shared-\d\] job \S+ accepted"), run.tail()
        for room in rooms:
            assert await listed(room) == ["bot"], room
        run.send_signal(signal.SIGTERM)
        assert await run.wait(timeout=60) == 0


@pytest.mark.anyio
async def test_a_quarantined_room_ends_its_job_as_failed_with_the_error(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    config = attrs.evolve(
        dispatch_config(livekit_server),
        bot="tests.helpers.crashing_bot:failing_bot",
        supervision={"max_restarts": 1, "backoff_initial_seconds": 0.05},
    )
    async with (
        dispatch_worker(tmp_path, livekit_server, config=config) as run,
        join(livekit_server, "fail-1", "caller"),
    ):
        await run.wait_for(
            r"\[fail-1\] job \S+ ends \(JS_FAILED\): the room was quarantined: "
            r".*this bot never starts"
        )
        assert await server_ended_job(livekit_server, run, "fail-1") == "JS_FAILED"


@pytest.mark.anyio
async def test_dispatched_rooms_run_the_dispatch_bot_and_configured_rooms_the_bot(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    config = SupervisorConfig(
        livekit_server,
        rooms=("own-bot-static",),
        bot=ECHO_BOT,
        dispatch={
            "enabled": True,
            "idle_timeout_seconds": 1,
            "bot": {"factory": DISPATCH_BOT, "identity": "dispatched"},
        },
    )
    async with dispatch_worker(tmp_path, livekit_server, config=config) as run:
        async with join(livekit_server, "own-bot-static", "caller") as room:
            await hears_echo(room, bot="bot")  # the [bot]: the plain echo bot...
            assert "dispatched" not in room.remote_participants
            assert room.remote_participants["bot"].metadata == ""  # ...which tells no job
        async with join(livekit_server, "own-bot-1", "caller") as room:
            await hears_echo(room, bot="dispatched")  # the [dispatch.bot], as it names itself
            assert await bot_metadata(room, "dispatched") != {}
            assert "bot" not in room.remote_participants
        await run.wait_for(r"\[own-bot-1\] joined as dispatched")


async def bot_metadata(room: rtc.Room, bot: str, timeout: float = 15.0) -> dict[str, Any]:
    """The job `bot` says it serves, once it said it."""
    with anyio.fail_after(timeout):
        while not (p := room.remote_participants.get(bot)) or not p.metadata:
            await anyio.sleep(0.05)
    return bot_job(room, bot)


async def bots_by_participant(
    room: rtc.Room, count: int, timeout: float = 20.0
) -> dict[str, str]:
    """Once `count` bots in `room` told their participant's job: participant -> bot."""
    with anyio.fail_after(timeout):
        while True:
            jobs = {
                identity: json.loads(p.metadata)
                for identity, p in room.remote_participants.items()
                if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and p.metadata
            }
            if len(jobs) >= count:
                return {job["participant"]: identity for identity, job in jobs.items()}
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_participant_jobs_bring_a_bot_per_participant_and_end_as_each_one_leaves(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """Two callers in one room, two jobs, two bots; the one who hangs up takes only their
    own bot with them. (The idle timeout is long: each job ends by its caller's leave.)"""
    async with (
        dispatch_worker(
            tmp_path, livekit_server, job_type="participant", idle_timeout_seconds=60
        ) as run,
        join(livekit_server, "per-1", "alice") as alice,
    ):
        async with join(livekit_server, "per-1", "bob") as bob:
            bots = await bots_by_participant(alice, 2)
            assert sorted(bots) == ["alice", "bob"], bots
            assert len(set(bots.values())) == 2, bots
            assert all(re.fullmatch(r"bot-AJ_\w+", bot) for bot in bots.values()), bots
            assert await bots_by_participant(bob, 2) == bots
            for who, bot in bots.items():
                job = bot_job(alice, bot)
                assert (job["room"], job["participant"]) == ("per-1", who), job
                await run.wait_for(rf"\[per-1:{who}\] job {job['job']} accepted")
            async with publishing_tone(bob, 660.0):
                await hears_echo(alice, bot=bots["alice"])
                # each bot hears its participant only
                await run.wait_for(r"\[per-1:alice\] not hearing bob \(track \S+\): this bot "
                                   r"hears alice only")
                await run.wait_for(r"\[per-1:bob\] not hearing alice")
                await run.wait_for(r"\[per-1:bob\] receiving audio of bob")
            assert not run.matches(r"\[per-1:alice\] receiving audio of bob"), run.tail()
            assert not run.matches(r"\[per-1:bob\] receiving audio of alice"), run.tail()
        (ended,) = await run.wait_for(r"\[per-1:(\w+)\] job \S+ ends \(JS_SUCCESS\): (.*)")
        assert (ended[1], ended[2]) == ("bob", "participant bob left (client_initiated)")
        assert await server_ended_job(livekit_server, run, "per-1:bob") == "JS_SUCCESS"
        await bot_leaves(alice, bots["bob"])
        assert bots["alice"] in alice.remote_participants
        assert not run.matches(r"\[per-1:alice\] job \S+ ends"), run.tail()
        await hears_echo(alice, bot=bots["alice"])  # her bot goes on


@pytest.mark.anyio
async def test_publisher_jobs_bring_a_bot_once_the_participant_publishes(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """A listener who never publishes gets no job; a talker gets one when they publish,
    though both joined before that (a participant job would have come at the join)."""
    async with (
        dispatch_worker(tmp_path, livekit_server, job_type="publisher") as run,
        join(livekit_server, "pub-1", "listener"),
        join(livekit_server, "pub-1", "talker") as talker,
    ):
        async with publishing_tone(talker, 440.0):
            bots = await bots_by_participant(talker, 1)
            assert list(bots) == ["talker"], bots
            track = await subscribed_audio_track(talker, bots["talker"], timeout=15)
            assert is_tone(await listen_for_tone(track, 440.0), 440.0)
        await run.wait_for(r"\[pub-1:talker\] job \S+ accepted")
        assert not run.matches(r"\[pub-1:listener\] job"), run.tail()


@pytest.mark.anyio
async def test_a_participant_who_hangs_up_and_calls_again_at_once_gets_a_bot_again(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """The new job is not refused as served by the old one, which is ending, and its
    tree (of the same name) starts once the old one stopped."""
    async with dispatch_worker(
        tmp_path, livekit_server, job_type="participant", idle_timeout_seconds=60
    ) as run:
        async with join(livekit_server, "again-1", "caller") as first:
            bot = (await bots_by_participant(first, 1))["caller"]
            old = bot_job(first, bot)["job"]
            await hears_echo(first, bot=bot)
        async with join(livekit_server, "again-1", "caller") as second:
            with anyio.fail_after(20):
                while not any(
                    p.metadata and json.loads(p.metadata)["job"] != old
                    for p in second.remote_participants.values()
                ):
                    await anyio.sleep(0.05)
            (new,) = [
                identity
                for identity, p in second.remote_participants.items()
                if p.metadata and json.loads(p.metadata)["job"] != old
            ]
            await hears_echo(second, bot=new)
        await run.wait_for(rf"\[again-1:caller\] job {old} ends \(JS_SUCCESS\): participant "
                           r"caller left \(client_initiated\)")
        assert not run.matches(r"\[again-1:caller\] job \S+ declined"), run.tail()
    print("\n".join(line for line in run.lines if "job" in line and "again-1" in line))


@pytest.mark.anyio
async def test_a_hook_naming_two_bots_of_one_room_alike_gets_the_second_job_rejected(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """Accepted, the second bot's join would replace the first (livekit-server lets an
    identity into a room once: the first session ends with `duplicate_identity`)."""
    async with dispatch_worker(
        tmp_path,
        livekit_server,
        job_type="participant",
        idle_timeout_seconds=60,
        accept="tests.helpers.dispatch_hooks:one_name",
    ) as run:
        async with join(livekit_server, "dup-1", "alice") as alice:
            await hears_echo(alice, bot="helper")
            (job,) = await run.wait_for(r"\[dup-1:alice\] job (\S+) accepted")
            async with join(livekit_server, "dup-1", "bob"):
                await run.wait_for(
                    rf"\[dup-1:bob\] job \S+ rejected: the bot identity 'helper' is job "
                    rf"{job[1]}'s in that room"
                )
            await hears_echo(alice, bot="helper")
        assert not run.matches(r"duplicate_identity|\[dup-1:bob\] joined"), run.tail()
