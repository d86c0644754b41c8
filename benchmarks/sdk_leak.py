"""The rtc SDK's native memory grows with rooms that lived side by side: a reproducer.

    LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... \
        python benchmarks/sdk_leak.py --lifetimes 150 --concurrency 4 --usage capture

Each lifetime connects an `rtc.Room` to a room of its own, new, and by `--usage`:
`connect` holds it `--hold` seconds; `publish` also publishes an audio track
(`AudioSource` + `LocalAudioTrack`); `capture` also captures silence into it for the
hold; `stream` also has a peer `rtc.Room` (same process) join, subscribe to that track
and read it with an `AudioStream`. Then it disconnects, and nothing of it stays alive.
`--concurrency C` lifetimes overlap; `--resident` keeps one more room connected, idle,
beside them all. A line per lifetime gives the process's RSS and
glibc's own count of the bytes malloc has handed out and not had back (`mallinfo2`):
RSS growing while that count stays flat is memory freed but kept by the allocator
(fragmentation), both growing is memory never freed; the SDK's live native handles
and the interpreter's tracked objects say whether Python still holds any of it.

Stand-alone on purpose (only `livekit` and `livekit-api`), so it runs in any venv with
any SDK version and can go to an upstream issue as it is; `benchmarks/churn.py sdk`
runs it as a child process and samples it from outside.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import sys
import time
import uuid
from importlib import metadata

from livekit import api, rtc
from livekit.rtc import _ffi_client

USAGES = ("connect", "publish", "capture", "stream")
"""Each adds to the one before it."""
SAMPLE_RATE = 48_000
FRAME_MS = 10
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                     "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


_libc = ctypes.CDLL(None)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES / 1e6


def heap_in_use_mb() -> float | None:
    """Bytes glibc's malloc has handed out and not had back (every arena, plus mmapped
    blocks); None where malloc is not glibc's (an LD_PRELOADed jemalloc answers zeros)."""
    mallinfo2 = getattr(_libc, "mallinfo2", None)
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    used = info.uordblks + info.hblkhd
    return used / 1e6 if used else None


def live_handles() -> int:
    """Native handles the SDK's Python side still holds (its own weak set of them): a
    handle kept alive there keeps its native object alive, a leak on the Python side."""
    return len(getattr(_ffi_client, "_live_handles", ()))


def token(name: str, identity: str) -> str:
    return (
        api.AccessToken()
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=name))
        .to_jwt()
    )


def room_options(args: argparse.Namespace) -> rtc.RoomOptions:
    """The SDK's defaults, but with `--gather-once` ICE candidates gathered once per
    connection instead of continually (the supervisor's setting)."""
    if not args.gather_once:
        return rtc.RoomOptions()
    once = rtc.ContinualGatheringPolicy.GATHER_ONCE
    return rtc.RoomOptions(rtc_config=rtc.RtcConfiguration(continual_gathering_policy=once))


async def _subscribed(peer: rtc.Room) -> rtc.RemoteAudioTrack:
    found: asyncio.Future[rtc.RemoteAudioTrack] = asyncio.get_running_loop().create_future()

    def on_subscribed(track: rtc.Track, *_: object) -> None:
        if isinstance(track, rtc.RemoteAudioTrack) and not found.done():
            found.set_result(track)

    peer.on("track_subscribed", on_subscribed)
    return await asyncio.wait_for(found, 15)


async def _read(stream: rtc.AudioStream) -> None:
    async for _ in stream:
        pass


