"""Telling a joined connection whose signalling the server stopped reading.

livekit-server closes a participant's signalling when 200 of its requests queue up
unread (`signal stream closed ... channel is full` in its debug log) and keeps the
WebSocket open: pings are still answered and every message the server sends still
arrives, so the SDK reports nothing. A storm of ICE candidates does it: libwebrtc
gathers candidates per m-line again for every peer connection that starts in the
same process, so rooms joining at once from one process send up to several hundred
each, and a busy server drains them too slowly. From then on the server acts on
nothing the bot asks, and binds no track to it: the bot sees participants publish
audio and never hears them.

Two things give it away. With auto-subscribe on, an audio track listed for longer
than the server's own bind timeout (15 s) and never subscribed; a track can also stay
unsubscribed for a reason of its own (its publisher refuses the bot), so each track
triggers at most one rejoin. And, where nobody publishes (participants who only
listen), the bot's own track publication timing out unanswered (`unanswered`): the
audio-out actor then tells the connection actor (`SignallingLostFrame`). Either way
the connection actor rejoins, as it does when the SDK gives up.
"""

from __future__ import annotations

import logging

import anyio
from livekit import rtc
from livekit.rtc.participant import PublishTrackError

from actors.room.room_view import is_audio

log = logging.getLogger("actors.room")

SUBSCRIBE_GRACE_SECONDS = 20.0
"""How long an audio track may be listed without being subscribed: the server gives
up binding it after 15 s and tries again every 3 s."""
POLL_SECONDS = 1.0


class SignallingLostError(ConnectionError):
    """The server stopped reading this connection's requests; the supervisor rejoins."""


def unanswered(error: BaseException) -> bool:
    """Whether a failed track publication went unanswered (the SDK's only sign is its
    text: `track publication timed out, no response received from the server`),
    rather than refused (no permission, a bad track)."""
    return isinstance(error, PublishTrackError) and "timed out" in str(error)


def unsubscribed_audio(room: rtc.Room) -> set[str]:
    """The sids of remote audio tracks listed in the room and not subscribed."""
    return {
        pub.sid
        for participant in room.remote_participants.values()
        for pub in participant.track_publications.values()
        if is_audio(pub) and not pub.subscribed
    }


async def watch_subscriptions(
    room_name: str,
    room: rtc.Room,
    acted_on: set[str],
    grace: float | None = None,
) -> None:
    """Raise `SignallingLostError` once an audio track stays unsubscribed for `grace`
    seconds; `acted_on` (kept across rejoins by the caller) holds the tracks that
    already caused one, which never cause another. `grace` defaults to
    `SUBSCRIBE_GRACE_SECONDS`."""
    grace = SUBSCRIBE_GRACE_SECONDS if grace is None else grace
    listed_since: dict[str, float] = {}
    while True:
        await anyio.sleep(POLL_SECONDS)
        now = anyio.current_time()
        listed_since = {sid: listed_since.get(sid, now) for sid in unsubscribed_audio(room)}
        stuck = sorted(
            sid
            for sid, since in listed_since.items()
            if now - since >= grace and sid not in acted_on
        )
        if stuck:
            acted_on.update(stuck)
            log.warning(
                "[%s] audio track(s) %s listed for %g s and never delivered: the server "
                "stopped reading this connection's requests; rejoining",
                room_name,
                ", ".join(stuck),
                grace,
            )
            raise SignallingLostError(f"[{room_name}] tracks {', '.join(stuck)} never delivered")
