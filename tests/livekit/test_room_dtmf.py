"""DTMF through the real server: a participant's keypress reaches the bot two ways.

A SIP participant's keys arrive as `sip_dtmf_received`; the rtc SDK can publish the same
packet from a simulated participant, so no SIP gateway is needed to prove the path.

Observed with livekit 1.2.1 and livekit-server 1.13.5: a DTMF packet that one rtc-SDK
participant publishes reaches only participants that joined after it (data packets sent
right after it reach everyone), so here the caller joins before the bot does.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pipecat.frames.frames import Frame, InputDTMFFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from actors.room import RoomTransport
from supervisor.bots import room_pipeline
from supervisor.livekit_server.server import LiveKitServer
from tests.helpers.participants import join
from tests.helpers.rooms import running_room

pytestmark = pytest.mark.anyio

# pipecat's DTMF codes: digits are their value, then * and #
CODES = {"1": 1, "5": 5, "9": 9, "*": 10, "#": 11}


class KeypadRecorder(FrameProcessor):
    def __init__(self, pressed: asyncio.Queue[str]) -> None:
        super().__init__()
        self._pressed = pressed

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputDTMFFrame):
            self._pressed.put_nowait(frame.button.value)
        await self.push_frame(frame, direction)


async def test_dtmf_fires_the_handler_and_reaches_the_pipeline(
    livekit_server: LiveKitServer,
) -> None:
    handled: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    pressed: asyncio.Queue[str] = asyncio.Queue()

    def bot(transport: RoomTransport) -> PipelineWorker:
        @transport.event_handler("on_dtmf_event")
        async def on_dtmf_event(transport: RoomTransport, data: dict[str, Any]) -> None:
            handled.put_nowait(data)

        return room_pipeline(transport, KeypadRecorder(pressed))

    async with join(livekit_server, "dtmf", "caller") as caller, running_room(
        livekit_server, "dtmf", bot
    ):
        await asyncio.sleep(0.5)  # let the bot's pipeline start before the keys
        for digit, code in CODES.items():
            await caller.local_participant.publish_dtmf(code=code, digit=digit)
        events = [await asyncio.wait_for(handled.get(), 10) for _ in CODES]
        keys = [await asyncio.wait_for(pressed.get(), 10) for _ in CODES]

    assert [e["digit"] for e in events] == list(CODES)
    assert [e["code"] for e in events] == list(CODES.values())
    assert {e["participant_id"] for e in events} == {"caller"}
    assert keys == list(CODES)
