"""Suite-wide fixtures: both anyio backends, and one real livekit-server per session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from supervisor.livekit_server.server import LiveKitServer
from supervisor.process.rtc_shutdown import release_rtc
from tests.helpers.event_loop import ASYNCIO

_SERVER_KEY = pytest.StashKey[LiveKitServer]()

# No per-example time limit: CI shares a busy machine, where a wall-clock deadline
# (hypothesis' default is 200 ms) fails examples that are merely slow, not wrong.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


@pytest.fixture(params=[ASYNCIO, "trio"], ids=["asyncio", "trio"], scope="module")
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every `@pytest.mark.anyio` test runs on both backends: the kernel must not
    depend on asyncio.

    The livekit rtc SDK is asyncio-only: `tests/livekit/conftest.py` overrides this
    for every LiveKit test, and a single asyncio-only test elsewhere parametrizes it:
    `@pytest.mark.parametrize("anyio_backend", ["asyncio"])`. asyncio's loop is
    uvloop's with `LKSUP_TEST_EVENT_LOOP=uvloop` (`tests/helpers/event_loop.py`).
    """
    return request.param


@pytest.fixture(scope="session")
def livekit_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveKitServer]:
    """A real livekit-server v1.13.5 in dev mode on free loopback ports.

    Started once per session because it takes ~0.3 s and rooms are cheap to keep
    apart by name. Its log stays under pytest's temp folder (pytest keeps the last
    three runs); a failed session prints its path and tail.
    """
    server = LiveKitServer(log_path=tmp_path_factory.mktemp("livekit") / "livekit-server.log")
    request.config.stash[_SERVER_KEY] = server
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    server = config.stash.get(_SERVER_KEY, None)
    if server is None or exitstatus == pytest.ExitCode.OK:
        return
    terminalreporter.section("livekit-server log")
    terminalreporter.write_line(f"full log: {server.log_path}")
    terminalreporter.write_line(server.log_tail(40))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every test's rtc rooms are left and its event loop closed: release the SDK's
    native runtime before the interpreter exits, as `supervisor` does."""
    release_rtc()
