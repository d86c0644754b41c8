"""Ending the rtc SDK's work: one room (`end_room`), then the process's native runtime
(`release_rtc`), for every process of this project that uses rtc: `supervisor` (run,
its workers, bench), the baselines in `benchmarks/`, the test session. The room
actors end their rooms in the same order by construction (the audio actors, which own
the streams and the source, stop before the connection actor leaves). Kept free of
pipecat, like `supervisor.livekit_server.access`, so the bare-SDK baseline can use it.

Why the process needs more than leaving its rooms: the SDK's native runtime (Rust, on
its own tokio threads) calls back into Python for every event and every Rust log
record, trace level included, and it goes on doing so after `Room.disconnect()`
returns: closing a room's signalling websocket alone logs thousands of records over
about a second. The SDK disposes that runtime in an `atexit` hook, which stops new
callbacks but not one a native thread has already begun. Python 3.11 to 3.13 end a
thread that asks for the GIL once the interpreter is finalizing (`pthread_exit`);
that forced unwind crosses the SDK's `extern "C"` frames, and Rust aborts the process:
`panic in a function that cannot unwind`, SIGABRT, after every result was written.
Disposing the runtime ourselves while the interpreter is still whole, then giving
callbacks already under way the GIL, leaves nothing to call back at finalization.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio
from livekit import rtc
from livekit.rtc._ffi_client import FfiClient

LEAVE_TIMEOUT = 5.0
"""A room's media and connection get this long to close (a dead server never answers)."""
CALLBACK_DRAIN_SECONDS = 0.1
"""How long the main thread leaves the GIL to callbacks that began before the dispose.
After the dispose no callback can start, and one that had begun needs the GIL once for
microseconds; this is twenty of CPython's 5 ms switch intervals, paid once per process."""


class Closable(Protocol):
    """What reads or feeds a room: an `rtc.AudioStream`, `rtc.AudioSource`, `rtc.AudioMixer`."""

    async def aclose(self) -> None: ...


async def end_room(room: rtc.Room, *media: Closable, timeout: float = LEAVE_TIMEOUT) -> None:
    """Close `media` in the order given (streams, then sources), then leave `room`.

    What reads and feeds the room goes before the connection, as in the room's actor
    tree. Shielded, so an owner being cancelled still leaves (a room left open keeps its
    native tasks calling back until the process ends), and bounded by `timeout` as a
    whole, so a server that stopped answering cannot hold the owner.
    """
    with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
        for closable in media:
            await closable.aclose()
        await room.disconnect()


def release_rtc() -> None:
    """Dispose the SDK's native runtime now, while the interpreter can still serve its
    callbacks, and let the ones already under way finish.

    Call it once the process is done with rtc (every room ended, its event loop closed),
    just before the interpreter exits. It runs the dispose the SDK's own `atexit` hook
    would run (closing any room still open; that hook then does nothing) and is a no-op
    in a process that never used rtc, or when called again. The SDK has no public way to
    do this: `FfiClient._instance` and `_dispose` are its own names for what its hook
    calls (`tests/test_rtc_shutdown.py` fails first if a release renames them).
    """
    client = FfiClient._instance
    if client is None or FfiClient._ffi_disposed:
        return
    client._dispose()
    time.sleep(CALLBACK_DRAIN_SECONDS)
