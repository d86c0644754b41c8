"""The connection actor: the one owner of a room's `rtc.Room`.

It joins with a token minted from the room's settings, turns every rtc callback into
a typed event frame for the event actor, and executes commands (send data, set
metadata, mute) one at a time from its mailbox. The SDK resumes short network losses
by itself; when it gives up and reports `disconnected`, this actor crashes on purpose
so its supervisor rejoins with backoff and restarts what depends on the connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from livekit import api, rtc
from pipecat.frames.frames import Frame

from actors.actor import Actor
from actors.errors import Refused
from actors.room.frames import (
    ActiveSpeakerChangedFrame,
    AudioTrackSubscribedFrame,
    AudioTrackUnsubscribedFrame,
    DataReceivedFrame,
    DtmfReceivedFrame,
    GetParticipantMetadataFrame,
    GetRoomFrame,
    ParticipantJoinedFrame,
    ParticipantLeftFrame,
    ParticipantMetadataChangedFrame,
    RoomConnectedFrame,
    RoomDisconnectedFrame,
    SendDataFrame,
    SetMetadataFrame,
    SetParticipantMutedFrame,
    TrackMutedFrame,
)
from actors.room.settings import RoomSettings

log = logging.getLogger("actors.room")


class ConnectionLostError(ConnectionError):
    """The SDK gave up on the room; the supervisor rejoins."""


def _reason_name(reason: Any) -> str:
    try:
        return rtc.DisconnectReason.Name(reason).lower()
    except (ValueError, TypeError, AttributeError):
        return str(reason)


def _audio(publication: rtc.TrackPublication) -> bool:
    return publication.kind == rtc.TrackKind.KIND_AUDIO


def present_state(room: rtc.Room) -> list[Frame]:
    """The room as events: who is there and which audio the bot already receives.

    Participants and tracks present when the bot joins (or when a restarted bot
    starts) raise the same events as those that come later, as in pipecat.
    """
    state: list[Frame] = []
    if room.isconnected():
        state.append(RoomConnectedFrame(room.local_participant.identity))
    for p in room.remote_participants.values():
        state.append(ParticipantJoinedFrame(p.identity, p.name, p.metadata))
        for pub in p.track_publications.values():
            if _audio(pub) and pub.subscribed and pub.track is not None:
                state.append(AudioTrackSubscribedFrame(p.identity, pub.sid, pub.track))
    return state


class ConnectionActor(Actor):
    """Owns the `rtc.Room`: joins, reports events, executes commands."""

    def __init__(self, settings: RoomSettings) -> None:
        self.settings = settings
        self.room: rtc.Room | None = None
        self._server: api.LiveKitAPI | None = None
        self._leaving = False

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        events = self.sibling("events")
        room = rtc.Room()
        self._wire(room, events.tell_nowait)
        options = rtc.RoomOptions(auto_subscribe=True)
        if self.settings.e2ee_key is not None:
            options.encryption = rtc.E2EEOptions(
                key_provider_options=rtc.KeyProviderOptions(shared_key=self.settings.e2ee_key)
            )
        try:
            with anyio.fail_after(self.settings.connect_timeout):
                await room.connect(self.settings.url, self.settings.token(), options)
            self.room = room
            log.info("[%s] joined as %s", self.settings.room, room.local_participant.identity)
            for frame in present_state(room):
                events.tell_nowait(frame)
            async with self.settings.server_api() as server:
                self._server = server
                yield
        finally:
            self._leaving = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await room.disconnect()
            if self.room is not None:
                events.tell_nowait(RoomDisconnectedFrame("client_initiated"))
                log.info("[%s] left", self.settings.room)

    def _wire(self, room: rtc.Room, tell: Callable[[Frame], None]) -> None:
        """Forward every rtc callback we care about as a typed frame."""

        def joined(p: rtc.RemoteParticipant) -> None:
            tell(ParticipantJoinedFrame(p.identity, p.name, p.metadata))

        def left(p: rtc.RemoteParticipant) -> None:
            tell(ParticipantLeftFrame(p.identity, _reason_name(p.disconnect_reason)))

        def subscribed(
            track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
        ) -> None:
            if _audio(pub):
                tell(AudioTrackSubscribedFrame(p.identity, pub.sid, track))

        def unsubscribed(
            track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
        ) -> None:
            if _audio(pub):
                tell(AudioTrackUnsubscribedFrame(p.identity, pub.sid))

        def muted(p: rtc.Participant, pub: rtc.TrackPublication) -> None:
            tell(TrackMutedFrame(p.identity, pub.sid, True))

        def unmuted(p: rtc.Participant, pub: rtc.TrackPublication) -> None:
            tell(TrackMutedFrame(p.identity, pub.sid, False))

        def data(packet: rtc.DataPacket) -> None:
            sender = packet.participant.identity if packet.participant else None
            reliable = packet.kind == rtc.DataPacketKind.KIND_RELIABLE
            tell(DataReceivedFrame(packet.data, sender, packet.topic, reliable))

        def dtmf(event: rtc.SipDTMF) -> None:
            sender = event.participant.identity if event.participant else None
            tell(DtmfReceivedFrame(event.code, event.digit, sender))

        def speakers(active: list[rtc.Participant]) -> None:
            if active:  # the SDK lists changed speakers, quietest first
                tell(ActiveSpeakerChangedFrame(active[-1].identity))

        def metadata(p: rtc.Participant, old: str, new: str) -> None:
            tell(ParticipantMetadataChangedFrame(p.identity, new))

        def disconnected(reason: Any) -> None:
            if not self._leaving:
                name = _reason_name(reason)
                tell(RoomDisconnectedFrame(name))
                self.ref.tell_nowait(RoomDisconnectedFrame(name))

        room.on("participant_connected", joined)
        room.on("participant_disconnected", left)
        room.on("track_subscribed", subscribed)
        room.on("track_unsubscribed", unsubscribed)
        room.on("track_muted", muted)
        room.on("track_unmuted", unmuted)
        room.on("data_received", data)
        room.on("sip_dtmf_received", dtmf)
        room.on("active_speakers_changed", speakers)
        room.on("participant_metadata_changed", metadata)
        room.on("disconnected", disconnected)

    async def receive(self, frame: Frame) -> Any:
        room = self.room
        assert room is not None
        if isinstance(frame, GetRoomFrame):
            return room
        if isinstance(frame, RoomDisconnectedFrame):
            raise ConnectionLostError(f"[{self.settings.room}] disconnected: {frame.reason}")
        if isinstance(frame, GetParticipantMetadataFrame):
            p = room.remote_participants.get(frame.participant_id)
            return {} if p is None else {"id": p.identity, "name": p.name, "metadata": p.metadata}
        try:
            if isinstance(frame, SendDataFrame):
                destinations = [frame.destination] if frame.destination else []
                await room.local_participant.publish_data(
                    frame.payload,
                    reliable=frame.reliable,
                    destination_identities=destinations,
                    topic=frame.topic,
                )
            elif isinstance(frame, SetMetadataFrame):
                await room.local_participant.set_metadata(frame.value)
            elif isinstance(frame, SetParticipantMutedFrame):
                await self._set_muted(room, frame.participant_id, frame.muted)
            else:
                return await super().receive(frame)
        except Refused:
            raise
        except Exception as exc:  # a failed command is the caller's news, not a dead link
            raise Refused(f"[{self.settings.room}] {type(frame).__name__} failed: {exc}") from exc
        return None

    async def _set_muted(self, room: rtc.Room, participant_id: str, muted: bool) -> None:
        """Mute through the server API, so the participant itself sees its track muted."""
        p = room.remote_participants.get(participant_id)
        if p is None:
            raise Refused(f"[{self.settings.room}] no participant {participant_id!r}")
        assert self._server is not None
        for pub in p.track_publications.values():
            if _audio(pub):
                await self._server.room.mute_published_track(
                    api.MuteRoomTrackRequest(
                        room=self.settings.room,
                        identity=participant_id,
                        track_sid=pub.sid,
                        muted=muted,
                    )
                )
