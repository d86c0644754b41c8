"""pipecat's way for the conversations benchmark: one bot process per call, each on
pipecat's own `LiveKitTransport`, started by a small runner.

    python -m benchmarks.pipecat_voice runner [--bot supervisor.bots.voice:create_bot]
                                              [--sample-rate 16000]
    python -m benchmarks.pipecat_voice bot --room NAME [--bot ...] [--sample-rate 16000]

pipecat's maintainers advise a process per call (pipecat#764, #910) and its runner
starts one per session request. Here the runner is that session endpoint: it reads a
room name a line on stdin (the harness writes one as each caller creates its room),
starts `bot --room NAME` for it, and on SIGTERM or the end of stdin stops every bot
still running. The runner is the root of the process tree the harness measures.

A bot builds the same cascade the supervisor hosts: the `conversation(input, output)`
function of the module `--bot` names (the voice bot's), between its
transport's input and output, with the supervisor's worker settings and pipecat's
metrics on, and one decoder (in a process of its own, as the supervisor's are: run L, the
first run, had it on a thread of the bot's process); it leaves when its caller does, as
pipecat's examples do. Credentials come from the environment only (LIVEKIT_URL,
LIVEKIT_API_KEY, LIVEKIT_API_SECRET).
"""

from __future__ import annotations

import sys

import loguru

loguru.logger.remove()
loguru.logger.add(sys.stderr, level="WARNING")

import argparse  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import anyio  # noqa: E402

from benchmarks.baseline import credentials_from_environment, say  # noqa: E402
from benchmarks.echo import stop_process  # noqa: E402
from supervisor.process.rtc_shutdown import release_rtc  # noqa: E402

READY = "pipecat runner ready"
"""The runner's line once it reads rooms: the harness waits for it."""
STOP_SECONDS = 10.0
STDIN = 0
DEFAULT_BOT = "supervisor.bots.voice:create_bot"


async def bot(room: str, bot_path: str, rate: int) -> None:
    """One call: join `room` on pipecat's transport and converse until the caller leaves."""
    from pipecat.transports.livekit.transport import LiveKitTransport
    from pipecat.workers.runner import WorkerRunner

    from benchmarks.echo_pipecat import pipecat_transport
    from supervisor.bots import pipeline_worker
    from supervisor.bots.recognizer import Recognizer

    module = importlib.import_module(bot_path.partition(":")[0])
    credentials = credentials_from_environment()
    transport = pipecat_transport(credentials, room, rate)
    worker = pipeline_worker(
        # one decoder for its one call (the supervisor's pool of two serves every room)
        module.conversation(transport.input(), transport.output(), recognizer=Recognizer(1)),
        rate, rate, metrics=True,
    )
    runner = WorkerRunner(handle_sigint=True, handle_sigterm=True)

    @transport.event_handler("on_participant_left")
    async def on_participant_left(_transport: LiveKitTransport, *_args: object) -> None:
        await runner.cancel()

    await runner.add_workers(worker)
    await runner.run()


async def _one_call(room: str, bot_path: str, rate: int) -> None:
    command = [sys.executable, "-m", "benchmarks.pipecat_voice", "bot", "--room", room,
               "--bot", bot_path, "--sample-rate", str(rate)]  # fmt: skip
    # its output is the runner's, which the harness reads
    process = await anyio.open_process(
        command, stdin=subprocess.DEVNULL, stdout=None, stderr=None
    )
    try:
        await process.wait()
    finally:
        await stop_process(process, STOP_SECONDS)


async def runner(bot_path: str, rate: int) -> None:
    """A bot process per room named on stdin, until SIGTERM or stdin's end; then every
    bot still running is stopped (each leaves its room)."""
    async with anyio.create_task_group() as calls:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def on_signal() -> None:
                async for _ in signals:
                    calls.cancel_scope.cancel()

            calls.start_soon(on_signal)
            say(READY)
            buffer = b""
            while True:
                # waited for, not read in a thread: a signal must not wait for a line
                await anyio.wait_readable(STDIN)
                if not (chunk := os.read(STDIN, 4096)):
                    break
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    if room := line.decode().strip():
                        calls.start_soon(_one_call, room, bot_path, rate)
            calls.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("runner", "bot"))
    parser.add_argument("--room", help="the room a bot joins (bot mode)")
    parser.add_argument("--bot", default=DEFAULT_BOT,
                        help="module:function of a bot whose module has conversation()")
    parser.add_argument("--sample-rate", type=int, default=16_000)
    args = parser.parse_args(argv)
    if args.mode == "runner":
        anyio.run(runner, args.bot, args.sample_rate, backend="asyncio")
        return 0
    if not args.room:
        parser.error("bot mode needs --room")
    try:
        anyio.run(bot, args.room, args.bot, args.sample_rate, backend="asyncio")
    finally:
        release_rtc()  # as `supervisor` does: the interpreter's exit would otherwise abort
    return 0


if __name__ == "__main__":
    sys.exit(main())
