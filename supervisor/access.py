"""Access to a LiveKit server: its URL and API credentials, and the join tokens minted
from them. Kept free of the supervisor's config and of pipecat, so that a baseline bot
in `benchmarks/` can mint its tokens without loading either."""

from __future__ import annotations

from datetime import timedelta

import attrs
from livekit import api


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
    fleet's own room (`supervisor.fleet`)."""
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
