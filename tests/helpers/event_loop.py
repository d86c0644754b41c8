"""Which asyncio event loop the suite's asyncio tests run on.

`LKSUP_TEST_EVENT_LOOP=uvloop` runs them on uvloop, the loop `[runtime] event_loop =
"uvloop"` gives the rooms' processes, so the behaviour tests can be run on both:
`LKSUP_TEST_EVENT_LOOP=uvloop pytest tests/livekit/test_room_echo.py tests/kernel`.
"""

from __future__ import annotations

import os
from typing import Any

ASYNCIO: Any = (
    ("asyncio", {"use_uvloop": True})
    if os.environ.get("LKSUP_TEST_EVENT_LOOP") == "uvloop"
    else "asyncio"
)
"""anyio's backend (with its options) for an asyncio test."""
