"""`/status` alone: the document's shape, the states it shares with the metrics, what it
leaves out, and its answer while the loop is stalled.

Against a real server (a configured and a dispatched room, the server killed):
tests/livekit/test_dispatch.py; during a real stall: tests/livekit/test_watchdog.py.
"""

from __future__ import annotations

import json
from typing import Any, cast

from actors import ActorState, ChildStatistics, Supervisor
from actors.mailbox import MailboxStats
from actors.room import Job
from supervisor import __version__
from supervisor.observability.metrics import SupervisorMetrics
from supervisor.observability.status import Status
from supervisor.process.rooms import OFFER_ANSWERS, FleetState, RoomSet, WorkerState
from tests.helpers.configs import echo_config, echo_room_set

TOKEN = "an-assignment-token-not-for-status"
METADATA = '{"customer": "not for a status page"}'


def room_set(**dispatch: Any) -> RoomSet:
    return echo_room_set("lobby", "support", **({"dispatch": dispatch} if dispatch else {}))


class Rooms:
    """The room supervisor's `children()`, as the metrics read it: one slot per room."""

    def __init__(self) -> None:
        self.slots: list[ChildStatistics] = []

    def add(self, name: str, state: ActorState, restarts: int = 0) -> None:
        child = ChildStatistics(
            name=name,
            slot=len(self.slots) + 100,
            state=ActorState.RUNNING,
            incarnation=restarts,
            restarts=restarts,
            last_error=None,
            mailbox=MailboxStats(0, 0, 0),
        )
        room = ChildStatistics(
            name=name,
            slot=len(self.slots),
            state=state,
            incarnation=0,
            restarts=0,
            last_error=None,
            mailbox=MailboxStats(0, 0, 0),
            children=(child,),
        )
        self.slots.append(room)

    def children(self) -> tuple[ChildStatistics, ...]:
        return tuple(self.slots)


