"""The kernel's documented error hierarchy.

Everything the kernel raises at a caller derives from `ActorError`, so a caller can
catch the whole family at once, and the timeouts also derive from `TimeoutError`, so
code written against plain anyio timeouts keeps working.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ActorError(Exception):
    """Base of every error the actor kernel raises at a caller."""


class ActorStoppedError(ActorError):
    """The actor is gone for good, or was killed while it held the request."""


class ActorCrashedError(ActorError):
    """The actor crashed while handling this request; the cause is chained."""


class AskTimeoutError(ActorError, TimeoutError):
    """No reply arrived within the ask's timeout."""


class MailboxFullError(ActorError, TimeoutError):
    """A blocking data lane stayed full for the whole send timeout."""


class FrameDroppedError(ActorError):
    """A drop-oldest lane overflowed and dropped this request before it was served."""


class Refused(ActorError):
    """Raised by a handler to turn a request down without crashing the actor.

    The asker gets this exception; a refused `tell` is logged and dropped. Anything
    else a handler raises crashes the actor and goes to its supervisor.
    """


class RestartIntensityError(ActorError):
    """A supervisor saw more restarts than its intensity allows and gave up.

    It stops its remaining children and fails with this error, which its own parent
    then handles like any other crash: the failure escalates one level.
    """


def leaf_error(error: BaseException) -> BaseException:
    """The one real error inside anyio's single-member exception groups."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


@contextmanager
def single_errors() -> Iterator[None]:
    """Raise a task group's lone error as itself, not wrapped in an exception group.

    anyio wraps every task-group error in a group; where a block has one failure to
    report (a root actor's crash, a config error during start-up), callers should be
    able to catch it by its type.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        error = leaf_error(group)
        if error is group:
            raise
        raise error from error.__cause__
