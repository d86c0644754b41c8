"""`supervisor bench`'s judging without a server: which onset answers which burst, and
what a participant does when the server lists the bot's track and never delivers it.

The load generator against a running supervisor is in tests/livekit/test_bench.py.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from livekit import rtc

from supervisor import bench
from supervisor.bench import RoomResult, percentile


def test_each_onset_answers_one_burst_within_the_lost_window() -> None:
    """The judging, without a server: a burst takes the first unused onset after it,
    an onset a second or more later does not count, and one onset never answers two."""
    result = RoomResult("r", sent=[10.0, 11.0, 12.0, 13.0], onsets=[9.5, 10.2, 11.7, 13.0, 14.1])
    assert result.latencies() == [pytest.approx(0.2), pytest.approx(0.7), None, pytest.approx(0.0)]
    summary = result.summary(late_after=0.5)
    assert (summary["bursts_heard"], summary["lost"], summary["late"]) == (3, 1, 1)
    assert summary["latency_ms"]["p50"] == 200.0
    assert summary["latency_ms"]["p99"] == 700.0
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


class _Publication:
    """A remote publication as the rtc SDK lists it: an audio track, maybe subscribed."""

    kind = rtc.TrackKind.KIND_AUDIO
    sid = "TR_bot"
    track = None
    subscribed = False


class _Participant:
    identity = "bot"

    def __init__(self) -> None:
        self.track_publications = {"TR_bot": _Publication()}


class _Room:
    """What `bot_track` reads of an `rtc.Room`: the bot listed with its audio track."""

    def __init__(self) -> None:
        self.remote_participants = {"bot": _Participant()}
        self.handlers: dict[str, Any] = {}

    def on(self, event: str, handler: Any) -> None:
        self.handlers[event] = handler

    def off(self, event: str, handler: Any) -> None:
        del self.handlers[event]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_track_listed_and_never_delivered_is_a_lost_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server lists the bot's track and never binds it to this participant (its own
    signalling lost on the server): the participant is told to join again."""
    monkeypatch.setattr(bench, "SUBSCRIBE_GRACE", 0.6)
    room = _Room()
    started = anyio.current_time()
    with pytest.raises(bench.SignallingLostError, match="TR_bot published, not subscribed"):
        await bench.bot_track(room, "bot")  # type: ignore[arg-type]
    assert anyio.current_time() - started >= 0.6
    assert room.handlers == {}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_track_delivered_within_the_grace_is_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench, "SUBSCRIBE_GRACE", 5.0)
    room = _Room()
    track = object.__new__(rtc.RemoteAudioTrack)

    async def deliver() -> None:
        await anyio.sleep(0.7)
        room.handlers["track_subscribed"](track, None, room.remote_participants["bot"])

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(deliver)
        with anyio.fail_after(3):
            assert await bench.bot_track(room, "bot") is track  # type: ignore[arg-type]
