"""Test bots for a real `supervisor run`: they fail when and how a test says.

Named in a test's config.toml (`tests.helpers.crashing_bot:create_bot`), so they run inside
the supervisor process, where a test cannot reach in: the trigger is a data message.

- `create_bot`: echoes audio, answers data messages (as the data bot does), and
  raises in a processor when a message is `{"crash": true}`: an uncaught processor
  error, which crashes the room's pipeline actor and restarts it.
- `failing_bot`: a factory that always raises, so its room exceeds its restart
  intensity and is quarantined.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.livekit.transport import LiveKitInputTransportMessageFrame

from actors.room.transport import RoomTransport
from supervisor.bots import room_pipeline
from supervisor.bots.data import ReplyProcessor
from supervisor.bots.echo import EchoProcessor

CRASH = {"crash": True}


class CrashOnRequest(FrameProcessor):
    """Raises on a `{"crash": true}` message; passes everything else on."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if (
            isinstance(frame, LiveKitInputTransportMessageFrame)
            and direction == FrameDirection.DOWNSTREAM
            and frame.message == CRASH
        ):
            raise RuntimeError("crash requested by a data message")
        await self.push_frame(frame, direction)


def create_bot(transport: RoomTransport) -> PipelineWorker:
    processors = [CrashOnRequest(), ReplyProcessor(), EchoProcessor()]
    return room_pipeline(transport, *processors)


def failing_bot(transport: RoomTransport) -> PipelineWorker:
    raise RuntimeError("this bot never starts")
