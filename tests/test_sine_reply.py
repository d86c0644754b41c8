"""LiveKit's load-test shape as the conversations benchmark runs it, without a server:
the supervisor's and pipecat's bot answers an end of speech with the tone, and
livekit-agents' peer is chosen with it. A run against a real server is
`python -m benchmarks.conversations --bot benchmarks.sine_reply:create_bot`."""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.frames.frames import (
    OutputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import run_test

from benchmarks.conversations import DEFAULT_BOT, SINE_BOT, systems
from benchmarks.sine_reply import AMPLITUDE, TONE_SECONDS, SineReply, tone


def test_the_tone_is_a_second_of_sine_at_the_rate_asked() -> None:
    samples = np.frombuffer(tone(24_000), dtype="<i2")
    assert len(samples) == TONE_SECONDS * 24_000
    assert abs(int(samples.max()) - AMPLITUDE * 32767) < 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_each_end_of_speech_is_answered_with_the_tone_at_the_output_rate() -> None:
    down, _ = await run_test(
        SineReply(),
        frames_to_send=[VADUserStartedSpeakingFrame(), VADUserStoppedSpeakingFrame()],
        expected_down_frames=[
            VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame, OutputAudioRawFrame,
        ],
        pipeline_params=PipelineParams(audio_out_sample_rate=16_000),
    )  # fmt: skip
    reply = down[-1]
    assert (reply.sample_rate, reply.num_channels) == (16_000, 1)
    assert reply.audio == tone(16_000)


def test_livekit_agents_runs_its_own_peer_of_each_bot() -> None:
    assert systems(SINE_BOT)["agents"].env["AGENTS_VOICE_SHAPE"] == "sine"
    assert systems(DEFAULT_BOT)["agents-tuned"].env["AGENTS_VOICE_SHAPE"] == "voice"
    other = systems("benchmarks.voice_per_room:create_bot")["agents"]
    assert other.unavailable() == (
        "livekit-agents has no peer of benchmarks.voice_per_room:create_bot: "
        f"{[DEFAULT_BOT, SINE_BOT]}"
    )
