"""Per-room counters the room's actors keep, for tests, logs and the metrics exporter.

Plain integers updated in place by the one actor that owns each field; readers only
read. That keeps the hot path free of locks and label lookups.
"""

from __future__ import annotations

import attrs


@attrs.define
class RoomStats:
    """What happened in one room since the supervisor started it."""

    participants: set[str] = attrs.field(factory=set)
    joins: int = 0
    leaves: int = 0
    data_in: int = 0
    data_malformed: int = 0
    """Not UTF-8, not JSON, or JSON that is not an object: delivered as raw bytes only."""
    data_oversized: int = 0
    """Larger than the room's limit: refused with a log line, not delivered."""
    data_out: int = 0
    audio_frames_in: int = 0
    audio_frames_out: int = 0
