"""An echo bot that blocks the event loop once, for the loop watchdog's tests: named in
a config as `tests.helpers.blocking_bot:create_bot` (the subprocess runs from the repository
root) and steered through the child's environment.

In the room `TEST_BOT_BLOCK_ROOM` names, the first audio the bot hears makes it call
`time.sleep(TEST_BOT_BLOCK_SECONDS)` on the event loop, as a bot with a synchronous
HTTP client would. It blocks once per `TEST_BOT_BLOCK_ONCE_FILE` (created just before),
so a worker restarted after the stall serves its rooms normally. Other rooms echo.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from actors.room.transport import RoomTransport
from supervisor.bots import room_pipeline
from supervisor.bots.echo import EchoProcessor

log = logging.getLogger("tests.helpers.blocking_bot")

ROOM_ENV = "TEST_BOT_BLOCK_ROOM"
SECONDS_ENV = "TEST_BOT_BLOCK_SECONDS"
ONCE_FILE_ENV = "TEST_BOT_BLOCK_ONCE_FILE"
BLOCKING_CALL = "time.sleep(self._seconds)"
"""The blocking line, as the test finds it in this file to know its line number."""


class BlockOnce(FrameProcessor):
    """Blocks the loop at the first audio it hears, then passes everything on."""

    def __init__(self, room: str, seconds: float, once: Path) -> None:
        super().__init__()
        self._room = room
        self._seconds = seconds
        self._once = once

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and not self._once.exists():
            self._once.touch()
            log.warning("[%s] blocking the event loop for %g s", self._room, self._seconds)
            time.sleep(self._seconds)
        await self.push_frame(frame, direction)


def create_bot(transport: RoomTransport) -> PipelineWorker:
    room = transport.settings.room
    if room != os.environ.get(ROOM_ENV):
        return room_pipeline(transport, EchoProcessor())
    blocker = BlockOnce(room, float(os.environ[SECONDS_ENV]), Path(os.environ[ONCE_FILE_ENV]))
    return room_pipeline(transport, blocker, EchoProcessor())
