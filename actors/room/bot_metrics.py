"""The bot's own figures, read from its pipecat pipeline into the room's `RoomStats`.

pipecat already measures a voice bot inside every pipeline run with `enable_metrics`
(and `enable_usage_metrics`): its services push `MetricsFrame`s (time to first byte,
processing time, LLM tokens, TTS characters), and the turn frames mark when the user
stopped speaking, when the bot spoke and when it was interrupted. `BotMetricsObserver`
is a pipecat observer, which the pipeline actor adds to a bot's worker that enables
those metrics: it sees each frame once (its first push), without being a processor of
the bot's pipeline, so a bot gets its series without any change to its code.

The response latency ends outside the pipeline, where the audio-out actor captures the
bot's audio into the room's source: the observer leaves the moment the user's speech
ended in `RoomStats.response_mark_ns`, and audio-out takes it with the next frame it
captures (`observe_response`). Neither actor knows of the other.

What a response spent beyond its services' own time (`lksup_bot_added_seconds`) is
the observer's alone: `Turn` keeps, from pushes' pipeline-clock timestamps, the turn's
phases and what the services reported for each, and closes at the bot's first audio
pushed to the output (`BotStartedSpeakingFrame`). That is the time one process serving
many rooms could add (its event loop late, a decoder shared and busy), which a service's
own time to first byte does not show, and where a process per call would add none.

Cost: pipecat's worker hands every frame pushed to each of its observers through a
queue of their own (a put and a task switch per frame), which is why the observer is
added only to bots that ask for metrics; what it does per frame is one dictionary
lookup by the frame's type. Audio-out pays one attribute read per captured frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any, cast

import attrs
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InterruptionFrame,
    MetricsFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import (
    LLMUsageMetricsData,
    ProcessingMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
    TurnMetricsData,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection

from actors.room.stats import RoomStats
from actors.room.timing import BucketCounts, service_buckets

MAX_PROCESSOR_LABELS = 8
"""Distinct processor labels a room keeps for its TTFB and processing times; a bot
with more services than this reports the rest as `other`."""
OTHER = "other"

_Handler = Callable[[FramePushed], None]


def metrics_enabled(worker: Any) -> bool:
    """Whether a bot's worker asked pipecat for metrics (`PipelineParams`)."""
    params = getattr(worker, "params", None)
    return bool(
        getattr(params, "enable_metrics", False) or getattr(params, "enable_usage_metrics", False)
    )


def processor_label(name: str) -> str:
    """A processor's label: its class name (pipecat names processors `Class#N`, one
    number per instance, which would make a new series per pipeline incarnation)."""
    return name.partition("#")[0] or OTHER


@attrs.define
class Turn:
    """One response in phases, for the time the process added to it.

    From the VAD's stop (it had waited its `stop_secs` of silence) to the turn's end,
    speech recognition and the turn model run side by side, so the longer of their own
    times is theirs; a turn the model judged unfinished ends at a timeout, a wait by
    design, and that phase then counts nothing. From the turn's end to the bot's first
    audio, the LLM and then the TTS run one after the other, so their times to first
    byte add up. What is left of each phase is the process's."""

    stopped_ns: int
    """The VAD's stop (pipeline clock); the turn's end if no VAD said it."""
    recognised: float = 0.0
    """The longest own time reported between the VAD's stop and the turn's end
    (recognition's processing, the turn model's prediction), seconds."""
    waited: bool = False
    """The turn model judged the speech unfinished: the turn ended at a timeout."""
    ended_ns: int | None = None
    answering: float = 0.0
    """The LLM's and TTS's times to first byte after the turn's end, seconds."""

    def added(self, spoke_ns: int) -> float | None:
        """Seconds the process added, the bot's first audio pushed at `spoke_ns`; None
        for a turn that never ended."""
        if self.ended_ns is None:
            return None
        answered = max(0.0, (spoke_ns - self.ended_ns) / 1e9 - self.answering)
        if self.waited:
            return answered
        return answered + max(0.0, (self.ended_ns - self.stopped_ns) / 1e9 - self.recognised)


def observe_response(stats: RoomStats) -> None:
    """The bot's audio was captured (audio-out): close the response the user awaits."""
    mark = stats.response_mark_ns
    if mark is not None:
        stats.response_mark_ns = None
        stats.bot_response.observe_ns(max(0, perf_counter_ns() - mark))


