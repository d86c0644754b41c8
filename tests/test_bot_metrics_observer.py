"""The bot's metrics alone: the observer recording pipecat's frames into `RoomStats`,
audio-out closing the response, and their export.

End to end (the talker bot in a real room, scraped) is tests/livekit/test_bot_metrics.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    MetricsFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    ProcessingMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
    TurnMetricsData,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService

from actors.room import RoomStats
from actors.room.bot_metrics import (
    OTHER,
    BotMetricsObserver,
    metrics_enabled,
    observe_response,
    processor_label,
)
from actors.room.timing import service_buckets
from supervisor.observability.metrics import SupervisorMetrics
from tests.helpers.configs import echo_room_set
from tests.helpers.prometheus import rendered

pytestmark = pytest.mark.anyio

SOURCE = FrameProcessor(name="Source#0")


class STT(SegmentedSTTService):
    async def run_stt(self, audio: bytes) -> Any:
        yield None


class TTS(TTSService):
    async def run_tts(self, text: str, context_id: str | None = None) -> Any:
        yield None


async def push(
    observer: BotMetricsObserver,
    frame: Frame,
    direction: FrameDirection = FrameDirection.DOWNSTREAM,
    *,
    at: float = 0.0,
    source: FrameProcessor = SOURCE,
) -> None:
    """`frame` pushed by `source` at `at` seconds of the pipeline's clock."""
    pushed = FramePushed(source, SOURCE, frame, direction, round(at * 1e9))
    await observer.on_push_frame(pushed)


def usage(prompt: int, completion: int) -> LLMUsageMetricsData:
    tokens = LLMTokenUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )
    return LLMUsageMetricsData(processor="ScriptLLM#3", value=tokens)


async def test_service_metrics_land_in_the_rooms_stats() -> None:
    stats = RoomStats()
    observer = BotMetricsObserver(stats)
    await push(observer, MetricsFrame(data=[
        TTFBMetricsData(processor="ScriptLLM#3", value=0.02),
        ProcessingMetricsData(processor="ScriptLLM#3", value=0.03),
        usage(12, 7),
    ]))  # fmt: skip
    await push(observer, MetricsFrame(data=[
        TTFBMetricsData(processor="EspeakTTS#4", value=0.3),
        TTSUsageMetricsData(processor="EspeakTTS#4", value=42),
    ]))  # fmt: skip
    await push(observer, MetricsFrame(data=[usage(5, 1)]))
    # the worker's announcement at start: every processor with metrics, at 0
    await push(observer, MetricsFrame(data=[
        TTFBMetricsData(processor="Silent#5", value=0.0),
        ProcessingMetricsData(processor="Silent#5", value=0.0),
    ]))  # fmt: skip
    await push(observer, InputAudioRawFrame(audio=b"\0\0" * 320, sample_rate=16000, num_channels=1))
    assert sorted(stats.bot_ttfb) == ["EspeakTTS", "ScriptLLM"]
    assert stats.bot_ttfb["ScriptLLM"].count == 1
    assert stats.bot_ttfb["EspeakTTS"].sum_seconds == pytest.approx(0.3)
    assert list(stats.bot_processing) == ["ScriptLLM"]
    assert (stats.bot_llm_prompt_tokens, stats.bot_llm_completion_tokens) == (17, 8)
    assert stats.bot_tts_characters == 42


async def test_processor_labels_are_bounded_per_room() -> None:
    stats = RoomStats()
    observer = BotMetricsObserver(stats, max_processors=2)
    for name in ("A#1", "B#2", "C#3", "D#4", "A#5"):
        await push(observer, MetricsFrame(data=[TTFBMetricsData(processor=name, value=0.1)]))
    assert {label: h.count for label, h in stats.bot_ttfb.items()} == {"A": 2, "B": 1, OTHER: 2}
    # a new incarnation's observer keeps the room's labels
    await push(
        BotMetricsObserver(stats, max_processors=2),
        MetricsFrame(data=[TTFBMetricsData(processor="B#9", value=0.1)]),
    )
    assert stats.bot_ttfb["B"].count == 2
    assert processor_label("MyLLM#12") == "MyLLM"
    assert processor_label("named") == "named"


