"""The `rtc.Room` as the room's event frames describe it.

Two readers must describe the room alike: the connection actor, as the SDK reports
changes, and the transport, replaying the room's present state to a bot that starts
after them. Both read the room through these rules (which audio the bot may hear,
how a disconnect reason is named), so a restarted bot learns exactly what a running
one was told.
"""

from __future__ import annotations

from typing import Any

from livekit import rtc
from pipecat.frames.frames import Frame

from actors.room.frames import AudioTrackSubscribedFrame, ParticipantJoinedFrame, RoomConnectedFrame


def is_audio(publication: rtc.TrackPublication) -> bool:
    return publication.kind == rtc.TrackKind.KIND_AUDIO


def audio_for_bot(room: rtc.Room, publication: rtc.TrackPublication) -> bool:
    """An audio track the bot may hear: in an encrypted room, only an encrypted one.

    The SDK decrypts the tracks published encrypted and plays the others as they
    are, so without this check a participant without the key would still be heard
    by the bot of an encrypted room (and, through an echo, by everyone in it).
    """
    return is_audio(publication) and (
        not room.e2ee_manager.enabled
        or publication.encryption_type != rtc.EncryptionType.NONE
    )


def reason_name(reason: Any) -> str:
    """Events carry the reason's name; a value the SDK's enum lacks is kept as is."""
    try:
        return rtc.DisconnectReason.Name(reason).lower()
    except (ValueError, TypeError, AttributeError):
        return str(reason)


def present_state(room: rtc.Room) -> list[Frame]:
    """The room as events: who is there and which audio the bot already receives.

    Participants and tracks present when the bot joins (or when a restarted bot
    starts) raise the same events as those that come later, as in pipecat.
    """
    state: list[Frame] = []
    if room.isconnected():
        state.append(RoomConnectedFrame(room.local_participant.identity))
    for p in room.remote_participants.values():
        state.append(ParticipantJoinedFrame(p.identity))
        for pub in p.track_publications.values():
            if audio_for_bot(room, pub) and pub.subscribed and pub.track is not None:
                state.append(AudioTrackSubscribedFrame(p.identity, pub.sid, pub.track))
    return state
