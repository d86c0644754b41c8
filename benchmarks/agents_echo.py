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

Its options come from AGENTS_ECHO_* variables (see `agents_options.py`: executor,
load threshold, idle processes, load measure, health-check port), each left at
livekit-agents' default when unset.
"""

from __future__ import annotations

import asyncio

from agents_options import server_options
from livekit import rtc
from livekit.agents import AgentServer, AutoSubscribe, JobContext, cli

SAMPLE_RATE = 16_000
"""As the other echo bots: 16 kHz both ways, 20 ms frames, a 200 ms source buffer."""
FRAME_MS = 20
QUEUE_MS = 200

server = AgentServer(**server_options("AGENTS_ECHO"))


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
