"""What one room's actors need to know, fixed for the room's life.

Secrets (the API secret, the E2EE key) are kept out of `repr`, so a settings object
can be logged or shown in an error without leaking them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs
import jwt
from attrs import validators as v
from livekit import api

from actors.room.job import Job

BotFactory = Callable[[Any], Any]
"""`factory(transport)`: returns a pipecat worker (PipelineTask) to run, or runs the
bot itself (an async function that returns when the bot ends), as pipecat bots do."""

SAMPLE_RATES = (8000, 16000, 24000, 32000, 44100, 48000)
"""The pipeline rates a room accepts, in and out (the rtc SDK resamples to them)."""
VAD_SAMPLE_RATES = (8000, 16000)
"""Silero, pipecat's shipped VAD model, runs at these input rates only."""
VAD_RATES_TEXT = " or ".join(map(str, VAD_SAMPLE_RATES))
FRAME_DURATIONS_MS = (10, 20, 40)
"""The audio frame durations a room accepts (`RoomSettings.audio_frame_ms`)."""


@attrs.frozen
class RoomSettings:
    """One room: where it is, who the bot is there, and how audio crosses the boundary."""

    room: str = attrs.field(validator=v.and_(v.instance_of(str), v.min_len(1)))
    url: str = attrs.field(validator=v.instance_of(str))
    api_key: str = attrs.field(validator=v.instance_of(str))
    api_secret: str = attrs.field(repr=False, validator=v.instance_of(str))
    bot: BotFactory = attrs.field(validator=v.is_callable())
    identity: str = "bot"
    name: str = "bot"
    audio_in_sample_rate: int = attrs.field(default=16000, validator=v.in_(SAMPLE_RATES))
    audio_out_sample_rate: int = attrs.field(default=24000, validator=v.in_(SAMPLE_RATES))
    audio_frame_ms: int = attrs.field(default=20, validator=v.in_(FRAME_DURATIONS_MS))
    """Milliseconds of audio in each frame the bot's input gets and in each chunk its
    output transport writes. 40 halves the frames each room moves (a fifth less CPU per
    talking room, docs/benchmarks/runs/07-run-i.md) for 20 ms more delay each way: an input
    frame is handed on when it is full, and so is an output chunk."""
    audio_in_user_tracks: bool = True
    """Each participant's audio as its own `UserAudioRawFrame` stream (pipecat's
    default), or one mixed `InputAudioRawFrame` stream when False."""
    vad: bool = False
    """Run Silero VAD (shipped inside pipecat) on the input."""
    vad_batch_ms: float = attrs.field(default=0, validator=v.ge(0))
    """How long the VAD's windows wait for other rooms' to run in one batch with them
    (`actors.room.models.BatchingSession`); 0: each alone."""
    e2ee_key: bytes | None = attrs.field(default=None, repr=False)
    """Shared end-to-end encryption key; None joins unencrypted."""
    join_token: str | None = attrs.field(default=None, repr=False)
    """A token to join with instead of minting one: a dispatched room's, from its job
    assignment (the server decides the bot's identity and grants). livekit-server
    makes it valid for an hour; a rejoin later than that (a server restart late in a
    long call) joins with the same claims signed anew, as livekit-agents does."""
    job: Job | None = None
    """The agent job a dispatched room serves; None for a configured room."""
    handed_state: str = attrs.field(default="", repr=False)
    """The state the bot that served this job before offered, as JSON text, when a
    draining worker handed the room over to this one (`RoomTransport.handed_state`);
    "" for none."""
    predecessor: str | None = None
    """The bot this one takes the room over from, when a draining worker handed it over
    (`supervisor.dispatch.fleet`): while that bot is in the room, this one's voice is held back
    (silence in place of its audio, counted as dropped: `handoff`) and that bot's audio
    is not heard; it is removed once this one's track is published, so the caller hears
    one bot at a time."""
    fallback_urls: tuple[str, ...] = ()
    """Other nodes of `url`'s LiveKit cluster: a join while nothing accepts connections
    at `url` goes through the first of them that does (the room may live on a node
    that is up while the one the bot joined through is down)."""
    connect_timeout: float = attrs.field(default=10.0, validator=v.gt(0))
    max_data_bytes: int = attrs.field(default=64 * 1024, validator=v.ge(1))
    """Larger incoming data messages are refused (and counted)."""
    audio_out_queue_ms: int = attrs.field(default=200, validator=v.ge(10))
    """How much audio the outgoing rtc source buffers: the bot's lead over real time."""
    passthrough_delay_ms: int = attrs.field(default=100, validator=v.ge(10))
    """Live audio the bot passes through (frames carrying their input's arrival stamp,
    as the echo bot's do) that would reach the output more than this long after it
    arrived, counting what the audio source already holds, is dropped as `late` while
    the source holds at least a frame of it: in and out run at the same real-time rate,
    so a backlog left by a stall would never drain and every later word would be heard
    that much later. (On a path slow throughout, with nothing queued, it plays late
    rather than not at all.)"""

    @property
    def key(self) -> str:
        """The room tree's name and its log lines' `[label]`: the room's name, or for a
        participant's job `room:participant` (`Job.key`)."""
        return self.room if self.job is None else self.job.key

    @property
    def hears(self) -> str | None:
        """The one participant whose audio the bot hears: a participant or publisher
        job's (as livekit-agents' room input links one participant); None: everyone."""
        return None if self.job is None else self.job.participant

    def __attrs_post_init__(self) -> None:
        if self.vad and self.audio_in_sample_rate not in VAD_SAMPLE_RATES:
            raise ValueError(
                f"vad needs audio_in_sample_rate {VAD_RATES_TEXT} (Silero's rates), "
                f"got {self.audio_in_sample_rate}"
            )

    def token(self, ttl: timedelta = timedelta(hours=6)) -> str:
        """A join token for the bot, minted here so no token needs distributing
        (unless the server handed one over: `join_token`)."""
        if self.join_token is not None:
            return self._renewed(self.join_token, ttl)
        grants = api.VideoGrants(
            room_join=True,
            room=self.room,
            can_publish=True,
            can_subscribe=True,
            can_publish_data=True,
            can_update_own_metadata=True,
        )
        return (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(self.identity)
            .with_name(self.name)
            .with_kind("agent")
            .with_grants(grants)
            .with_ttl(ttl)
            .to_jwt()
        )

    def _renewed(self, token: str, ttl: timedelta) -> str:
        """`token` while it is valid for another minute, else its claims with a new expiry."""
        expires = jwt.decode(token, options={"verify_signature": False}).get("exp", 0)
        if expires - time.time() > 60:
            return token
        verifier = api.TokenVerifier(self.api_key, self.api_secret, leeway=timedelta(days=3650))
        claims = verifier.verify(token)
        if claims.video is None:
            raise ValueError(f"[{self.room}] the job's token grants no room access")
        return (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(claims.identity)
            .with_name(claims.name)
            .with_kind("agent")  # what the server minted it as: an agent's job token
            .with_metadata(claims.metadata)
            .with_attributes(claims.attributes or {})
            .with_grants(claims.video)
            .with_ttl(ttl)
            .to_jwt()
        )

    def server_api(self) -> api.LiveKitAPI:
        """A LiveKit server API client (room service: mute, remove participant)."""
        return api.LiveKitAPI(self.url, self.api_key, self.api_secret)
