"""One LiveKit room as an actor tree, and the pipecat transport a bot sees of it."""

from actors.room.job import AGENT_NAME_ATTRIBUTE, Job, is_rival
from actors.room.room import CURRENT_ROOM, room_spec
from actors.room.rtc_fanout import narrow_room_events
from actors.room.settings import (
    FRAME_DURATIONS_MS,
    SAMPLE_RATES,
    VAD_RATES_TEXT,
    VAD_SAMPLE_RATES,
    BotFactory,
    RoomSettings,
)
from actors.room.signalling import SUBSCRIBE_GRACE_SECONDS
from actors.room.stats import RoomStats
from actors.room.timing import (
    ADDED_BUCKETS,
    CONNECT_BUCKETS,
    HOP_BUCKETS,
    HOPS,
    LATENCY_BUCKETS,
    RESPONSE_BUCKETS,
    SERVICE_BUCKETS,
    BucketCounts,
)
from actors.room.transport import RoomTransport

__all__ = [
    "ADDED_BUCKETS",
    "AGENT_NAME_ATTRIBUTE",
    "CONNECT_BUCKETS",
    "CURRENT_ROOM",
    "FRAME_DURATIONS_MS",
    "HOPS",
    "HOP_BUCKETS",
    "LATENCY_BUCKETS",
    "RESPONSE_BUCKETS",
    "SAMPLE_RATES",
    "SERVICE_BUCKETS",
    "SUBSCRIBE_GRACE_SECONDS",
    "VAD_RATES_TEXT",
    "VAD_SAMPLE_RATES",
    "BotFactory",
    "BucketCounts",
    "Job",
    "RoomSettings",
    "RoomStats",
    "RoomTransport",
    "is_rival",
    "narrow_room_events",
    "room_spec",
]
