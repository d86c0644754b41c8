"""The fleet's rules without a server: who is dead, who restores what, the record.

The real-server proof (a host SIGKILLed, its rooms' bots back from two survivors) is
`tests/livekit/test_cluster.py`.
"""

from __future__ import annotations

import json

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from livekit.api import ParticipantInfo

from actors.room import Job
from supervisor.config import Config, ConfigError
from supervisor.dispatch import fleet
from supervisor.dispatch.fleet import fleet_room, probe_url, successor_identity
from supervisor.dispatch.fleet_record import (
    Record,
    RecordError,
    decode_handoff,
    decode_record,
    encode_handoff,
    encode_record,
)
from supervisor.dispatch.fleet_view import FleetView
from supervisor.dispatch.jobs import ServedJob
from supervisor.livekit_server.access import Credentials
from supervisor.process.rooms import FleetState, WorkerState
from tests.helpers.configs import echo_config

names = st.text("abcdef0123", min_size=1, max_size=6)
members = st.lists(names, min_size=1, max_size=8, unique=True)
keys = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30, unique=True)


def view_of(me: str, others: list[str], full: frozenset[str] = frozenset()) -> FleetView:
    view = FleetView(me, restore_after=3.0)
    for identity in others:
        view.heard(identity, 0.0, full=identity in full)
    return view


@given(members, keys)
def test_every_job_has_one_owner_whoever_computes_it(names: list[str], job_keys: list[str]) -> None:
    """Every member computes the same owner from the same view: views built by each
    member (itself as `me`, in any order) agree job by job."""
    owners = {
        key: {view_of(me, [n for n in names if n != me]).owner(key, False) for me in names}
        for key in job_keys
    }
    assert all(len(found) == 1 for found in owners.values())
    assert all(found <= set(names) for found in owners.values())


@given(members, keys, st.text("xyz", min_size=1, max_size=4))
def test_a_member_joining_takes_only_jobs_it_wins(
    names: list[str], job_keys: list[str], newcomer: str
) -> None:
    """Rendezvous hashing: a view with one more member moves jobs only to that member,
    so survivors that see a newcomer differently disagree only on the newcomer's jobs."""
    me, others = names[0], names[1:]
    before = view_of(me, others)
    after = view_of(me, [*others, newcomer])
    for key in job_keys:
        moved_to = after.owner(key, False)
        assert moved_to in (before.owner(key, False), newcomer)


@given(members, keys, st.data())
def test_full_members_restore_nothing_unless_all_are_full(
    names: list[str], job_keys: list[str], data: st.DataObject
) -> None:
    me, others = names[0], names[1:]
    full = frozenset(data.draw(st.sets(st.sampled_from(names))))
    view = view_of(me, others, full - {me})
    for key in job_keys:
        owner = view.owner(key, me in full)
        assert owner not in full or full == set(names)


def test_a_silent_member_is_taken_once_and_a_bye_never() -> None:
    view = FleetView("me", restore_after=3.0)
    view.heard("a", 0.0)
    view.heard("b", 0.0)
    view.said_bye("b")
    view.heard("me", 0.0)  # its own metadata is reported too: never a member
    assert view.take_silent(2.9) == []
    assert [identity for identity, _ in view.take_silent(3.0)] == ["a"]
    assert view.take_silent(10.0) == []  # taken once
    view.left("b")  # left after its bye: gone
    assert view.live() == ["me"]


def test_a_member_revived_by_its_probe_is_judged_again_later() -> None:
    view = FleetView("me", restore_after=3.0)
    view.heard("a", 0.0)
    [(identity, member)] = view.take_silent(3.0)
    view.revive(identity, member, 3.0)
    assert view.take_silent(5.9) == []
    assert [i for i, _ in view.take_silent(6.0)] == ["a"]


def test_a_member_that_left_without_a_bye_is_judged_by_its_beats() -> None:
    """Its connection may be lost and back at once; a SIGKILLed one's leave comes 20 s
    late anyway."""
    view = FleetView("me", restore_after=3.0)
    view.heard("a", 0.0)
    view.left("a")
    assert "a" in view.live()
    assert [i for i, _ in view.take_silent(3.0)] == ["a"]


def test_forgetting_times_after_a_stall_spares_everyone() -> None:
    view = FleetView("me", restore_after=3.0)
    view.heard("a", 0.0)
    view.forget_times(10.0)
    assert view.take_silent(12.9) == []


