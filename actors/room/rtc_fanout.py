"""The rtc SDK's event fan-out, narrowed to what a room listens for.

The SDK's runtime hands every event to every subscriber of one process-wide queue
(`FfiQueue.put`, on the runtime's thread, each delivery a `call_soon_threadsafe`), and
each `rtc.Room` subscribes to every event but the audio and video stream ones. So each
room's listening task also wakes for every other room's capture callbacks: one per
frame the bot sends (50 a second at 20 ms), in every talking room, delivered to every room of the
process, then handed on through the room's own queue. No room needs them (each
`capture_frame` waits for its own callback through a subscription of its own), yet
they make a process's Python work grow with talking rooms times rooms: 25 idle rooms
beside 5 talking ones added two fifths to the talking rooms' CPU and Python loop and
moved their internal p50 from 3 to 7.5 ms; narrowed, a sixth (the idle rooms' own
upkeep) and 3 ms (docs/benchmarks/runs/06-run-h.md). A narrowed room hears what it did
before less those callbacks.

This reaches into two private names of the SDK (`FfiQueue._subscribers` and `_lock`,
`Room._ffi_queue`); tests/livekit/test_rtc_fanout.py fails if they change, and until
then a room whose subscription is not found keeps the SDK's filter (logged once).
"""

from __future__ import annotations

import logging

from livekit import rtc
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2

log = logging.getLogger("actors.room")

NOT_FOR_ROOMS = frozenset({"audio_stream_event", "video_stream_event", "capture_audio_frame"})
"""The SDK's own exclusions (media streams have their own subscriptions), and the
capture callbacks."""

_warned = False


def room_hears(event: ffi_pb2.FfiEvent) -> bool:
    """Whether a room's listening task gets `event`."""
    return event.WhichOneof("message") not in NOT_FOR_ROOMS


def narrow_room_events(room: rtc.Room) -> bool:
    """Give `room`'s subscription (made by `connect`) the `room_hears` filter; False,
    and nothing changed, when the SDK's internals are not where this expects them."""
    global _warned
    fanout = FfiClient.instance.queue
    queue = getattr(room, "_ffi_queue", None)
    with fanout._lock:
        for index, (subscriber, loop, _) in enumerate(fanout._subscribers):
            if subscriber is queue:
                fanout._subscribers[index] = (subscriber, loop, room_hears)
                return True
    if not _warned:
        _warned = True
        log.warning(
            "the rtc SDK's room subscription was not found: every room hears every "
            "capture callback (more CPU per talking room as rooms are added)"
        )
    return False
