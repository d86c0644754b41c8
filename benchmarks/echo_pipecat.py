"""The usual alternative: pipecat's own `LiveKitTransport`, one pipeline per room, all
in one process.

    python -m benchmarks.echo_pipecat --rooms a,b,c [--sample-rate 16000] [--queue-ms 200]
                                      [--frame-ms 20]

What a team writes without the supervisor: for each room a `LiveKitTransport`, the
same echo processor the supervisor's echo bot runs between `input()` and `output()`,
and one `WorkerRunner` running every room's `PipelineWorker`, with the worker settings
of the supervisor's `room_pipeline` (no idle timeout, no RTVI, no turn tracking). The
transport gets the supervisor's output settings (output chunks of `--frame-ms`, the same
audio source buffer; its input reads the SDK's 10 ms frames, which it does not let a bot
change) and the same rates, so the two differ only in how they move audio, not
in how they are tuned; pipecat's logging is quieted to warnings, as the supervisor's.
"""

from __future__ import annotations

import sys
from typing import Any

import loguru

loguru.logger.remove()
loguru.logger.add(sys.stderr, level="WARNING")

import anyio  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.transports.livekit.transport import LiveKitParams, LiveKitTransport  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from benchmarks.baseline import BaselineOptions, Readiness, bot_token, main  # noqa: E402
from supervisor.bots.echo import EchoProcessor  # noqa: E402
from supervisor.livekit_server.access import Credentials  # noqa: E402

STOP_SECONDS = 15.0


def pipecat_transport(
    credentials: Credentials, room: str, rate: int, **params: Any
) -> LiveKitTransport:
    """pipecat's own transport in `room`, as the benchmarks' pipecat peers build it:
    audio in and out at `rate`, and `params` beyond that."""
    return LiveKitTransport(
        credentials.url,
        bot_token(credentials, room),
        room,
        params=LiveKitParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_in_sample_rate=rate,
            audio_out_sample_rate=rate,
            **params,
        ),
    )


def echo_worker(
    credentials: Credentials, name: str, options: BaselineOptions, readiness: Readiness
) -> PipelineWorker:
    rate = options.sample_rate
    transport = pipecat_transport(
        credentials, name, rate,
        audio_out_10ms_chunks=options.frame_ms // 10,
        audio_out_queue_size_ms=options.queue_ms,
    )  # fmt: skip

    @transport.event_handler("on_connected")
    async def on_connected(_transport: LiveKitTransport) -> None:
        readiness.one_joined()

    return PipelineWorker(
        Pipeline([transport.input(), EchoProcessor(), transport.output()]),
        params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
        idle_timeout_secs=None,
        enable_rtvi=False,
        enable_turn_tracking=False,
    )


async def serve(credentials: Credentials, options: BaselineOptions) -> None:
    """Run every room's pipeline until cancelled, then cancel them as pipecat's own
    signal handling would, letting each transport leave its room."""
    readiness = Readiness(len(options.rooms))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(
        *(echo_worker(credentials, name, options, readiness) for name in options.rooms)
    )

    # shielded: the runner's own teardown must not be cut short by our cancellation;
    # bounded once it has begun
    running = anyio.CancelScope(shield=True)

    async def run() -> None:
        with running:
            await runner.run(auto_end=False)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        try:
            await anyio.sleep_forever()
        finally:
            await runner.cancel()  # never suspends: sets the runner's shutdown event
            running.deadline = anyio.current_time() + STOP_SECONDS


if __name__ == "__main__":
    main(sys.argv[1:], serve, __doc__.splitlines()[0])
