"""`supervisor`: the command line. Exit codes: 0 clean, 1 runtime failure, 2 bad usage or config."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import loguru

# pipecat logs through loguru and announces itself when imported: quiet it first, so
# a one-line error stays one line (`_setup_logging` sets the level the user asked for)
loguru.logger.remove()
loguru.logger.add(sys.stderr, level="WARNING")

import aiohttp  # noqa: E402
import anyio  # noqa: E402
import attrs  # noqa: E402
from anyio.abc import ObjectReceiveStream  # noqa: E402
from livekit import api  # noqa: E402

from actors import ActorRef, open_actor, single_errors  # noqa: E402
from supervisor import __version__  # noqa: E402
from supervisor.bots import prewarm  # noqa: E402
from supervisor.config import Config, ConfigError, RuntimeConfig, load_config  # noqa: E402
from supervisor.dispatch.agent_worker import dispatching  # noqa: E402
from supervisor.dispatch.fleet import fleet_room, probe_url  # noqa: E402
from supervisor.livekit_server.access import join_token  # noqa: E402
from supervisor.livekit_server.credentials import for_token, livekit_credentials  # noqa: E402
from supervisor.livekit_server.server import LiveKitServerError  # noqa: E402
from supervisor.observability.http import serving_metrics  # noqa: E402
from supervisor.observability.targets import file_sd, host_targets, is_loopback, srv_records  # noqa: E402
from supervisor.process.recycle import (  # noqa: E402
    RELEASE,
    RELEASED,
    SUCCEEDS_ENV,
    TAKE,
    Bounds,
    describe,
    recycles,
    report,
    report_fd,
    tell_parent,
)
from supervisor.process.rooms import RoomSet  # noqa: E402
from supervisor.process.rtc_shutdown import release_rtc  # noqa: E402
from supervisor.process.workers import STOP_SIGNALS, Shard, serve_workers, start_worker  # noqa: E402
from supervisor.web import tokens_off  # noqa: E402

log = logging.getLogger("supervisor")

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


def _web_line(config: Config) -> str:
    web = config.web
    if not web.enabled:
        return "try-it page: off"
    if web.access_secret:
        tokens = f"tokens for requests presenting ${web.access_secret_env}"
    elif tokens_off(web, config.metrics):
        tokens = "no tokens: the listen address is not loopback and no access secret is set"
    else:
        tokens = "tokens on loopback"
    return (f"try-it page: http://{config.metrics.listen}/ ({tokens}, "
            f"{web.tokens_per_minute} a minute per client)")


def check(config: Config) -> None:
    """Report what a valid config would run, without connecting anywhere."""
    print(f"config OK: {len(config.rooms)} room(s) on {config.livekit.url}")
    if config.livekit.cluster_urls:
        print(f"  cluster: also {', '.join(config.livekit.cluster_urls)} (the agent worker "
              "registers with every node)")
    print(f"  bot: {config.bot.factory} as {config.bot.identity!r}, "
          f"{config.bot.audio_in_sample_rate} Hz in, {config.bot.audio_out_sample_rate} Hz out, "
          f"{config.bot.audio_frame_ms} ms frames, VAD {'on' if config.bot.vad else 'off'}")
    sv = config.supervision
    print(f"  supervision: {sv.max_restarts} restarts within {sv.within_seconds:g} s per room, "
          f"backoff {sv.backoff_initial_seconds:g}..{sv.backoff_max_seconds:g} s, "
          f"quarantine {sv.quarantine_seconds:g} s, shutdown {sv.shutdown_timeout_seconds:g} s")
    mt = config.metrics
    per_room = (
        f"per-room series for up to {mt.max_room_series} rooms"
        if mt.per_room_labels
        else "no per-room series"
    )
    print(f"  metrics: http://{mt.listen}/metrics (and /healthz, /readyz, /status), {per_room}")
    wd = config.watchdog
    print(f"  watchdog: a loop stalled {wd.stall_seconds:g} s is logged and fails /healthz; "
          f"with --workers, a worker stalled {wd.restart_after_seconds:g} s is restarted")
    ds = config.dispatch
    if ds.enabled:
        offers = f"jobs for agent {ds.agent_name!r}" if ds.agent_name else "every new room"
        per = {"room": "a bot per room", "participant": "a bot per participant who joins",
               "publisher": "a bot per participant who publishes"}[ds.job_type]
        limit = f"{ds.max_duration_seconds:g} s" if ds.max_duration_seconds else "none"
        print(f"  dispatch: {offers}, {per}, up to {ds.max_rooms} job(s) or load "
              f"{ds.load_threshold:g}; accept hook {ds.accept or 'none'}; bot leaves "
              f"{ds.idle_timeout_seconds:g} s after the last participant; max duration {limit}; "
              f"drain {ds.drain_seconds:g} s")
        bot = config.dispatch_bot
        same = " (the [bot])" if ds.bot is None else ""
        print(f"  dispatched rooms' bot: {bot.factory}{same}, identity {bot.identity!r}"
              + (" plus the job's id" if ds.job_type != "room" else ""))
        print(f"  fleet: {fleet_room(ds.agent_name)!r}, restoring the jobs of a worker silent "
              f"{ds.restore_after_seconds:g} s whose probe does not answer; this one's probe "
              f"{probe_url(config)}" if ds.restore else "  fleet: off (restore = false)")
        print("  on SIGTERM: running jobs handed over to the fleet (handoff)" if ds.handoff
              else f"  on SIGTERM: running jobs go on here up to drain {ds.drain_seconds:g} s")
    else:
        print("  dispatch: off")
    print(f"  recycle: {describe(config)}")
    print(f"  {_web_line(config)}")
    for room in config.rooms:
        extras = [f"bot {room.bot.factory}"] if room.bot != config.bot else []
        extras += ["end-to-end encrypted"] if room.e2ee_key else []
        print(f"  room {room.name}{' (' + ', '.join(extras) + ')' if extras else ''}")


def print_targets(
    config: Config, workers: int, host: str | None, address: str | None, srv: str | None
) -> None:
    """This host's metrics endpoints on stdout, for Prometheus (`observability.targets`)."""
    found = host_targets(config, workers, host, address)
    if any(map(is_loopback, found)):
        print(f"supervisor: warning: {found[0].address} is a loopback address: only a "
              f"Prometheus on this host can scrape it (metrics.listen = "
              f"{config.metrics.listen!r}; for a fleet, listen on this host's address or "
              "0.0.0.0, or pass --address)", file=sys.stderr)
    print(srv_records(found, srv) if srv else file_sd(found), end="")


