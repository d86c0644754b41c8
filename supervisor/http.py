"""The metrics listener: `/metrics`, `/healthz` and `/readyz` on `[metrics] listen`.

An aiohttp server on the supervisor's own event loop (no thread, no thread per
request): a scrape reads the actor tree between two frames of any actor, so it sees
a consistent state without locks, and `/healthz` answering at all proves the loop
runs. Bound to loopback by default; expose it deliberately (`listen = "0.0.0.0:9464"`)
or through a Prometheus agent on the same host.

- `/metrics`: Prometheus text format, or OpenMetrics when the scraper asks for it.
- `/healthz`: 200 while the event loop runs tasks (the lag probe woke up recently).
- `/readyz`: 200 once every configured room runs, 503 before, with how many do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from aiohttp import web

from supervisor.config import MetricsConfig
from supervisor.metrics import SupervisorMetrics
from supervisor.rooms import RoomSet

log = logging.getLogger("supervisor")


def _text(ok: bool, body: str) -> web.Response:
    return web.Response(status=200 if ok else 503, text=body + "\n")


def metrics_app(metrics: SupervisorMetrics) -> web.Application:
    async def scrape(request: web.Request) -> web.Response:
        body, content_type = metrics.render(request.headers.get("Accept"))
        response = web.Response(body=body, headers={"Content-Type": content_type})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def healthz(request: web.Request) -> web.Response:
        return _text(*metrics.health())

    async def readyz(request: web.Request) -> web.Response:
        ready, detail = metrics.readiness()
        return _text(ready, ("ready: " if ready else "not ready: ") + detail)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="livekit supervisor: /metrics /healthz /readyz\n")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", index)
    return app


@asynccontextmanager
async def serving_metrics(config: MetricsConfig, room_set: RoomSet) -> AsyncIterator[SupervisorMetrics]:
    """Serve the endpoints (and run the event-loop lag probe) for the block's duration.

    A port already in use fails here, at start, with the OSError the CLI reports.
    """
    metrics = SupervisorMetrics(room_set, config)
    runner = web.AppRunner(
        metrics_app(metrics), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as err:  # say which setting to change
            raise OSError(err.errno, f"metrics.listen = {config.listen!r}: {err.strerror}") from err
        log.info("metrics on http://%s/metrics (and /healthz, /readyz)", config.listen)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(metrics.watch_event_loop)
            try:
                yield metrics
            finally:
                tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