class BotMetricsObserver(BaseObserver):
    """Records a bot pipeline's metrics and turns into its room's `RoomStats`."""

    def __init__(self, stats: RoomStats, *, max_processors: int = MAX_PROCESSOR_LABELS) -> None:
        super().__init__(observe_every_push=False)
        self.stats = stats
        stats.response_mark_ns = None  # a new pipeline owes no answer to the last one's turn
        self._max_processors = max_processors
        self._handlers: dict[type[Frame], _Handler | None] = {}
        self._labels: dict[str, str] = {}
        self._bot_speaking = False
        self._vad_seen = False
        self._turn: Turn | None = None
        self._roles: dict[type, str | None] = {}

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if frame.broadcast_sibling_id is not None and data.direction is FrameDirection.UPSTREAM:
            return  # pushed both ways (`broadcast_frame`): its downstream copy counts
        kind = type(frame)
        try:
            handler = self._handlers[kind]
        except KeyError:
            handler = self._handlers[kind] = self._handler_for(kind)
        if handler is not None:
            handler(data)

    def _handler_for(self, kind: type[Frame]) -> _Handler | None:
        table: tuple[tuple[type[Frame], _Handler], ...] = (
            (MetricsFrame, self._metrics),
            (VADUserStartedSpeakingFrame, self._vad_started),
            (VADUserStoppedSpeakingFrame, self._vad_stopped),
            (UserStartedSpeakingFrame, self._user_started),
            (UserStoppedSpeakingFrame, self._user_stopped),
            (BotStartedSpeakingFrame, self._bot_started),
            (BotStoppedSpeakingFrame, self._bot_stopped),
            (InterruptionFrame, self._interrupted),
        )
        return next((handler for cls, handler in table if issubclass(kind, cls)), None)

    # --- turns ------------------------------------------------------------------------

    def _vad_started(self, data: FramePushed) -> None:
        self._vad_seen = True
        self.stats.response_mark_ns = None  # the user speaks on: no answer is due yet
        self._turn = None

    def _vad_stopped(self, data: FramePushed) -> None:
        """The speech ended `stop_secs` before the VAD said so (it waits for that much
        silence), and the VAD said so at the frame's wall-clock `timestamp`."""
        frame = cast(VADUserStoppedSpeakingFrame, data.frame)  # `_handler_for` chose
        self._vad_seen = True
        ago = time.time() - frame.timestamp + frame.stop_secs
        self.stats.response_mark_ns = perf_counter_ns() - max(0, round(ago * 1e9))
        self._turn = Turn(data.timestamp)

    def _user_started(self, data: FramePushed) -> None:
        if not self._vad_seen:  # else the VAD marks speech (a turn may start late)
            self.stats.response_mark_ns = None
            self._turn = None

    def _user_stopped(self, data: FramePushed) -> None:
        self.stats.bot_turns += 1
        if self.stats.response_mark_ns is None:  # no VAD: the turn end is the mark
            self.stats.response_mark_ns = perf_counter_ns()
        if self._turn is None:
            self._turn = Turn(data.timestamp)
        if self._turn.ended_ns is None:
            self._turn.ended_ns = data.timestamp

    def _bot_started(self, data: FramePushed) -> None:
        self._bot_speaking = True
        turn, self._turn = self._turn, None
        if turn is not None and (added := turn.added(data.timestamp)) is not None:
            self.stats.bot_added.observe(added)

    def _bot_stopped(self, data: FramePushed) -> None:
        self._bot_speaking = False

    def _interrupted(self, data: FramePushed) -> None:
        if self._bot_speaking:
            self.stats.bot_interruptions += 1
            self._bot_speaking = False  # once per utterance cut short

    # --- services ---------------------------------------------------------------------

    def _metrics(self, pushed: FramePushed) -> None:
        """A service's figures. A time of exactly 0 is no measurement: pipecat's worker
        announces every processor that reports metrics with one at start."""
        stats = self.stats
        frame = cast(MetricsFrame, pushed.frame)
        for data in frame.data:
            if isinstance(data, TTFBMetricsData) and data.value:
                self._histogram(stats.bot_ttfb, data.processor).observe(data.value)
                self._turn_part(pushed.source, data.value, first_byte=True)
            elif isinstance(data, ProcessingMetricsData) and data.value:
                self._histogram(stats.bot_processing, data.processor).observe(data.value)
                self._turn_part(pushed.source, data.value, first_byte=False)
            elif isinstance(data, TurnMetricsData) and (turn := self._turn) is not None:
                turn.waited |= not data.is_complete
                turn.recognised = max(turn.recognised, data.e2e_processing_time_ms / 1000)
            elif isinstance(data, LLMUsageMetricsData):
                stats.bot_llm_prompt_tokens += data.value.prompt_tokens
                stats.bot_llm_completion_tokens += data.value.completion_tokens
            elif isinstance(data, TTSUsageMetricsData):
                stats.bot_tts_characters += data.value

    def _turn_part(self, source: Any, seconds: float, *, first_byte: bool) -> None:
        """A service's own time, into the turn's phase it belongs to: recognition's
        processing before the turn's end, the LLM's and TTS's time to first byte after
        it (recognition's own time to first byte counts from the speech's end, so holds
        the VAD's wait and any queue: not the service's own)."""
        turn = self._turn
        if turn is None:
            return
        role = self._role(type(source))
        if role == "stt" and not first_byte and turn.ended_ns is None:
            turn.recognised = max(turn.recognised, seconds)
        elif role == "answer" and first_byte and turn.ended_ns is not None:
            turn.answering += seconds

    def _role(self, kind: type) -> str | None:
        """A processor class's part in a turn: recognition, answering (an LLM or a
        TTS), or none. The service classes are imported at the first metrics of a
        service, so a bot without services does not load them."""
        if kind not in self._roles:
            from pipecat.services.llm_service import LLMService
            from pipecat.services.stt_service import STTService
            from pipecat.services.tts_service import TTSService

            self._roles[kind] = (
                "stt" if issubclass(kind, STTService)
                else "answer" if issubclass(kind, (LLMService, TTSService))
                else None
            )  # fmt: skip
        return self._roles[kind]

    def _histogram(self, histograms: dict[str, BucketCounts], processor: str) -> BucketCounts:
        label = self._labels.get(processor)
        if label is None:
            label = self._labels[processor] = processor_label(processor)
        histogram = histograms.get(label)
        if histogram is None:
            if len(histograms) >= self._max_processors + (OTHER in histograms):
                label = OTHER
            histogram = histograms.setdefault(label, service_buckets())
        return histogram
