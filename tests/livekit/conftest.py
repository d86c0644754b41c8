"""Every test in this folder needs the real livekit-server and the rtc SDK: it is marked
`livekit` (`pytest -m "not livekit"` runs the rest) and runs on asyncio only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks.dispatch import AgentsVenvError, ensure_agents_venv
from tests.helpers.event_loop import ASYNCIO

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def anyio_backend() -> Any:
    """The rtc SDK is asyncio-only: overrides the suite's asyncio+trio parametrization
    (uvloop's loop with `LKSUP_TEST_EVENT_LOOP=uvloop`)."""
    return ASYNCIO


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest's hook sees the whole session's items, not only this folder's.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.livekit)


@pytest.fixture(scope="module")
def agents_venv() -> Path:
    """livekit-agents' venv (`make agents-venv`, from PyPI the first time), for the tests
    of the benchmarks' livekit-agents workers. A machine that cannot install it skips,
    with make's reason; CI must be able to."""
    try:
        return ensure_agents_venv()
    except AgentsVenvError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI could not make livekit-agents' venv: {err}")
        pytest.skip(f"livekit-agents' venv could not be made here: {err}")
