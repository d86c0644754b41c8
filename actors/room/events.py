"""The event actor: the room's event log, deduplicated, validated and fanned out.

It sits between the connection (which reports what the SDK says, sometimes twice:
a participant present at join time may also be announced by the SDK) and the actors
that act on events: the audio-in actor gets track changes, the audio-out actor
arrivals and departures (it publishes the bot's track only while someone listens), the
pipeline actor everything, in order. It also keeps the room's participant set and
counters, and decodes data packets once, counting the malformed and refusing the
oversized.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipecat.frames.frames import Frame

from actors import Actor
from actors.room.frames import (
    ActiveSpeakerChangedFrame,
    AudioTrackSubscribedFrame,
    AudioTrackUnsubscribedFrame,
    DataReceivedFrame,
    ParticipantJoinedFrame,
    ParticipantLeftFrame,
)
from actors.room.settings import RoomSettings
from actors.room.stats import RoomStats

log = logging.getLogger("actors.room")


def decode_message(data: bytes) -> dict[str, Any] | None:
    """The packet as a JSON object, or None: what pipecat treats as an app message."""
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return message if isinstance(message, dict) else None


class EventActor(Actor):
    """Deduplicates, validates and forwards room events."""

    def __init__(self, settings: RoomSettings, stats: RoomStats) -> None:
        self.settings = settings
        self.stats = stats
        self._speaker: str | None = None

    async def receive(self, frame: Frame) -> Any:
        stats = self.stats
        if isinstance(frame, ParticipantJoinedFrame):
            if frame.participant_id in stats.participants:
                return None
            stats.participants.add(frame.participant_id)
            stats.left.pop(frame.participant_id, None)
            stats.joins += 1
            log.info("[%s] participant %s joined", self.settings.key, frame.participant_id)
            await self.sibling("audio_out").tell(frame)  # someone to hear the bot
        elif isinstance(frame, ParticipantLeftFrame):
            if frame.participant_id not in stats.participants:
                return None
            stats.participants.discard(frame.participant_id)
            stats.left[frame.participant_id] = frame.reason
            stats.leaves += 1
            log.info("[%s] participant %s left", self.settings.key, frame.participant_id)
            await self.sibling("audio_out").tell(frame)
        elif isinstance(frame, (AudioTrackSubscribedFrame, AudioTrackUnsubscribedFrame)):
            await self.sibling("audio_in").tell(frame)
        elif isinstance(frame, ActiveSpeakerChangedFrame):
            if frame.participant_id == self._speaker:
                return None
            self._speaker = frame.participant_id
        elif isinstance(frame, DataReceivedFrame) and not self._accept(frame):
            return None
        await self.sibling("pipeline").tell(frame)
        return None

    def _accept(self, frame: DataReceivedFrame) -> bool:
        stats = self.stats
        if len(frame.data) > self.settings.max_data_bytes:
            stats.data_oversized += 1
            log.warning(
                "[%s] refused a %d-byte data message from %s (limit %d bytes)",
                self.settings.key,
                len(frame.data),
                frame.participant_id,
                self.settings.max_data_bytes,
            )
            return False
        stats.data_in += 1
        frame.message = decode_message(frame.data)
        if frame.message is None:
            stats.data_malformed += 1
            log.info(
                "[%s] data message from %s is not a JSON object: delivered as raw bytes",
                self.settings.key,
                frame.participant_id,
            )
        return True
