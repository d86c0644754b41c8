"""A test bot with state worth handing over: the echo bot that counts messages.

Each data message it receives is counted, answered to its sender with the count so far
(`{"count": N}`), and the count offered for a handoff (`RoomTransport.offer_state`); a
bot taking the room over goes on from the count it was handed (`handed_state`), so a
caller can tell whether the conversation came along.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.livekit.transport import (
    LiveKitInputTransportMessageFrame,
    LiveKitOutputTransportMessageFrame,
)

from actors.room import RoomTransport
from supervisor.bots import room_pipeline
from supervisor.bots.echo import EchoProcessor


class Counter(FrameProcessor):
    def __init__(self, transport: RoomTransport) -> None:
        super().__init__()
        self.transport = transport
        self.count = int((transport.handed_state or {}).get("count", 0))

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if (
            isinstance(frame, LiveKitInputTransportMessageFrame)
            and direction == FrameDirection.DOWNSTREAM
        ):
            self.count += 1
            self.transport.offer_state({"count": self.count})
            reply = {"count": self.count, "reply_to": frame.message}
            to = frame.participant_id
            await self.push_frame(LiveKitOutputTransportMessageFrame(reply, participant_id=to))
        await self.push_frame(frame, direction)


def create_bot(transport: RoomTransport) -> PipelineWorker:
    return room_pipeline(transport, Counter(transport), EchoProcessor())
