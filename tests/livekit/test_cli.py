"""`supervisor run` as a user starts and stops it: the embedded server comes and goes with
it. Flags and config errors are in tests/test_cli_arguments.py."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from supervisor.livekit_server.server import free_port, listening
from tests.helpers.cli_process import GOOD_CONFIG, supervisor_command, write_config


def read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """The process's stderr up to the line containing `marker`.

    A thread reads the pipe because a pipe read has no timeout of its own; an empty
    string marks the end of the stream.
    """
    stream = process.stderr
    assert stream is not None
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not seen or marker not in seen[-1]:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = ""
        if not line:
            raise AssertionError(
                f"no {marker!r} within {timeout} s (exit code {process.poll()}); "
                f"stderr so far:\n{''.join(seen)}"
            )
        seen.append(line)
    return "".join(seen)


@pytest.mark.smoke
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_starts_embedded_server_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    # the listener on a port of its own, not the default one a `make run` beside may hold
    metrics = f'\n[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
    path = write_config(tmp_path, GOOD_CONFIG.format(port=port) + metrics)
    process = subprocess.Popen(
        supervisor_command("run", str(path)),
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        log = read_until(process, "ready:", timeout=60)
        assert "[lobby] joined as bot" in log
        assert "[support] joined as bot" in log
        assert listening(port)

        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
        assert not listening(port), "the embedded livekit-server outlived the supervisor"
    finally:
        if process.poll() is None:
            # SIGTERM first: a SIGKILLed supervisor would leave its server running.
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
