"""The frames a room's actors exchange.

Room events (what the rtc SDK reports) are `SystemFrame`s: they ride the system lane,
are never dropped and keep their order. Commands to the connection (send data, set
metadata, mute) are ordered content, so they are `DataFrame`s and a flood of them
pushes back on the sender instead of being dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from livekit import rtc
from pipecat.frames.frames import DataFrame, SystemFrame


@dataclass
class RoomConnectedFrame(SystemFrame):
    """The connection joined the room as `identity`."""

    identity: str


@dataclass
class UnheardFrame(SystemFrame):
    """The audio-out actor's note to itself, a grace period after the last listener
    left: unpublish if nobody came back."""


@dataclass
class SignallingLostFrame(SystemFrame):
    """To the connection actor: the server stopped answering this connection's requests
    (a track publication it never answered), so it rejoins (`actors.room.signalling`)."""

    reason: str


@dataclass
class RoomDisconnectedFrame(SystemFrame):
    """The room connection ended; `reason` is the SDK's disconnect reason name."""

    reason: str


@dataclass
class ParticipantJoinedFrame(SystemFrame):
    """A remote participant is in the room (joined, or was there when the bot came).

    Its name and metadata are read from the room when asked for
    (`GetParticipantMetadataFrame`), so they are never stale."""

    participant_id: str


@dataclass
class ParticipantLeftFrame(SystemFrame):
    """A remote participant left the room."""

    participant_id: str
    reason: str = "disconnected"


@dataclass
class AudioTrackSubscribedFrame(SystemFrame):
    """The bot now receives this participant's audio track."""

    participant_id: str
    track_sid: str
    track: rtc.Track


@dataclass
class AudioTrackUnsubscribedFrame(SystemFrame):
    """The bot no longer receives this participant's audio track."""

    participant_id: str
    track_sid: str


@dataclass
class TrackMutedFrame(SystemFrame):
    """A participant's track was muted or unmuted."""

    participant_id: str
    track_sid: str
    muted: bool


@dataclass
class DataReceivedFrame(SystemFrame):
    """A data packet arrived; `participant_id` is None when a server SDK sent it.

    `message` is the packet decoded as a JSON object, or None when it is not one
    (the event actor decodes once, for every consumer).
    """

    data: bytes
    participant_id: str | None
    topic: str | None
    reliable: bool
    message: dict[str, Any] | None = None


@dataclass
class DtmfReceivedFrame(SystemFrame):
    """A SIP participant pressed a key."""

    code: int
    digit: str
    participant_id: str | None


@dataclass
class ActiveSpeakerChangedFrame(SystemFrame):
    """The room's loudest speaker changed."""

    participant_id: str


@dataclass
class ParticipantMetadataChangedFrame(SystemFrame):
    """A participant's metadata changed."""

    participant_id: str
    participant_metadata: str


@dataclass
class GetRoomFrame(SystemFrame):
    """Ask the connection for its `rtc.Room` (for actors that publish or read media)."""


@dataclass
class AudioMarkFrame(SystemFrame):
    """A mark the transport sends down the bot's pipeline behind its input audio.

    pipecat keeps `SystemFrame`s (input audio included) in arrival order in every
    processor's queue, so a mark reaching the end of the pipeline means the `seq`
    audio frames sent before it have been through: how the transport sees a lagging bot.
    """

    seq: int


@dataclass
class SendDataFrame(DataFrame):
    """Publish a data packet: reliable or lossy, to everyone or to one participant."""

    payload: bytes
    reliable: bool = True
    destination: str | None = None
    topic: str = ""


@dataclass
class SetMetadataFrame(DataFrame):
    """Set the bot participant's own metadata (`Frame.metadata` is pipecat's own)."""

    value: str


@dataclass
class SetParticipantMutedFrame(DataFrame):
    """Mute or unmute a participant's audio through the LiveKit server API."""

    participant_id: str
    muted: bool


@dataclass
class GetParticipantMetadataFrame(SystemFrame):
    """Ask the connection for one participant's id, name and metadata."""

    participant_id: str
