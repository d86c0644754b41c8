"""The built-in speaking bots' parts outside a room: what the voice bot's recognizer
makes of speech, its script, and a config naming a bot whose piece is
missing refused with the reason (exit 2 at `supervisor run` and `check`)."""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from livekit import rtc
from pipecat.audio.utils import create_file_resampler
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    LLMContextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from actors import ActorRef
from actors.room import RoomSettings, RoomStats, RoomTransport
from actors.room.transport import STATE_BYTES
from supervisor.bots import echo, prewarm, talker, voice
from supervisor.bots.decoders import FAST_SEARCH
from supervisor.bots.handoff import ContextOffer, handed_messages
from supervisor.bots.recognizer import SAMPLE_RATE, Recognizer, shared_recognizer
from supervisor.bots.voice import heard
from supervisor.config import ConfigError, parse_config
from tests.helpers.participants import SAMPLE_RATE as SPEECH_RATE
from tests.helpers.speech import utterance

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def recognizer() -> Iterator[Recognizer]:
    recognizer = Recognizer(processes=1)  # a decoder process of the test's own
    yield recognizer
    recognizer.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_recognizer_hears_the_words_of_a_sentence(
    recognizer: Recognizer,
) -> None:
    speech = utterance("What is the weather like today?").tobytes()
    pcm = await create_file_resampler().resample(speech, SPEECH_RATE, SAMPLE_RATE)
    words = (await recognizer.transcribe(pcm)).words.split()
    # espeak-ng's voice is not what the model learnt from: some words, not all
    assert len({"what", "is", "the", "weather", "like", "today"} & set(words)) >= 2, words


def test_the_voice_bot_says_what_it_heard_or_that_it_heard_nothing() -> None:
    context = LLMContext(messages=[
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "I heard you say hello."},
        {"role": "user", "content": "what is the time"},
    ])  # fmt: skip
    assert heard(context) == "I heard you say what is the time."
    assert heard(LLMContext(messages=[{"role": "user", "content": " "}])) == (
        "I did not catch that."
    )
    assert heard(LLMContext()) == "I did not catch that."


def _refused(factory: str, reason: str) -> None:
    doc = {
        "livekit": {"url": "ws://127.0.0.1:7880"},
        "bot": {"factory": factory},
        "rooms": [{"name": "a"}],
    }
    with pytest.raises(ConfigError, match=rf"bot.factory = '{factory}': cannot import .*{reason}"):
        parse_config(doc, environ={})


