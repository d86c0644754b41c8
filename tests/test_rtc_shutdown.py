"""`supervisor.process.rtc_shutdown.release_rtc` on the installed rtc SDK, in a child process
(it disposes the SDK's runtime for good, which this test process still needs).

It relies on two private names of the SDK (`FfiClient._instance`, `_dispose`), the
ones the SDK's own exit hook uses; an SDK release that renames them fails here first.
The abort it prevents is timing-dependent and shown by `tests/livekit/test_bench.py`'s
repeated runs on many rooms.
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.cli_process import REPO_ROOT

SCRIPT = """
from livekit import rtc
from livekit.rtc._ffi_client import FfiClient
from supervisor.process.rtc_shutdown import release_rtc

release_rtc()
assert FfiClient._instance is None, "a process that never used rtc got a runtime"
source = rtc.AudioSource(48000, 1)  # starts the native runtime
release_rtc()
assert FfiClient._ffi_disposed, "the runtime was not disposed"
release_rtc()  # again, then the SDK's own exit hook: both do nothing
print("released")
"""


def test_release_disposes_the_runtime_once_and_only_if_used() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.decode().strip()) == (0, "released"), done.stderr.decode()
