"""A conversation that survives a handoff: an LLM context offered at each turn's end and
seeded from what the previous bot offered.

With `[dispatch] handoff` a draining worker hands its rooms to another worker, whose bot
starts afresh unless it is given the state the old one offered (`RoomTransport.offer_state`
and `handed_state`). For a pipecat bot that state is its LLM context's messages: the
built-in voice and talker bots seed their context with them and offer them as each bot
turn ends, and a ported bot can do the same with these two pieces.
"""

from __future__ import annotations

from typing import Any

from pipecat.frames.frames import BotStoppedSpeakingFrame, Frame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from actors.room import RoomTransport


def handed_messages(transport: RoomTransport) -> list[Any]:
    """The LLM context messages the room's previous bot offered, to start a context
    with; [] when the room was not handed over, or its state has none."""
    messages = (transport.handed_state or {}).get("messages")
    return list(messages) if isinstance(messages, list) else []


class ContextOffer(FrameProcessor):
    """Offers `context`'s messages for a handoff each time the bot stops speaking: the
    user's turn and the bot's answer are in the context by then (interrupted or not).
    Place it after the assistant aggregator; it passes every frame on."""

    def __init__(self, transport: RoomTransport, context: LLMContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transport = transport
        self._context = context

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStoppedSpeakingFrame):
            self._transport.offer_state({"messages": self._context.get_messages()})
        await self.push_frame(frame, direction)