async def test_a_turn_is_timed_from_the_speech_end_to_the_next_audio_captured() -> None:
    stats = RoomStats()
    observer = BotMetricsObserver(stats)
    observe_response(stats)  # audio before any turn: nothing to time
    assert stats.bot_response.count == 0
    await push(observer, VADUserStartedSpeakingFrame())
    # the VAD waited 0.4 s of silence and said so 0.1 s ago: the speech ended 0.5 s ago
    await push(observer, VADUserStoppedSpeakingFrame(stop_secs=0.4, timestamp=time.time() - 0.1))
    await push(observer, UserStoppedSpeakingFrame())
    await push(observer, UserStoppedSpeakingFrame(), FrameDirection.UPSTREAM)  # not a broadcast
    assert stats.bot_turns == 2
    observe_response(stats)
    observe_response(stats)  # the rest of the answer is not another response
    assert stats.bot_response.count == 1
    assert 0.5 <= stats.bot_response.sum_seconds < 5

    # a turn without a VAD in the pipeline is timed from its end; speech resumed
    # before the bot answered leaves nothing to time
    plain = RoomStats()
    observer = BotMetricsObserver(plain)
    await push(observer, UserStoppedSpeakingFrame())
    observe_response(plain)
    await push(observer, VADUserStoppedSpeakingFrame(timestamp=time.time()))
    await push(observer, VADUserStartedSpeakingFrame())
    observe_response(plain)
    # a pipeline restarted in the middle of a turn: its successor owes no answer
    await push(observer, VADUserStoppedSpeakingFrame(timestamp=time.time()))
    BotMetricsObserver(plain)
    observe_response(plain)
    assert (plain.bot_response.count, plain.bot_turns) == (1, 1)


async def test_the_time_the_process_added_is_the_response_less_its_services_own() -> None:
    stats = RoomStats()
    observer = BotMetricsObserver(stats)
    stt, llm, tts = STT(), LLMService(), TTS()

    async def metric(at: float, source: FrameProcessor, *data: Any) -> None:
        await push(observer, MetricsFrame(data=list(data)), at=at, source=source)

    async def turn(start: float, *, complete: bool = True) -> None:
        """The VAD stops at `start`; recognition takes 0.3 s (its TTFB, from the speech's
        end and arriving late, is not its own) and the turn model 0.1 s, side by side;
        the turn ends 0.35 s after the stop; LLM and TTS first bytes 0.2 + 0.4 s; the
        bot's audio at 0.65 s after the turn's end."""
        await push(observer, VADUserStartedSpeakingFrame(), at=start - 2)
        await push(observer, VADUserStoppedSpeakingFrame(stop_secs=0.2, timestamp=time.time()),
                   at=start)  # fmt: skip
        await metric(start + 0.1, SOURCE, TurnMetricsData(
            processor="BaseSmartTurn", is_complete=complete, probability=0.9,
            e2e_processing_time_ms=100,
        ))  # fmt: skip
        await metric(start + 0.3, stt, ProcessingMetricsData(processor="STT#0", value=0.3))
        await push(observer, UserStoppedSpeakingFrame(), at=start + 0.35)
        await metric(start + 0.55, llm, TTFBMetricsData(processor="LLM#0", value=0.2))
        await metric(start + 0.6, stt, TTFBMetricsData(processor="STT#0", value=0.8))
        await metric(start + 0.95, tts, TTFBMetricsData(processor="TTS#0", value=0.4))
        await push(observer, BotStartedSpeakingFrame(), at=start + 1.0)
        await push(observer, BotStoppedSpeakingFrame(), at=start + 2.0)

    await turn(10.0)
    # recognition's phase: 0.35 - 0.3; the answer's: 0.65 - (0.2 + 0.4)
    assert stats.bot_added.count == 1
    assert stats.bot_added.sum_seconds == pytest.approx(0.05 + 0.05)
    await turn(20.0, complete=False)  # ended at a timeout: its first phase is by design
    assert stats.bot_added.sum_seconds == pytest.approx(0.1 + 0.05)
    # the user speaking on before the bot answers: nothing to time
    await push(observer, VADUserStoppedSpeakingFrame(timestamp=time.time()), at=30.0)
    await push(observer, VADUserStartedSpeakingFrame(), at=30.5)
    await push(observer, BotStartedSpeakingFrame(), at=31.0)
    assert stats.bot_added.count == 2
    # without a VAD, the turn is timed from its end
    await push(observer, UserStoppedSpeakingFrame(), at=40.0)
    await push(observer, BotStartedSpeakingFrame(), at=40.25)
    assert stats.bot_added.count == 3
    assert stats.bot_added.sum_seconds == pytest.approx(0.15 + 0.25)


