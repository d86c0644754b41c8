"""A dispatched room's bot yields its room to another bot of its agent once the room is
not its job's any more (`ConnectionActor._yield_to_a_rival`, `actors.room.is_rival`):
what a restarted server's rooms, created anew and dispatched again, need. The real
server cannot be made to order the race; the rule is checked on a stand-in room."""

from __future__ import annotations

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
    settings = RoomSettings(
        room="call", url="ws://x", api_key="k", api_secret="s", bot=lambda t: None, job=JOB
    )
    actor = ConnectionActor(settings, stats)
    await actor._yield_to_a_rival(room)  # type: ignore[arg-type]
    assert stats.ended == ended
