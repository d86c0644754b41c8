"""Several supervisor hosts on a LiveKit cluster: two nodes sharing a Redis.

One cluster serves the module (`tests/helpers/cluster.py`). Each test starts two or
three `supervisor run` processes with `[dispatch]`, standing for hosts: each has one
node as `url` and the other in `cluster_urls`, so it registers with both (see
`supervisor/dispatch/agent_worker.py` for why). Participants create rooms by joining through
either node, or a backend creates them through either node's API.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import statistics
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from livekit import api, rtc

from actors.room import AGENT_NAME_ATTRIBUTE
from supervisor.livekit_server.access import Credentials, agent_token
from supervisor.livekit_server.server import LiveKitServer
from supervisor.process.rtc_shutdown import end_room
from tests.helpers.cli_process import SupervisorConfig, SupervisorProcess, serving
from tests.helpers.cluster import (
    Cluster,
    assigning_nodes,
    node_ids,
    room_nodes,
    running_cluster,
)
from tests.helpers.participants import (
    agents_listed,
    bot_track,
    first_tone_at,
    hears_echo,
    join,
    listen_for_tone,
    publishing_tone,
    subscribed_audio_track,
)
from tests.helpers.probes import eventually
from tests.helpers.prometheus import Samples, get

DISPATCH_BOT = "tests.helpers.dispatch_bot:create_bot"


def registered_with(url: str) -> str:
    return rf"\[dispatch\] registered as worker \S+ with {url}/agent"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@contextlib.asynccontextmanager
async def host(
    folder: Path, cluster: Cluster, node: int, **dispatch: str | float | bool
) -> AsyncIterator[SupervisorProcess]:
    """A supervisor host whose `url` is node `node`'s and `cluster_urls` the others',
    once it registered with every node. Its bot leaves 1 s after it is alone unless
    `dispatch` says otherwise."""
    await anyio.Path(folder).mkdir()
    config = SupervisorConfig(
        cluster.nodes[node],
        rooms=(),
        bot=DISPATCH_BOT,
        dispatch={"enabled": True, "idle_timeout_seconds": 1, **dispatch},
        cluster_urls=tuple(n.url for i, n in enumerate(cluster.nodes) if i != node),
    )
    async with serving(folder, config) as (run, _):
        for other in cluster.nodes:
            await run.wait_for(registered_with(other.url), timeout=30)
        yield run


def metrics(run: SupervisorProcess) -> Samples:
    return Samples(get(f"{run.metrics_url}/metrics")[1])


def agents_in(room: rtc.Room) -> list[str]:
    return [
        p.identity
        for p in room.remote_participants.values()
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    ]


def settled(run: SupervisorProcess, room: str) -> bool:
    """Whether `run`'s bot of a room whose node went away is done with it: joined again
    through another node, or its job ended and the bot left (until then its SDK,
    reconnecting by itself, may still bring it into the room a caller makes anew)."""
    if run.matches(rf"\[{room}\] .*joining through"):
        return True
    lines = [line for line in run.lines if f"[{room}]" in line]
    ended = [i for i, line in enumerate(lines) if re.search(r"job \S+ ends", line)]
    return bool(ended) and any(line.endswith(f"[{room}] left") for line in lines[ended[0] :])


def taken_by(hosts: Sequence[SupervisorProcess], room: str) -> list[int]:
    """The hosts (by index) that accepted a job for `room`."""
    return [i for i, run in enumerate(hosts) if run.matches(rf"\[{room}\] job \S+ accepted")]


async def all_joined(hosts: Sequence[SupervisorProcess], rooms: Sequence[str]) -> None:
    """Until a bot of some host joined each of `rooms`."""
    with anyio.fail_after(60):
        while missing := [
            room
            for room in rooms
            if not any(run.matches(rf"\[{room}\] joined as bot") for run in hosts)
        ]:
            await anyio.sleep(0.2)
    assert not missing


@contextlib.asynccontextmanager
async def created_rooms(cluster: Cluster, names: Sequence[str]) -> AsyncIterator[None]:
    """`names` created at once by a backend, alternately through each node's API, and
    deleted on exit (their bots then leave: the server ended the room)."""
    async with contextlib.AsyncExitStack() as stack:
        apis = [
            await stack.enter_async_context(api.LiveKitAPI(n.url, n.api_key, n.api_secret))
            for n in cluster.nodes
        ]
        try:
            async with anyio.create_task_group() as tasks:
                for i, name in enumerate(names):
                    lk = apis[i % len(apis)]
                    tasks.start_soon(lk.room.create_room, api.CreateRoomRequest(name=name))
            yield
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(20):
                async with anyio.create_task_group() as tasks:
                    for name in names:
                        tasks.start_soon(apis[0].room.delete_room, api.DeleteRoomRequest(room=name))


@contextlib.asynccontextmanager
async def restarted_on_exit(node: LiveKitServer) -> AsyncIterator[None]:
    """A stopped node is running again after the block, for the module's next tests."""
    try:
        yield
    finally:
        if not node.running:
            await anyio.to_thread.run_sync(node.start)


