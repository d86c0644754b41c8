"""`/status`: the process as a JSON document, for people and scripts.

What livekit-agents' worker answers on `/worker` (its type, agent name, active jobs,
load, versions), and what an operator asks next: every room tree with its state, its
connection, its participants and restarts, and for a dispatched room its job. A tree's
`name` is its key (`Job.key`: `room:participant` for a participant's job), `room` the
LiveKit room it serves. The
room states are the ones `lksup_rooms` counts and `/readyz` names
(`RoomCensus.rooms_now`), the worker's figures the ones `lksup_dispatch_*`
exports: one source for all three.

Read on the supervisor's loop, like a scrape. While the loop does not answer (a
stall) the listener's thread answers with what was last read there, marked `stale`
with its `read_at`, rather than nothing: which rooms there were is what one wants to
know about a stalled process.

Never in it: a token, the API secret, or a job's metadata and attributes (what a
backend tells its bot, such as customer data, is not for whoever reads a status
page; the bot can log what it needs).
"""

from __future__ import annotations

import os
import time
from typing import Any

from supervisor import __version__
from supervisor.config import DispatchConfig
from supervisor.observability.metrics import SupervisorMetrics
from supervisor.process.rooms import JOB_ENDS, OFFER_ANSWERS, RoomSet

Document = dict[str, Any]


class Status:
    """Builds the `/status` document of one process."""

    def __init__(self, metrics: SupervisorMetrics, room_set: RoomSet) -> None:
        self.metrics = metrics
        self.room_set = room_set
        self.dispatch: DispatchConfig = room_set.config.dispatch
        """As the process started: a reload changes `[dispatch]` at the next start only."""
        self._last: Document | None = None

    def read(self) -> Document:
        """The document, read on the supervisor's loop (and kept for `stalled`)."""
        ready, readiness = self.metrics.readiness()
        self._last = {
            "read_at": round(time.time(), 3),
            "ready": ready,
            "readiness": readiness,
            "rooms_served": self.room_set.rooms_served,
            "worker": self._worker(),
            "rooms": self._rooms(),
        }
        return self._document(self._last, stale=False)

    def stalled(self, why: str) -> Document:
        """The document from the listener's thread, while the loop does not answer: not
        ready, and the worker and rooms as last read (None before any read)."""
        last = self._last or {"read_at": None, "rooms_served": None, "worker": None, "rooms": None}
        return self._document({**last, "ready": False, "readiness": why}, stale=True)

    def _document(self, read: Document, *, stale: bool) -> Document:
        healthy, health = self.metrics.watchdog.health()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "healthy": healthy,
            "health": health,
            "stale": stale,
            **read,
        }

    def _worker(self) -> Document:
        if not self.dispatch.enabled:
            return {"enabled": False}
        state = self.room_set.worker
        assert state is not None  # built with the set, as `[dispatch]` is enabled
        return {
            "enabled": True,
            "registered": state.registered,
            "worker_id": state.worker_id,
            "agent_name": self.dispatch.agent_name,
            "draining": state.draining,
            "full": state.full or state.draining,
            "load": round(state.load, 3),
            "load_threshold": self.dispatch.load_threshold,
            "max_rooms": self.dispatch.max_rooms,
            "rooms": len(self.room_set.dispatched),
            "offers": {answer: state.offers[answer] for answer in OFFER_ANSWERS},
            "jobs_ended": {status: state.ended[status] for status in JOB_ENDS},
            "fleet": self._fleet(),
        }

    def _fleet(self) -> Document:
        fleet = self.room_set.fleet
        if fleet is None:
            return {"enabled": False}
        return {
            "enabled": True,
            "identity": fleet.identity,
            "connected": fleet.connected,
            "members": fleet.members,
            "others": [
                {"identity": identity, "jobs": jobs, "full": full}
                for identity, jobs, full in fleet.others
            ],
            "dead": fleet.dead,
            "restored": fleet.restored,
            "handed_over": fleet.handed,
            "taken_over": fleet.taken,
            "not_handed_over": fleet.not_handed,
        }

    def _rooms(self) -> list[Document]:
        room_set = self.room_set
        configured = {room.name for room in room_set.config.rooms}
        rooms = []
        for name, state, restarts in self.metrics.census.rooms_now():
            stats = room_set.stats.get(name)
            job = room_set.dispatched.get(name)
            kind = "dispatched" if job else "configured" if name in configured else "removed"
            rooms.append(
                {
                    "name": name,
                    "room": job.room if job else name,
                    "kind": kind,
                    "state": state,
                    "connection": stats.connection if stats else "connecting",
                    "participants": len(stats.participants) if stats else 0,
                    "restarts": restarts,
                    "job": None
                    if job is None
                    else {
                        "id": job.id,
                        "dispatch_id": job.dispatch_id,
                        "agent_name": job.agent_name,
                        "participant": job.participant,
                        "room_sid": job.room_sid,
                    },
                }
            )
        return rooms
