"""`supervisor targets`: a host's metrics endpoints for Prometheus, without a server.

That a real Prometheus reads the output and scrapes every worker of a real
`--workers 2` supervisor is tests/livekit/test_observability.py.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from supervisor.cli import main
from tests.helpers.prometheus import run_tool

CONFIG = """
[livekit]
url = "wss://lk-a.fleet.example:7880"
cluster_urls = ["wss://lk-b.fleet.example:7880"]
embedded_server = false

[bot]
factory = "supervisor.bots.echo:create_bot"

[metrics]
listen = "{listen}"

[dispatch]
enabled = true
"""


def targets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], listen: str, *args: str
) -> tuple[int, str, str]:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(listen=listen))
    code = main(["targets", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_one_group_per_worker_labelled_host_and_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = targets(
        tmp_path, capsys, "10.0.0.7:9500", "--workers", "3", "--host", "lk-host-1"
    )
    assert code == 0
    assert err == ""
    assert json.loads(out) == [
        {"targets": [f"10.0.0.7:{9500 + i}"], "labels": {"host": "lk-host-1", "worker": str(i)}}
        for i in range(3)
    ]


def test_a_wildcard_listen_address_is_dialled_by_this_machines_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = targets(tmp_path, capsys, "0.0.0.0:9464")
    assert code == 0
    ((group),) = json.loads(out)
    address = group["targets"][0].rpartition(":")[0]
    assert address in (socket.getfqdn(), socket.gethostname())
    assert not address.startswith("localhost")
    assert group["labels"] == {"host": socket.gethostname(), "worker": "0"}
    _, out, _ = targets(tmp_path, capsys, "[::]:9464", "--address", "fd00::7", "--workers", "2")
    assert [g["targets"] for g in json.loads(out)] == [["[fd00::7]:9464"], ["[fd00::7]:9465"]]


def test_a_loopback_address_is_printed_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = targets(tmp_path, capsys, "127.0.0.1:9464")
    assert code == 0
    assert json.loads(out)[0]["targets"] == ["127.0.0.1:9464"]
    assert "127.0.0.1 is a loopback address: only a Prometheus on this host" in err


def test_srv_records_name_each_workers_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = targets(
        tmp_path, capsys, "0.0.0.0:9464", "--workers", "2",
        "--address", "h1.fleet.example", "--srv", "_lksup._tcp.fleet.example.",
    )  # fmt: skip
    assert code == 0
    assert out.splitlines() == [
        "_lksup._tcp.fleet.example. 300 IN SRV 0 0 9464 h1.fleet.example.",
        "_lksup._tcp.fleet.example. 300 IN SRV 0 0 9465 h1.fleet.example.",
    ]


@pytest.mark.parametrize(
    ("listen", "args", "message"),
    [
        (
            "0.0.0.0:65535", ("--workers", "2"),
            "metrics.listen = '0.0.0.0:65535': expected a port <= 65534",
        ),
        ("0.0.0.0:9464", ("--address", "a b"), "--address 'a b': expected a host name"),
        ("0.0.0.0:9464", ("--host", ""), "--host '': expected a name without spaces"),
        (
            "10.0.0.7:9464", ("--srv", "_lksup._tcp.fleet.example."),
            "--address '10.0.0.7': an SRV record's target must be a host name",
        ),
        (
            "0.0.0.0:9464", ("--srv", "lksup.fleet.example"),
            "--srv 'lksup.fleet.example': expected a fully qualified SRV name",
        ),
    ],
)  # fmt: skip
def test_bad_arguments_name_what_was_expected(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    listen: str,
    args: tuple[str, ...],
    message: str,
) -> None:
    code, out, err = targets(tmp_path, capsys, listen, *args)
    assert code == 2
    assert out == ""
    assert message in err


def test_prometheus_discovers_each_worker_with_its_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prometheus' own discovery reads the output (`promtool check service-discovery`);
    that a real Prometheus scrapes what it finds is the observability test's."""
    _, out, _ = targets(tmp_path, capsys, "10.0.0.7:9464", "--workers", "2", "--host", "h1")
    (tmp_path / "h1.json").write_text(out)
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({"scrape_configs": [{
        "job_name": "lksup", "file_sd_configs": [{"files": [str(tmp_path / "*.json")]}],
    }]}))  # fmt: skip
    result = run_tool(
        "promtool", "check", "service-discovery", "--timeout=5s", str(config), "lksup", cwd=tmp_path
    )  # it reports what it found within the timeout: a file is read at once
    assert result.returncode == 0, result.stdout + result.stderr
    found = {
        (t["labels"]["instance"], t["labels"]["host"], t["labels"]["worker"], t["labels"]["job"])
        for t in json.loads(result.stdout)
    }
    assert found == {("10.0.0.7:9464", "h1", "0", "lksup"), ("10.0.0.7:9465", "h1", "1", "lksup")}
