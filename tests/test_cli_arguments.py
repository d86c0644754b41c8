"""The `supervisor` command as a user meets it: flags, config errors, run and stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from supervisor import __version__
from supervisor.cli import loop_options, main
from supervisor.config import RuntimeConfig
from supervisor.livekit_server.server import free_port, listening
from tests.helpers.cli_process import (
    GOOD_CONFIG,
    REPO_ROOT,
    supervisor_command,
    write_config,
)


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
    assert "run" in out
    assert "Exit codes" in out


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
            "bot.factory = 'supervisor.bots.echo:nope': "
            "module 'supervisor.bots.echo' has no callable 'nope'",
        ),
        (
            '"supervisor.bots.echo:create_bot"',
            '"no_such_module:create_bot"',
            "bot.factory = 'no_such_module:create_bot': cannot import module 'no_such_module'",
        ),
        (
            'url = "ws://127.0.0.1:{port}"',
            'url = "localhost:7880"',
            "livekit.url = 'localhost:7880': expected a ws:// or wss:// URL",
        ),
        ("[bot]", "[supervison]\nmax_restarts = 3\n[bot]", "supervison is not a known key"),
        ('name = "support"', 'nmae = "support"', "rooms[1].nmae is not a known key"),
        (
            'api_secret_env = "SUPERVISOR_TEST_SECRET"\nembedded_server = true',
            'api_secret_env = "SUPERVISOR_TEST_MISSING"\nembedded_server = false',
            "environment variable SUPERVISOR_TEST_MISSING (named by livekit.api_secret_env) "
            "is not set",
        ),
        (
            "[bot]",
            "[supervision]\nshutdown_timeout_seconds = -1\n[bot]",
            "supervision.shutdown_timeout_seconds = -1: expected a number of seconds > 0",
        ),
        (
            "[bot]",
            "[bot]\naudio_out_sample_rate = 22050",
            "bot.audio_out_sample_rate = 22050: expected a sample rate, one of 8000, 16000",
        ),
        (
            "[bot]",
            "[bot]\nvad = true\naudio_in_sample_rate = 24000",
            "bot.audio_in_sample_rate = 24000: expected 8000 or 16000 with vad = true",
        ),
        (
            "[bot]",
            "[bot]\naudio_frame_ms = 30",
            "bot.audio_frame_ms = 30: expected milliseconds of audio a frame, one of 10, 20, 40",
        ),
        (
            "[bot]",
            "[recycle]\nmax_rss_mb = -1\n[bot]",
            "recycle.max_rss_mb = -1: expected a whole number >= 0",
        ),
        (
            "[bot]",
            "[limits]\nmax_rooms = 1\n[bot]",
            "rooms has 2 entries: expected at most limits.max_rooms (1)",
        ),
        (
            "[bot]",
            '[metrics]\nlisten = "9464"\n[bot]',
            "metrics.listen = '9464': expected 'host:port'",
        ),
        (
            'name = "support"',
            'name = "support"\ne2ee_key_env = "SUPERVISOR_TEST_MISSING"',
            "environment variable SUPERVISOR_TEST_MISSING (named by rooms[1].e2ee_key_env) "
            "is not set",
        ),
        (
            "[bot]",
            "[watchdog]\nstall_seconds = 0\n[bot]",
            "watchdog.stall_seconds = 0: expected a number of seconds > 0",
        ),
        (
            "[bot]",
            "[watchdog]\nstall_seconds = 5\nrestart_after_seconds = 5\n[bot]",
            "watchdog.restart_after_seconds = 5.0: expected more than stall_seconds (5.0)",
        ),
        (
            "[bot]",
            "[watchdog]\nstall_second = 1\n[bot]",
            "watchdog.stall_second is not a known key",
        ),
        (
            "[bot]",
            "[dispatch]\nload_threshold = 1.5\n[bot]",
            "dispatch.load_threshold = 1.5: expected a number > 0 and <= 1",
        ),
        (
            "[bot]",
            '[dispatch]\naccept = "nowhere:accept"\n[bot]',
            "dispatch.accept = 'nowhere:accept': cannot import module 'nowhere'",
        ),
        (
            "[bot]",
            "[dispatch]\nmax_rooms = 0\n[bot]",
            "dispatch.max_rooms = 0: expected a whole number >= 1",
        ),
        ("[bot]", "[dispatch]\nagent = 'x'\n[bot]", "dispatch.agent is not a known key"),
        (
            "embedded_server = true",
            "embedded_server = true\ncluster_urls = ['ws://10.0.0.2:7880']",
            "livekit.embedded_server = True: expected false with cluster_urls",
        ),
        (
            "embedded_server = true",
            "embedded_server = false\ncluster_urls = ['ws://10.0.0.2:7880', 'ws://10.0.0.2:7880']",
            "livekit.cluster_urls = ['ws://10.0.0.2:7880', 'ws://10.0.0.2:7880']: expected a "
            "list of ws:// or wss:// URLs, each once and none of them url",
        ),
        (
            "embedded_server = true",
            "embedded_server = false\ncluster_urls = 'ws://10.0.0.2:7880'",
            "livekit.cluster_urls = 'ws://10.0.0.2:7880': expected a list of ws:// or wss:// URLs",
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
        "url-without-scheme",
        "unknown-section",
        "unknown-room-key",
        "missing-secret-variable",
        "negative-timeout",
        "bad-sample-rate",
        "vad-at-24000-hz",
        "bad-frame-size",
        "negative-rss-bound",
        "max-rooms-exceeded",
        "bad-metrics-address",
        "missing-e2ee-key-variable",
        "zero-stall-threshold",
        "restart-within-the-stall-threshold",
        "unknown-watchdog-key",
        "dispatch-load-above-1",
        "dispatch-hook-not-found",
        "dispatch-max-rooms-0",
        "unknown-dispatch-key",
        "embedded-server-in-a-cluster",
        "cluster-url-twice",
        "cluster-urls-not-a-list",
    ],
)
def test_bad_config_exits_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    old: str,
    new: str,
    expected: str,
) -> None:
    """Only the row's mistake is wrong: the credentials the config names are set."""
    monkeypatch.setenv("SUPERVISOR_TEST_KEY", "key")
    monkeypatch.setenv("SUPERVISOR_TEST_SECRET", "secret")
    monkeypatch.delenv("SUPERVISOR_TEST_MISSING", raising=False)
    assert old in GOOD_CONFIG
    text = GOOD_CONFIG.replace(old, new).format(port=free_port())
    assert main(["run", str(write_config(tmp_path, text))]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err
    assert len(err.splitlines()) == 1


def test_check_reports_a_good_config_and_refuses_a_bad_one(tmp_path: Path) -> None:
    """`supervisor check` as a user runs it: the rooms on stdout, an error on stderr."""
    port = free_port()
    good = write_config(tmp_path, GOOD_CONFIG.format(port=port))
    bad_text = GOOD_CONFIG.replace("[bot]", "[bots]").format(port=port)
    bad = write_config(tmp_path, bad_text, "bad.toml")
    result = subprocess.run(
        supervisor_command("check", str(good)), capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
    assert f"config OK: 2 room(s) on ws://127.0.0.1:{port}" in result.stdout
    assert "Hz out, 20 ms frames, VAD off\n" in result.stdout
    assert "  watchdog: a loop stalled 2 s is logged and fails /healthz" in result.stdout
    assert "  room lobby\n" in result.stdout
    assert "  room support\n" in result.stdout
    assert "  dispatch: off\n" in result.stdout
    recycle = "  recycle: with --workers N, a worker is replaced past 200 rooms served"
    assert recycle in result.stdout
    assert not listening(port), "check started a server"

    result = subprocess.run(
        supervisor_command("check", str(bad)), capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        f"supervisor: error: {bad}: bots is not a known key: expected one of "
        "livekit, bot, supervision, metrics, watchdog, limits, dispatch, web, runtime, recycle, "
        "rooms"
    )


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


def checked_config(path: Path) -> str:
    """What `supervisor check` prints for a good config."""
    result = subprocess.run(
        supervisor_command("check", str(path)), capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_check_reports_dispatch_and_accepts_a_config_without_rooms(tmp_path: Path) -> None:
    path = write_config(tmp_path, """
[livekit]
url = "ws://127.0.0.1:7880"
cluster_urls = ["ws://127.0.0.2:7880"]
embedded_server = false
[bot]
factory = "supervisor.bots.echo:create_bot"
[dispatch]
enabled = true
agent_name = "support-bot"
max_rooms = 20
accept = "tests.helpers.dispatch_hooks:choosy"
max_duration_seconds = 600
""")
    checked = checked_config(path)
    assert "config OK: 0 room(s)" in checked
    assert (
        "  cluster: also ws://127.0.0.2:7880 (the agent worker registers with every node)\n"
    ) in checked
    assert (
        "  dispatch: jobs for agent 'support-bot', a bot per room, up to 20 job(s) or load "
        "0.7; accept hook tests.helpers.dispatch_hooks:choosy; bot leaves 30 s after the "
        "last participant; max duration 600 s; drain 600 s\n"
        "  dispatched rooms' bot: supervisor.bots.echo:create_bot (the [bot]), identity 'bot'\n"
    ) in checked


def test_check_reports_the_bot_of_participant_jobs(tmp_path: Path) -> None:
    path = write_config(tmp_path, """
[livekit]
url = "ws://127.0.0.1:7880"
[bot]
factory = "supervisor.bots.echo:create_bot"
[dispatch]
enabled = true
job_type = "participant"
[dispatch.bot]
factory = "supervisor.bots.data:create_bot"
identity = "helper"
""")
    checked = checked_config(path)
    assert "  dispatch: every new room, a bot per participant who joins, up to" in checked
    assert (
        "  dispatched rooms' bot: supervisor.bots.data:create_bot, identity 'helper' plus the "
        "job's id\n"
    ) in checked


def test_the_rooms_run_on_uvloop_only_when_the_config_asks() -> None:
    assert loop_options(RuntimeConfig()) == {}
    assert loop_options(RuntimeConfig(event_loop="uvloop")) == {"use_uvloop": True}