def test_a_draining_member_hands_a_job_to_the_others_by_rank_the_full_ones_last_never() -> None:
    """The order a draining member asks others to take a job over: by the same rank as a
    restore's owner, itself, the full (a draining member beats as full) and the gone
    left out; the first is the restore's owner once this member is gone."""
    view = view_of("me", ["a", "b", "c", "d"], full=frozenset({"c"}))
    view.said_bye("d")
    for key in ("room-1", "room-2", "call-7:alice"):
        takers = view.takers(key)
        assert sorted(takers) == ["a", "b"]
        assert takers[0] == view.owner(key, me_full=True)


@given(st.text(min_size=1, max_size=20))
def test_a_job_s_bots_alternate_between_two_identities(identity: str) -> None:
    """A handed-over job's bot joins beside its predecessor, under another identity; the
    next handoff brings the first identity back, so two members taking the same job
    over join under one (the second replaces the first)."""
    successor = successor_identity(identity)
    assert successor != identity
    assert successor_identity(successor) == identity
    assert successor_identity("bot") == "bot~2"


def served(room: str, participant: str | None = None, **job: str) -> ServedJob:
    return ServedJob(
        Job(id=f"AJ_{room}", room=room, participant=participant, agent_name="bot", **job),
        identity="bot" if participant is None else f"bot-AJ_{room}",
        name="Bot",
        metadata='{"voice": "x"}',
        attributes={"team": "a"},
    )


def test_a_record_reads_back_as_written() -> None:
    record = Record(
        (served("r1", dispatch_id="AD_1", metadata="m", room_sid="RM_1"), served("r2", "alice")),
        probe="http://h:9464/status",
        states={"AJ_r2": json.dumps({"messages": [{"role": "user", "content": "hi"}]})},
    )
    text, left_out, states_out = encode_record(record)
    assert (left_out, states_out) == (0, 0)
    assert decode_record(text) == record
    assert decode_record("") == Record()
    assert served("r1").token_attributes() == {"team": "a", "lk.agent_name": "bot"}


def test_a_record_over_its_limit_leaves_jobs_out_and_says_how_many() -> None:
    record = Record(tuple(served(f"room-{i}") for i in range(100)))
    text, left_out, states_out = encode_record(record, limit=4000)
    assert len(text.encode()) <= 4000
    kept = decode_record(text).jobs
    assert left_out == 100 - len(kept) > 0
    assert (kept, states_out) == (record.jobs[: len(kept)], 0)


def test_a_record_over_its_limit_leaves_the_largest_states_out_before_any_job() -> None:
    """A job restored without its state starts its conversation anew; a job left out
    is not restored at all."""
    jobs = tuple(served(f"room-{i}") for i in range(5))
    states = {s.job.id: json.dumps({"note": "x" * (200 * (i + 1))}) for i, s in enumerate(jobs)}
    whole, _, _ = encode_record(Record(jobs, states=states))
    text, left_out, states_out = encode_record(Record(jobs, states=states), len(whole) - 900)
    kept = decode_record(text)
    assert (kept.jobs, left_out) == (jobs, 0)
    assert states_out == 1
    assert set(kept.states) == {s.job.id for s in jobs[:4]}  # the largest went


def test_a_handoff_reads_back_as_written_and_a_malformed_one_is_an_error() -> None:
    job = served("r1", "alice", dispatch_id="AD_1", room_sid="RM_1")
    assert decode_handoff(encode_handoff(job)) == (job, "")
    state = json.dumps({"messages": [{"role": "user", "content": "hi"}], "turns": 1})
    assert decode_handoff(encode_handoff(job, state)) == (job, state)
    entry = json.loads(encode_handoff(job))["job"]
    for text in (
        "not json",
        "{}",
        json.dumps({"job": {"id": "a"}}),
        json.dumps({"job": entry, "state": [1, 2]}),  # a state is a table
    ):
        with pytest.raises(RecordError):
            decode_handoff(text)


ENTRY = json.loads(encode_record(Record((served("r"),)))[0])["jobs"][0]
"""A record's entry for a job, to make malformed records of."""


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"jobs": "x"}),
        json.dumps({"jobs": [{"job": {"id": "a"}}]}),
        json.dumps({"jobs": [], "probe": 5}),
        json.dumps({"jobs": [{**ENTRY, "identity": 7}]}),
        json.dumps({"jobs": [{**ENTRY, "attributes": {"a": 1}}]}),
        json.dumps({"jobs": [{**ENTRY, "job": {**ENTRY["job"], "participant": 3}}]}),
        json.dumps({"jobs": [{**ENTRY, "state": "not a table"}]}),
    ],
)
def test_a_malformed_record_is_an_error(text: str) -> None:
    with pytest.raises(RecordError):
        decode_record(text)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", "http://127.0.0.1:9464/status"),
        ("10.0.0.5:9500", "http://10.0.0.5:9500/status"),
        ("[::1]:9464", "http://[::1]:9464/status"),
    ],
)
def test_the_probe_is_the_metrics_listener(listen: str, expected: str) -> None:
    assert probe_url(config(listen)) == expected


