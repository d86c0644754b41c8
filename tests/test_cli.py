"""The `supervisor` command as a user meets it: flags, config errors, run and stop."""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from supervisor import __version__
from supervisor.cli import main
from supervisor.livekit_server import free_port

GOOD_CONFIG = """
[livekit]
url = "ws://127.0.0.1:{port}"
api_key_env = "SUPERVISOR_TEST_KEY"
api_secret_env = "SUPERVISOR_TEST_SECRET"
embedded_server = true

[bot]
factory = "supervisor.bots.echo:create_bot"

[[rooms]]
name = "lobby"
[[rooms]]
name = "support"
"""


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_console_script_prints_version() -> None:
    script = Path(sys.executable).with_name("supervisor")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stdout.strip() == f"supervisor {__version__}"


def test_help_lists_run_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "Exit codes" in out


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('url = "ws://127.0.0.1:{port}"\n', "", "livekit.url is missing: expected a ws://"),
        (
            "embedded_server = true",
            'embedded_server = "yes"',
            "livekit.embedded_server = 'yes': expected true or false",
        ),
        (
            'url = "ws://127.0.0.1:{port}"',
            "url = 7880",
            "livekit.url = 7880: expected a ws:// or wss:// URL",
        ),
        ("embedded_server", "embeded_server", "livekit.embeded_server is not a known key"),
        (
            '"supervisor.bots.echo:create_bot"',
            '"echo"',
            "bot.factory = 'echo': expected 'module:function'",
        ),
        (
            'name = "support"',
            'name = "lobby"',
            "rooms[1].name = 'lobby': expected a name no other room uses",
        ),
        ("[bot]", "[bot", "TOML syntax error"),
        (
            '"supervisor.bots.echo:create_bot"',
            '"supervisor.bots.echo:nope"',
            "bot.factory = 'supervisor.bots.echo:nope': module 'supervisor.bots.echo' has no callable 'nope'",
        ),
        (
            '"supervisor.bots.echo:create_bot"',
            '"no_such_module:create_bot"',
            "bot.factory = 'no_such_module:create_bot': cannot import module 'no_such_module'",
        ),
    ],
    ids=[
        "missing-key",
        "wrong-type",
        "bad-url",
        "unknown-key",
        "bad-factory",
        "dup-room",
        "syntax",
        "factory-not-found",
        "factory-module-missing",
    ],
)
def test_bad_config_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: str
) -> None:
    assert old in GOOD_CONFIG
    text = GOOD_CONFIG.replace(old, new).format(port=free_port())
    assert main(["run", str(write_config(tmp_path, text))]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err
    assert len(err.splitlines()) == 1


def test_unreadable_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_missing_credentials_env_var_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPERVISOR_TEST_KEY", raising=False)
    text = GOOD_CONFIG.format(port=free_port()).replace("= true", "= false")
    assert main(["run", str(write_config(tmp_path, text))]) == 2
    assert "environment variable SUPERVISOR_TEST_KEY" in capsys.readouterr().err


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


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.livekit
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_starts_embedded_server_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    path = write_config(tmp_path, GOOD_CONFIG.format(port=port))
    process = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "run", str(path)],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        log = read_until(process, "ready:", timeout=60)
        assert "[lobby] ready on the server" in log and "[support] ready on the server" in log
        assert "[lobby] joined as bot" in log and "[support] joined as bot" in log
        assert port_answers(port)

        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
        assert not port_answers(port), "the embedded livekit-server outlived the supervisor"
    finally:
        if process.poll() is None:
            # SIGTERM first: a SIGKILLed supervisor would leave its server running.
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
