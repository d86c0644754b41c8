"""Access to a LiveKit server: its URL and API credentials, the join tokens minted
from them, and who is in a room (`participants_in`). Kept free of the supervisor's
config and of pipecat, so that a baseline bot in `benchmarks/` can mint its tokens
without loading either."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import aiohttp
import anyio
import attrs
from livekit import api

API_ERRORS = (TimeoutError, aiohttp.ClientError, api.TwirpError)
"""What a call of the server API raises when the server does not answer, or says no."""


@attrs.frozen
class Credentials:
    url: str
    api_key: str
    api_secret: str = attrs.field(repr=False)


def join_token(
    credentials: Credentials, room: str, identity: str, ttl: timedelta = timedelta(hours=6)
) -> str:
    """A token for a participant that talks and listens in one room (a person, a load
    generator, a baseline bot): publish, subscribe and send data."""
    grants = api.VideoGrants(
        room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True
    )
    return (
        api.AccessToken(credentials.api_key, credentials.api_secret)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(grants)
        .with_ttl(ttl)
        .to_jwt()
    )


def agent_token(
    credentials: Credentials,
    room: str,
    identity: str,
    *,
    name: str = "",
    metadata: str = "",
    attributes: dict[str, str] | None = None,
    ttl: timedelta = timedelta(hours=6),
) -> str:
    """A token for a bot, as livekit-server mints one for a job it assigns (its
    `BuildAgentToken`): kind agent, the agent grant, publish, subscribe, data, and
    updating its own metadata. For a job restored after its worker died, and for the
    fleet's own room (`supervisor.dispatch.fleet`)."""
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        agent=True,
        can_publish=True,
        can_subscribe=True,
        can_publish_data=True,
        can_update_own_metadata=True,
    )
    return (
        api.AccessToken(credentials.api_key, credentials.api_secret)
        .with_identity(identity)
        .with_name(name or identity)
        .with_metadata(metadata)
        .with_attributes(attributes or {})
        .with_kind("agent")
        .with_grants(grants)
        .with_ttl(ttl)
        .to_jwt()
    )


async def participants_in(
    server_api: api.LiveKitAPI, room: str, timeout: float
) -> Sequence[api.ParticipantInfo]:
    """Who is in `room`, as the server lists them; one of `API_ERRORS` when it does not
    say within `timeout` seconds (or the room does not exist)."""
    with anyio.fail_after(timeout):
        listing = await server_api.room.list_participants(api.ListParticipantsRequest(room=room))
    return listing.participants


async def remove_participant(
    server_api: api.LiveKitAPI, room: str, identity: str, timeout: float
) -> None:
    """Take `identity` out of `room` through the server API; one of `API_ERRORS` when
    the server does not do it within `timeout` seconds (or it is not there)."""
    with anyio.fail_after(timeout):
        await server_api.room.remove_participant(
            api.RoomParticipantIdentity(room=room, identity=identity)
        )
