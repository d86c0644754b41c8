"""The data bot: answers every data message its sender sends, to that sender only.

The built-in bot for message traffic, as the echo bot is for audio: it needs no
outside service, and it proves the whole message path of a room (participant ->
server -> connection -> events -> pipeline -> output -> connection -> server ->
participant) with pipecat's own frames, so a test or a load generator can check
each message came back, to the right participant, on the right channel.
"""

from __future__ import annotations

from typing import Any

from pipecat.frames.frames import Frame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.livekit.transport import (
    LiveKitInputTransportMessageFrame,
    LiveKitOutputTransportMessageFrame,
    LiveKitOutputTransportMessageUrgentFrame,
)

from actors.room import RoomTransport
from supervisor.bots import room_pipeline


def reply_for(frame: LiveKitInputTransportMessageFrame) -> Frame:
    """The answer to one message: the message itself and who sent it, back to the sender.

    A message with `"urgent": true` is answered urgent (lossy), so a sender can ask
    for either channel and check which one the answer came on. A message without a
    sender (`participant_id` None: sent by a server SDK, not by a participant; see
    `actors.room.senders`) is answered to the whole room.
    """
    message: Any = frame.message
    reply = {"reply_to": message, "from": frame.participant_id}
    urgent = isinstance(message, dict) and message.get("urgent") is True
    cls = LiveKitOutputTransportMessageUrgentFrame if urgent else LiveKitOutputTransportMessageFrame
    return cls(message=reply, participant_id=frame.participant_id)


class ReplyProcessor(FrameProcessor):
    """Answers each incoming app message; passes every frame on unchanged.

    The input transport broadcasts `LiveKitInputTransportMessageFrame` both ways (as
    pipecat's does, for RTVI); only the downstream copy is answered, so one message
    gets one reply even if an upstream copy ever passes here.
    """

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if (
            isinstance(frame, LiveKitInputTransportMessageFrame)
            and direction == FrameDirection.DOWNSTREAM
        ):
            await self.push_frame(reply_for(frame))
        await self.push_frame(frame, direction)


def create_bot(transport: RoomTransport) -> PipelineWorker:
    return room_pipeline(transport, ReplyProcessor())
