"""The audio-out actor of a bot taking a room over (`RoomSettings.predecessor`): silent
while the old bot is there, heard at once from its removal, with nothing queued before
its first words. The rtc SDK's source is faked: what it captured, in order."""

from __future__ import annotations

import pytest
from livekit import rtc
from pipecat.frames.frames import OutputAudioRawFrame

from actors.room.audio_out import AudioOutActor
from actors.room.settings import RoomSettings
from actors.room.stats import RoomStats

FRAME_BYTES = 320 * 2  # 20 ms at 16 kHz, mono


class FakeSource:
    """An `rtc.AudioSource`'s queue: what was captured and is still queued, in order."""

    def __init__(self) -> None:
        self.queued: list[bytes] = []

    @property
    def queued_duration(self) -> float:
        return 0.02 * len(self.queued)

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        self.queued.append(bytes(frame.data))

    def clear_queue(self) -> None:
        self.queued.clear()


def held_back_actor() -> tuple[AudioOutActor, FakeSource, RoomStats]:
    settings = RoomSettings(room="handed-1", url="ws://x", api_key="k", api_secret="s",
                            bot=lambda transport: None, predecessor="bot")  # fmt: skip
    stats = RoomStats()
    actor, source = AudioOutActor(settings, stats), FakeSource()
    actor._source = source  # type: ignore[assignment]  # published, as after lifespan
    actor._held_back = True  # the old bot was in the room
    return actor, source, stats


def words(n: int) -> OutputAudioRawFrame:
    return OutputAudioRawFrame(bytes([n]) * FRAME_BYTES, sample_rate=16000, num_channels=1)


@pytest.mark.anyio
async def test_a_held_back_bot_is_silent_then_heard_at_once_with_no_silence_before() -> None:
    actor, source, stats = held_back_actor()
    for n in (1, 2, 3):
        await actor.receive(words(n))
    assert source.queued == [bytes(FRAME_BYTES)] * 3  # silence in place of its words
    assert stats.audio_frames_dropped["handoff"] == 3

    stats.predecessor_removed = True  # the server answered the old bot's removal
    await actor.receive(words(4))
    # heard: its next words first, not behind the silence queued while held back
    assert source.queued == [bytes([4]) * FRAME_BYTES]
    assert (stats.audio_frames_out, stats.audio_frames_dropped["handoff"]) == (1, 3)
