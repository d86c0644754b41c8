"""Every test in this folder needs the real livekit-server and the rtc SDK: it is marked
`livekit` (`pytest -m "not livekit"` runs the rest) and runs on asyncio only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks.dispatch import AgentsVenvError, ensure_agents_venv
from benchmarks.echo import REPO_ROOT
from tests.helpers.event_loop import ASYNCIO

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def anyio_backend() -> Any:
    """The rtc SDK is asyncio-only: overrides the suite's asyncio+trio parametrization
    (uvloop's loop with `LKSUP_TEST_EVENT_LOOP=uvloop`)."""
    return ASYNCIO


_AGENTS_BUILD = pytest.StashKey[subprocess.Popen[bytes]]()


CPU_BOUND = frozenset({
    "test_bench.py", "test_churn_harness.py", "test_conversations_harness.py",
    "test_dispatch_bench.py", "test_recycle.py", "test_supervisor_process.py",
    "test_voice_bot.py", "test_workers.py",
})
"""The files whose tests keep both cores busy (many rooms talking, speech models, worker
processes): spread over processes they run one after another, in one group, beside
tests that mostly wait. Two of them at once starve each other's rooms on 2 cores."""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark this folder's tests `livekit`. In one process they run after the others: the
    unit tests first, the quickest to fail, while livekit-agents' venv is made beside
    them. Spread over processes (pytest-xdist `--dist loadgroup`, as `make test` runs
    them) each file is a group, the `CPU_BOUND` files one group together, and they go
    first, the CPU-bound group leading: the longest work starts early and the unit tests
    fill the gaps at the end."""
    # A conftest's hook sees the whole session's items, not only this folder's.
    spread = "PYTEST_XDIST_WORKER" in os.environ
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.livekit)
        if spread:
            cpu_bound = item.path.name in CPU_BOUND and item.path.is_relative_to(HERE)
            item.add_marker(pytest.mark.xdist_group("cpu-bound" if cpu_bound else str(item.path)))

    def order(item: pytest.Item) -> tuple[bool, ...]:
        livekit = item.get_closest_marker("livekit") is not None
        if not spread:
            return (livekit,)
        return (not livekit, item.path.name not in CPU_BOUND)

    items.sort(key=order)  # stable


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start making livekit-agents' venv now if a test will need it: a minute of PyPI
    and unpacking that overlaps the unit tests instead of holding up the suite."""
    needed = any("agents_venv" in getattr(item, "fixturenames", ()) for item in session.items)
    made = (REPO_ROOT / ".venv-agents" / ".installed").exists()
    if needed and not made and not session.config.option.collectonly:
        session.config.stash[_AGENTS_BUILD] = subprocess.Popen(
            ["make", "-s", "agents-venv"], cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip


def pytest_sessionfinish(session: pytest.Session) -> None:
    build = session.config.stash.get(_AGENTS_BUILD, None)
    if build is not None and build.poll() is None:  # the session ended first
        build.terminate()
        build.wait()


@pytest.fixture(scope="module")
def agents_venv(request: pytest.FixtureRequest) -> Path:
    """livekit-agents' venv (`make agents-venv`, from PyPI the first time), for the tests
    of the benchmarks' livekit-agents workers. A machine that cannot install it skips,
    with make's reason; CI must be able to."""
    build = request.config.stash.get(_AGENTS_BUILD, None)
    if build is not None:
        build.wait()  # then `make` finds it made, or says again why it is not
    try:
        return ensure_agents_venv()
    except AgentsVenvError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI could not make livekit-agents' venv: {err}")
        pytest.skip(f"livekit-agents' venv could not be made here: {err}")
