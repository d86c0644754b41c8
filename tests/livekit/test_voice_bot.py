"""The voice bot (`supervisor.bots.voice`) in a real room under `supervisor run`: a
spoken sentence is transcribed and answered out loud, and bad audio (noise, clipping,
speech over the bot) costs nothing but counted interruptions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from supervisor.livekit_server.server import LiveKitServer
from tests.helpers.cli_process import SupervisorConfig, serving
from tests.helpers.participants import (
    SAMPLE_RATE,
    collect_audio,
    join,
    publishing_tone,
    subscribed_audio_track,
)
from tests.helpers.prometheus import scrape
from tests.helpers.speech import speech_windows, utterance

pytestmark = pytest.mark.anyio

VOICE = "supervisor.bots.voice:create_bot"
SERVICES = ("PocketsphinxSTTService", "ScriptLLMService", "EspeakTTSService")


async def test_the_voice_bot_transcribes_a_sentence_and_answers_it_out_loud(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    speech = utterance("What is the weather like today?", then_silent=4.0)
    config = SupervisorConfig(livekit_server, ("voice",), bot=VOICE)
    room = {"room": "voice"}
    async with (
        serving(tmp_path, config) as (run, _),
        join(livekit_server, "voice", "speaker") as caller,
        publishing_tone(caller, signal=speech),  # the sentence, then silence, in a loop
    ):
        track = await subscribed_audio_track(caller, "bot", timeout=30)
        heard = np.zeros(0, np.int16)
        async with asyncio.timeout(90):
            # the words the recognizer made of it reached the LLM as the user's turn
            prompt = ("lksup_room_bot_llm_tokens_total", {**room, "kind": "prompt"})
            while scrape(config.metrics_url)[prompt] < 1:
                heard = np.concatenate([heard, await collect_audio(track, 1.0)])
            while speech_windows(heard) < 10:  # the reply: "I heard you say ..."
                heard = np.concatenate([heard, await collect_audio(track, 1.0)])
        samples = scrape(config.metrics_url)

    assert speech_windows(heard) >= 10  # half a second of speech, at least
    assert not run.matches(r"ERROR"), run.tail()
    assert run.matches(r"prewarmed supervisor\.bots\.voice")  # its models, before the room
    assert samples["lksup_room_bot_response_seconds_count", room] >= 1
    for processor in SERVICES:  # each stage ran, through pipecat's metrics
        assert samples["lksup_bot_processing_seconds_count", {"processor": processor}] >= 1
    # "I heard you say ..." is four words and more: a transcript, not "I did not catch that."
    assert samples["lksup_room_bot_llm_tokens_total", {**room, "kind": "completion"}] >= 5


def noise_then_clipped_then_speech() -> np.ndarray:
    """3 s of loud white noise, the sentence clipped hard (x16), then the sentence
    with only a second of silence after it: the next loop talks over the bot's reply."""
    rng = np.random.default_rng(7)
    noise = rng.normal(0, 4000, 3 * SAMPLE_RATE).clip(-32768, 32767).astype(np.int16)
    sentence = utterance("Can you hear me now?")
    clipped = (sentence.astype(np.int32) * 16).clip(-32768, 32767).astype(np.int16)
    gap = np.zeros(SAMPLE_RATE, np.int16)
    return np.concatenate([noise, gap, clipped, gap, sentence, gap])


async def test_noise_clipping_and_talking_over_the_voice_bot_cost_only_interruptions(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    config = SupervisorConfig(livekit_server, ("voice-rough",), bot=VOICE)
    room = {"room": "voice-rough"}
    async with (
        serving(tmp_path, config) as (run, _),
        join(livekit_server, "voice-rough", "rough") as caller,
        publishing_tone(caller, signal=noise_then_clipped_then_speech()),
    ):
        async with asyncio.timeout(120):
            while True:
                samples = scrape(config.metrics_url)
                if (samples["lksup_room_bot_interruptions_total", room] >= 1
                        and samples["lksup_room_bot_response_seconds_count", room] >= 3):
                    break
                await asyncio.sleep(0.5)

    assert samples["lksup_room_restarts_total", room] == 0  # no crash, no restart
    assert not run.matches(r"ERROR"), run.tail()
