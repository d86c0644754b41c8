"""The kernel's documented error hierarchy.

Everything the kernel raises at a caller derives from `ActorError`, so a caller can
catch the whole family at once, and the timeouts also derive from `TimeoutError`, so
code written against plain anyio timeouts keeps working.
"""

from __future__ import annotations


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
