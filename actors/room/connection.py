"""The connection actor: the one owner of a room's `rtc.Room`.

It joins with a token minted from the room's settings, turns every rtc callback into
a typed event frame for the event actor, and executes commands (send data, set
metadata, mute) one at a time from its mailbox. The SDK resumes short network losses
by itself; when it gives up and reports `disconnected`, or when the server stops
reading this connection's requests (`actors.room.signalling`), this actor crashes on
purpose so its supervisor rejoins with backoff and restarts what depends on the
connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio
import attrs
from livekit import api, rtc
from pipecat.frames.frames import Frame

from actors import Actor, Refused
from actors.room.frames import (
    ActiveSpeakerChangedFrame,
    AudioTrackSubscribedFrame,
    AudioTrackUnsubscribedFrame,
    DataReceivedFrame,
    DtmfReceivedFrame,
    GetParticipantMetadataFrame,
    GetRoomFrame,
    ParticipantJoinedFrame,
    ParticipantLeftFrame,
    ParticipantMetadataChangedFrame,
    RoomDisconnectedFrame,
    SendDataFrame,
    SetMetadataFrame,
    SetParticipantMutedFrame,
    SignallingLostFrame,
    TrackMutedFrame,
)
from actors.room.job import is_rival
from actors.room.room_view import audio_for_bot, is_audio, present_state, reason_name
from actors.room.rtc_fanout import narrow_room_events
from actors.room.senders import Listing, SenderAttribution
from actors.room.settings import RoomSettings
from actors.room.signalling import SignallingLostError, watch_subscriptions
from actors.room.stats import ConnectionState, RoomStats

log = logging.getLogger("actors.room")


CONNECT_RETRY_SECONDS = 0.5
"""How often a join is tried again while the server refuses connections (restarting)."""
ROOM_IDLE_SECONDS = 24 * 3600
"""How long the server keeps a room the bot is alone in (see `_connect`)."""
API_SECONDS = 5.0
"""How long a question to the server's API may take before the bot goes on without it."""
ANNOUNCE_ATTRIBUTE = "lksup.announce"
"""A participant attribute nothing sets: deleting it changes nothing visible, but makes
the server announce the participant to the room at once (`actors.room.senders`); the
participant itself gets its own update and a refreshed token, as after any change."""


FINAL_REASONS = frozenset(
    {"room_deleted", "room_closed", "participant_removed", "duplicate_identity"}
)
"""Disconnect reasons that end a dispatched room's session: rejoining would recreate a
room that was closed (and dispatch it again), or take a bot's place from the server."""
CLUSTER_FINAL_REASONS = FINAL_REASONS | {"server_shutdown"}
"""...and in a cluster (`fallback_urls`), the room's node shutting down: its rooms end
with it (LiveKit does not move a room to another node), and a bot joining again through
another node would create the room anew there, where the callers coming back get a
newly dispatched bot as well."""


class ConnectionLostError(ConnectionError):
    """The SDK gave up on the room; the supervisor rejoins."""