@pytest.mark.anyio
async def test_rooms_created_through_either_node_each_get_one_bot(
    tmp_path: Path, cluster: Cluster
) -> None:
    async with host(tmp_path / "a", cluster, 0) as a, host(tmp_path / "b", cluster, 1) as b:
        rooms = [f"either-{i}" for i in range(4)]

        async def call(index: int, name: str) -> None:
            async with join(cluster.nodes[index % 2], name, "caller") as room:
                await hears_echo(room)
                assert agents_in(room) == ["bot"], (name, agents_in(room))

        async with anyio.create_task_group() as tasks:
            for index, name in enumerate(rooms):
                tasks.start_soon(call, index, name)
        for name in rooms:
            assert len(taken_by((a, b), name)) == 1, name
        placed = room_nodes(cluster)
        print({name: (placed.get(name), taken_by((a, b), name)) for name in rooms})


@pytest.mark.anyio
async def test_twenty_rooms_created_at_once_are_spread_over_the_hosts(
    tmp_path: Path, cluster: Cluster
) -> None:
    """The node a job lands on offers it to one of its workers at random, weighted by
    load (every host is a worker on every node): with three hosts, one taking more than
    14 of 20 happens about once in 2,000 runs."""
    rooms = [f"burst-{i}" for i in range(20)]
    async with (
        host(tmp_path / "a", cluster, 0, idle_timeout_seconds=60) as a,
        host(tmp_path / "b", cluster, 1, idle_timeout_seconds=60) as b,
        host(tmp_path / "c", cluster, 0, idle_timeout_seconds=60) as c,
        created_rooms(cluster, rooms),
    ):
        await all_joined((a, b, c), rooms)
        takers = {name: taken_by((a, b, c), name) for name in rooms}
        assert all(len(hosts) == 1 for hosts in takers.values()), takers
        spread = Counter(hosts[0] for hosts in takers.values())
        print(f"20 rooms at once over three hosts: {sorted(spread.values())}")
        assert max(spread.values()) <= 14, spread


@pytest.mark.anyio
async def test_a_full_host_gets_no_more_rooms(tmp_path: Path, cluster: Cluster) -> None:
    async with (
        host(tmp_path / "a", cluster, 0, max_rooms=2, idle_timeout_seconds=60) as a,
        created_rooms(cluster, ["full-a-1", "full-a-2"]),
    ):
        await a.wait_for(r"\[dispatch\] full: max_rooms \(2\) reached")
        later = [f"full-b-{i}" for i in range(6)]
        async with (
            host(tmp_path / "b", cluster, 1, idle_timeout_seconds=60) as b,
            created_rooms(cluster, later),
        ):
            await all_joined((a, b), later)
            assert all(taken_by((a, b), name) == [1] for name in later), a.tail()