async def lifetime(index: int, args: argparse.Namespace) -> None:
    """One room's life; `args.unpublish` unpublishes the track, then `args.aclose` closes
    the stream and the source, before leaving."""
    level = USAGES.index(args.usage)
    name = f"leak-{uuid.uuid4().hex[:8]}-{index}"
    room, peer = rtc.Room(), rtc.Room() if args.usage == "stream" else None
    source: rtc.AudioSource | None = None
    publication: rtc.LocalTrackPublication | None = None
    stream: rtc.AudioStream | None = None
    reader: asyncio.Task[None] | None = None
    await room.connect(args.url, token(name, "a"), room_options(args))
    try:
        if level >= USAGES.index("publish"):
            source = rtc.AudioSource(SAMPLE_RATE, 1)
            track = rtc.LocalAudioTrack.create_audio_track("mic", source)
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            publication = await room.local_participant.publish_track(track, options)
        if peer is not None:
            await peer.connect(args.url, token(name, "b"), room_options(args))
            remote = await _subscribed(peer)
            stream = rtc.AudioStream(remote, sample_rate=SAMPLE_RATE, num_channels=1)
            reader = asyncio.create_task(_read(stream))
        if source is not None and level >= USAGES.index("capture"):
            samples = SAMPLE_RATE * FRAME_MS // 1000
            silence = rtc.AudioFrame.create(SAMPLE_RATE, 1, samples)
            for _ in range(int(args.hold * 1000 / FRAME_MS)):
                await source.capture_frame(silence)
        else:
            await asyncio.sleep(args.hold)
    finally:
        if args.unpublish and publication is not None:
            await room.local_participant.unpublish_track(publication.sid)
        if args.aclose:
            for media in (stream, source):
                if media is not None:
                    await media.aclose()
        if reader is not None:
            reader.cancel()
        if peer is not None:
            await peer.disconnect()
        await room.disconnect()


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Every lifetime, `args.concurrency` at a time, a line after each."""
    limiter = asyncio.Semaphore(args.concurrency)
    start = rss_mb()
    done = 0
    trim = getattr(_libc, "malloc_trim", None) if args.malloc_trim else None

    async def one(index: int) -> None:
        nonlocal done
        async with limiter:
            await lifetime(index, args)
            done += 1
            if args.collect:
                gc.collect()
            if trim is not None:
                trim(0)
            heap = heap_in_use_mb()
            print(f"lifetime {done} rss_mb {rss_mb():.1f} heap_mb "
                  f"{'-' if heap is None else f'{heap:.1f}'} handles {live_handles()} "
                  f"objects {len(gc.get_objects())}", flush=True)

    resident = rtc.Room()
    if args.resident:
        await resident.connect(args.url, token(f"leak-resident-{uuid.uuid4().hex[:8]}", "r"))
    await asyncio.gather(*(one(index) for index in range(args.lifetimes)))
    await resident.disconnect()
    await asyncio.sleep(args.linger)
    end = rss_mb()
    return {
        "usage": args.usage, "concurrency": args.concurrency, "lifetimes": args.lifetimes,
        "rss_start_mb": round(start, 1), "rss_end_mb": round(end, 1),
        "mb_per_lifetime": round((end - start) / args.lifetimes, 3),
        "heap_end_mb": heap_in_use_mb(),
        "livekit": metadata.version("livekit"),
    }


def parser() -> argparse.ArgumentParser:
    """The reproducer's switches; `benchmarks/churn.py sdk` passes them through."""
    found = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    found.add_argument("--url", default=os.environ.get("LIVEKIT_URL", "ws://127.0.0.1:7880"))
    found.add_argument("--lifetimes", type=int, default=150)
    found.add_argument("--concurrency", type=int, default=4)
    found.add_argument("--usage", choices=USAGES, default="capture")
    found.add_argument("--hold", type=float, default=1.0, help="seconds a room lives")
    found.add_argument("--linger", type=float, default=0.0,
                       help="seconds to stay after the last lifetime (for an outside sampler)")
    found.add_argument("--resident", action="store_true",
                       help="one more room, connected (idle) through every lifetime")
    found.add_argument("--gather-once", action="store_true",
                       help="ICE candidates gathered once, not continually")
    found.add_argument("--unpublish", action="store_true",
                       help="unpublish the track before disconnecting")
    found.add_argument("--aclose", action="store_true",
                       help="aclose() the AudioStream and AudioSource before disconnecting")
    found.add_argument("--collect", action="store_true", help="gc.collect() after each lifetime")
    found.add_argument("--malloc-trim", action="store_true",
                       help="glibc malloc_trim(0) after each lifetime")
    return found


def main() -> int:
    args = parser().parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)
    # The SDK's own atexit dispose can abort the process (a native callback meeting the
    # interpreter's finalization: supervisor/process/rtc_shutdown.py): dispose while it is whole.
    _ffi_client.FfiClient.instance._dispose()
    time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