def test_the_document_names_every_room_with_its_kind_state_and_job() -> None:
    rooms = room_set(enabled=True, agent_name="support-bot", max_rooms=7)
    metrics = SupervisorMetrics(rooms, rooms.config.metrics)
    status = Status(metrics, rooms)
    job = Job(
        id="AJ_1",
        room="call-1",
        room_sid="RM_1",
        dispatch_id="AD_1",
        metadata=METADATA,
        agent_name="support-bot",
        participant="caller",
        attributes={"tier": "gold"},
    )
    for name in ("lobby", "support"):
        rooms.room_spec(next(room for room in rooms.config.rooms if room.name == name))
    rooms.job_spec(job, TOKEN, "ws://127.0.0.1:7880", "bot")
    slots = Rooms()
    slots.add("lobby", ActorState.RUNNING, restarts=2)
    slots.add("support", ActorState.RUNNING)
    rooms.supervisor = cast(Supervisor, slots)  # the job's tree has no slot yet: starting
    rooms.stats["lobby"].connection = "connected"
    rooms.stats["lobby"].participants |= {"ann", "bob"}
    rooms.stats["support"].connection = "reconnecting"
    state = rooms.worker = WorkerState(registered=True, worker_id="AW_1", load=0.1234)
    state.offers["accepted"] += 3
    state.offers["full"] += 1
    state.ended["succeeded"] += 2
    rooms.fleet = FleetState(
        identity="fleet-h-1-aa", connected=True, members=2, others=[("fleet-g-2-bb", 3, True)],
        restored=1, dead=1, handed=2, taken=3, not_handed=4,
    )  # fmt: skip

    document = status.read()
    text = json.dumps(document)
    assert TOKEN not in text
    assert "secret-never-shown" not in text
    assert "customer" not in text
    assert "gold" not in text

    assert document["version"] == __version__
    assert isinstance(document["pid"], int)
    assert (document["healthy"], document["health"], document["stale"]) == (True, "ok", False)
    assert document["ready"] is False
    assert document["readiness"] == metrics.readiness()[1]
    assert document["worker"] == {
        "enabled": True,
        "registered": True,
        "worker_id": "AW_1",
        "agent_name": "support-bot",
        "draining": False,
        "full": False,
        "load": 0.123,
        "load_threshold": rooms.config.dispatch.load_threshold,
        "max_rooms": 7,
        "rooms": 1,
        "offers": {answer: {"accepted": 3, "full": 1}.get(answer, 0) for answer in OFFER_ANSWERS},
        "jobs_ended": {"succeeded": 2, "failed": 0},
        "fleet": {
            "enabled": True,
            "identity": "fleet-h-1-aa",
            "connected": True,
            "members": 2,
            "others": [{"identity": "fleet-g-2-bb", "jobs": 3, "full": True}],
            "dead": 1,
            "restored": 1,
            "handed_over": 2,
            "taken_over": 3,
            "not_handed_over": 4,
        },
    }
    by_name = {room["name"]: room for room in document["rooms"]}
    call = "call-1:caller"  # a participant's job: its tree's key
    assert [room["name"] for room in document["rooms"]] == ["lobby", "support", call]
    assert by_name["lobby"] == {
        "name": "lobby",
        "room": "lobby",
        "kind": "configured",
        "state": "running",
        "connection": "connected",
        "participants": 2,
        "restarts": 2,
        "job": None,
    }
    assert (by_name["support"]["state"], by_name["support"]["connection"]) == (
        "reconnecting",
        "reconnecting",
    )
    assert by_name[call]["room"] == "call-1"
    assert by_name[call]["kind"] == "dispatched"
    assert by_name[call]["state"] == "starting"
    assert by_name[call]["job"] == {
        "id": "AJ_1",
        "dispatch_id": "AD_1",
        "agent_name": "support-bot",
        "participant": "caller",
        "room_sid": "RM_1",
    }
    # the states are the metrics' own
    samples = metrics.render(None)[0].decode()
    assert 'lksup_rooms{state="reconnecting"} 1.0' in samples
    assert 'lksup_rooms{state="starting"} 1.0' in samples

    # a room removed by a reload and still stopping is listed until its slot is gone
    rooms.config = echo_config("lobby", dispatch={"enabled": True})
    slots.slots[1] = ChildStatistics(
        "support", 1, ActorState.STOPPING, 0, 0, None, MailboxStats(0, 0, 0)
    )
    support = next(room for room in status.read()["rooms"] if room["name"] == "support")
    assert (support["kind"], support["state"]) == ("removed", "stopping")
    # ...and `[dispatch]` is the one the worker registered with, not the reloaded one
    assert status.read()["worker"]["agent_name"] == "support-bot"


def test_without_dispatch_the_worker_says_so() -> None:
    rooms = room_set()
    status = Status(SupervisorMetrics(rooms, rooms.config.metrics), rooms)
    document = status.read()
    assert document["worker"] == {"enabled": False}
    assert [(room["name"], room["kind"]) for room in document["rooms"]] == [
        ("lobby", "configured"),
        ("support", "configured"),
    ]


def test_a_stalled_loop_gets_what_was_last_read_marked_stale() -> None:
    rooms = room_set(enabled=True)
    status = Status(SupervisorMetrics(rooms, rooms.config.metrics), rooms)
    before = status.stalled("the event loop did not answer in time")
    assert (before["stale"], before["ready"], before["read_at"]) == (True, False, None)
    assert before["worker"] is None
    assert before["rooms"] is None
    assert before["readiness"] == "the event loop did not answer in time"

    read = status.read()
    stalled = status.stalled("event loop stalled for 2.5 s (room lobby)")
    assert stalled["stale"] is True
    assert stalled["ready"] is False
    assert stalled["readiness"] == "event loop stalled for 2.5 s (room lobby)"
    assert stalled["read_at"] == read["read_at"]
    assert stalled["rooms"] == read["rooms"]
    assert stalled["worker"] == read["worker"] == {
        **read["worker"],
        "enabled": True,
        "registered": False,
    }
