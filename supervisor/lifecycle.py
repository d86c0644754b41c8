"""A serving process's life: prewarm, serve the configured and dispatched rooms with the
metrics listener beside them, reload on SIGHUP, pass rooms to a successor when recycled,
drain on the first stop signal and stop on the second. `supervisor.cli` calls it."""

from __future__ import annotations

import logging
import math
import os
import signal
from pathlib import Path

import anyio
import attrs
from anyio.abc import ObjectReceiveStream

from actors import ActorRef, open_actor, single_errors
from supervisor.bots import prewarm
from supervisor.config import Config, ConfigError, RuntimeConfig, load_config
from supervisor.dispatch.agent_worker import dispatching
from supervisor.livekit_server.source import livekit_credentials
from supervisor.observability.http import serving_metrics
from supervisor.process.recycle import (
    RELEASE,
    RELEASED,
    SUCCEEDS_ENV,
    TAKE,
    Bounds,
    report,
    report_fd,
    tell_parent,
)
from supervisor.process.rooms import RoomSet
from supervisor.process.workers import STOP_SIGNALS, Shard

log = logging.getLogger("supervisor")

# the exit codes of every command (`supervisor.cli`)
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


async def run(path: Path, config: Config, shard: Shard = Shard()) -> int:
    """Serve until SIGINT or SIGTERM; SIGHUP reloads the config.

    The first stop signal drains: no new rooms, every bot gets an EndFrame, rooms leave,
    all within `supervision.shutdown_timeout_seconds`; a second one cancels at once.
    The signal receiver is installed before any work starts, so a Ctrl-C during
    start-up is not a KeyboardInterrupt halfway through. A worker (`--workers N`)
    serves only its `shard` of `config`'s rooms, on reload too; a recycled worker and
    its successor pass its configured rooms on when their parent says (`RELEASE`, `TAKE`).
    """
    result = EXIT_OK
    draining = anyio.Event()
    order_send, order_receive = anyio.create_memory_object_stream[signal.Signals](math.inf)
    # orders sent and not yet carried out: one of each is enough (a reload reads the file,
    # and a parent's order is sent once); the stream never fills, so none is dropped
    pending: set[signal.Signals] = set()
    fd = report_fd()
    recycled = (RELEASE, TAKE) if fd is not None else ()  # a parent may replace us
    handled = (*STOP_SIGNALS, signal.SIGHUP, *recycled)
    with anyio.open_signal_receiver(*handled) as signals, single_errors():
        async with anyio.create_task_group() as tasks:
            serving = anyio.CancelScope()

            async def watch_signals() -> None:
                nonlocal result
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum in (signal.SIGHUP, *recycled):
                        log.info("%s: %s", name, ORDERS.get(signum, f"reloading {path}"))
                        if signum not in pending:
                            pending.add(signum)
                            order_send.send_nowait(signum)
                    elif not draining.is_set():
                        log.info("%s: draining (a second signal stops at once)", name)
                        draining.set()
                    else:
                        log.warning("%s again: stopping at once", name)
                        result = EXIT_FAILURE
                        serving.cancel()

            tasks.start_soon(watch_signals)
            with serving:
                await _serve(path, config, shard, draining, order_receive, pending, fd)
            tasks.cancel_scope.cancel()
    return result


ORDERS = {
    RELEASE: "the successor serves: leaving it the configured rooms and the metrics port",
    TAKE: "the predecessor let go: taking the configured rooms and the metrics port",
}
"""What a recycled worker and its successor do on their parent's signals."""


async def _serve(
    path: Path,
    whole: Config,
    shard: Shard,
    draining: anyio.Event,
    orders: ObjectReceiveStream[signal.Signals],
    pending: set[signal.Signals],
    fd: int | None,
) -> None:
    """Serve `shard` of `whole` until `draining`, and carry out each of `orders` (taken
    out of `pending` as it starts): SIGHUP reloads the config, `RELEASE` and `TAKE` pass
    configured rooms on (`supervisor.process.recycle`), reporting to the parent on `fd`."""
    config = shard.of(whole)
    released = anyio.Event()
    if warmed := await anyio.to_thread.run_sync(prewarm, [bot.load for bot in config.bots]):
        log.info("prewarmed %s", ", ".join(warmed))
    async with livekit_credentials(config.livekit) as credentials:
        room_set = RoomSet(config, credentials)
        async with (
            # /metrics, /healthz, /readyz; the loop watchdog
            serving_metrics(
                config.metrics, config.watchdog, room_set, released, SUCCEEDS_ENV in os.environ
            ) as metrics,
            open_actor(room_set.supervisor_spec()) as rooms,
            dispatching(config, credentials, room_set, rooms) as worker,
        ):
            log.info(
                "ready: %d room(s) on %s with bot %s; Ctrl-C or SIGTERM drains",
                len(config.rooms),
                credentials.url,
                config.bot.factory,
            )
            async with anyio.create_task_group() as serving:
                serving.start_soon(_cancel_on, draining, serving.cancel_scope)
                if fd is not None:
                    room_set.recycle = Bounds(config.recycle, lambda: room_set.rooms_served)
                    serving.start_soon(report, fd, room_set.recycle, metrics.readiness)
                async for order in orders:
                    pending.discard(order)
                    if order == signal.SIGHUP:
                        await _reload(path, shard, room_set, rooms)
                    elif fd is not None and shard.configured == (order == RELEASE):
                        shard = attrs.evolve(shard, configured=order == TAKE)
                        await room_set.reload(rooms, shard.of(whole))
                        if order == RELEASE:
                            released.set()  # the listener lets its port go
                            tell_parent(fd, RELEASED)
            if worker is not None:
                await worker.drain()
            log.info("draining %d room(s)", len(room_set.config.rooms))


async def _cancel_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _reload(path: Path, shard: Shard, room_set: RoomSet, rooms: ActorRef) -> None:
    """Apply a new config's rooms; an invalid config is refused and the running set kept."""
    try:
        new = shard.of(load_config(path))
    except ConfigError as err:
        log.error("reload refused, keeping the running rooms: %s", err)
        return
    old = room_set.config
    fixed = (new.livekit, new.metrics, new.watchdog, new.dispatch)
    if fixed != (old.livekit, old.metrics, old.watchdog, old.dispatch):
        log.warning(
            "reload: [livekit], [metrics], [watchdog] and [dispatch] changes take effect at "
            "the next start"
        )
    started, stopped = await room_set.reload(rooms, new)
    log.info(
        "reloaded: %d started, %d stopped, %d rooms", len(started), len(stopped), len(new.rooms)
    )



def loop_options(runtime: RuntimeConfig) -> dict[str, object]:
    """anyio's asyncio backend options for `[runtime] event_loop` (the rooms' processes
    only: the parent of `--workers N` and `supervisor bench` keep asyncio's loop)."""
    if runtime.event_loop != "uvloop":
        return {}
    log.warning(
        "event loop: uvloop ([runtime] event_loop); the loop watchdog sees no stall under it"
    )
    return {"use_uvloop": True}
