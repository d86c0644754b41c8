"""What the two baseline echo bots share: their command line, their tokens, their log.

A baseline is what a team would run instead of the supervisor, as one process serving
many rooms: `echo_floor.py` (the bare rtc SDK) and `echo_pipecat.py` (pipecat's own
`LiveKitTransport`). The harness (`echo.py`) starts one as a child process, like it
starts `supervisor run`, and reads two lines from its stderr: `joining N room(s)`
when it starts connecting and `ready: N room(s)` once every room is joined. The
credentials come from the environment only (LIVEKIT_URL, LIVEKIT_API_KEY,
LIVEKIT_API_SECRET), as the supervisor's workers get theirs: never on a command line.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio
import attrs

from supervisor.livekit_server.access import Credentials, join_token
from supervisor.process.rtc_shutdown import release_rtc

IDENTITY = "bot"
"""The identity the load generator listens for, as the supervisor's default bot has."""


@attrs.frozen
class BaselineOptions:
    rooms: tuple[str, ...]
    sample_rate: int
    """The bot's audio rate both ways (the SDK resamples to and from the room's 48 kHz)."""
    queue_ms: int
    """The audio source's buffer, as the supervisor's `audio_out_queue_ms`."""
    frame_ms: int = 20
    """Audio per frame, as the supervisor's `audio_frame_ms`."""


def say(line: str) -> None:
    """One progress line on stderr, where the harness reads it."""
    print(line, file=sys.stderr, flush=True)


def credentials_from_environment() -> Credentials:
    return Credentials(
        os.environ["LIVEKIT_URL"], os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"]
    )


def bot_token(credentials: Credentials, room: str) -> str:
    return join_token(credentials, room, IDENTITY)


class Readiness:
    """Says `ready` once every room has joined (rooms join concurrently)."""

    def __init__(self, rooms: int) -> None:
        self.rooms = rooms
        self.joined = 0
        say(f"joining {rooms} room(s)")

    def one_joined(self) -> None:
        self.joined += 1
        if self.joined == self.rooms:
            say(f"ready: {self.rooms} room(s)")


def main(
    argv: Sequence[str] | None,
    serve: Callable[[Credentials, BaselineOptions], Awaitable[None]],
    description: str,
) -> None:
    """Parse `--rooms a,b,c --sample-rate R --queue-ms Q --frame-ms F` and serve until SIGTERM or
    SIGINT, which cancel `serve` so that every room is left cleanly."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rooms", required=True, help="comma-separated room names")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--queue-ms", type=int, default=200)
    parser.add_argument("--frame-ms", type=int, default=20)
    args = parser.parse_args(argv)
    options = BaselineOptions(
        tuple(args.rooms.split(",")), args.sample_rate, args.queue_ms, args.frame_ms
    )
    try:
        anyio.run(
            _until_signalled, serve, credentials_from_environment(), options, backend="asyncio"
        )
    finally:
        release_rtc()  # as `supervisor` does: the interpreter's exit would otherwise abort


async def _until_signalled(
    serve: Callable[[Credentials, BaselineOptions], Awaitable[None]],
    credentials: Credentials,
    options: BaselineOptions,
) -> None:
    async with anyio.create_task_group() as tasks:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            tasks.start_soon(serve, credentials, options)
            async for _ in signals:
                tasks.cancel_scope.cancel()
                break
    say("stopped")
