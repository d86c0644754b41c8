"""Who is in the fleet and what each serves, as one member hears it, and the rules of who
is dead and who restores or takes what: no I/O, so that the tests prove the rules."""

from __future__ import annotations

import hashlib

import attrs

from supervisor.dispatch.fleet_record import Record


def rank(member: str, key: str) -> bytes:
    """Rendezvous (highest random weight) hashing: a job's owner is the member ranking
    it highest, so every member computes the same owner from the same view, and a
    member joining or leaving moves only the jobs it wins or held."""
    return hashlib.blake2b(f"{member}\0{key}".encode(), digest_size=8).digest()


@attrs.define
class Member:
    heard_at: float
    full: bool = False
    record: Record = attrs.field(factory=Record)
    bye: bool = False


@attrs.define
class FleetView:
    """Who is in the fleet and what each serves, as one member hears it. No I/O: the
    rules of who is dead and who restores what, for the tests to prove."""

    me: str
    restore_after: float
    members: dict[str, Member] = attrs.field(factory=dict)
    """The others, by identity."""

    def heard(self, identity: str, now: float, *, full: bool | None = None) -> None:
        if identity == self.me:  # its own metadata changing is reported too
            return
        member = self.members.setdefault(identity, Member(now))
        member.heard_at = now
        if full is not None:
            member.full = full

    def recorded(self, identity: str, now: float, record: Record) -> None:
        self.heard(identity, now)
        if identity in self.members:
            self.members[identity].record = record

    def said_bye(self, identity: str) -> None:
        member = self.members.get(identity)
        if member is not None:
            member.bye = True

    def left(self, identity: str) -> None:
        """The member's participant left: gone for good after a bye, else it is judged
        by its beats (a member that lost its connection may be back at once)."""
        member = self.members.get(identity)
        if member is not None and member.bye:
            del self.members[identity]

    def forget_times(self, now: float) -> None:
        """This process heard nothing for a while (a stall, a lost connection): what it
        did not hear says nothing about the others."""
        for member in self.members.values():
            member.heard_at = now

    def take_silent(self, now: float) -> list[tuple[str, Member]]:
        """The members not heard from for `restore_after`, removed: dead, unless their
        probe says otherwise (`revive`)."""
        silent = [
            (identity, member)
            for identity, member in self.members.items()
            if not member.bye and now - member.heard_at >= self.restore_after
        ]
        for identity, _ in silent:
            del self.members[identity]
        return silent

    def revive(self, identity: str, member: Member, now: float) -> None:
        """A silent member lives (its probe answered): judged again `restore_after` from
        now, unless it was heard meanwhile."""
        member.heard_at = now
        self.members.setdefault(identity, member)

    def live(self) -> list[str]:
        """Every member, this one included."""
        return [self.me, *(i for i, m in self.members.items() if not m.bye)]

    def takers(self, key: str) -> list[str]:
        """Who may take over the job of tree name `key` from this member, which drains:
        the other live members that are not full (a draining one beats as full), the
        highest ranked first."""
        others = [i for i, m in self.members.items() if not m.bye and not m.full]
        return sorted(others, key=lambda member: rank(member, key), reverse=True)

    def owner(self, key: str, me_full: bool) -> str:
        """Who restores the job of tree name `key`: the highest ranked live member that
        is not full; the highest ranked of all when every one is."""
        full = {i for i, m in self.members.items() if m.full} | ({self.me} if me_full else set())
        live = self.live()
        candidates = [i for i in live if i not in full] or live
        return max(candidates, key=lambda member: rank(member, key))
