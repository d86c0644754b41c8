"""A bot whose module cannot be imported by a recycled worker's successor: the dispatch
test bot everywhere else. The bot factory is imported when the config is loaded, so a
successor exits at start (exit 2) and never serves (`tests/livekit/test_recycle.py`)."""

from __future__ import annotations

import os

from supervisor.process.recycle import SUCCEEDS_ENV
from tests.helpers.dispatch_bot import create_bot

if os.environ.get(SUCCEEDS_ENV):
    raise RuntimeError("this test bot refuses to run in a successor")

__all__ = ["create_bot"]
