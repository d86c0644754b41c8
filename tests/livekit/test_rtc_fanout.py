"""The rooms' narrowed share of the rtc SDK's event fan-out (`actors.room.rtc_fanout`).

It rewrites the filter of a connected room's subscription, found through two private
names of the SDK (`FfiQueue._subscribers`, `Room._ffi_queue`). An SDK release that
moves them must fail here, not show up as every room hearing every capture callback
again; and a narrowed room must still get what it waits for through that
subscription (its own events, its track publications' callbacks).
"""

from __future__ import annotations

import pytest
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2

from actors.room.rtc_fanout import room_hears
from supervisor.livekit_server.server import LiveKitServer
from tests.helpers.participants import (
    SILENCE_RMS,
    dominant_frequency,
    join,
    listen_for_tone,
    publishing_tone,
    rms,
    subscribed_audio_track,
)
from tests.helpers.rooms import running_room

pytestmark = pytest.mark.anyio


def test_a_room_hears_room_events_and_callbacks_but_no_capture_or_media() -> None:
    def event(which: str) -> ffi_pb2.FfiEvent:
        found = ffi_pb2.FfiEvent()
        getattr(found, which).SetInParent()
        return found

    assert room_hears(event("room_event"))
    assert room_hears(event("publish_track"))
    assert room_hears(event("rpc_method_invocation"))
    assert not room_hears(event("capture_audio_frame"))
    assert not room_hears(event("audio_stream_event"))


async def test_the_bots_room_is_narrowed_and_still_publishes_and_hears(
    livekit_server: LiveKitServer,
) -> None:
    """The room tree's connection narrows its room as it joins; then the bot publishes
    (a callback through the room's subscription), captures (each frame's callback
    through its own) and hears alice: her tone comes back."""

    def narrowed() -> int:
        return sum(keep is room_hears for _, _, keep in FfiClient.instance.queue._subscribers)

    before = narrowed()
    async with (
        running_room(livekit_server, "fanout"),
        join(livekit_server, "fanout", "alice") as alice,
        publishing_tone(alice, 440.0),
    ):
        assert narrowed() == before + 1  # the bot's room; alice's keeps the SDK's filter
        track = await subscribed_audio_track(alice, "bot")
        heard = await listen_for_tone(track, 440.0)
    assert rms(heard) > SILENCE_RMS, f"alice heard silence (rms {rms(heard):.1f})"
    assert abs(dominant_frequency(heard) - 440.0) < 10.0
