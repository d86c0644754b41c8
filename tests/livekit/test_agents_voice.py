"""livekit-agents' voice bot (`benchmarks/agents_voice.py`, the peer of issue 22's
conversations benchmark), in its own venv: a caller speaks a sentence, pocketsphinx
makes a transcript of it, and the caller hears the scripted reply spoken."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from benchmarks.agents_voice_check import converse
from supervisor.livekit_server import LiveKitServer
from tests.helpers.prometheus import tool

OWN_LOAD = {"AGENTS_VOICE_LOAD": "worker", "AGENTS_VOICE_LOAD_THRESHOLD": "0.7"}
"""The worker's own CPU as its load: livekit-agents' default, the machine's, makes it
full while other tests run beside it, and the server offers the room's job only once."""


@pytest.mark.anyio
async def test_a_caller_hears_livekit_agents_voice_bot_answer(
    livekit_server: LiveKitServer, tmp_path: Path, agents_venv: Path
) -> None:
    tool("espeak-ng", "espeak-ng")  # the caller's speech and the bot's
    with anyio.fail_after(180):  # a hang, not a figure: the worker's start and one turn
        figures = await converse(
            livekit_server, tmp_path / "worker.log", turns=1, settle=1.0, options=OWN_LOAD
        )
    print(figures)
    [latency] = figures["voice_to_voice_s"]
    assert latency is not None, figures  # a reply was heard
    replies = [text for text in figures["transcripts"] if text.startswith("I heard you say ")]
    assert len(replies) == 1, figures  # from a transcript pocketsphinx made
    assert figures["memory_after"]["pss_mb"] > 100, figures