def test_a_listener_on_every_address_is_probed_by_host_name() -> None:
    probe = probe_url(config("0.0.0.0:9464"))
    assert probe.endswith(":9464/status")
    assert "0.0.0.0" not in probe


def test_each_agent_name_has_its_own_fleet() -> None:
    assert fleet_room("") == "lksup-fleet"
    assert fleet_room("support") == "lksup-fleet.support"


def config(listen: str) -> Config:
    return echo_config(metrics={"listen": listen}, dispatch={"enabled": True})


def test_restore_and_handoff_are_on_by_default_and_handoff_follows_restore() -> None:
    dispatch = config("127.0.0.1:9464").dispatch
    assert (dispatch.restore, dispatch.handoff) == (True, True)
    dispatch = echo_config(dispatch={"restore": False}).dispatch
    assert (dispatch.restore, dispatch.handoff) == (False, False)
    dispatch = echo_config(dispatch={"handoff": False}).dispatch
    assert (dispatch.restore, dispatch.handoff) == (True, False)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"restore_after_seconds": 0.5},
         r"dispatch.restore_after_seconds = 0.5: expected a number of seconds >= 1"),
        ({"handoff": True, "restore": False},
         r"dispatch.handoff = true: expected dispatch.restore = true as well"),
        ({"checkpoint": True, "restore": False},
         r"dispatch.checkpoint = true: expected dispatch.restore = true as well"),
    ],
)  # fmt: skip
def test_the_fleet_keys_are_checked(keys: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        echo_config(dispatch=keys)


class FakeJobs:
    """What `Fleet._take_over` asks of `Jobs`: the taker's bot published or not, its
    track subscribed to or not (None: never)."""

    def __init__(self, published: bool | None, subscribed: bool | None = True) -> None:
        self._published, self._subscribed = published, subscribed
        self.heard: list[str] = []
        self.ended: list[tuple[str, str]] = []
        self.waited_for_subscriber = False

    async def published(self, job_id: str) -> bool:
        if self._published is None:
            await anyio.sleep_forever()  # never published
        return bool(self._published)

    async def subscribed(self, job_id: str) -> bool:
        try:
            if self._subscribed is None:
                await anyio.sleep_forever()  # nobody subscribes
            return bool(self._subscribed)
        finally:
            self.waited_for_subscriber = True

    def predecessor_removed(self, job_id: str) -> None:
        self.heard.append(job_id)

    def end(self, job_id: str, reason: str) -> None:
        self.ended.append((job_id, reason))


async def take_over(
    monkeypatch: pytest.MonkeyPatch,
    published: bool | None,
    removal: Exception | None = None,
    still_there: bool = True,
    state: FleetState | None = None,
    subscribed: bool | None = True,
) -> tuple[FakeJobs, str | None]:
    """`Fleet._take_over` of job AJ_x from bot `bot`, the server API faked: `removal`
    raised by the removal, `still_there` what a listing then says; why it was not taken
    over, if it was not (the giver is told). `state`: the member's, to read after."""

    async def remove(server_api: object, room: str, identity: str, timeout: float) -> None:
        assert (room, identity) == ("x", "bot")
        assert jobs.waited_for_subscriber  # not removed before the caller can hear the new bot
        if removal is not None:
            raise removal

    async def listing(server_api: object, room: str, timeout: float) -> list[object]:
        return [ParticipantInfo(identity="bot")] if still_there else []

    monkeypatch.setattr(fleet, "remove_participant", remove)
    monkeypatch.setattr(fleet, "participants_in", listing)
    monkeypatch.setattr(fleet, "TAKEOVER_SECONDS", 0.05)
    monkeypatch.setattr(fleet, "SUBSCRIBED_SECONDS", 0.05)
    jobs = FakeJobs(published, subscribed)
    member = fleet.Fleet(
        config("127.0.0.1:9464"), Credentials("ws://x:1", "k", "s"), jobs,  # type: ignore[arg-type]
        WorkerState(), state or FleetState(),
    )  # fmt: skip
    job = Job(id="AJ_x", room="x", agent_name="bot")
    return jobs, await member._take_over(job, "bot", object())  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_taker_removes_the_old_bot_once_published_and_is_heard_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = FleetState()
    jobs, declined = await take_over(monkeypatch, published=True, state=state)
    assert (jobs.heard, jobs.ended, declined) == (["AJ_x"], [], None)
    assert state.removal_time.count == 1  # the removal timed (the caller's silence)


@pytest.mark.anyio
async def test_a_taker_whose_track_nobody_subscribes_to_removes_the_old_bot_after_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs, declined = await take_over(monkeypatch, published=True, subscribed=None)
    assert (jobs.heard, jobs.ended, declined) == (["AJ_x"], [], None)


@pytest.mark.anyio
async def test_a_taker_not_published_in_time_leaves_and_the_old_bot_talks_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs, declined = await take_over(monkeypatch, published=None)
    assert jobs.heard == []
    assert jobs.ended == [("AJ_x", "not taken over: not published within 0.05 s")]
    assert declined == "not published within 0.05 s"


@pytest.mark.anyio
async def test_a_taker_that_cannot_remove_the_old_bot_leaves_unless_it_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused, state = TimeoutError(), FleetState()
    jobs, declined = await take_over(monkeypatch, published=True, removal=refused, state=state)
    assert jobs.heard == []
    assert jobs.ended == [("AJ_x", "not taken over: bot not removed (TimeoutError)")]
    assert state.removal_time.count == 0
    assert declined == "bot not removed (TimeoutError)"
    # gone meanwhile (its job ended by itself): this bot is the room's one bot, and stays
    jobs, declined = await take_over(
        monkeypatch, published=True, removal=refused, still_there=False
    )
    assert (jobs.heard, jobs.ended, declined) == ([], [], None)


@pytest.mark.anyio
async def test_a_taker_whose_job_ended_meanwhile_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs, declined = await take_over(monkeypatch, published=False)
    assert (jobs.heard, jobs.ended) == ([], [])
    assert declined == "its job here ended before it took over"


class HandingJobs:
    """What `Fleet._hand` asks of `Jobs` for one running job, which ends once `ended`
    is set."""

    def __init__(self) -> None:
        self.end = anyio.Event()

    def ended(self, job_id: str) -> anyio.Event:
        return self.end

    def runs(self, job_id: str) -> bool:
        return not self.end.is_set()

    def offered_state(self, job_id: str) -> str:
        return ""


class HandoffRoom:
    """The fleet room as `Fleet._hand` uses it: each handoff sent is answered as the
    taker's entry in `declining` says (a decline, why, as it reaches the giver), or taken
    by a taker not in it."""

    def __init__(self, member: fleet.Fleet, jobs: HandingJobs, declining: dict[str, str]) -> None:
        self.local_participant = self
        self.asked: list[str] = []
        self._member, self._jobs, self._declining = member, jobs, declining

    async def send_text(self, text: str, topic: str, destination_identities: list[str]) -> None:
        assert topic == fleet.HANDOFF_TOPIC
        (taker,) = destination_identities
        self.asked.append(taker)
        if taker in self._declining:
            self._member._was_declined(taker, {"job": "AJ_x", "why": self._declining[taker]})
        else:
            self._jobs.end.set()  # taken: the taker's bot removed this member's


async def hand(monkeypatch: pytest.MonkeyPatch, *whys: str) -> tuple[HandoffRoom, FleetState]:
    """`Fleet._hand` of job AJ_x among three other members, the first `len(whys)` of its
    takers declining it, each for its why."""
    monkeypatch.setattr(fleet, "HANDOFF_SECONDS", 3600)
    jobs = HandingJobs()
    member = fleet.Fleet(
        config("127.0.0.1:9464"), Credentials("ws://x:1", "k", "s"), jobs,  # type: ignore[arg-type]
        WorkerState(), FleetState(),
    )  # fmt: skip
    for other in ("m1", "m2", "m3"):
        member.view.heard(other, 0.0, full=False)
    room = HandoffRoom(member, jobs, dict(zip(member.view.takers("x"), whys, strict=False)))
    with anyio.fail_after(10):  # a hang, not a time judged
        await member._hand(room, served("x"))  # type: ignore[arg-type]
    return room, member.state


@pytest.mark.anyio
async def test_a_member_that_declines_a_handoff_sends_the_giver_to_the_next_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Members draining together (the workers of one host, a deploy) decline what the
    others hand them before their beats say so: the giver asks the next member then,
    not `HANDOFF_SECONDS` later."""
    room, state = await hand(monkeypatch, "draining", "draining")
    assert len(room.asked) == 3
    assert (state.handed, state.not_handed) == (1, 0)


@pytest.mark.anyio
async def test_a_handoff_declined_for_nobody_to_serve_is_not_asked_again_nor_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller left: the job ends here by itself, which is no failed handoff (its
    alert would fire at every deploy)."""
    room, state = await hand(monkeypatch, fleet.NOBODY_TO_SERVE)
    assert len(room.asked) == 1
    assert (state.handed, state.not_handed) == (0, 0)
