"""The LiveKit agent job a dispatched room serves, as its bot may read it.

Kept in the room package (not in the supervisor's dispatch code) because the bot sees
it through its transport (`RoomTransport.job`), and the room's actors may not depend
on the process around them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs


def _read_only(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@attrs.frozen
class Job:
    """One job the LiveKit server offered or assigned; None for a static room."""

    id: str
    room: str
    """The LiveKit room's name."""
    room_sid: str = ""
    room_metadata: str = ""
    dispatch_id: str = ""
    metadata: str = ""
    """The dispatch's metadata (`RoomAgentDispatch.metadata` in a token, or
    `CreateAgentDispatchRequest.metadata`): what a backend tells this bot."""
    agent_name: str = ""
    participant: str | None = None
    """The participant's identity for a participant or publisher job; None for a room job."""
    attributes: Mapping[str, str] = attrs.field(factory=dict, converter=_read_only)
    """The dispatch's attributes."""

    @property
    def key(self) -> str:
        """The name of the job's room tree, its stats and its log lines' `[label]`: the
        room's name for a room job; `room:participant` for a participant or publisher
        job, as several of those (a bot per participant) run in one LiveKit room. An
        actor's name has no '/' (the tree's path separator): one in a LiveKit name is
        written `%2F` here."""
        key = self.room if self.participant is None else f"{self.room}:{self.participant}"
        return key.replace("/", "%2F")


AGENT_NAME_ATTRIBUTE = "lk.agent_name"
"""The attribute livekit-server gives every bot it dispatches: its worker's agent name."""


def is_rival(job: Job, agent: bool, attributes: Mapping[str, str]) -> bool:
    """Whether a participant (an agent or not, with these attributes) is a bot of the
    same agent as `job`'s, for a room job: the server dispatches one job per room and
    agent, so two such bots in a room are one too many (a restarted server's rooms,
    created anew by a caller and by a bot reconnecting, each dispatched again)."""
    return job.participant is None and agent and attributes.get(AGENT_NAME_ATTRIBUTE) == (
        job.agent_name
    )