async def _accepts_connections(url: str) -> bool:
    """Whether anything listens at the URL's host and port (a TCP connect, no more)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    try:
        with anyio.fail_after(2):
            stream = await anyio.connect_tcp(parts.hostname or "localhost", port)
    except (OSError, TimeoutError):
        return False
    await stream.aclose()
    return True


def _agent(participant: rtc.RemoteParticipant) -> bool:
    return participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


REPLACED = "replaced"
"""`RoomStats.ended` for a dispatched room's bot that yields its room to another job's
(`ConnectionActor._yield_to_a_rival`)."""


class ConnectionActor(Actor):
    """Owns the `rtc.Room`: joins, reports events, executes commands."""

    def __init__(self, settings: RoomSettings, stats: RoomStats | None = None) -> None:
        self.settings = settings
        self.stats = stats
        self.room: rtc.Room | None = None
        self._server: api.LiveKitAPI | None = None
        self._leaving = False
        self._undelivered: set[str] = set()  # without stats: `RoomStats.undelivered`

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        events = self.sibling("events")
        room = rtc.Room()
        senders = SenderAttribution(
            self.settings.key,
            lambda: {*room.remote_participants, room.local_participant.identity},
            events.tell_nowait,
            self._unattributed,
        )
        self._wire(room, events.tell_nowait, senders)
        self._set_state("connecting")
        # ICE candidates gathered once per connection, not continually (the SDK's
        # default): a join costs about half the SDK's CPU (docs/benchmarks/runs/05-run-g.md, "Join
        # cost"), and a settled idle room less. Continual gathering notices a network
        # interface appearing or changing without a reconnect; a server bot's network is
        # fixed, and when a path fails the SDK's reconnect restarts ICE, which gathers
        # anew (the server-restart and failover tests run on it). The ICE servers stay
        # the server's: an empty list falls back to them.
        once = rtc.RtcConfiguration(
            continual_gathering_policy=rtc.ContinualGatheringPolicy.GATHER_ONCE
        )
        options = rtc.RoomOptions(auto_subscribe=True, rtc_config=once)
        if self.settings.e2ee_key is not None:
            options.encryption = rtc.E2EEOptions(
                key_provider_options=rtc.KeyProviderOptions(shared_key=self.settings.e2ee_key)
            )
        try:
            await self._choose_node()
            async with self.settings.server_api() as server:
                self._server = server
                self.tasks.start_soon(senders.serve, self._who_is_here, self._announce)
                started = time.perf_counter()
                with anyio.fail_after(self.settings.connect_timeout):
                    await self._connect(room, options, server)
                narrow_room_events(room)
                if self.stats is not None:
                    self.stats.connect_time.observe(time.perf_counter() - started)
                    if self.stats.joined_at is None:
                        self.stats.joined_at = anyio.current_time()
                    # a new connection is a new view of the room: present_state below
                    # reports everyone there, and whoever left meanwhile is gone
                    self.stats.participants.clear()
                    self.stats.agents = {
                        p.identity for p in room.remote_participants.values() if _agent(p)
                    }
                self.room = room
                self._set_state("connected")
                self.tasks.start_soon(self._yield_to_a_rival, room)
                log.info("[%s] joined as %s", self.settings.key, room.local_participant.identity)
                for frame in present_state(room):
                    events.tell_nowait(frame)
                undelivered = self._undelivered if self.stats is None else self.stats.undelivered
                self.tasks.start_soon(watch_subscriptions, self.settings.key, room, undelivered)
                yield
        finally:
            self._leaving = True
            self._set_state("disconnected")
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await room.disconnect()
            if self.room is not None:
                events.tell_nowait(RoomDisconnectedFrame("client_initiated"))
                log.info("[%s] left", self.settings.key)

    async def _live_fallback(self) -> str | None:
        """The first of `fallback_urls` that accepts connections while `url` does not;
        None while `url` does, or when none does."""
        settings = self.settings
        if not settings.fallback_urls or await _accepts_connections(settings.url):
            return None
        for url in settings.fallback_urls:
            if await _accepts_connections(url):
                return url
        return None

    async def _choose_node(self) -> None:
        """Join through the first of `url` and `fallback_urls` that accepts connections
        (this incarnation only: the next one tries `url` first again); none does: `url`,
        and `_connect` waits for it."""
        url = await self._live_fallback()
        if url is not None:
            log.info("[%s] nothing accepts connections at %s: joining through %s",
                     self.settings.key, self.settings.url, url)
            self.settings = attrs.evolve(self.settings, url=url)

    async def _leave_a_lost_node(self) -> None:
        """The SDK reconnects to the node it joined through, for as long as it tries:
        when nothing accepts connections there and another node of the cluster does,
        join again through that one (`_choose_node`, in the next incarnation)."""
        if await self._live_fallback() is not None:
            log.warning("[%s] nothing accepts connections at %s any more: joining again",
                        self.settings.key, self.settings.url)
            self.ref.tell_nowait(RoomDisconnectedFrame("node_lost"))

    async def _connect(
        self, room: rtc.Room, options: rtc.RoomOptions, server: api.LiveKitAPI
    ) -> None:
        """Make sure the room exists, then join; while nothing even accepts connections
        at the server, try again.

        A configured room is created (a no-op when it exists) with long idle timeouts:
        LiveKit does not count an agent as a participant, so a room with only the bot
        in it would otherwise close 20 s after the last person left, kicking the bot. A
        room a restarted server lost is created again the same way. A dispatched room
        (`settings.job`) is the server's: it keeps the timeouts its creator chose.

        A restarting LiveKit server refuses connections for as long as it is down.
        Failing at once, each restart would follow the last within its backoff step,
        trip the room's restart intensity in seconds and quarantine the room long
        past the server's return; waiting here (within `connect_timeout`) costs one
        restart per timeout instead and joins as soon as the server answers. Any
        other failure (a bad token, a server that answers and refuses) is raised.
        """
        waiting = False
        while True:
            try:
                if self.settings.job is None:
                    await server.room.create_room(
                        api.CreateRoomRequest(
                            name=self.settings.room,
                            empty_timeout=ROOM_IDLE_SECONDS,
                            departure_timeout=ROOM_IDLE_SECONDS,
                        )
                    )
                await room.connect(self.settings.url, self.settings.token(), options)
                return
            except (rtc.ConnectError, aiohttp.ClientConnectionError):
                if await _accepts_connections(self.settings.url):
                    raise
            if not waiting:
                waiting = True
                log.info("[%s] nothing accepts connections at %s: retrying", self.settings.key,
                         self.settings.url)
            await anyio.sleep(CONNECT_RETRY_SECONDS)

    async def _yield_to_a_rival(self, room: rtc.Room) -> None:
        """End a dispatched room's session when the room is not its job's any more
        and another bot of the same agent is in it.

        A restarted server loses its rooms; a caller coming back and this bot
        reconnecting (the SDK does it by itself) each create the room anew, and the
        server dispatches the new room to whichever worker is registered. A worker
        declines a job whose room already has such a bot (`AgentWorker`), but the
        bot may come back only after another's job was accepted: then the bot whose
        job is for a room that no longer exists (another sid) is the one to leave.
        Looked at when this bot joins or reconnects and when an agent joins."""
        job = self.settings.job
        if job is None or not job.room_sid or self.stats is None or self.stats.ended is not None:
            return
        rivals = [
            p.identity for p in room.remote_participants.values()
            if is_rival(job, _agent(p), p.attributes)
        ]  # fmt: skip
        if not rivals or await self._room_sid(room) in (None, job.room_sid):
            return
        log.info("[%s] the room was created anew and %s serves it: leaving",
                 self.settings.key, ", ".join(sorted(rivals)))
        self.stats.ended = REPLACED

    async def _room_sid(self, room: rtc.Room) -> str | None:
        """The sid of the room the server has under this name now, or None if nobody
        can tell. The server's word first: the SDK learns a room's new sid some time
        after it reconnected into it (a later event), and by then nothing looks again."""
        if self._server is not None:
            with anyio.move_on_after(API_SECONDS):
                try:
                    listing = await self._server.room.list_rooms(
                        api.ListRoomsRequest(names=[self.settings.room])
                    )
                except (aiohttp.ClientError, api.TwirpError) as err:
                    log.info("[%s] the server did not list the room (%s)", self.settings.key, err)
                else:
                    return listing.rooms[0].sid if listing.rooms else None
        try:
            return await room.sid
        except RuntimeError:  # disconnected meanwhile: the next connection looks again
            return None

    def _set_state(self, state: ConnectionState) -> None:
        if self.stats is not None:
            self.stats.connection = state

    async def _who_is_here(self) -> Listing:
        assert self._server is not None
        listing = await self._server.room.list_participants(
            api.ListParticipantsRequest(room=self.settings.room)
        )
        return Listing(
            frozenset(p.identity for p in listing.participants),
            frozenset(p.identity for p in listing.participants if p.permission.hidden),
        )

    async def _announce(self, identity: str) -> None:
        """Have the server announce `identity` to the room now, not in its next batch."""
        assert self._server is not None
        await self._server.room.update_participant(
            api.UpdateParticipantRequest(
                room=self.settings.room, identity=identity, attributes={ANNOUNCE_ATTRIBUTE: ""}
            )
        )
        log.debug("[%s] had %s announced", self.settings.key, identity)

    def _unattributed(self) -> None:
        if self.stats is not None:
            self.stats.data_unattributed += 1

    def _wire(
        self, room: rtc.Room, tell: Callable[[Frame], None], senders: SenderAttribution
    ) -> None:
        """Forward every rtc callback we care about as a typed frame.

        Data and DTMF go through `senders`, which names the sender the SDK left out;
        a change to the room makes it look for newcomers to announce.
        """

        def joined(p: rtc.RemoteParticipant) -> None:
            if _agent(p) and self.stats is not None:
                self.stats.agents.add(p.identity)
                self.tasks.start_soon(self._yield_to_a_rival, room)
            tell(ParticipantJoinedFrame(p.identity))

        def left(p: rtc.RemoteParticipant) -> None:
            if self.stats is not None:
                self.stats.agents.discard(p.identity)
            tell(ParticipantLeftFrame(p.identity, reason_name(p.disconnect_reason)))

        def subscribed(
            track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
        ) -> None:
            if audio_for_bot(room, pub):
                tell(AudioTrackSubscribedFrame(p.identity, pub.sid, track))
            elif is_audio(pub):
                log.warning(
                    "[%s] ignoring %s's unencrypted audio track %s in an encrypted room",
                    self.settings.key,
                    p.identity,
                    pub.sid,
                )

        def unsubscribed(
            track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
        ) -> None:
            if is_audio(pub):
                tell(AudioTrackUnsubscribedFrame(p.identity, pub.sid))

        def muted(p: rtc.Participant, pub: rtc.TrackPublication) -> None:
            tell(TrackMutedFrame(p.identity, pub.sid, True))

        def unmuted(p: rtc.Participant, pub: rtc.TrackPublication) -> None:
            tell(TrackMutedFrame(p.identity, pub.sid, False))

        def data(packet: rtc.DataPacket) -> None:
            sender = packet.participant.identity if packet.participant else None
            reliable = packet.kind == rtc.DataPacketKind.KIND_RELIABLE
            frame = DataReceivedFrame(packet.data, sender, packet.topic, reliable)
            senders.received(frame)

        def dtmf(event: rtc.SipDTMF) -> None:
            sender = event.participant.identity if event.participant else None
            senders.received(DtmfReceivedFrame(event.code, event.digit, sender))

        def speakers(active: list[rtc.Participant]) -> None:
            if active:  # the SDK lists changed speakers, quietest first
                tell(ActiveSpeakerChangedFrame(active[-1].identity))

        def metadata(p: rtc.Participant, old: str, new: str) -> None:
            if p is not room.local_participant:  # the SDK reports the bot's own too
                tell(ParticipantMetadataChangedFrame(p.identity, new))

        def reconnecting() -> None:
            log.warning("[%s] connection lost: the SDK is reconnecting", self.settings.key)
            self._set_state("reconnecting")
            if self.settings.fallback_urls:
                self.tasks.start_soon(self._leave_a_lost_node)

        def reconnected() -> None:
            log.info("[%s] reconnected", self.settings.key)
            self._set_state("connected")
            self.tasks.start_soon(self._yield_to_a_rival, room)

        def disconnected(reason: Any) -> None:
            if not self._leaving:
                self._set_state("disconnected")
                name = reason_name(reason)
                tell(RoomDisconnectedFrame(name))
                self.ref.tell_nowait(RoomDisconnectedFrame(name))

        room.on("participant_connected", joined)
        room.on("participant_disconnected", left)
        room.on("track_subscribed", subscribed)
        room.on("track_unsubscribed", unsubscribed)
        room.on("track_muted", muted)
        room.on("track_unmuted", unmuted)
        room.on("data_received", data)
        room.on("sip_dtmf_received", dtmf)
        room.on("room_updated", senders.room_changed)
        room.on("active_speakers_changed", speakers)
        room.on("participant_metadata_changed", metadata)
        room.on("reconnecting", reconnecting)
        room.on("reconnected", reconnected)
        room.on("disconnected", disconnected)

    async def receive(self, frame: Frame) -> Any:
        room = self.room
        assert room is not None
        if isinstance(frame, GetRoomFrame):
            return room
        if isinstance(frame, SignallingLostFrame):
            log.warning("[%s] %s: rejoining", self.settings.key, frame.reason)
            raise SignallingLostError(f"[{self.settings.key}] {frame.reason}")
        if isinstance(frame, RoomDisconnectedFrame):
            final = CLUSTER_FINAL_REASONS if self.settings.fallback_urls else FINAL_REASONS
            if self.settings.job is not None and frame.reason in final:
                log.info("[%s] the server ended the session (%s): not rejoining",
                         self.settings.key, frame.reason)
                if self.stats is not None:
                    self.stats.ended = frame.reason
                return None
            raise ConnectionLostError(f"[{self.settings.key}] disconnected: {frame.reason}")
        if isinstance(frame, GetParticipantMetadataFrame):
            p = room.remote_participants.get(frame.participant_id)
            return {} if p is None else {"id": p.identity, "name": p.name, "metadata": p.metadata}
        try:
            if isinstance(frame, SendDataFrame):
                destinations = [frame.destination] if frame.destination else []
                await room.local_participant.publish_data(
                    frame.payload,
                    reliable=frame.reliable,
                    destination_identities=destinations,
                    topic=frame.topic,
                )
            elif isinstance(frame, SetMetadataFrame):
                await room.local_participant.set_metadata(frame.value)
            elif isinstance(frame, SetParticipantMutedFrame):
                await self._set_muted(room, frame.participant_id, frame.muted)
            else:
                return await super().receive(frame)
        except Refused:
            raise
        except Exception as exc:  # a failed command is the caller's news, not a dead link
            raise Refused(f"[{self.settings.key}] {type(frame).__name__} failed: {exc}") from exc
        return None

    async def _set_muted(self, room: rtc.Room, participant_id: str, muted: bool) -> None:
        """Mute through the server API, so the participant itself sees its track muted."""
        p = room.remote_participants.get(participant_id)
        if p is None:
            raise Refused(f"[{self.settings.key}] no participant {participant_id!r}")
        assert self._server is not None
        for pub in p.track_publications.values():
            if is_audio(pub):
                await self._server.room.mute_published_track(
                    api.MuteRoomTrackRequest(
                        room=self.settings.room,
                        identity=participant_id,
                        track_sid=pub.sid,
                        muted=muted,
                    )
                )
