"""An echo bot with a slow goodbye, for the drain tests that run the supervisor as a
subprocess: named in a config as `tests.helpers.goodbye_bot:slow_goodbye_bot` (the subprocess
runs from the repository root).
"""

from __future__ import annotations

import asyncio
import logging
import os

from pipecat.frames.frames import EndFrame, Frame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from actors.room.transport import RoomTransport
from supervisor.bots import room_pipeline
from supervisor.bots.echo import EchoProcessor

log = logging.getLogger("tests.helpers.goodbye_bot")

GOODBYE_SECONDS_ENV = "TEST_BOT_GOODBYE_SECONDS"
"""How long the bot holds the EndFrame; the test sets it in the child's environment."""


class SlowGoodbye(FrameProcessor):
    """Holds the EndFrame for a while, as a bot finishing its last sentence would.

    It logs when it starts holding and when it lets go, so a test reading the log
    knows a drain is under way and whether it ran to its end or was cut short.
    """

    def __init__(self, room: str, seconds: float) -> None:
        super().__init__()
        self._room = room
        self._seconds = seconds

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, EndFrame):
            log.info("[%s] goodbye: holding the EndFrame for %g s", self._room, self._seconds)
            await asyncio.sleep(self._seconds)
            log.info("[%s] goodbye: EndFrame released", self._room)
        await self.push_frame(frame, direction)


def slow_goodbye_bot(transport: RoomTransport) -> PipelineWorker:
    """The echo bot, with a goodbye that takes `TEST_BOT_GOODBYE_SECONDS` (default 2)."""
    seconds = float(os.environ.get(GOODBYE_SECONDS_ENV, "2"))
    return room_pipeline(
        transport, EchoProcessor(), SlowGoodbye(transport.settings.room, seconds)
    )