@pytest.mark.anyio
async def test_a_node_stopped_leaves_the_hosts_registered_with_the_other(
    tmp_path: Path, cluster: Cluster
) -> None:
    """The node stopped is the one that assigned the jobs, so the bots in the surviving
    node's rooms joined through it: they lose their signalling and join again through
    the other node (`cluster_urls`), while their callers, connected to the surviving
    node, stay. The hosts stay registered there and take new rooms through it, and
    register with the stopped node again once it is back. The stopped node's own rooms
    end with it (LiveKit does not move a room to another node): their callers, joining
    again, find one bot in the room made anew (a newly dispatched one, or the old one
    joined again through the other node when `server_shutdown` did not reach it
    first: then the new room's offers are declined, a bot of this agent being there).
    A room may so get a second job, of either host: its old bot's SDK, reconnecting
    through the surviving node, may make the room anew while its job ends; that bot's
    host then takes the new room's job, once it took the old bot out."""
    ids = node_ids(cluster)
    placement = {"room-0": 0, "room-1": 0, "room-2": 1, "room-3": 1}
    # Long enough for a bot to see its caller again once it joined anew: the SDK,
    # reconnecting, reports everyone gone. The drain, as the test ends, cuts it short.
    patience = {"idle_timeout_seconds": 30, "drain_seconds": 1}
    async with (
        host(tmp_path / "a", cluster, 0, **patience) as a,
        host(tmp_path / "b", cluster, 1, **patience) as b,
        contextlib.AsyncExitStack() as callers,
    ):
        rooms = {}
        for name, node in placement.items():
            server = cluster.nodes[node]
            async with api.LiveKitAPI(server.url, cluster.api_key, cluster.api_secret) as lk:
                await lk.room.create_room(api.CreateRoomRequest(name=name, node_id=ids[node]))
            rooms[name] = await callers.enter_async_context(join(server, name, "caller"))
        async with anyio.create_task_group() as tasks:
            for room in rooms.values():
                tasks.start_soon(hears_echo, room)
        assert {name: room_nodes(cluster)[name] for name in rooms} == placement
        takers = {name: taken_by((a, b), name) for name in rooms}
        assert all(len(hosts) == 1 for hosts in takers.values()), takers
        assigned = Counter(assigning_nodes(cluster)[name] for name in rooms)
        lost_index = assigned.most_common(1)[0][0]
        lost, survivor = cluster.nodes[lost_index], cluster.nodes[1 - lost_index]
        stay = [name for name, node in placement.items() if node != lost_index]
        gone = [name for name in rooms if name not in stay]
        before = {name: bot_track(rooms[name]) for name in stay}
        await anyio.to_thread.run_sync(lost.stop)
        await callers.enter_async_context(restarted_on_exit(lost))
        for run in (a, b):
            await run.wait_for(rf"\[dispatch\] not registered with {lost.url}")
            assert metrics(run)["lksup_dispatch_registered"] == 1
        for name in stay:
            (taker,) = takers[name]
            if assigning_nodes(cluster)[name] == lost_index:  # the bot joined through it
                await (a, b)[taker].wait_for(rf"\[{name}\] .*joining through {survivor.url}")
                with anyio.fail_after(20):
                    while bot_track(rooms[name]) in (before[name], None):
                        await anyio.sleep(0.1)
        async with anyio.create_task_group() as tasks:
            for name in stay:
                tasks.start_soon(hears_echo, rooms[name])
        assert all(not any(run.matches(rf"\[{n}\] job \S+ ends") for run in (a, b)) for n in stay)
        async with join(survivor, "room-new", "caller") as room:
            await hears_echo(room)
        for name in gone:  # their callers come back, through the surviving node
            (taker,) = takers[name]
            with anyio.fail_after(30):
                while not settled((a, b)[taker], name):
                    await anyio.sleep(0.1)
            async with join(survivor, name, "caller-again") as room:
                await hears_echo(room)
                assert await agents_listed(survivor, name) == ["bot"]
        assert not any(run.matches("duplicate_identity") for run in (a, b))
        await anyio.to_thread.run_sync(lost.start)
        for run in (a, b):
            await run.wait_for(registered_with(lost.url), count=2, timeout=60)
        print(f"jobs assigned by node {dict(assigned)}; node {lost_index} stopped; jobs "
              f"by host: {({name: taken_by((a, b), name) for name in rooms})}")
        print("\n".join(line for run in (a, b) for line in run.lines if "joining through" in line))