def token(config: Config, room: str, identity: str, ttl_hours: float) -> None:
    """Print a join token and the URL, for a person joining from a browser client."""
    credentials = for_token(config.livekit)
    jwt = join_token(credentials, room, identity, timedelta(hours=ttl_hours))
    print(f"url:   {credentials.url}")
    print(f"token: {jwt}")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supervisor",
        description="Run a pipecat voice bot in many LiveKit rooms from one supervised process.",
        epilog="Exit codes: 0 clean stop, 1 runtime failure, 2 bad usage or config.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="stdlib logging level (default: info); pipecat's own logs show at debug only",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_parser = sub.add_parser(
        "run",
        help="create the configured rooms and serve them",
        description="Join every configured room with the bot and keep them running. "
        "SIGINT/SIGTERM drain (a second one stops at once); SIGHUP reloads the config.",
    )
    run_parser.add_argument("config", type=Path, metavar="CONFIG", help="path to config.toml")
    run_parser.add_argument(
        "--workers", type=_positive_int, default=1, metavar="N",
        help="worker processes, each serving a stable shard of the rooms on its own metrics "
        "port (metrics port + index); the parent restarts dead ones and replaces those past "
        "[recycle]'s bounds (default: 1, no child unless [recycle] needs one)",
    )  # fmt: skip
    for hidden in ("--worker-index", "--worker-count"):  # how the parent starts a worker
        run_parser.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    check_parser = sub.add_parser(
        "check",
        help="validate a config and report it, without connecting",
        description="Check every key of CONFIG (and import the bot factory); exit 2 on an error.",
    )
    check_parser.add_argument("config", type=Path, metavar="CONFIG", help="path to config.toml")
    targets_parser = sub.add_parser(
        "targets",
        help="print this host's metrics endpoints for Prometheus' service discovery",
        description="Print, for `supervisor run CONFIG --workers N` on this host, each worker's "
        "metrics endpoint: Prometheus file_sd JSON labelled host and worker (default), or DNS "
        "SRV records with --srv. Connects nowhere.",
    )
    targets_parser.add_argument("config", type=Path, metavar="CONFIG", help="path to config.toml")
    targets_parser.add_argument(
        "--workers", type=_positive_int, default=1, metavar="N",
        help="the --workers this host runs with (default: 1)",
    )  # fmt: skip
    targets_parser.add_argument(
        "--host", metavar="NAME", help="the host label (default: this machine's host name)"
    )
    targets_parser.add_argument(
        "--address", metavar="ADDR",
        help="what Prometheus dials (default: metrics.listen's address, or this machine's "
        "fully qualified name when it listens on every address)",
    )  # fmt: skip
    targets_parser.add_argument(
        "--srv", metavar="NAME",
        help="print SRV records under NAME (e.g. _lksup._tcp.fleet.example.) instead of JSON",
    )
    token_parser = sub.add_parser(
        "token",
        help="print a join token and URL for a person",
        description="Mint a token for IDENTITY in ROOM with the configured server's credentials "
        "(the running embedded server's, or the environment variables the config names).",
    )
    token_parser.add_argument("room", metavar="ROOM")
    token_parser.add_argument("identity", metavar="IDENTITY")
    token_parser.add_argument(
        "--config", type=Path, default=Path("config.toml"), help="default: ./config.toml"
    )
    token_parser.add_argument("--ttl-hours", type=float, default=6.0, help="default: 6")
    bench_parser = sub.add_parser(
        "bench",
        help="load a running deployment: echo latency, join time, lost bursts",
        description="One simulated participant per room sends tone bursts and times the "
        "bot's echo (energy onset); prints a table, optionally writes JSON. Exit 1 if a room "
        "could not join or never heard the bot.",
    )
    bench_parser.add_argument("config", type=Path, metavar="CONFIG", help="path to config.toml")
    bench_parser.add_argument("--rooms", type=_positive_int, metavar="N",
                              help="load rooms bench-0..N-1 instead of the config's [[rooms]]")
    bench_parser.add_argument("--seconds", type=float, default=10.0, help="default: 10")
    bench_parser.add_argument("--late-ms", type=float, default=500.0,
                              help="an echo later than this is late (default: 500)")
    bench_parser.add_argument("--json", type=Path, metavar="PATH", help="also write JSON here")
    for sub_parser in (run_parser, check_parser, targets_parser, token_parser, bench_parser):
        sub_parser.add_argument(
            "--log-level", default=argparse.SUPPRESS, choices=["debug", "info", "warning", "error"],
            help="as the global --log-level",
        )
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pipecat logs through loguru, at DEBUG unless told otherwise; the rtc SDK logs two
    # or three INFO lines per connection (a hundred rooms: three hundred lines)
    debug = level == "debug"
    loguru.logger.remove()
    loguru.logger.add(sys.stderr, level="DEBUG" if debug else "WARNING")
    logging.getLogger("livekit").setLevel(logging.DEBUG if debug else logging.WARNING)


