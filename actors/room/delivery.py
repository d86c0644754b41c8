"""Room events as the handler calls and frames a pipecat bot expects.

A bot registers its handlers when it builds its pipeline, so events that come
before the pipeline starts are kept; once it has started, the room's present state
is replayed first (what a restarted bot must learn), then what was kept. Presence
is idempotent (a participant joins once until it leaves, a track is subscribed
once), so a fact both replayed and kept is delivered once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from livekit import rtc
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    BotConnectedFrame,
    ClientConnectedFrame,
    Frame,
    InputDTMFFrame,
)
from pipecat.processors.frame_processor import FrameDirection

from actors.room.frames import (
    ActiveSpeakerChangedFrame,
    AudioTrackSubscribedFrame,
    AudioTrackUnsubscribedFrame,
    DataReceivedFrame,
    DtmfReceivedFrame,
    ParticipantJoinedFrame,
    ParticipantLeftFrame,
    ParticipantMetadataChangedFrame,
    RoomConnectedFrame,
    RoomDisconnectedFrame,
    TrackMutedFrame,
)
from actors.room.room_view import present_state

log = logging.getLogger("actors.room")

HandlerCall = Callable[..., Awaitable[None]]
"""The transport's `_call_event_handler`: an event name and the handlers' arguments."""


class EventInput(Protocol):
    """The bot's started input transport, as delivery pushes frames into it."""

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None: ...

    async def push_app_message(self, message: Any, sender: str | None) -> None: ...


class EventDelivery:
    """Delivers one pipeline incarnation's room events, each fact once."""

    def __init__(
        self,
        room_name: str,
        room: rtc.Room,
        call: HandlerCall,
        started_input: Callable[[], EventInput | None],
    ) -> None:
        self._room_name = room_name
        self._room = room
        self._call = call
        self._started_input = started_input  # None: handlers are called, frames not pushed
        self._running = False
        self._pending: list[Frame] = []
        self._connected = False
        self._present: set[str] = set()
        self._tracks: set[str] = set()
        self._first_joined = False

    async def dispatch(self, event: Frame) -> None:
        """Deliver one room event, or keep it until the bot's pipeline has started."""
        if self._running:
            await self._deliver(event)
        else:
            self._pending.append(event)

    async def started(self) -> None:
        """The input or the output got its StartFrame: handlers are in place."""
        if self._running:
            return
        self._running = True
        pending, self._pending = self._pending, []
        for event in [*present_state(self._room), *pending]:
            await self._deliver(event)

    async def _deliver(self, event: Frame) -> None:
        call = self._call
        match event:
            case RoomConnectedFrame() if not self._connected:
                self._connected = True
                await call("on_connected")
                await self._push(BotConnectedFrame())
            case RoomDisconnectedFrame() if self._connected:
                self._connected = False
                await call("on_disconnected")
            case ParticipantJoinedFrame(participant_id=pid) if pid not in self._present:
                self._present.add(pid)
                await call("on_participant_connected", pid)
                await call("on_client_connected", {"id": pid})
                await self._push(ClientConnectedFrame())
                if not self._first_joined:
                    self._first_joined = True
                    await call("on_first_participant_joined", pid)
            case ParticipantLeftFrame(participant_id=pid, reason=reason) if pid in self._present:
                self._present.discard(pid)
                await call("on_participant_disconnected", pid)
                await call("on_participant_left", pid, reason)
                await call("on_client_disconnected", {"id": pid})
                if not self._present:
                    self._first_joined = False
            case AudioTrackSubscribedFrame(participant_id=pid, track_sid=sid) if (
                sid not in self._tracks
            ):
                self._tracks.add(sid)
                await call("on_audio_track_subscribed", pid)
            case AudioTrackUnsubscribedFrame(participant_id=pid, track_sid=sid) if (
                sid in self._tracks
            ):
                self._tracks.discard(sid)
                await call("on_audio_track_unsubscribed", pid)
            case DataReceivedFrame(data=data, participant_id=sender, message=message):
                if message is not None:
                    if (input := self._started_input()) is not None:
                        await input.push_app_message(message, sender)
                    await call("on_app_message", message, sender)
                await call("on_data_received", data, sender)
            case DtmfReceivedFrame(code=code, digit=digit, participant_id=sender):
                dtmf = {"tone": digit, "digit": digit, "code": code, "participant_id": sender}
                await call("on_dtmf_event", dtmf)
                try:
                    await self._push(InputDTMFFrame(button=KeypadEntry(digit)))
                except ValueError:
                    log.warning("[%s] unsupported DTMF tone %r", self._room_name, digit)
            case ActiveSpeakerChangedFrame(participant_id=pid):
                await call("on_active_speaker_changed", {"id": pid})
            case ParticipantMetadataChangedFrame(participant_id=pid, participant_metadata=meta):
                await call("on_participant_metadata_changed", pid, meta)
            case TrackMutedFrame(participant_id=pid, track_sid=sid, muted=muted):
                await call("on_track_muted" if muted else "on_track_unmuted", pid, sid)

    async def _push(self, frame: Frame) -> None:
        if (input := self._started_input()) is not None:
            await input.push_frame(frame)
