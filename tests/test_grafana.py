"""`grafana/`: alert rules (promtool), the dashboard (Grafana's linter rules), provisioning.

That every panel query and alert expression returns data from a real supervisor is
tests/livekit/test_observability.py; here are the checks that need no supervisor.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from actors.room import RoomStats
from actors.room.timing import service_buckets
from supervisor.observability.metrics import SupervisorMetrics
from tests.helpers.configs import echo_room_set
from tests.helpers.prometheus import (
    ALERTS,
    DASHBOARD,
    GRAFANA,
    alert_rules,
    dashboard,
    panels,
    run_tool,
    targets,
    variables,
)

GRAFANA_UNITS = {
    "none", "short", "percent", "percentunit", "s", "ms", "µs", "ns", "ops", "cps", "reqps",
    "bytes", "decbytes", "Bps", "binBps",
}  # fmt: skip
"""Grafana units this dashboard may use (a subset of the linter's list)."""
LINTED_TYPES = {"stat", "singlestat", "graph", "table", "timeseries", "gauge"}
"""Panel types the linter's panel rules apply to."""


def test_alert_rules_are_valid() -> None:
    result = run_tool("promtool", "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    result = run_tool("promtool", "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests judge the rules: a rule with the wrong threshold fails them."""
    (tmp_path / "alerts.yml").write_text(
        ALERTS.read_text().replace('state="failed"}) > 0', 'state="failed"}) > 1')
    )
    shutil.copy(GRAFANA / "alerts_test.yml", tmp_path)
    result = run_tool("promtool", "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "LksupRoomsFailing" in result.stdout + result.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-dns.yml"])
def test_example_prometheus_configs_are_valid(config: str) -> None:
    """The fleet found by files (`supervisor targets` output) or by DNS SRV records."""
    result = run_tool("promtool", "check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_points_grafana_at_prometheus_and_the_dashboard() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == variables(dashboard())["datasource"]["query"] == "prometheus"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/lksup.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    assert sorted(p.name for p in DASHBOARD.parent.glob("*.json")) == ["lksup.json"]


# --- the dashboard linter's rules -------------------------------------------------------


def lint(board: dict[str, Any]) -> list[str]:
    """The problems Grafana's dashboard-linter reports with its default rules, for the
    constructs this dashboard uses.

    The linter itself cannot be built here: `go install github.com/grafana/dashboard-linter`
    at v0.2.0 (its newest release) needs `github.com/grafana/grafana/apps/dashboard`,
    which the Go module proxy refuses (403, 2026-12-01), and v0.1.1 is refused outright.
    So its default rules are restated here, and the next test proves they can fail.
    """
    problems: list[str] = []
    vars_ = variables(board)
    datasources = [v for v in vars_.values() if v["type"] == "datasource"]
    if [(v["name"], v["query"], v.get("label")) for v in datasources] != [
        ("datasource", "prometheus", "Data source")
    ]:
        problems.append(f"template-datasource-rule: {datasources}")
    for name in ("job", "instance"):
        var = vars_.get(name)
        if var is None:
            problems.append(f"template-{name}-rule: no {name} variable")
            continue
        if var["datasource"]["uid"] not in ("$datasource", "${datasource}"):
            problems.append(f"template-{name}-rule: datasource {var['datasource']}")
        if var["type"] != "query" or var.get("label") != name.title():
            problems.append(f"template-{name}-rule: type or label")
        if not var.get("multi") or var.get("allValue") != ".+":
            problems.append(f"template-{name}-rule: must be multi with allValue '.+'")
    for var in vars_.values():
        if var["type"] != "query":
            continue
        if not re.fullmatch(r"(label_names|label_values|metrics|query_result)\(.+\)", var["query"]):
            problems.append(f"template-label-promql-rule: {var['name']}: {var['query']}")
        if var.get("refresh") != 2:
            problems.append(f"template-on-time-change-reload-rule: {var['name']}")
    for panel in panels(board):
        title = panel.get("title", "")
        if panel["datasource"]["uid"] not in ("$datasource", "${datasource}"):
            problems.append(f"panel-datasource-rule: {title}")
        if panel["type"] in LINTED_TYPES:
            if not title or not panel.get("description"):
                problems.append(f"panel-title-description-rule: {title!r}")
            if panel["fieldConfig"]["defaults"].get("unit") not in GRAFANA_UNITS:
                problems.append(f"panel-units-rule: {title}")
            if not panel.get("targets"):
                problems.append(f"panel-no-targets-rule: {title}")
    for title, expr in targets(board):
        problems += [f"{title}: {problem}" for problem in lint_promql(expr)]
    return problems


SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")


def lint_promql(expr: str) -> list[str]:
    """target-job/instance-rule, target-rate-interval-rule, target-counter-agg-rule."""
    problems = []
    for match in SELECTOR.finditer(expr):
        name, matchers = match.groups()
        for label in ("job", "instance"):
            if f'{label}=~"${label}"' not in matchers:
                problems.append(f"target-{label}-rule: {name} lacks {label}=~\"${label}\"")
        if name.endswith("_total"):
            before, after = expr[: match.start()], expr[match.end() :]
            if not re.search(r"\b(rate|irate|increase)\(\s*$", before) or not after.startswith("["):
                problems.append(f"target-counter-agg-rule: {name} not in rate/irate/increase")
    for window in re.findall(r"\[([^\]]*)\]", expr):
        if window != "$__rate_interval":
            problems.append(f"target-rate-interval-rule: [{window}]")
    # What is left once selectors, strings, ranges, calls and grouping are removed must
    # be numbers: a bare metric name would be a selector without job and instance.
    rest = SELECTOR.sub(" ", expr)
    rest = re.sub(r'"[^"]*"|\[[^\]]*\]', " ", rest)
    rest = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", rest)
    rest = re.sub(r"\b\w+\s*\(", " ", rest)
    problems += [f"bare selector {word}" for word in re.findall(r"\b[a-zA-Z_:]\w*\b", rest)]
    return problems


def test_dashboard_follows_the_linter_rules() -> None:
    board = dashboard()
    assert lint(board) == []
    assert len(list(targets(board))) >= 20, "a panel or query went missing"


def test_the_linter_rules_catch_mistakes() -> None:
    """The check above can fail: each kind of mistake is reported."""
    board = dashboard()
    panel = next(p for p in panels(board) if p["type"] == "timeseries")
    panel["description"] = ""
    panel["fieldConfig"]["defaults"]["unit"] = "furlongs"
    panel["datasource"] = {"type": "prometheus", "uid": "prometheus"}
    panel["targets"] = [
        {"expr": 'sum(rate(lksup_audio_frames_in_total{job=~"$job", instance=~"$instance"}[5m]))'},
        {"expr": 'lksup_audio_frames_out_total{instance=~"$instance"}'},
        {"expr": "sum(lksup_participants)"},
    ]
    problems = "\n".join(lint(board))
    for rule in (
        "panel-title-description-rule", "panel-units-rule", "panel-datasource-rule",
        "target-rate-interval-rule", "target-job-rule", "target-counter-agg-rule",
        "bare selector lksup_participants",
    ):  # fmt: skip
        assert rule in problems


# --- names the exporter must have --------------------------------------------------------


def exported_names() -> set[str]:
    """Every sample name one process exports, with a room (its per-room series),
    `[dispatch]` on (the `lksup_dispatch_*` and `lksup_fleet_*` series) and a bot that
    reported a service's timings (the `lksup_bot_*` series labelled by processor)."""
    room_set = echo_room_set("lobby", dispatch={"enabled": True})
    bot = room_set.stats.setdefault("lobby", RoomStats())
    bot.bot_ttfb["EspeakTTSService"] = service_buckets()
    bot.bot_processing["EspeakTTSService"] = service_buckets()
    text = SupervisorMetrics(room_set, room_set.config.metrics).render(None)[0].decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def used_names() -> dict[str, str]:
    """Every metric name the dashboard (panels, template variables) and the alert rules
    select, with where."""
    board = dashboard()
    queries = [*targets(board)]
    queries += [(f"variable {v['name']}", v["query"]) for v in variables(board).values()
                if v["type"] == "query"]  # fmt: skip
    queries += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    used = {}
    for where, expr in queries:
        for name in SELECTOR.findall(expr) + re.findall(r"label_values\((\w+)", expr):
            used[name[0] if isinstance(name, tuple) else name] = where
    return used


def test_every_metric_the_dashboard_and_alerts_use_is_exported() -> None:
    """...so a renamed or dropped metric cannot leave a panel or an alert without data
    unnoticed (the real-server check, tests/livekit/test_observability.py, also sees it,
    but only for what its fleet exports)."""
    used = used_names()
    assert {"lksup_dispatch_first_audio_seconds_bucket", "lksup_dispatch_full"} <= set(used)
    missing = {name: where for name, where in used.items() if name not in exported_names()}
    assert missing.keys() <= {"up"}, missing  # `up` is Prometheus' own
