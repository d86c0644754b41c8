"""An actor kernel on anyio: two-lane mailboxes, tell and ask, OTP-style supervision.

Written on anyio alone, so it runs on asyncio and on trio. Messages are pipecat frames;
the kernel's own control frames subclass pipecat's `SystemFrame`.
"""

from actors.actor import Actor, ReplyLater
from actors.cell import ActorState
from actors.errors import (
    ActorCrashedError,
    ActorError,
    ActorStoppedError,
    AskTimeoutError,
    FrameDroppedError,
    MailboxFullError,
    Refused,
    RestartIntensityError,
    single_errors,
)
from actors.frames import (
    ChildExitedFrame,
    RestartChildrenFrame,
    StartChildFrame,
    StopChildFrame,
    WhichChildrenFrame,
)
from actors.mailbox import MailboxSpec, MailboxStats, Overflow
from actors.ref import ActorRef
from actors.root import open_actor
from actors.specs import (
    Backoff,
    ChildInfo,
    ChildSpec,
    ChildStatistics,
    Restart,
    RestartIntensity,
    Strategy,
)
from actors.supervision import Supervisor

__all__ = [
    "Actor",
    "ActorCrashedError",
    "ActorError",
    "ActorRef",
    "ActorState",
    "ActorStoppedError",
    "AskTimeoutError",
    "Backoff",
    "ChildExitedFrame",
    "ChildInfo",
    "ChildSpec",
    "ChildStatistics",
    "FrameDroppedError",
    "MailboxFullError",
    "MailboxSpec",
    "MailboxStats",
    "Overflow",
    "Refused",
    "ReplyLater",
    "Restart",
    "RestartChildrenFrame",
    "RestartIntensity",
    "RestartIntensityError",
    "StartChildFrame",
    "StopChildFrame",
    "Strategy",
    "Supervisor",
    "WhichChildrenFrame",
    "open_actor",
    "single_errors",
]
