"""The bot's view of its room: pipecat's `LiveKitTransport` API, backed by actors.

A bot written for `LiveKitTransport` gets the same `input()` and `output()`
processors, the same frames (`UserAudioRawFrame` per participant,
`LiveKitInputTransportMessageFrame`, `LiveKitOutputTransportMessage[Urgent]Frame`),
the same methods and the same event names, so porting it changes only where the
transport is built. Behind them the output talks to the audio-out and connection
actors, and the pipeline actor feeds the input and calls `dispatch` for room events:
`pacing.py` paces that audio to the bot, `delivery.py` turns the events into
handler calls and frames.

Differences from pipecat, on purpose: urgent messages go out lossy (pipecat sends
them reliable too); mute and unmute go through the LiveKit server API, so the
participant sees its own track muted (pipecat only stops receiving it); input
audio is paced to the bot, so a bot slower than real time skips the oldest audio
(see `pacing.py`) instead of falling ever further behind. Additions: `job` (a
dispatched room's agent job), and `offer_state` and `handed_state`, which carry a
bot's state to the bot that takes its room over when its worker drains.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from livekit import rtc
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
)
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.livekit.transport import (
    LiveKitInputTransportMessageFrame,
    LiveKitOutputTransportMessageFrame,
    LiveKitOutputTransportMessageUrgentFrame,
    LiveKitParams,
)

from actors import ActorError, ActorRef, MailboxFullError
from actors.room.delivery import EventDelivery
from actors.room.frames import (
    GetParticipantMetadataFrame,
    SendDataFrame,
    SetMetadataFrame,
    SetParticipantMutedFrame,
)
from actors.room.job import Job
from actors.room.pacing import InputPacer
from actors.room.settings import RoomSettings
from actors.room.stats import RoomStats
from actors.room.timing import StampCarrier

log = logging.getLogger("actors.room")

EVENTS = (
    # pipecat's LiveKitTransport events, same names and arguments
    "on_connected",
    "on_disconnected",
    "on_before_disconnect",
    "on_participant_connected",
    "on_participant_disconnected",
    "on_participant_left",
    "on_client_connected",
    "on_client_disconnected",
    "on_first_participant_joined",
    "on_audio_track_subscribed",
    "on_audio_track_unsubscribed",
    "on_video_track_subscribed",
    "on_video_track_unsubscribed",
    "on_app_message",
    "on_data_received",
    "on_call_state_updated",
    "on_dtmf_event",
    "on_active_speaker_changed",
    # ours, for what the rtc SDK reports and pipecat does not pass on
    "on_participant_metadata_changed",
    "on_track_muted",
    "on_track_unmuted",
)


def default_vad(settings: RoomSettings) -> VADAnalyzer | None:
    """Silero VAD (its model ships inside pipecat; one copy per process, `models.py`)
    when the room's settings ask for it.

    pipecat 1.x runs VAD in the pipeline, not in the transport: `TransportParams` has
    no `vad_analyzer` any more (pydantic silently drops the argument), so a bot puts
    this analyzer in a `VADProcessor` right after `input()`, as the echo bot does.
    """
    if not settings.vad:
        return None
    from actors.room.models import SharedSileroVADAnalyzer  # loads onnxruntime: only on use

    return SharedSileroVADAnalyzer(batch_ms=settings.vad_batch_ms)


def default_params(settings: RoomSettings) -> LiveKitParams:
    """Transport parameters from the room's settings, as a bot would pass them."""
    return LiveKitParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_in_sample_rate=settings.audio_in_sample_rate,
        audio_out_sample_rate=settings.audio_out_sample_rate,
        audio_in_user_tracks=settings.audio_in_user_tracks,
        audio_out_10ms_chunks=settings.audio_frame_ms // 10,
        audio_out_end_silence_secs=0,  # pipecat pads 2 s of silence on EndFrame: a slow stop
    )


def _encode(message: Any) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode("utf-8")
    return json.dumps(message, ensure_ascii=False).encode("utf-8")


