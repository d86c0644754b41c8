"""The floor: a bare livekit rtc SDK echo loop, every room in one process.

    python -m benchmarks.echo_floor --rooms a,b,c [--sample-rate 16000] [--queue-ms 200]
                                    [--frame-ms 20]

Per room: join, publish an audio source, and for each subscribed audio track read an
`rtc.AudioStream` at the bot's rate and capture every frame into the source. Nothing
else: no actors, no pipeline, no metrics. No echo bot in Python can cost less per
room than this, so it is what the supervisor's cost is measured against.
"""

from __future__ import annotations

import sys

import anyio
from livekit import rtc

from benchmarks.baseline import BaselineOptions, Readiness, bot_token, main
from supervisor.livekit_server.access import Credentials
from supervisor.process.rtc_shutdown import end_room


async def echo(track: rtc.Track, source: rtc.AudioSource, options: BaselineOptions) -> None:
    stream = rtc.AudioStream(
        track, sample_rate=options.sample_rate, num_channels=1, frame_size_ms=options.frame_ms
    )
    try:
        async for event in stream:
            await source.capture_frame(event.frame)
    finally:
        with anyio.CancelScope(shield=True):
            await stream.aclose()


async def serve_room(
    credentials: Credentials, name: str, options: BaselineOptions, readiness: Readiness
) -> None:
    room = rtc.Room()
    source = rtc.AudioSource(options.sample_rate, 1, queue_size_ms=options.queue_ms)
    try:
        async with anyio.create_task_group() as tasks:

            def on_subscribed(track: rtc.Track, *_: object) -> None:
                if isinstance(track, rtc.RemoteAudioTrack):
                    tasks.start_soon(echo, track, source, options)

            room.on("track_subscribed", on_subscribed)
            await room.connect(credentials.url, bot_token(credentials, name))
            track = rtc.LocalAudioTrack.create_audio_track("bot-audio", source)
            publish = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            await room.local_participant.publish_track(track, publish)
            readiness.one_joined()
            await anyio.sleep_forever()
    finally:
        await end_room(room, source)  # each echo task closed its stream when cancelled


async def serve(credentials: Credentials, options: BaselineOptions) -> None:
    readiness = Readiness(len(options.rooms))
    async with anyio.create_task_group() as rooms:
        for name in options.rooms:
            rooms.start_soon(serve_room, credentials, name, options, readiness)


if __name__ == "__main__":
    main(sys.argv[1:], serve, __doc__.splitlines()[0])
