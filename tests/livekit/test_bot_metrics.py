"""The bot's own metrics end to end: the talker bot answers a participant out loud, and
`supervisor run`'s /metrics reports the response latency, both services' TTFB and the
usage counters, in that participant's room only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from supervisor.livekit_server.server import LiveKitServer
from tests.helpers.cli_process import SupervisorConfig, serving
from tests.helpers.participants import collect_audio, join, publishing_tone, subscribed_audio_track
from tests.helpers.prometheus import Samples, scrape
from tests.helpers.speech import speech_windows, utterance

pytestmark = pytest.mark.anyio

TALKER = "supervisor.bots.talker:create_bot"
SERVICES = ("ScriptLLMService", "EspeakTTSService")


def answered(samples: Samples, room: str) -> bool:
    """The room's bot answered a turn, and both its services reported a first byte."""
    return samples["lksup_room_bot_response_seconds_count", {"room": room}] >= 1 and all(
        ("lksup_room_bot_ttfb_seconds_count", frozenset({("room", room), ("processor", p)}))
        in samples.values
        for p in SERVICES
    )


async def test_the_talker_answers_and_its_metrics_move_in_its_room_only(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    speech = utterance("Hello there, how are you today?", then_silent=3.0)
    config = SupervisorConfig(livekit_server, ("talk-a", "talk-b"), bot=TALKER)
    async with (
        serving(tmp_path, config) as (run, _),
        join(livekit_server, "talk-a", "speaker") as room,
        publishing_tone(room, signal=speech),  # the utterance, then silence, in a loop
    ):
        track = await subscribed_audio_track(room, "bot", timeout=30)
        heard = np.zeros(0, np.int16)
        async with asyncio.timeout(90):
            while not answered(samples := scrape(config.metrics_url), "talk-a"):
                heard = np.concatenate([heard, await collect_audio(track, 1.0)])
            # the reply that was timed is in the audio from here on, if not before
            while speech_windows(heard) < 10:
                heard = np.concatenate([heard, await collect_audio(track, 1.0)])

    assert speech_windows(heard) >= 10  # half a second of speech, at least: an answer
    assert not run.matches(r"ERROR.*pipecat"), run.tail()  # pipecat takes the services as built

    a, b = {"room": "talk-a"}, {"room": "talk-b"}
    turns = samples["lksup_room_bot_turns_total", a]
    assert turns >= 1
    assert samples["lksup_bot_turns_total"] == turns
    responses = samples["lksup_room_bot_response_seconds_count", a]
    assert samples["lksup_bot_response_seconds_count"] == responses
    # the speech ended, the VAD waited, the services ran: never an instant answer
    assert samples["lksup_bot_response_seconds_bucket", {"le": "0.1"}] == 0
    for processor in SERVICES:
        assert samples["lksup_bot_ttfb_seconds_count", {"processor": processor}] >= 1
    assert samples["lksup_bot_processing_seconds_count", {"processor": "ScriptLLMService"}] >= 1
    assert samples["lksup_room_bot_llm_tokens_total", {**a, "kind": "prompt"}] >= 1
    # "You spoke for N seconds." is five words, and 20 characters or more
    assert samples["lksup_room_bot_llm_tokens_total", {**a, "kind": "completion"}] >= 5
    assert samples["lksup_room_bot_tts_characters_total", a] >= 20
    assert samples["lksup_bot_tts_characters_total"] == samples[
        "lksup_room_bot_tts_characters_total", a
    ]

    # nobody spoke in the other room: its series are there, and still
    assert samples["lksup_room_bot_response_seconds_count", b] == 0
    assert samples["lksup_room_bot_turns_total", b] == 0
    assert samples["lksup_room_bot_tts_characters_total", b] == 0
    assert samples.label_values("lksup_room_bot_ttfb_seconds_count", "room") == {"talk-a"}


async def test_speaking_over_the_talker_counts_an_interruption(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    # the answer ("You spoke for 2.0 seconds.") lasts over 2 s: the next utterance,
    # a second after the last, starts while the bot still speaks
    speech = utterance("Hello there, how are you today?", then_silent=1.0)
    config = SupervisorConfig(livekit_server, ("talk-over",), bot=TALKER)
    room_labels = {"room": "talk-over"}
    async with (
        serving(tmp_path, config),
        join(livekit_server, "talk-over", "speaker") as room,
        publishing_tone(room, signal=speech),
    ):
        async with asyncio.timeout(90):
            while scrape(config.metrics_url)["lksup_room_bot_interruptions_total", room_labels] < 1:
                await asyncio.sleep(0.25)
        samples = scrape(config.metrics_url)
    assert samples["lksup_bot_interruptions_total"] >= 1
    assert samples["lksup_room_bot_turns_total", room_labels] >= 1