class RoomInputTransport(BaseInputTransport):
    """Brings the room's audio and messages into the pipeline."""

    def __init__(self, transport: RoomTransport, params: LiveKitParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._transport = transport
        self.ready = False

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        self.ready = True
        await self._transport._started()

    @property
    def audio_backlog(self) -> int:
        """Audio frames waiting for the input's own audio task (VAD, filters).

        pipecat has no public view of that queue: this reads two of its internals,
        pinned with pipecat's minor version (tests/test_pipecat_internals.py)."""
        return self._audio_in_queue.qsize() if self._audio_task else 0

    async def push_app_message(self, message: Any, sender: str | None) -> None:
        # both directions, as pipecat does, so an RTVI processor anywhere sees it
        await self.broadcast_frame(
            LiveKitInputTransportMessageFrame, message=message, participant_id=sender
        )


class RoomOutputTransport(BaseOutputTransport):
    """Takes the pipeline's audio and messages out to the room through the actors."""

    def __init__(self, transport: RoomTransport, params: LiveKitParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._transport = transport
        self._stamps = StampCarrier()  # arrival stamps across pipecat's re-chunking

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        await self._transport._started()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, OutputAudioRawFrame):
            self._stamps.entering(frame)
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            self._stamps.clear()
            self._transport._audio_out.tell_nowait(frame)

    async def send_message(
        self, frame: OutputTransportMessageFrame | OutputTransportMessageUrgentFrame
    ) -> None:
        destination = None
        if isinstance(
            frame, (LiveKitOutputTransportMessageFrame, LiveKitOutputTransportMessageUrgentFrame)
        ):
            destination = frame.participant_id
        urgent = isinstance(frame, OutputTransportMessageUrgentFrame)
        await self._transport._send(_encode(frame.message), not urgent, destination)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        self._stamps.leaving(frame)
        try:
            await self._transport._audio_out.tell(frame)
        except MailboxFullError:  # audio-out is restarting: this frame is late anyway
            self._transport.stats.audio_frames_dropped["output_full"] += 1
            return False
        return True


STATE_BYTES = 256 * 1024
"""The largest state a bot may offer for a handoff (`RoomTransport.offer_state`): a
long conversation's LLM context fits; it travels as a data stream."""


class RoomTransport(BaseTransport):
    """One room, as a pipecat transport. Built per pipeline incarnation."""

    def __init__(
        self,
        settings: RoomSettings,
        stats: RoomStats,
        room: rtc.Room,
        *,
        connection: ActorRef,
        audio_out: ActorRef,
        params: LiveKitParams | None = None,
    ) -> None:
        super().__init__(name=f"RoomTransport[{settings.key}]")
        self.settings = settings
        self.stats = stats
        self.params = params or default_params(settings)
        self.vad_analyzer = default_vad(settings)
        """The room's VAD for the bot's pipeline (`VADProcessor`), or None."""
        self._room = room
        self._connection = connection
        self._audio_out = audio_out
        self._input: RoomInputTransport | None = None
        self._output: RoomOutputTransport | None = None
        self._pacer = InputPacer(settings.key, stats, settings.audio_frame_ms)
        self._delivery = EventDelivery(
            settings.key, room, self._call_event_handler, self._started_input
        )
        for event in EVENTS:
            self._register_event_handler(event, sync=event == "on_before_disconnect")

    # --- pipecat's transport API --------------------------------------------------

    @property
    def job(self) -> Job | None:
        """The agent job of a dispatched room (id, room, metadata, dispatch metadata);
        None in a configured room."""
        return self.settings.job

    @property
    def handed_state(self) -> dict[str, Any] | None:
        """What the bot that served this room before offered (`offer_state`), when a
        draining worker handed the room over to this one: seed the bot with it (an LLM
        context's messages, say) so the conversation goes on. None otherwise."""
        text = self.settings.handed_state
        return json.loads(text) if text else None

    def offer_state(self, state: Mapping[str, Any]) -> None:
        """Offer the bot's state, to travel with its room if this worker drains and
        hands the room over (`[dispatch] handoff`): the last offer goes, and the next
        bot reads it as `handed_state`. Offer it as it changes (after each turn, say):
        it is kept, not asked for. JSON-able, at most `STATE_BYTES` encoded; anything
        else is logged and refused, and the room then hands over no state until a good
        offer replaces it (a stale state would be worse than none)."""
        try:
            text = json.dumps(dict(state), separators=(",", ":"))
        except (TypeError, ValueError) as err:
            log.warning("[%s] a state offered for a handoff is not JSON (%s): refused",
                        self.settings.key, err)
            self.stats.offered_state = ""
            return
        if len(text.encode()) > STATE_BYTES:
            log.warning("[%s] a state offered for a handoff is %d bytes, over %d: refused",
                        self.settings.key, len(text.encode()), STATE_BYTES)
            self.stats.offered_state = ""
            return
        self.stats.offered_state = text

    def input(self) -> RoomInputTransport:
        if self._input is None:
            self._input = RoomInputTransport(self, self.params, name=f"{self.name}#input")
        return self._input

    def output(self) -> RoomOutputTransport:
        if self._output is None:
            self._output = RoomOutputTransport(self, self.params, name=f"{self.name}#output")
        return self._output

    @property
    def participant_id(self) -> str:
        """The bot's own identity in the room."""
        return self._room.local_participant.identity

    def get_participants(self) -> list[str]:
        """Identities of the remote participants in the room now."""
        return [p.identity for p in self._room.remote_participants.values()]

    async def get_participant_metadata(self, participant_id: str) -> dict[str, Any]:
        """`{"id", "name", "metadata"}` of a participant, or `{}` if not in the room."""
        frame = GetParticipantMetadataFrame(participant_id)
        answer: dict[str, Any] = await self._connection.ask(frame)
        return answer

    async def set_metadata(self, metadata: str) -> None:
        """Set the bot participant's metadata."""
        await self._connection.ask(SetMetadataFrame(metadata))

    async def send_message(self, message: Any, participant_id: str | None = None) -> None:
        """Send a reliable message now, to everyone or to one participant."""
        await self._send(_encode(message), True, participant_id)

    async def send_message_urgent(self, message: Any, participant_id: str | None = None) -> None:
        """Send a lossy, low-latency message now, to everyone or to one participant."""
        await self._send(_encode(message), False, participant_id)

    async def send_audio(self, frame: OutputAudioRawFrame) -> None:
        """Queue audio on the output, as if the pipeline had produced it."""
        await self.output().queue_frame(frame, FrameDirection.DOWNSTREAM)

    async def mute_participant(self, participant_id: str) -> None:
        """Mute a participant's microphone through the server: they see it muted."""
        await self._connection.ask(SetParticipantMutedFrame(participant_id, True))

    async def unmute_participant(self, participant_id: str) -> None:
        """Unmute a participant's microphone through the server."""
        await self._connection.ask(SetParticipantMutedFrame(participant_id, False))

    # --- fed by the pipeline actor ------------------------------------------------

    async def push_audio(self, frame: InputAudioRawFrame) -> None:
        """Audio from the audio-in actor; dropped until the pipeline has started."""
        input = self._started_input()
        if input is None:
            self.stats.audio_frames_dropped["not_ready"] += 1
            return
        await self._pacer.push(input, frame)

    def pace_with(self, worker: PipelineWorker) -> None:
        """Pace input audio to `worker`, the bot's pipeline (see `pacing.py`)."""
        self._pacer.pace_with(worker)

    async def dispatch(self, event: Frame) -> None:
        """A room event from the event actor, for the bot's handlers (see `delivery.py`)."""
        await self._delivery.dispatch(event)

    async def _started(self) -> None:
        await self._delivery.started()

    def _started_input(self) -> RoomInputTransport | None:
        input = self._input
        return input if input is not None and input.ready else None

    async def _send(self, payload: bytes, reliable: bool, destination: str | None) -> None:
        try:
            await self._connection.ask(SendDataFrame(payload, reliable, destination))
        except ActorError as exc:
            log.error("[%s] message not sent: %s", self.settings.key, exc)
            return
        self.stats.data_out += 1
        if not reliable:
            self.stats.data_out_lossy += 1
