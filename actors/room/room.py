"""A room's actor tree: five actors under one rest_for_one supervisor.

Start order is dependency order, so rest_for_one restarts exactly what depends on a
failed actor: a dead connection takes everything with it (all of it used the old
`rtc.Room`); a crashing bot is last and restarts alone, while the connection stays
up and the audio-in actor keeps reading (its frames wait, oldest dropped, in the
pipeline's mailbox).

    connection  owns rtc.Room: join, rejoin, commands
    events      rtc events -> typed frames, deduplicated, validated, fanned out
    audio_in    one rtc.AudioStream per subscribed audio track -> the pipeline
    audio_out   rtc.AudioSource + published track <- the pipeline's output audio
    pipeline    the bot's pipecat pipeline, fed through a RoomTransport
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from actors import (
    Backoff,
    ChildSpec,
    MailboxSpec,
    Overflow,
    Restart,
    RestartIntensity,
    Strategy,
    Supervisor,
)
from actors.room.audio_in import AudioInActor
from actors.room.audio_out import AudioOutActor
from actors.room.connection import ConnectionActor
from actors.room.events import EventActor
from actors.room.pipeline import PipelineActor
from actors.room.settings import RoomSettings
from actors.room.stats import RoomStats

AUDIO_LANE_MS = 320
"""The pipeline's data lane holds this much input audio (drop-oldest): a lagging bot
skips stale audio."""
OUTPUT_LANE_MS = 160
"""The audio-out lane holds this much output audio (blocking): small, so it paces the
bot to real time."""


def audio_lanes(frame_ms: int) -> tuple[MailboxSpec, MailboxSpec]:
    """The pipeline's and audio-out's data lanes for frames of `frame_ms`: the same
    audio whatever the frame size, so a room's delays do not change with it."""
    return (
        MailboxSpec(capacity=AUDIO_LANE_MS // frame_ms, overflow=Overflow.DROP_OLDEST),
        MailboxSpec(
            capacity=OUTPUT_LANE_MS // frame_ms, overflow=Overflow.BLOCK, send_timeout=2.0
        ),
    )


CURRENT_ROOM: ContextVar[str] = ContextVar("current_room")
"""The room whose tree the running code belongs to. Set once per incarnation in the
room supervisor's own task, it is inherited by every task and callback the tree starts
(the bot's pipecat tasks too): how the loop watchdog names the room whose code blocks
the event loop, at no cost per frame."""


def _room_supervisor(
    room: str, stats: RoomStats, children: list[ChildSpec], **options: Any
) -> Supervisor:
    CURRENT_ROOM.set(room)  # called by the room slot's task, to build its incarnation
    stats.tree_started()
    return Supervisor(children, strategy=Strategy.REST_FOR_ONE, **options)


def room_spec(
    settings: RoomSettings,
    stats: RoomStats,
    *,
    intensity: RestartIntensity = RestartIntensity(max_restarts=5, within_seconds=30),
    backoff: Backoff = Backoff(initial=0.5, maximum=10.0),
    restart: Restart = Restart.PERMANENT,
) -> ChildSpec:
    """The child spec of one room's supervisor, named `settings.key` (the room's name,
    or `room:participant` for a participant's job)."""
    audio_lane, output_lane = audio_lanes(settings.audio_frame_ms)
    children = [
        ChildSpec("connection", lambda: ConnectionActor(settings, stats)),
        ChildSpec("events", lambda: EventActor(settings, stats)),
        ChildSpec("audio_in", lambda: AudioInActor(settings, stats)),
        ChildSpec("audio_out", lambda: AudioOutActor(settings, stats), mailbox=output_lane),
        ChildSpec("pipeline", lambda: PipelineActor(settings, stats), mailbox=audio_lane),
    ]
    return ChildSpec(
        settings.key,
        lambda: _room_supervisor(
            settings.key, stats, children, intensity=intensity, backoff=backoff
        ),
        restart=restart,
        shutdown_timeout=None,
    )
