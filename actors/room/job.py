"""The LiveKit agent job a dispatched room serves, as its bot may read it.

Kept in the room package (not in the supervisor's dispatch code) because the bot sees
it through its transport (`RoomTransport.job`), and the room's actors may not depend
on the process around them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs


@attrs.frozen
class Job:
    """One job the LiveKit server offered or assigned; None for a static room."""

    id: str
    room: str
    """The LiveKit room's name, which is also the room tree's name."""
    room_sid: str = ""
    room_metadata: str = ""
    dispatch_id: str = ""
    metadata: str = ""
    """The dispatch's metadata (`RoomAgentDispatch.metadata` in a token, or
    `CreateAgentDispatchRequest.metadata`): what a backend tells this bot."""
    agent_name: str = ""
    participant: str | None = None
    """The participant's identity for a participant or publisher job; None for a room job."""
    attributes: Mapping[str, str] = attrs.field(
        factory=dict, converter=lambda value: MappingProxyType(dict(value))
    )
    """The dispatch's attributes."""
