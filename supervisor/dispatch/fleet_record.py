"""The fleet's wire format: a member's record (the jobs it serves, each with what a token
for the same bot needs, and its probe), set in its metadata, and a handed-over job, sent
on a text stream; decoded strictly, since any member's metadata is read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from actors.room import Job
from supervisor.dispatch.jobs import ServedJob

RECORD_BYTES = 256 * 1024
"""At most this much record in a member's metadata (livekit-server allows 512 KiB)."""


@attrs.frozen
class Record:
    """What a member tells the fleet in its metadata."""

    jobs: tuple[ServedJob, ...] = ()
    probe: str = ""
    """Its `/status` URL, where a member silent in the fleet is asked whether it lives."""
    states: Mapping[str, str] = attrs.field(factory=dict)
    """By job id, the state its bot last offered (JSON text), with `[dispatch]
    checkpoint`: what a survivor restoring the job after this member died hands its
    bot."""


def encode_record(record: Record, limit: int = RECORD_BYTES) -> tuple[str, int, int]:
    """The record as a member's metadata, and how many jobs and how many of their states
    did not fit in `limit`: states are left out first, the largest first, then jobs."""
    entries = [attrs.asdict(entry, value_serializer=_plain) for entry in record.jobs]
    for entry in entries:
        state = record.states.get(entry["job"]["id"])
        if state:
            entry["state"] = json.loads(state)

    def text() -> str:
        return json.dumps({"jobs": entries, "probe": record.probe}, separators=(",", ":"))

    states_out = 0
    excess = len(text().encode()) - limit
    with_state = sorted(
        (e for e in entries if "state" in e), key=lambda e: len(record.states[e["job"]["id"]])
    )
    while excess > 0 and with_state:  # no re-encoding per state: its bytes, and its key's
        entry = with_state.pop()
        excess -= len(json.dumps({"state": entry.pop("state")}, separators=(",", ":"))) - 1
        states_out += 1
    left_out = 0
    while len(text().encode()) > limit and entries:
        cut = max(1, len(entries) // 10)
        del entries[-cut:]
        left_out += cut
    return text(), left_out, states_out


def _plain(_: Any, __: Any, value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def encode_handoff(served: ServedJob, state: str = "") -> str:
    """A job handed over, as the text its taker reads: the record's entry for it, and
    the state its bot offered (JSON text, "" for none: `RoomTransport.offer_state`)."""
    doc = {
        "job": attrs.asdict(served, value_serializer=_plain),
        "state": json.loads(state) if state else None,
    }
    return json.dumps(doc, separators=(",", ":"))


class RecordError(ValueError):
    """A member's metadata is not a record this version reads."""


def decode_record(text: str) -> Record:
    """A member's metadata as its record; "" is an empty one. Raises `RecordError`."""
    if not text:
        return Record()
    try:
        doc = json.loads(text)
        probe = doc.get("probe", "")
        if not isinstance(probe, str):
            raise TypeError(f"probe = {probe!r}")
        jobs = tuple(_served(entry) for entry in doc["jobs"])
        states = {
            served.job.id: _state(entry.get("state"))
            for served, entry in zip(jobs, doc["jobs"], strict=True)
            if entry.get("state") is not None
        }
        return Record(jobs, probe, states)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise RecordError(f"not a fleet record: {err}") from err


def decode_handoff(text: str) -> tuple[ServedJob, str]:
    """A handoff's job and state (JSON text, "" for none). Raises `RecordError`."""
    try:
        doc = json.loads(text)
        state = doc.get("state")
        return _served(doc["job"]), "" if state is None else _state(state)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise RecordError(f"not a handoff: {err}") from err


def _state(state: Any) -> str:
    """A bot's offered state as JSON text: an object, as `RoomTransport.offer_state`
    takes."""
    if not isinstance(state, dict):
        raise TypeError(f"state = {state!r}")
    return json.dumps(state)


_JOB_TEXT = ("id", "room", "room_sid", "room_metadata", "dispatch_id", "metadata", "agent_name")


def _served(entry: dict[str, Any]) -> ServedJob:
    job = entry["job"]
    participant = job.get("participant")
    if participant is not None and not isinstance(participant, str):
        raise TypeError(f"job.participant = {participant!r}")
    return ServedJob(
        job=Job(
            **_texts(job, _JOB_TEXT),
            participant=participant,
            attributes=_text_map(job.get("attributes", {})),
        ),
        **_texts(entry, ("identity", "name", "metadata")),
        attributes=_text_map(entry["attributes"]),
    )


def _texts(entry: dict[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    values = {name: entry[name] for name in names}
    wrong = {name: value for name, value in values.items() if not isinstance(value, str)}
    if wrong:
        raise TypeError(f"expected strings: {wrong!r}")
    return values


def _text_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError(f"expected a table of strings: {value!r}")
    return value
