"""An LLM service that answers from a script: the built-in bots' LLM, no outside service.

It sits on pipecat's `LLMService`, so its time to first byte, processing time and token
usage reach pipecat's `MetricsFrame`s (and the supervisor's `lksup_bot_*` series) through
pipecat's own code paths, as a real LLM's would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipecat.adapters.llm.services.open_ai_adapter import OpenAILLMAdapter
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings

from supervisor.bots import unsupported_settings

Script = Callable[[LLMContext], str]
"""The answer to a conversation so far."""


def user_texts(context: LLMContext) -> list[str]:
    """What the user said, turn by turn."""
    return [
        str(message.get("content", ""))
        for message in context.get_messages()
        if isinstance(message, dict) and message.get("role") == "user"
    ]


class ScriptLLMService(LLMService):
    """Answers each context with `script`, in one text chunk; a token here is a word."""

    adapter_class = OpenAILLMAdapter
    """pipecat's default, named here so that it is imported with this module (when the
    config is read), not on the event loop by the first room's bot: openai's types
    take seconds to import on a busy machine."""

    def __init__(self, script: Script, **kwargs: Any) -> None:
        super().__init__(settings=unsupported_settings(LLMSettings), **kwargs)
        self._script = script

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._answer(frame.context)
        else:
            await self.push_frame(frame, direction)

    async def _answer(self, context: LLMContext) -> None:
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        text = self._script(context)
        await self.stop_ttfb_metrics()
        await self.push_frame(LLMTextFrame(text))
        prompt = sum(len(said.split()) for said in user_texts(context))
        completion = len(text.split())
        await self.start_llm_usage_metrics(
            LLMTokenUsage(
                prompt_tokens=prompt, completion_tokens=completion,
                total_tokens=prompt + completion,
            )
        )  # fmt: skip
        await self.stop_processing_metrics()
        await self.push_frame(LLMFullResponseEndFrame())