def loop_options(runtime: RuntimeConfig) -> dict[str, object]:
    """anyio's asyncio backend options for `[runtime] event_loop` (the rooms' processes
    only: the parent of `--workers N` and `supervisor bench` keep asyncio's loop)."""
    if runtime.event_loop != "uvloop":
        return {}
    log.warning(
        "event loop: uvloop ([runtime] event_loop); the loop watchdog sees no stall under it"
    )
    return {"use_uvloop": True}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        config = load_config(args.config)
        if args.command == "check":
            check(config)
            return EXIT_OK
        if args.command == "targets":
            print_targets(config, args.workers, args.host, args.address, args.srv)
            return EXIT_OK
        if args.command == "token":
            if not math.isfinite(args.ttl_hours) or args.ttl_hours <= 0:
                raise ConfigError(f"--ttl-hours {args.ttl_hours!r}: expected a number of hours > 0")
            token(config, args.room, args.identity, args.ttl_hours)
            return EXIT_OK
        if args.command == "bench":
            from supervisor import bench  # the load generator: not needed to serve

            options = bench.options_from(config, args.rooms, args.seconds, args.late_ms)
            return anyio.run(bench.run_bench, config, options, args.json, backend="asyncio")
        if args.worker_count is not None:
            shard = start_worker(args.worker_index or 0, args.worker_count, config)
            return anyio.run(
                run, args.config, config, shard,
                backend="asyncio", backend_options=loop_options(config.runtime),
            )  # fmt: skip
        if args.workers > 1 or recycles(config):
            clean = anyio.run(
                serve_workers, args.config, config, args.workers, args.log_level, backend="asyncio"
            )
            return EXIT_OK if clean else EXIT_FAILURE
        return anyio.run(
            run, args.config, config,
            backend="asyncio", backend_options=loop_options(config.runtime),
        )  # fmt: skip
    except ConfigError as err:
        print(f"supervisor: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (LiveKitServerError, api.TwirpError, aiohttp.ClientError, OSError) as err:
        log.error("%s: %s", type(err).__name__, err)
        return EXIT_FAILURE


def entry() -> int:
    """The `supervisor` process: `main`, then the rtc SDK's native runtime released
    before the interpreter exits, which it would otherwise abort (see
    `supervisor.process.rtc_shutdown`). Tests call `main` in their own process, whose runtime
    must live on."""
    try:
        return main()
    finally:
        release_rtc()


if __name__ == "__main__":
    sys.exit(entry())
