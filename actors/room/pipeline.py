"""The pipeline actor: hosts the bot, one incarnation per pipecat pipeline run.

Each incarnation builds a fresh `RoomTransport`, calls the bot factory with it, and
runs what the factory returns (a pipecat worker, i.e. a `PipelineTask`) under pipecat's
own `WorkerRunner`; a factory that runs its bot itself (as pipecat bots' `run_bot`
functions do) is simply awaited. A worker whose `PipelineParams` enable pipecat's
metrics gets an observer that records them into the room's stats
(`actors.room.bot_metrics`); a bot that runs itself keeps its metrics to itself. It
feeds the transport's input with the audio-in actor's frames and hands room events to
the transport's handlers.

Bot failures stay here: the factory raising, the bot's coroutine raising, or an
uncaught exception inside a processor (pipecat turns those into an `ErrorFrame` of
unknown cause) crash this actor only, and the room's supervisor restarts it. A bot
that ends its pipeline on its own exits normally and, being permanent, is started
again for the participants still in the room.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from pipecat.frames.frames import EndFrame, ErrorFrame, Frame, InputAudioRawFrame, SystemFrame
from pipecat.utils.errors import ErrorCategory
from pipecat.workers.runner import WorkerRunner

from actors import Actor
from actors.room.bot_metrics import BotMetricsObserver, metrics_enabled
from actors.room.frames import GetRoomFrame, RoomDisconnectedFrame
from actors.room.settings import RoomSettings
from actors.room.stats import RoomStats
from actors.room.timing import stamp_pipeline_in
from actors.room.transport import RoomTransport

log = logging.getLogger("actors.room")

DRAIN_SECONDS = 3.0


class BotCrashedError(RuntimeError):
    """The bot raised where pipecat would only have logged it."""


@dataclass
class BotFailedFrame(SystemFrame):
    """Sent to itself by the pipeline actor when pipecat reports an uncaught error."""

    error: ErrorFrame


def _is_crash(frame: ErrorFrame) -> bool:
    """An exception nobody handled: pipecat reports it with an unknown cause."""
    return frame.exception is not None and frame.category in (None, ErrorCategory.UNKNOWN)


class PipelineActor(Actor):
    """Runs the room's bot and feeds it."""

    def __init__(self, settings: RoomSettings, stats: RoomStats) -> None:
        self.settings = settings
        self.stats = stats
        self.transport: RoomTransport | None = None
        self._worker: Any = None
        self._bot_done = anyio.Event()

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        connection = self.sibling("connection")
        room = await connection.ask(GetRoomFrame())
        transport = RoomTransport(
            self.settings,
            self.stats,
            room,
            connection=connection,
            audio_out=self.sibling("audio_out"),
        )
        self.transport = transport
        self.tasks.start_soon(self._run_bot, transport)
        try:
            yield
        finally:
            await self._drain()
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                # The tree stops in reverse order, so the connection's own
                # RoomDisconnectedFrame would come after this actor is gone: this
                # incarnation's transport says goodbye itself (once; cleanup waits
                # for the handlers).
                await transport.dispatch(RoomDisconnectedFrame("client_initiated"))
                # pipecat's BaseObject.cleanup is not annotated
                await transport.cleanup()  # type: ignore[no-untyped-call]

    async def _run_bot(self, transport: RoomTransport) -> None:
        try:
            result = self.settings.bot(transport)
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                self._worker = result
                result.add_event_handler("on_pipeline_error", self._on_pipeline_error)
                if metrics_enabled(result):
                    result.add_observer(BotMetricsObserver(self.stats))
                transport.pace_with(result)
                runner = WorkerRunner(handle_sigint=False)
                await runner.add_workers(result)
                await runner.run()
        finally:
            self._bot_done.set()
        log.info("[%s] the bot ended its pipeline", self.settings.key)
        self.stop()

    async def _on_pipeline_error(self, worker: Any, frame: ErrorFrame) -> None:
        if _is_crash(frame):
            self.ref.tell_nowait(BotFailedFrame(frame))

    async def _drain(self) -> None:
        """On a clean stop, let the bot finish what it is saying: EndFrame, then wait."""
        if self._worker is None or self._bot_done.is_set():
            return
        with anyio.move_on_after(DRAIN_SECONDS):
            await self._worker.queue_frame(EndFrame())
            await self._bot_done.wait()

    async def receive(self, frame: Frame) -> Any:
        transport = self.transport
        assert transport is not None
        if isinstance(frame, InputAudioRawFrame):  # all the audio the audio-in actor sends
            stamp_pipeline_in(frame)  # the per-hop histograms (see actors.room.timing)
            await transport.push_audio(frame)
        elif isinstance(frame, BotFailedFrame):
            cause = frame.error.exception
            raise BotCrashedError(f"[{self.settings.key}] bot failed: {cause!r}") from cause
        else:
            await transport.dispatch(frame)
        return None