def _forget(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make the next import of `modules` run them again (they check at import): out of
    `sys.modules`, and off their package, where `from package import module` looks first."""
    for module in modules:
        monkeypatch.delitem(sys.modules, module, raising=False)
        package, _, name = module.rpartition(".")
        monkeypatch.delattr(sys.modules[package], name, raising=False)


@pytest.mark.parametrize("bot", ["talker", "voice"])
def test_a_speaking_bot_without_espeak_ng_is_a_config_error(
    bot: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on it
    _forget(monkeypatch, f"supervisor.bots.{bot}", "supervisor.bots.espeak")
    _refused(f"supervisor.bots.{bot}:create_bot", "espeak-ng is not installed")


def test_the_voice_bot_without_pocketsphinx_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _forget(
        monkeypatch,
        "supervisor.bots.voice",
        "supervisor.bots.recognizer",
        "supervisor.bots.decoders",
    )
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # as if not installed
    _refused("supervisor.bots.voice:create_bot", r"pip install 'livekit-supervisor\[voice\]'")


def test_prewarm_loads_each_bot_module_s_models_once_before_any_room() -> None:
    warmed = prewarm([voice.create_bot, echo.create_bot, talker.create_bot, voice.create_bot])
    assert warmed == ["supervisor.bots.voice", "supervisor.bots.talker"]  # echo has none
    assert shared_recognizer().loaded  # its decoders loaded, before any room


def test_the_livekit_agents_peer_decodes_with_the_voice_bot_s_search() -> None:
    """benchmarks/agents_voice.py runs in livekit-agents' venv, without pipecat or this
    project: it writes the settings out, and this holds them equal."""
    source = (Path(__file__).parent.parent / "benchmarks" / "agents_voice.py").read_text()
    (assigned,) = (
        node for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "DECODER_SEARCH"
    )  # fmt: skip
    assert ast.literal_eval(assigned.value) == FAST_SEARCH


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_bot_s_state_is_offered_as_json_within_its_limit_and_read_back_handed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`offer_state` keeps the last good offer as JSON; a state that is not JSON, or too
    large, is logged and leaves nothing to hand over (a stale state would mislead)."""
    transport, stats = _transport(handed_state='{"messages": [{"role": "user", "content": "hi"}]}')
    assert transport.handed_state == {"messages": [{"role": "user", "content": "hi"}]}
    assert handed_messages(transport) == [{"role": "user", "content": "hi"}]
    transport.offer_state({"count": 1})
    assert stats.offered_state == '{"count":1}'
    transport.offer_state({"x": object()})
    assert stats.offered_state == ""
    transport.offer_state({"count": 2})
    transport.offer_state({"big": "x" * STATE_BYTES})
    assert stats.offered_state == ""
    assert "is not JSON" in caplog.text
    assert f"over {STATE_BYTES}: refused" in caplog.text
    fresh, _ = _transport()
    assert (fresh.handed_state, handed_messages(fresh)) == (None, [])


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_the_voice_bot_offers_its_context_each_time_it_stops_speaking() -> None:
    transport, stats = _transport()
    context = LLMContext([{"role": "user", "content": "hello"}])
    offer = ContextOffer(transport, context)
    await run_test(offer, frames_to_send=[BotStartedSpeakingFrame()],
                   expected_down_frames=[BotStartedSpeakingFrame])  # fmt: skip
    assert stats.offered_state == ""
    context.add_message({"role": "assistant", "content": "I heard you say hello."})
    await run_test(offer, frames_to_send=[BotStoppedSpeakingFrame()],
                   expected_down_frames=[BotStoppedSpeakingFrame])  # fmt: skip
    assert json.loads(stats.offered_state)["messages"] == context.get_messages()


def test_the_talker_s_answer_counts_every_turn_of_the_conversation_so_far() -> None:
    """From the second turn on the talker says the whole conversation's seconds, so a
    reply after a handoff shows that the earlier turns came along (a handed context is
    input: what is not a turn's seconds counts nothing)."""

    def turns(*said: str) -> LLMContext:
        return LLMContext([{"role": "user", "content": text} for text in said])

    assert talker.spoke_for(turns()) == "You spoke for no time seconds."
    assert talker.spoke_for(turns("1.5")) == "You spoke for 1.5 seconds."
    assert talker.spoke_for(turns("1.5", "2.0", "hi")) == "You spoke for hi seconds, 3.5 in all."


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_the_talker_s_turns_go_on_from_the_context_it_was_handed() -> None:
    handed = LLMContext([{"role": "user", "content": "2.0"}])
    started = VADUserStartedSpeakingFrame(start_secs=0.2, timestamp=10.0)
    stopped = VADUserStoppedSpeakingFrame(stop_secs=0.8, timestamp=12.3)
    down, _ = await run_test(
        talker.TurnTaker(handed), frames_to_send=[started, stopped],
        expected_down_frames=[VADUserStartedSpeakingFrame, UserStartedSpeakingFrame,
                              InterruptionFrame, VADUserStoppedSpeakingFrame,
                              UserStoppedSpeakingFrame, LLMContextFrame],
        ignore_start=True,
    )  # fmt: skip
    (asked,) = [frame for frame in down if isinstance(frame, LLMContextFrame)]
    assert talker.spoke_for(asked.context) == "You spoke for 1.7 seconds, 3.7 in all."


def _transport(handed_state: str = "") -> tuple[RoomTransport, RoomStats]:
    settings = RoomSettings(room="handed-1", url="ws://x", api_key="k", api_secret="s",
                            bot=lambda transport: None, handed_state=handed_state)  # fmt: skip
    stats = RoomStats()
    none = cast(ActorRef, None)  # the state needs no actor
    return RoomTransport(settings, stats, rtc.Room(), connection=none, audio_out=none), stats
