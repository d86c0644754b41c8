"""The metrics listener: `/metrics`, `/healthz`, `/readyz`, `/status` and the try-it page
on `[metrics] listen` (what each answers: docs/observability/index.md).

An aiohttp server on an event loop of its own, in a thread, so that it answers while
bot code blocks the supervisor's loop (see `supervisor.observability.watchdog`): `/healthz`
is the watchdog's verdict, read in the listener's thread, and turns 503 within
`watchdog.stall_seconds` of a stall. `/metrics`, `/readyz` and `/status` read the
actor tree, which only the supervisor's loop may do (between two frames of any actor,
a consistent state without locks): the listener hands them to that loop and waits up
to `stall_seconds`; while the loop is stalled they answer at once from the listener's
thread, `/metrics` with what can be read there (the stall gauge and counter, the
process and loop-lag series), `/readyz` with 503, `/status` with what it last read on
the loop, marked stale. Bound to loopback by default.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
from aiohttp import web

from supervisor.config import MetricsConfig, WatchdogConfig
from supervisor.observability.metrics import SupervisorMetrics
from supervisor.observability.status import Status
from supervisor.observability.watchdog import LoopWatchdog
from supervisor.process.rooms import RoomSet
from supervisor.web import TokenMinter, add_playground, known_rooms

log = logging.getLogger("supervisor")

T = TypeVar("T")


def _text(ok: bool, body: str) -> web.Response:
    return web.Response(status=200 if ok else 503, text=body + "\n")


PORT_RETRY_SECONDS = 0.1
"""How often a successor tries the port its predecessor is letting go."""

_pretty = functools.partial(json.dumps, indent=2)
"""`/status` is read by people (curl) as much as by scripts."""


class _OnLoop:
    """Runs a function on the supervisor's loop for the listener's thread, unless that
    loop is stalled."""

    def __init__(self, loop: asyncio.AbstractEventLoop, watchdog: LoopWatchdog) -> None:
        self.loop = loop
        self.watchdog = watchdog

    async def __call__(self, function: Callable[[], T]) -> T | None:
        """`function()` run on the supervisor's loop; None while the watchdog says the
        loop is stalled, or when it does not answer within `stall_seconds`."""
        if self.watchdog.stall is not None:
            return None
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if result.set_running_or_notify_cancel():  # False: the asker gave up
                try:
                    result.set_result(function())
                except Exception as err:  # noqa: BLE001 - raised in the asker's thread
                    result.set_exception(err)

        self.loop.call_soon_threadsafe(run)
        try:
            return await asyncio.wait_for(
                asyncio.wrap_future(result), self.watchdog.config.stall_seconds
            )
        except TimeoutError:
            return None

    def why_not(self) -> str:
        """Why the last call got no answer."""
        healthy, detail = self.watchdog.health()
        return "the event loop did not answer in time" if healthy else detail


def metrics_app(metrics: SupervisorMetrics, status: Status, on_loop: _OnLoop) -> web.Application:
    async def scrape(request: web.Request) -> web.Response:
        accept = request.headers.get("Accept")
        answer = await on_loop(lambda: metrics.render(accept))
        body, content_type = answer or metrics.render(accept, stalled=True)
        response = web.Response(body=body, headers={"Content-Type": content_type})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def healthz(request: web.Request) -> web.Response:
        return _text(*metrics.watchdog.health())

    async def readyz(request: web.Request) -> web.Response:
        answer = await on_loop(metrics.readiness)
        ready, detail = answer or (False, on_loop.why_not())
        return _text(ready, ("ready: " if ready else "not ready: ") + detail)

    async def status_json(request: web.Request) -> web.Response:
        document = await on_loop(status.read) or status.stalled(on_loop.why_not())
        return web.json_response(document, dumps=_pretty)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="livekit supervisor: /metrics /healthz /readyz /status\n")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status_json)
    room_set = status.room_set
    config = room_set.config
    if config.web.enabled:
        minter = TokenMinter(config.web, config.metrics, config.dispatch, room_set.credentials)
        add_playground(app, minter, lambda: on_loop(lambda: known_rooms(room_set)))
    else:
        app.router.add_get("/", index)
    return app


class _Listener:
    """The aiohttp server, run by its own thread on its own event loop."""

    def __init__(self, config: MetricsConfig, app: web.Application, wait_for_port: bool) -> None:
        self.config = config
        self.app = app
        self.wait_for_port = wait_for_port
        self.loop = asyncio.new_event_loop()
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, name="metrics-listener", daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as err:  # noqa: BLE001 - its owner is in another thread
            if self.started.done():
                log.error("the metrics listener failed: %r", err)
            else:
                self.started.set_exception(err)  # the start failed: serving_metrics raises it
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            if self.wait_for_port:  # a successor: the worker it replaces is letting go
                self.started.set_result(None)
            site = web.TCPSite(runner, self.config.host, self.config.port)
            while True:
                try:
                    await site.start()
                    break
                except OSError as err:
                    if not (self.wait_for_port and err.errno == errno.EADDRINUSE):
                        raise self.config.cannot_listen(err) from err
                    await site.stop()  # a site that failed to start stays registered
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), PORT_RETRY_SECONDS)
                if self._stop.is_set():
                    return
            log.info("metrics on http://%s/metrics (and /healthz, /readyz, /status)",
                     self.config.listen)
            if not self.started.done():
                self.started.set_result(None)
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # its loop is closed: it ended already
            self.loop.call_soon_threadsafe(self._stop.set)


async def _stop_on(release: anyio.Event, listener: _Listener) -> None:
    await release.wait()
    listener.stop()
    log.info("metrics listener on %s closed: the successor takes the port", listener.config.listen)


@asynccontextmanager
async def serving_metrics(
    config: MetricsConfig,
    watchdog_config: WatchdogConfig,
    room_set: RoomSet,
    release: anyio.Event | None = None,
    wait_for_port: bool = False,
) -> AsyncIterator[SupervisorMetrics]:
    """Serve the endpoints, run the loop watchdog (the lag probe) and time the garbage
    collector's pauses for the block's duration.

    A port already in use fails here, at start, with the OSError the CLI reports, unless
    `wait_for_port` (a recycled worker's successor, `supervisor.process.recycle`): then the
    port is taken as soon as it is free. `release` set closes the listener early, for
    the successor (the process goes on without its endpoints).
    """
    metrics = SupervisorMetrics(room_set, config, watchdog_config)
    on_loop = _OnLoop(asyncio.get_running_loop(), metrics.watchdog)
    with metrics.gc_pauses.installed():
        async with anyio.create_task_group() as tasks:
            await tasks.start(metrics.watchdog.run)
            status = Status(metrics, room_set)
            listener = _Listener(config, metrics_app(metrics, status, on_loop), wait_for_port)
            listener.thread.start()
            try:
                await asyncio.wrap_future(listener.started)
                if release is not None:
                    tasks.start_soon(_stop_on, release, listener)
                yield metrics
            finally:
                listener.stop()
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(listener.thread.join)
                tasks.cancel_scope.cancel()
