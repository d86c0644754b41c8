"""A dispatched room's bot yields its room to another bot of its agent once the room is
not its job's any more (`ConnectionActor._yield_to_a_rival`, `actors.room.is_rival`):
what a restarted server's rooms, created anew and dispatched again, need. The real
server cannot be made to order the race; the rule is checked on a stand-in room."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from livekit import rtc

from actors.room import Job, RoomSettings, RoomStats, is_rival
from actors.room.connection import REPLACED, ConnectionActor

AGENT = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
STANDARD = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
JOB = Job(id="AJ_1", room="call", room_sid="RM_old", agent_name="support")


class _Participant:
    def __init__(self, identity: str, kind: Any, agent_name: str | None) -> None:
        self.identity = identity
        self.kind = kind
        self.attributes = {} if agent_name is None else {"lk.agent_name": agent_name}


class _Room:
    def __init__(self, sid: str, *participants: _Participant) -> None:
        self._sid = sid
        self.remote_participants = {p.identity: p for p in participants}

    @property
    async def sid(self) -> str:
        return self._sid


class _Server:
    """The server API's rooms, as `ListRooms` answers: the sid it has under the name."""

    def __init__(self, sid: str | None) -> None:
        self.room = self
        self._sid = sid
        self.asked = 0

    async def list_rooms(self, request: Any) -> Any:
        self.asked += 1
        rooms = [] if self._sid is None else [SimpleNamespace(sid=self._sid)]
        return SimpleNamespace(rooms=rooms)


def _actor(stats: RoomStats) -> ConnectionActor:
    """The connection actor of `JOB`'s room, not started: the rule alone."""
    settings = RoomSettings(
        room="call", url="ws://x", api_key="k", api_secret="s", bot=lambda t: None, job=JOB
    )
    return ConnectionActor(settings, stats)


def test_a_rival_is_an_agent_of_the_same_agent_name_in_a_room_job() -> None:
    assert is_rival(JOB, True, {"lk.agent_name": "support"})
    assert not is_rival(JOB, True, {"lk.agent_name": "other"})
    assert not is_rival(JOB, False, {"lk.agent_name": "support"})  # a person
    assert not is_rival(JOB, True, {})  # an agent nobody dispatched
    participants_job = Job(id="AJ_2", room="call", agent_name="support", participant="alice")
    assert not is_rival(participants_job, True, {"lk.agent_name": "support"})


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("room", "ended"),
    [
        (_Room("RM_new", _Participant("bot-b", AGENT, "support")), REPLACED),
        (_Room("RM_old", _Participant("bot-b", AGENT, "support")), None),  # still its room
        (_Room("RM_new", _Participant("caller", STANDARD, None)), None),  # nobody to yield to
        (_Room("RM_new", _Participant("notes", AGENT, "transcriber")), None),  # another agent
    ],
)
async def test_the_bot_of_a_room_created_anew_yields_to_another_of_its_agent(
    room: _Room, ended: str | None
) -> None:
    stats = RoomStats()
    actor = _actor(stats)
    await actor._yield_to_a_rival(room)  # type: ignore[arg-type]
    assert stats.ended == ended


RIVAL = _Participant("bot-b", AGENT, "support")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("sdk_sid", "server_sid", "ended"),
    [
        # reconnected into the room made anew before the SDK heard of its sid: the
        # server's word counts (two bots stayed in such a room otherwise)
        ("RM_old", "RM_new", REPLACED),
        ("RM_new", "RM_old", None),  # the server still has the job's room
        ("RM_new", None, None),  # the server has no such room: nobody can tell
    ],
)
async def test_the_server_says_whether_the_room_was_made_anew(
    sdk_sid: str, server_sid: str | None, ended: str | None
) -> None:
    stats = RoomStats()
    actor = _actor(stats)
    actor._server = server = _Server(server_sid)  # type: ignore[assignment]
    await actor._yield_to_a_rival(_Room(sdk_sid, RIVAL))  # type: ignore[arg-type]
    assert (stats.ended, server.asked) == (ended, 1)


@pytest.mark.anyio
async def test_without_a_rival_the_server_is_not_asked() -> None:
    stats = RoomStats()
    actor = _actor(stats)
    actor._server = server = _Server("RM_new")  # type: ignore[assignment]
    caller = _Participant("caller", STANDARD, None)
    await actor._yield_to_a_rival(_Room("RM_new", caller))  # type: ignore[arg-type]
    assert (stats.ended, server.asked) == (None, 0)
