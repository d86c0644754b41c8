"""A connection whose signalling the server stopped reading rejoins (see
`actors.room.signalling`), against a real livekit-server.

The server is made to drop the bot's signalling the way a storm of ICE candidates
does on a busy machine: frozen for half a second while the bot sends 1000 requests, it
then reads them all at once into its 200-slot queue, and closes the stream when the
queue is full (five of five tries here). Until the bot rejoins, it is never given
the track a participant publishes, and its own track's publication is never answered.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from livekit import rtc

from actors import ActorRef
from actors.room import signalling
from actors.room.frames import GetRoomFrame
from supervisor.livekit_server.server import LiveKitServer
from tests.helpers.participants import (
    is_tone,
    join,
    listen_for_tone,
    publishing_tone,
    subscribed_audio_track,
)
from tests.helpers.probes import wait_until
from tests.helpers.rooms import RoomUnderTest, running_room

GRACE = 5.0


@contextlib.asynccontextmanager
async def server_of_its_own(tmp_path: Path) -> AsyncIterator[LiveKitServer]:
    """A livekit-server for one test: it is frozen."""
    server = LiveKitServer(log_path=tmp_path / "livekit-server.log")
    await anyio.to_thread.run_sync(server.start)
    try:
        yield server
    finally:
        await anyio.to_thread.run_sync(server.stop)


async def drop_signalling(server: LiveKitServer, room: RoomUnderTest) -> ActorRef:
    """Make `server` stop reading the room's connection; its connection actor's ref."""
    await wait_until(lambda: room.stats.connection == "connected", 20)
    connection = await room.child("connection")
    bot_room = await connection.ask(GetRoomFrame())
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        for _ in range(1000):
            bot_room.local_participant.set_track_subscription_permissions(
                allow_all_participants=True
            )
        await anyio.sleep(0.5)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    return connection


@pytest.mark.anyio
async def test_a_connection_the_server_stopped_reading_rejoins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signalling, "SUBSCRIBE_GRACE_SECONDS", GRACE)
    async with (
        server_of_its_own(tmp_path) as server,
        running_room(server, "signalling-lost") as room,
    ):
        connection = await drop_signalling(server, room)
        async with (
            join(server, "signalling-lost", "alice") as alice,
            publishing_tone(alice, 440.0) as publication,
        ):
            track = await subscribed_audio_track(alice, "bot", timeout=GRACE + 30)
            heard = await listen_for_tone(track, 440.0)
            assert is_tone(heard, 440.0), "alice never heard the bot echo her"
        assert room.stats.undelivered == {publication.sid}
        assert connection.incarnation >= 2


@pytest.mark.anyio
async def test_a_bot_whose_publication_goes_unanswered_rejoins_for_a_listener(
    tmp_path: Path,
) -> None:
    """Nobody publishes, so no track can go undelivered: the bot's own publication,
    which the server never answers, is the sign."""
    async with (
        server_of_its_own(tmp_path) as server,
        running_room(server, "unanswered") as room,
    ):
        connection = await drop_signalling(server, room)
        async with join(server, "unanswered", "listener") as listener:
            await subscribed_audio_track(listener, "bot", timeout=60)
        assert room.stats.unanswered_publishes == 1
        assert not room.stats.undelivered
        assert connection.incarnation >= 2


class _Publication:
    kind = rtc.TrackKind.KIND_AUDIO

    def __init__(self, sid: str, subscribed: bool) -> None:
        self.sid = sid
        self.subscribed = subscribed


class _Participant:
    def __init__(self, *publications: _Publication) -> None:
        self.track_publications = {pub.sid: pub for pub in publications}


class _Room:
    def __init__(self, *participants: _Participant) -> None:
        self.remote_participants = {str(i): p for i, p in enumerate(participants)}


@pytest.mark.anyio
async def test_only_a_track_never_delivered_rejoins_and_each_track_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(signalling, "POLL_SECONDS", 0.05)
    late = _Publication("TR_late", subscribed=False)
    stuck = _Publication("TR_stuck", subscribed=False)
    room = _Room(_Participant(_Publication("TR_fine", subscribed=True), late), _Participant(stuck))

    async def deliver_late() -> None:
        await anyio.sleep(0.2)
        late.subscribed = True

    acted_on: set[str] = set()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(deliver_late)
        with pytest.raises(signalling.SignallingLostError, match="TR_stuck"):
            await signalling.watch_subscriptions("r", room, acted_on, grace=0.5)  # type: ignore[arg-type]
    assert acted_on == {"TR_stuck"}
    with anyio.move_on_after(1.0) as scope:  # after the rejoin, the same track waits quietly
        await signalling.watch_subscriptions("r", room, acted_on, grace=0.5)  # type: ignore[arg-type]
    assert scope.cancelled_caught
