"""supervisor/deploy/livekit-supervisor.service: the unit a fleet's hosts run.

systemd is not the init of this machine, so the unit is never started here: it is
checked by `systemd-analyze verify`, its drain settings against the supervisor's own
deadline, and its shell lines by running them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.config import DispatchConfig, SupervisionConfig
from supervisor.process.workers import DRAIN_MARGIN_SECONDS
from tests.helpers.prometheus import ROOT, tool

UNIT = ROOT / "supervisor" / "deploy" / "livekit-supervisor.service"
INSTALLED = "/opt/livekit-supervisor/bin/supervisor"
CONFIG = "/etc/livekit-supervisor/config.toml"
VENV_SUPERVISOR = str(Path(sys.executable).parent / "supervisor")


def settings() -> dict[str, str]:
    """The unit's `Key=value` lines (each key once here)."""
    lines = [line for line in UNIT.read_text().splitlines() if line and line[0].isalpha()]
    pairs = [line.split("=", 1) for line in lines if "=" in line]
    assert len({key for key, _ in pairs}) == len(pairs), "a key repeated"
    return dict(pairs)


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """Verified with this venv's `supervisor` in place of the installed path (verify
    checks that every command is there)."""
    here = tmp_path / UNIT.name
    here.write_text(UNIT.read_text().replace(INSTALLED, VENV_SUPERVISOR))
    result = subprocess.run(
        [tool("systemd-analyze", "systemd"), "verify", str(here)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_the_unit_lets_a_drain_finish() -> None:
    """SIGTERM reaches the supervisor alone (its workers get it from it, once: a second
    one would stop them at once), and systemd waits longer than the supervisor's own
    deadline for the workers before it kills them."""
    unit = settings()
    assert unit["KillMode"] == "mixed"
    assert unit["KillSignal"] == "SIGTERM"
    deadline = (
        DispatchConfig().drain_seconds
        + SupervisionConfig().shutdown_timeout_seconds
        + DRAIN_MARGIN_SECONDS
    )
    assert float(unit["TimeoutStopSec"]) > deadline
    assert unit["RestartPreventExitStatus"] == "2"  # a bad config is not retried


@pytest.mark.parametrize("workers", [None, "3"])
def test_the_targets_line_writes_one_group_per_worker(
    tmp_path: Path, workers: str | None
) -> None:
    """ExecStartPost as systemd would run it (`$$` is systemd's `$`), with this venv and
    a config of its own: one target per worker, $WORKERS or one per core."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[livekit]\nurl = "wss://lk-a.fleet.example"\nembedded_server = false\n'
        '[bot]\nfactory = "supervisor.bots.echo:create_bot"\n'
        '[metrics]\nlisten = "10.0.0.7:9464"\n'
    )
    line = settings()["ExecStartPost"]
    assert line.startswith("/bin/sh -c '")
    assert line.endswith("'")
    script = (
        line[len("/bin/sh -c '") : -1]
        .replace("$$", "$")
        .replace(INSTALLED, VENV_SUPERVISOR)
        .replace(CONFIG, str(config))
        .replace("/run/livekit-supervisor", str(tmp_path))
    )
    env = {k: v for k, v in os.environ.items() if k != "WORKERS"}
    if workers:
        env["WORKERS"] = workers
    result = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    groups = json.loads((tmp_path / "targets.json").read_text())
    count = int(workers or len(os.sched_getaffinity(0)))  # what nproc counts
    assert [g["targets"] for g in groups] == [[f"10.0.0.7:{9464 + i}"] for i in range(count)]
