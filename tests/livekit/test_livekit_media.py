"""Real audio through the real server: the foundation every room feature stands on."""

from __future__ import annotations

import pytest
from livekit import api

from supervisor.livekit_server.server import LiveKitServer
from tests.helpers.participants import (
    SILENCE_RMS,
    dominant_frequency,
    join,
    listen_for_tone,
    media_paths,
    publishing_tone,
    rms,
    subscribed_audio_track,
)

pytestmark = pytest.mark.anyio


async def test_tone_from_one_participant_reaches_another(livekit_server: LiveKitServer) -> None:
    async with (
        join(livekit_server, "media-tone", "alice") as alice,
        join(livekit_server, "media-tone", "bob") as bob,
        publishing_tone(alice, 440.0),
    ):
        track = await subscribed_audio_track(bob, "alice")
        heard = await listen_for_tone(track, 440.0)  # past the jitter buffer's warm-up
        paths = {"alice": await media_paths(alice), "bob": await media_paths(bob)}

    # UDP to the server's loopback address, not an ICE-TCP fallback (see ServerSettings).
    assert paths == {"alice": {("udp", "127.0.0.1")}, "bob": {("udp", "127.0.0.1")}}

    assert rms(heard) > SILENCE_RMS, f"bob heard silence (rms {rms(heard):.1f})"
    assert abs(dominant_frequency(heard) - 440.0) < 10.0


async def test_server_api_creates_and_lists_rooms(livekit_server: LiveKitServer) -> None:
    async with api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    ) as lkapi:
        created = await lkapi.room.create_room(api.CreateRoomRequest(name="api-check"))
        listed = await lkapi.room.list_rooms(api.ListRoomsRequest(names=["api-check"]))

    assert created.name == "api-check"
    assert [room.name for room in listed.rooms] == ["api-check"]


def test_secret_stays_out_of_repr_and_log(livekit_server: LiveKitServer) -> None:
    secret = livekit_server.api_secret
    assert secret not in repr(livekit_server)
    assert secret not in repr(livekit_server.settings)
    assert secret not in livekit_server.log_path.read_text()
