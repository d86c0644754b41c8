"""Built-in bots that need no outside service, and loading a bot named in config."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.settings import ServiceSettings

from actors.room import BotFactory, RoomTransport

_S = TypeVar("_S", bound=ServiceSettings)


class BotLoadError(Exception):
    """The configured `module:function` does not name a callable."""


def load_bot(path: str) -> BotFactory:
    """Import the factory `module:function` names, at start-up, so a typo fails early."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BotLoadError(f"cannot import module {module_name!r}: {err}") from err
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise BotLoadError(f"module {module_name!r} has no callable {attribute!r}")
    return factory


def prewarm(factories: Iterable[BotFactory]) -> list[str]:
    """Call `prewarm()` in each of the factories' modules that defines one, once a module.

    A process calls it before it takes a room, on a thread: what a bot loads once per
    process (its models) is then loaded before the first room, not inside it on the
    event loop every room shares (livekit-agents has `prewarm_fnc` for the same reason).
    Returns the names of the modules prewarmed.
    """
    names = dict.fromkeys(getattr(factory, "__module__", "") for factory in factories)
    warmed = []
    for name in names:
        warm = getattr(sys.modules.get(name), "prewarm", None)
        if callable(warm):
            warm()
            warmed.append(name)
    return warmed


def room_pipeline(
    transport: RoomTransport, *processors: FrameProcessor, metrics: bool = False
) -> PipelineWorker:
    """What a simple bot returns: input, its processors, output, at the room's rates."""
    return room_worker(
        transport, Pipeline([transport.input(), *processors, transport.output()]), metrics=metrics
    )


def room_worker(
    transport: RoomTransport, pipeline: Pipeline, *, metrics: bool = False
) -> PipelineWorker:
    """A built-in bot's pipeline, at the room's rates.

    `metrics` turns on pipecat's metrics and usage metrics, which the supervisor exports
    (`lksup_bot_*`) for bots whose services report them.
    """
    return pipeline_worker(
        pipeline,
        transport.settings.audio_in_sample_rate,
        transport.settings.audio_out_sample_rate,
        metrics=metrics,
    )


def pipeline_worker(
    pipeline: Pipeline, in_rate: int, out_rate: int, *, metrics: bool = False
) -> PipelineWorker:
    """A room bot's pipeline worker, whatever transport feeds it: the supervisor's
    bots, and the same pipeline on pipecat's own `LiveKitTransport` in the benchmarks'
    peers, run with the same settings.

    No idle timeout (a room bot waits for people as long as the room exists), no RTVI
    (the built-in bots speak plain data messages) and no turn tracking (the supervisor's
    bot metrics read turns from the frames; the tracking observer would only see every
    frame go by).
    """
    return PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=in_rate,
            audio_out_sample_rate=out_rate,
            enable_metrics=metrics,
            enable_usage_metrics=metrics,
        ),
        idle_timeout_secs=None,
        enable_rtvi=False,
        enable_turn_tracking=False,
    )


def unsupported_settings(settings: type[_S]) -> _S:
    """pipecat's settings of a service with every setting unsupported (None): pipecat
    logs an error for each one left unset, and the built-in services have none."""
    unset: dict[str, Any] = {f.name: None for f in dataclasses.fields(settings)}
    del unset["extra"]
    return settings(**unset)