DRAIN_SECONDS = 30
"""The drained host's `drain_seconds` in the rolling-update test: long past what its
checks before the deadline take (an echo heard), short enough to wait for."""


@pytest.mark.anyio
async def test_a_host_drained_takes_no_new_room_and_lets_its_rooms_finish_or_end(
    tmp_path: Path, cluster: Cluster
) -> None:
    """A rolling update without handoff (`[dispatch] handoff = false`; with it:
    `test_handoff.py`): SIGTERM one host while its rooms run. No new job lands there
    (new rooms through either node go to the other host); of its two rooms, the one
    whose caller hangs up finishes (its job ends when the bot is alone), the one whose
    caller stays keeps its echo until `drain_seconds`, then its bot leaves; the host
    exits 0."""
    async with (
        host(tmp_path / "a", cluster, 0, drain_seconds=DRAIN_SECONDS, handoff=False) as a,
        contextlib.AsyncExitStack() as first_call,
        join(cluster.nodes[1], "roll-1", "caller") as stays,
    ):
        hangs_up = await first_call.enter_async_context(join(cluster.nodes[0], "roll-0", "caller"))
        async with anyio.create_task_group() as tasks:
            for room in (hangs_up, stays):
                tasks.start_soon(hears_echo, room)
        async with host(tmp_path / "b", cluster, 1) as b:
            accepted_before = len(a.matches(r"job \S+ accepted"))
            a.send_signal(signal.SIGTERM)
            await a.wait_for(r"\[dispatch\] draining: no new jobs; 2 running job")
            await hears_echo(stays)  # a's rooms go on
            await first_call.aclose()  # roll-0's caller hangs up: that job finishes
            await a.wait_for(r"\[roll-0\] job \S+ ends \(JS_SUCCESS\): alone for idle_timeout")
            for n, node in enumerate((0, 1, 0, 1)):  # new rooms through either node: all to b
                name = f"roll-new-{n}"
                async with join(cluster.nodes[node], name, "caller") as late:
                    await hears_echo(late)
                assert taken_by((a, b), name) == [1]
            assert len(a.matches(r"job \S+ accepted")) == accepted_before, a.tail()
            # roll-1's caller stays: at drain_seconds its bot leaves, and a exits
            await a.wait_for(r"\[dispatch\] drain_seconds passed: ending 1 job", timeout=60)
            await a.wait_for(r"\[roll-1\] job \S+ ends \(JS_SUCCESS\): the worker drained")
            with anyio.fail_after(30):
                while agents_in(stays):
                    await anyio.sleep(0.1)
            assert await a.wait(timeout=30) == 0


def fleet_status(run: SupervisorProcess) -> dict[str, Any]:
    return dict(run.status()["worker"]["fleet"])


def served_rooms(run: SupervisorProcess) -> set[str]:
    return {room["name"] for room in run.status()["rooms"]}


