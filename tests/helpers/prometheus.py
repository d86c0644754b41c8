"""A real Prometheus for tests, and what the tests read of `grafana/`.

Prometheus and promtool come from Debian's `prometheus` package (`make test`
installs it when it is missing and it can). Without them a test is skipped with the
reason, except under CI (`CI` set), where a missing tool is a failure: CI must
prove the observability checks, not skip them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from supervisor.livekit_server.server import free_port

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "lksup.json"
ALERTS = GRAFANA / "alerts.yml"
JOB = "lksup"
"""The scrape job the alert rules select on."""


def tool(name: str, package: str = "prometheus") -> str:
    """The path of a command-line tool from Debian's `package`; skip the test (fail
    under CI) without it."""
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name} is not installed: `make test` installs Debian's {package} package as root"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_tool(
    *args: str, cwd: Path = GRAFANA, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool(args[0]), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """Status and body of a GET; an HTTP error status is a result, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class Samples:
    """One scrape, parsed: `samples["name", {"label": "value"}]` is a sample's value."""

    def __init__(self, text: str) -> None:
        self.values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[sample.name, frozenset(sample.labels.items())] = sample.value

    def __getitem__(self, key: tuple[str, dict[str, str]] | str) -> float:
        name, labels = (key, {}) if isinstance(key, str) else key
        return self.values[name, frozenset(labels.items())]

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(labels)[label] for sample, labels in self.values if sample == name}


def scrape(base_url: str) -> Samples:
    """A supervisor's `/metrics` (its listener at `base_url`), parsed; it must answer."""
    status, body = get(base_url + "/metrics")
    assert status == 200, body
    return Samples(body)


def rendered(metrics: Any, *, stalled: bool = False) -> dict[tuple[str, Any], float]:
    """What an in-process `SupervisorMetrics` would answer on /metrics (`stalled`: while
    the loop is stalled, read off the loop), by (name, sorted labels)."""
    text = metrics.render(None, stalled=stalled)[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Prometheus:
    """One Prometheus server on a free loopback port, scraping every second the targets
    it discovers in `discovery` (files in Prometheus' file_sd format, as `supervisor
    targets` writes them: how a fleet is found, see docs/scaling/hosts.md)."""

    def __init__(self, workdir: Path, discovery: list[Path]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        files = {"files": [str(path) for path in discovery]}
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": JOB, "file_sd_configs": [files]}],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(json.dumps(config))  # JSON is YAML
        self._args = [
            tool("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            self._args, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            try:
                if get(f"{self.url}/-/ready", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready within {timeout} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a Prometheus HTTP API answer; an error answer fails the test."""
        query = urllib.parse.urlencode(params)
        status, body = get(f"{self.url}/api/v1/{path}?{query}")
        answer = json.loads(body)
        assert status == 200, f"{path} {params}: {body}"
        assert answer["status"] == "success", f"{path} {params}: {body}"
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (or scalar, as a one-sample list)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, expr: str) -> float | None:
        """The one value of a query that should have one, None while it has none."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {len(result)} series, expected one"
        return float(result[0]["value"][1]) if result else None


# --- the dashboard and the rules, as a test reads them ------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of grafana/alerts.yml, as written."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows and panels nested in rows included)."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from (p for p in panel.get("panels", []) if p["type"] != "row")
        else:
            yield panel


def targets(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in board["templating"]["list"]}


def substitute(expr: str, values: dict[str, str]) -> str:
    """An expression as Grafana would send it: `$name` and `${name}` replaced."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


COMPARISON = re.compile(
    r"^(?P<query>.+?)\s*(?:>|<|==|!=|>=|<=)\s*(?P<threshold>[-+0-9.e]+)\s*$", re.S
)


def alert_query(expr: str) -> str:
    """An alert expression without its final comparison: the series it judges."""
    match = COMPARISON.match(expr)
    assert match, f"alert expression {expr!r} is not `<query> <comparison> <number>`"
    return match.group("query")