async def test_an_interruption_counts_only_while_the_bot_speaks() -> None:
    stats = RoomStats()
    observer = BotMetricsObserver(stats)
    await push(observer, InterruptionFrame())  # the user started: the bot was quiet
    downstream, upstream = BotStartedSpeakingFrame(), BotStartedSpeakingFrame()
    downstream.broadcast_sibling_id, upstream.broadcast_sibling_id = upstream.id, downstream.id
    await push(observer, upstream, FrameDirection.UPSTREAM)
    await push(observer, downstream)
    interruption, sibling = InterruptionFrame(), InterruptionFrame()
    interruption.broadcast_sibling_id, sibling.broadcast_sibling_id = sibling.id, interruption.id
    await push(observer, interruption)
    await push(observer, sibling, FrameDirection.UPSTREAM)
    await push(observer, BotStoppedSpeakingFrame())
    await push(observer, InterruptionFrame())
    assert stats.bot_interruptions == 1


def test_only_a_bot_that_enables_metrics_is_observed() -> None:
    def worker(**params: Any) -> PipelineWorker:
        return PipelineWorker(Pipeline([]), params=PipelineParams(**params))

    assert not metrics_enabled(worker())
    assert metrics_enabled(worker(enable_metrics=True))
    assert metrics_enabled(worker(enable_usage_metrics=True))
    assert not metrics_enabled(object())


def test_an_ended_rooms_bot_figures_stay_in_the_totals() -> None:
    totals, ended = RoomStats(), RoomStats()
    ended.bot_turns, ended.bot_tts_characters = 2, 30
    ended.bot_response.observe(0.8)
    ended.bot_added.observe(0.02)
    ended.bot_ttfb["ScriptLLM"] = service_buckets()
    ended.bot_ttfb["ScriptLLM"].observe(0.05)
    totals.absorb(ended)
    totals.absorb(ended)
    assert (totals.bot_turns, totals.bot_tts_characters) == (4, 60)
    assert totals.bot_response.count == 2
    assert totals.bot_added.count == 2
    assert totals.bot_ttfb["ScriptLLM"].count == 2
    assert totals.bot_ttfb["ScriptLLM"] is not ended.bot_ttfb["ScriptLLM"]


def test_the_bot_series_are_exported_per_process_and_per_room_within_the_cap() -> None:
    room_set = echo_room_set("a", "b", metrics={"max_room_series": 1})
    metrics = SupervisorMetrics(room_set, room_set.config.metrics)
    for name, ttfb in (("a", 0.02), ("b", 0.2)):
        room_set.room_spec(next(r for r in room_set.config.rooms if r.name == name))
        stats = room_set.stats[name]
        stats.bot_response.observe(0.9)
        stats.bot_added.observe(0.04)
        stats.bot_ttfb["ScriptLLM"] = service_buckets()
        stats.bot_ttfb["ScriptLLM"].observe(ttfb)
        stats.bot_llm_prompt_tokens, stats.bot_turns = 10, 1
    samples = rendered(metrics)
    assert samples["lksup_bot_response_seconds_bucket", (("le", "1.0"),)] == 2
    assert samples["lksup_bot_response_seconds_bucket", (("le", "0.75"),)] == 0
    assert samples["lksup_bot_added_seconds_bucket", (("le", "0.05"),)] == 2
    assert samples["lksup_bot_added_seconds_bucket", (("le", "0.025"),)] == 0
    assert samples["lksup_room_bot_added_seconds_sum", (("room", "a"),)] == pytest.approx(0.04)
    llm = (("processor", "ScriptLLM"),)
    assert samples["lksup_bot_ttfb_seconds_count", llm] == 2
    assert samples["lksup_bot_ttfb_seconds_bucket", (("le", "0.025"), *llm)] == 1
    assert samples["lksup_bot_llm_tokens_total", (("kind", "prompt"),)] == 20
    assert samples["lksup_bot_turns_total", ()] == 2
    assert samples["lksup_bot_interruptions_total", ()] == 0
    assert samples["lksup_room_bot_response_seconds_count", (("room", "a"),)] == 1
    assert samples["lksup_room_bot_ttfb_seconds_sum", (("processor", "ScriptLLM"), ("room", "a"))] \
        == pytest.approx(0.02)
    assert samples["lksup_room_bot_turns_total", (("room", "a"),)] == 1
    assert not any(dict(labels).get("room") == "b" for _, labels in samples)  # past the cap
