"""Per-room counters the room's actors keep, for tests, logs and the metrics exporter.

Plain values updated in place by the room's actors, on the event loop's thread (most
fields by one actor; `participants` is cleared by the connection on each join and kept
by the events actor, `audio_frames_dropped` counted by the transport and audio-out,
`response_mark_ns` set by the bot's metrics observer and taken by audio-out);
readers only read. That keeps the hot path free of locks and label lookups.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import attrs

from actors.room.timing import (
    BucketCounts,
    added_buckets,
    connect_buckets,
    hop_buckets,
    latency_buckets,
    response_buckets,
    service_buckets,
)

ConnectionState = Literal["connecting", "connected", "reconnecting", "disconnected"]
"""Where the room's rtc connection is: joining (or rejoining after the SDK gave up),
joined, resuming a lost link (the SDK's `reconnecting`), or left."""


@attrs.define
class RoomStats:
    """What happened in one room since the supervisor started it."""

    connection: ConnectionState = "connecting"
    """The connection actor keeps it."""
    participants: set[str] = attrs.field(factory=set)
    agents: set[str] = attrs.field(factory=set)
    """Of `participants`, the agents (other bots), which the connection names: a
    dispatched room's bot is alone when only agents are left."""
    left: dict[str, str] = attrs.field(factory=dict)
    """Why each participant who left and has not come back left (the disconnect
    reason's name, e.g. `client_initiated`): a participant's job ends with them."""
    ended: str | None = None
    """Why the server ended a dispatched room's session for good (its connection then
    does not rejoin): the room closed or deleted, the bot removed. Its job is over."""
    joins: int = 0
    leaves: int = 0
    data_in: int = 0
    data_malformed: int = 0
    """Not UTF-8, not JSON, or JSON that is not an object: delivered as raw bytes only."""
    data_oversized: int = 0
    """Larger than the room's limit: refused with a log line, not delivered."""
    data_unattributed: int = 0
    """Without a sender the server could name (see `actors.room.senders`): dropped."""
    data_out: int = 0
    data_out_lossy: int = 0
    """Of `data_out`, those sent lossy (`send_message_urgent`)."""
    audio_frames_in: int = 0
    audio_frames_out: int = 0
    audio_frames_dropped: Counter[str] = attrs.field(factory=Counter)
    """Audio frames the transport dropped, by reason: input before the bot started
    (`not_ready`) or while it stalled (`stale`), output audio-out could not take
    (`output_full`), spoken to an empty room (`unheard`), passed through too late to
    play (`late`) or spoken while the bot it takes a room over from was there
    (`handoff`). Drops of the pipeline's drop-oldest lane are counted by its mailbox."""
    audio_latency: BucketCounts = attrs.field(factory=latency_buckets)
    """Arrival in audio-in to capture by audio-out, for frames the bot passes through."""
    audio_hops: tuple[BucketCounts, ...] = attrs.field(factory=hop_buckets)
    """The same frames' time hop by hop, in the order of `timing.HOPS`."""
    connect_time: BucketCounts = attrs.field(factory=connect_buckets)
    """How long each successful `rtc.Room.connect` took."""
    undelivered: set[str] = attrs.field(factory=set)
    """Audio tracks listed and never delivered to the bot, each the cause of one rejoin
    (`actors.room.signalling`); kept by the connection actor across its restarts."""
    unanswered_publishes: int = 0
    """Publications of the bot's track the server never answered, each the cause of one
    rejoin (`actors.room.signalling`): the audio-out actor counts them."""
    offered_state: str = ""
    """What the bot last offered to carry over a handoff (`RoomTransport.offer_state`),
    as JSON text; "" for nothing."""
    predecessor_removed: bool = False
    """Set by the member taking the room over once the server removed the bot this one
    takes over from (`RoomSettings.predecessor`): audio-out lets this bot be heard at
    once, where the SDK reports the departure about 0.2 s later (measured here)."""
    joined_at: float | None = None
    """When the bot first joined the room since the tree started (`anyio.current_time()`),
    by the connection actor."""
    track_published_at: float | None = None
    """When the bot's audio track was first published since the room's tree started
    (`anyio.current_time()`), by audio-out; later publications (after the room was
    empty for a while) leave it as it is."""
    track_subscribed_at: float | None = None
    """When a participant first subscribed to the bot's audio track since the tree started
    (the server tells the publisher, `local_track_subscribed`), by audio-out: from then
    on what the bot says reaches someone."""
    first_audio_at: float | None = None
    """When audio-out first captured the bot's audio into the track's source since the
    tree started: the moment a participant could first hear the bot."""

    bot_turns: int = 0
    """The bot's figures below are kept by its pipeline's metrics observer
    (`actors.room.bot_metrics`), when the bot enables pipecat's metrics: user turns
    ended (pipecat's `UserStoppedSpeakingFrame`)..."""
    bot_interruptions: int = 0
    """...the user speaking over the bot (an interruption while it spoke)..."""
    bot_llm_prompt_tokens: int = 0
    bot_llm_completion_tokens: int = 0
    bot_tts_characters: int = 0
    """...and the services' usage, as pipecat reports it."""
    bot_ttfb: dict[str, BucketCounts] = attrs.field(factory=dict)
    """Time to first byte by processor label (its class name; `other` past the bound)."""
    bot_processing: dict[str, BucketCounts] = attrs.field(factory=dict)
    """Processing time by processor label, as `bot_ttfb`."""
    bot_response: BucketCounts = attrs.field(factory=response_buckets)
    """The user's speech ending to the bot's first audio captured after it (audio-out)."""
    bot_added: BucketCounts = attrs.field(factory=added_buckets)
    """The part of each response the process added beyond its services' own time
    (`actors.room.bot_metrics.Turn`)."""
    response_mark_ns: int | None = None
    """The one value two actors share: `perf_counter_ns` when the user's speech ended,
    set by the observer and taken (observed into `bot_response`, then cleared) by the
    audio-out actor when it captures the next frame of the bot's audio."""

    def tree_started(self) -> None:
        """A new incarnation of the room's tree: its firsts are still to come."""
        self.joined_at = self.track_published_at = self.first_audio_at = None

    def absorb(self, ended: RoomStats) -> None:
        """Add a room's counts, now it is over, into these totals (of rooms gone): so a
        process serving dispatched rooms under ever new names keeps one `RoomStats` for
        all of those that ended, and its counters stay monotonic."""
        for field in _COUNTS:
            setattr(self, field, getattr(self, field) + getattr(ended, field))
        self.audio_frames_dropped.update(ended.audio_frames_dropped)
        self.undelivered |= ended.undelivered
        self.audio_latency.absorb(ended.audio_latency)
        for hop, ended_hop in zip(self.audio_hops, ended.audio_hops, strict=True):
            hop.absorb(ended_hop)
        self.connect_time.absorb(ended.connect_time)
        self.bot_response.absorb(ended.bot_response)
        self.bot_added.absorb(ended.bot_added)
        for mine, theirs in ((self.bot_ttfb, ended.bot_ttfb),
                             (self.bot_processing, ended.bot_processing)):
            for label, histogram in theirs.items():
                mine.setdefault(label, service_buckets()).absorb(histogram)


_COUNTS = tuple(
    field.name for field in attrs.fields(RoomStats) if field.type in ("int", int)
)
"""The plain counters of `RoomStats`, which `absorb` adds up."""