@pytest.mark.anyio
async def test_when_a_host_dies_the_survivors_bring_every_bot_back(
    tmp_path: Path, cluster: Cluster
) -> None:
    """Host a serves six rooms, each with a caller whose tone the bot echoes; b and c
    (on either node) join the fleet and learn a's record; a is SIGKILLed. b and c both
    find it dead at once (its beats stop; its probe refuses), split its jobs between
    them by rendezvous hashing without a word, and each restored bot, joining under the
    dead bot's identity, replaces its ghost: every caller hears the echo again, each
    room has one bot, served by one survivor. Then a second claim of one of the rooms,
    as a survivor seeing the fleet otherwise would make, leaves one bot too."""
    # Six, not more: three hosts, two nodes, Redis and every caller's tone share this
    # machine's two cores, and at ten a's loop lagged 5 s while its rooms joined, until
    # the rtc SDK, unanswered, panicked (1 run in 6).
    names = [f"dies-{i}" for i in range(6)]
    patience = {"idle_timeout_seconds": 30, "drain_seconds": 1}
    async with (
        host(tmp_path / "a", cluster, 0, **patience) as a,
        contextlib.AsyncExitStack() as stack,
    ):
        callers = {}
        for i, name in enumerate(names):
            room = await stack.enter_async_context(join(cluster.nodes[i % 2], name, "caller"))
            await stack.enter_async_context(publishing_tone(room, 440.0))
            callers[name] = room
        await all_joined([a], names)
        tracks = {}
        for name, room in callers.items():
            tracks[name] = await subscribed_audio_track(room, "bot", timeout=30)
        async with anyio.create_task_group() as tasks:
            for track in tracks.values():
                tasks.start_soon(listen_for_tone, track, 440.0)
        old = {name: bot_track(room) for name, room in callers.items()}
        async with host(tmp_path / "b", cluster, 1, **patience) as b, host(
            tmp_path / "c", cluster, 0, **patience
        ) as c:
            a_id = fleet_status(a)["identity"]

            def knows_a(run: SupervisorProcess) -> bool:
                others = {o["identity"]: o["jobs"] for o in fleet_status(run)["others"]}
                return others.get(a_id) == len(names) and len(others) == 2

            await eventually(lambda: knows_a(b) and knows_a(c), what="b and c know a's record")
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            a.send_signal(signal.SIGKILL)
            back: dict[str, float] = {}

            async def echo_back(name: str) -> None:
                room = callers[name]
                await eventually(lambda: bot_track(room) not in (old[name], None), timeout=60)
                track = await subscribed_audio_track(room, "bot")
                back[name] = await first_tone_at(track, 440.0) - killed_at

            async with anyio.create_task_group() as tasks:
                for name in names:
                    tasks.start_soon(echo_back, name)
            times = sorted(back.values())
            print(
                f"\nkill to echo heard again over {len(times)} rooms: p50 "
                f"{statistics.median(times):.2f} s, max {times[-1]:.2f} s; "
                f"restored by b {fleet_status(b)['restored']}, c {fleet_status(c)['restored']}"
            )
            for name in names:
                assert await agents_listed(cluster.nodes[0], name) == ["bot"], name
            # one survivor serves each room (a second claim would have been replaced)
            await eventually(
                lambda: all(
                    len([run for run in (b, c) if name in served_rooms(run)]) == 1
                    for name in names
                ),
                what="each room served by one survivor",
            )
            assert fleet_status(b)["restored"] + fleet_status(c)["restored"] == len(names)
            async with anyio.create_task_group() as tasks:
                for room in callers.values():
                    tasks.start_soon(hears_echo, room)
            await second_claim_replaces_the_first(cluster, names[0], (b, c))


async def second_claim_replaces_the_first(
    cluster: Cluster, name: str, survivors: Sequence[SupervisorProcess]
) -> None:
    """What makes two survivors that both restore a room safe: the later join under the
    bot's identity (a stand-in for the second survivor's bot here) replaces the first,
    whose job ends and whose tree stops without joining again (the stand-in stays)."""
    (serving,) = [run for run in survivors if name in served_rooms(run)]
    node = cluster.nodes[0]
    token = agent_token(
        Credentials(node.url, node.api_key, node.api_secret),
        name,
        "bot",
        attributes={AGENT_NAME_ATTRIBUTE: ""},
    )
    claim = rtc.Room()
    replaced = anyio.Event()
    claim.on("disconnected", lambda *_: replaced.set())
    try:
        await claim.connect(node.url, token)
        await serving.wait_for(
            rf"\[{name}\] job \S+ ends \(JS_SUCCESS\): the server ended the room "
            r"\(duplicate_identity\)"
        )
        await serving.wait_for(rf"\[{name}\] left")
        await eventually(
            lambda: name not in served_rooms(serving), what="the replaced tree stopped"
        )
        assert await agents_listed(node, name) == ["bot"]
        assert not replaced.is_set(), "the replaced bot came back and took its identity again"
    finally:
        await end_room(claim)
