"""The echo bot as a livekit-agents worker: what a team runs today for rooms on demand.

    .venv-agents/bin/python benchmarks/agents_echo.py start [--drain-timeout S]

Run by `benchmarks/dispatch.py` in livekit-agents' own virtual environment (`make
agents-venv`; it pins an older rtc SDK than this project), so it imports nothing of
this project. The worker registers with the server named by LIVEKIT_URL (credentials in
LIVEKIT_API_KEY and LIVEKIT_API_SECRET, as the agents CLI reads them) for automatic
dispatch, and each job does what `echo_floor.py` does in a room: an `rtc.AudioStream`
of every subscribed audio track, at the bot's rate, captured into one `AudioSource`
published by the agent. Nothing else (no AgentSession, VAD or plugins), so what is
measured is livekit-agents' dispatch and job model, not a voice pipeline.

The agents CLI owns the command line, so the worker's options come from the
environment, each left at livekit-agents' default when its variable is unset: that
default is what a user gets, the variables are what a user would tune.

- AGENTS_ECHO_EXECUTOR: `process` (a process per job, the default on Linux) or `thread`
- AGENTS_ECHO_LOAD_THRESHOLD: the load above which the worker reports itself full (0.7)
- AGENTS_ECHO_IDLE_PROCESSES: job processes kept warm (the machine's core count)
- AGENTS_ECHO_LOAD: `machine` (the default: the whole machine's, or container's, CPU,
  so other work on the machine makes the worker full) or `worker` (the CPU of the
  worker's own process tree, jobs included, over the last LOAD_WINDOW seconds: what the
  supervisor's `[dispatch] load_threshold` measures, and what a user sharing a machine
  with other services would write as `load_fnc`)
- AGENTS_ECHO_HTTP_PORT: its health-check port (8081 in `start` mode; any free one here)
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
from typing import Any

import psutil
from livekit import rtc
from livekit.agents import AgentServer, AutoSubscribe, JobContext, JobExecutorType, cli

SAMPLE_RATE = 16_000
"""As the other echo bots: 16 kHz both ways, 20 ms frames, a 200 ms source buffer."""
FRAME_MS = 20
QUEUE_MS = 200
LOAD_WINDOW = 2.5
"""As livekit-agents' own load: a moving average over 2.5 s."""


class WorkerLoad:
    """The worker's own process tree's share of the machine's cores, over the last
    LOAD_WINDOW seconds. livekit-agents calls it from executor threads, every 0.5 s and
    at each job request: a window, not the time since the last call, keeps a burst of
    requests from reading a few milliseconds' noise."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._cores = psutil.cpu_count() or 1
        self._samples: collections.deque[tuple[float, float]] = collections.deque()
        self._lock = threading.Lock()

    def _cpu_seconds(self) -> float:
        total = 0.0
        for process in [self._process, *self._process.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.Error:  # a job process that just ended
                continue
            total += times.user + times.system
        return total

    def __call__(self) -> float:
        now, used = time.monotonic(), self._cpu_seconds()
        with self._lock:
            self._samples.append((now, used))
            while len(self._samples) > 2 and now - self._samples[1][0] >= LOAD_WINDOW:
                self._samples.popleft()
            then, before = self._samples[0]
        if now - then <= 0:
            return 0.0
        return min(1.0, max(0.0, (used - before) / (now - then) / self._cores))


def server_options() -> dict[str, Any]:
    """The AgentServer keyword arguments the environment sets; livekit-agents' own
    defaults for the rest."""
    options: dict[str, Any] = {}
    if executor := os.environ.get("AGENTS_ECHO_EXECUTOR"):
        options["job_executor_type"] = JobExecutorType(executor)
    if threshold := os.environ.get("AGENTS_ECHO_LOAD_THRESHOLD"):
        options["load_threshold"] = float(threshold)
    if idle := os.environ.get("AGENTS_ECHO_IDLE_PROCESSES"):
        options["num_idle_processes"] = int(idle)
    if os.environ.get("AGENTS_ECHO_LOAD") == "worker":
        options["load_fnc"] = WorkerLoad()
    if port := os.environ.get("AGENTS_ECHO_HTTP_PORT"):
        options["port"] = int(port)
    return options


server = AgentServer(**server_options())


async def echo(track: rtc.Track, source: rtc.AudioSource) -> None:
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=FRAME_MS)
    try:
        async for event in stream:
            await source.capture_frame(event.frame)
    finally:
        await stream.aclose()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=QUEUE_MS)
    echoes: set[asyncio.Task[None]] = set()

    def on_subscribed(track: rtc.Track, *_: object) -> None:
        if isinstance(track, rtc.RemoteAudioTrack):
            task = asyncio.create_task(echo(track, source))
            echoes.add(task)
            task.add_done_callback(echoes.discard)

    ctx.room.on("track_subscribed", on_subscribed)
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    track = rtc.LocalAudioTrack.create_audio_track("bot-audio", source)
    publish = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await ctx.room.local_participant.publish_track(track, publish)


if __name__ == "__main__":
    cli.run_app(server)
