"""What a supervisor is told about its children: how to build, restart and stop each.

Plain frozen values, apart from the supervisor that acts on them, so the modules below
it (a cell runs a `ChildSpec`, a frame carries one) depend on these types and not on
the supervisor, and a caller can describe a tree without importing its machinery.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from attrs import validators as v

from actors.mailbox import MailboxSpec, MailboxStats

if TYPE_CHECKING:
    from actors.actor import Actor
    from actors.cell import ActorState
    from actors.ref import ActorRef


class Strategy(enum.Enum):
    """Which children restart when one of them fails."""

    ONE_FOR_ONE = "one_for_one"
    """Only the failed child."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: they depend on each other."""
    REST_FOR_ONE = "rest_for_one"
    """The failed child and every child started after it: later ones depend on earlier."""


class Restart(enum.Enum):
    """When an ended child is restarted."""

    PERMANENT = "permanent"
    """Always."""
    TRANSIENT = "transient"
    """Only after a crash; a clean exit ends it."""
    TEMPORARY = "temporary"
    """Never; once it ends it is forgotten."""


def _non_negative_number(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value!r}")


@attrs.frozen
class RestartIntensity:
    """At most `max_restarts` restarts within `within_seconds`, or the supervisor gives up.

    `max_restarts=None` never gives up: for a supervisor that must outlive any child,
    such as the process's room supervisor, where a room that keeps failing only waits
    longer and longer (its backoff) between attempts.
    """

    # attrs' stubs type a field by its `default` (int here), not by its annotation
    max_restarts: int | None = attrs.field(
        default=3,
        validator=v.optional([v.instance_of(int), v.ge(0)]),  # type: ignore[arg-type]
    )
    within_seconds: float = attrs.field(default=5.0, validator=[_non_negative_number, v.gt(0)])


@attrs.frozen
class Backoff:
    """Exponential delay before a restart: `initial * multiplier**(n-1)`, capped, jittered.

    `n` counts the failed child's own restarts inside the intensity window, so one
    flapping child backs off without slowing its siblings' restarts, and a child that
    has been quiet for a whole window starts over from `initial`. Jitter spreads the
    restarts of many rooms that failed together (a LiveKit server restart) over time.
    """

    initial: float = attrs.field(default=0.1, validator=_non_negative_number)
    maximum: float = attrs.field(default=10.0, validator=_non_negative_number)
    multiplier: float = attrs.field(default=2.0, validator=[_non_negative_number, v.ge(1)])
    jitter: float = attrs.field(default=0.1, validator=[_non_negative_number, v.le(1)])

    def delay(self, attempt: int, uniform: Callable[[], float]) -> float:
        """Seconds to wait before restart number `attempt` (1-based) of the window."""
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        return base * (1.0 + self.jitter * (2.0 * uniform() - 1.0))


def _valid_name(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"{attribute.name} must be a non-empty string without '/', got {value!r}")


def _shutdown_timeout(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _non_negative_number(instance, attribute, value)


@attrs.frozen
class ChildSpec:
    """How to build, restart and stop one child.

    `shutdown_timeout` is how long a stop waits before it kills: None waits for as
    long as it takes (OTP's `infinity`, right for a child that is a supervisor), 0
    kills at once.
    """

    name: str = attrs.field(validator=_valid_name)
    factory: Callable[[], Actor] = attrs.field(validator=v.is_callable())
    restart: Restart = attrs.field(default=Restart.PERMANENT, validator=v.instance_of(Restart))
    shutdown_timeout: float | None = attrs.field(default=5.0, validator=_shutdown_timeout)
    mailbox: MailboxSpec = attrs.field(factory=MailboxSpec, validator=v.instance_of(MailboxSpec))


@attrs.frozen
class ChildInfo:
    """One child as its supervisor sees it: the answer to `WhichChildrenFrame`."""

    name: str
    ref: ActorRef
    state: ActorState
    incarnation: int
    restarts: int
    last_error: BaseException | None


@attrs.frozen
class ChildStatistics:
    """One child slot as it is now, read in place (`Supervisor.children()`), for a
    metrics exporter or a status page: no message, no wait, no reference into the tree.

    `slot` tells slots apart for the life of the process: a child rebuilt after its
    parent's restart, or removed and added again, is a new slot whose counters
    (`restarts`, the mailbox's drops) start again from 0. `children` are the slots
    below it when the child is itself a supervisor (empty while it is not running).
    """

    name: str
    slot: int
    state: ActorState
    incarnation: int
    restarts: int
    last_error: BaseException | None
    mailbox: MailboxStats
    children: tuple[ChildStatistics, ...] = ()
