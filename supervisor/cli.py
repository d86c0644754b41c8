"""`supervisor`: the command line, parsed and handed to the command it names (the serving
process's life is `supervisor.lifecycle`). Exit codes: 0 clean, 1 runtime failure, 2 bad
usage or config."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import loguru

# pipecat logs through loguru and announces itself when imported: quiet it first, so
# a one-line error stays one line (`_setup_logging` sets the level the user asked for)
loguru.logger.remove()
loguru.logger.add(sys.stderr, level="WARNING")

import aiohttp  # noqa: E402
import anyio  # noqa: E402
from livekit import api  # noqa: E402

from supervisor import __version__  # noqa: E402
from supervisor.commands import check, print_targets, token  # noqa: E402
from supervisor.config import ConfigError, load_config  # noqa: E402
from supervisor.lifecycle import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, loop_options, run  # noqa: E402
from supervisor.livekit_server.server import LiveKitServerError  # noqa: E402
from supervisor.process.recycle import recycles  # noqa: E402
from supervisor.process.rtc_shutdown import release_rtc  # noqa: E402
from supervisor.process.workers import serve_workers, start_worker  # noqa: E402

log = logging.getLogger("supervisor")


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
