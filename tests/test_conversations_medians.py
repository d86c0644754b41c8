"""The conversations harness's `--medians` without a server: several runs' figures become
one row per system and count, and what a system held is judged on those rows.

A run against a real server is tests/livekit/test_conversations_harness.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.conversations import format_markdown, held, median_results


def run(p95s: dict[int, float], *, missed_at: int | None = None) -> list[dict[str, Any]]:
    """One run of the supervisor at each count, with the given voice-to-voice p95s."""
    return [
        {
            "system": "supervisor", "rooms": rooms, "turns": 8 * rooms,
            "v2v_p50_ms": p95 / 2, "v2v_p95_ms": p95, "v2v_p99_ms": p95,
            "missed": int(rooms == missed_at), "cut_off": 0, "caller_errors": [],
            "cpu_per_conversation": 0.25, "bot_cores": 0.25 * rooms, "callers_cores": 0.1,
            "callers_lag_p99_ms": 2.0, "server_cores": 0.02, "rss_per_conversation_mb": 50.0,
            "pss_per_conversation_mb": 40.0, "baseline_pss_mb": 480.0, "load_1m": 1.0,
            "saturated": rooms == 4, "ttfb_p95_ms": {"LLM": p95 / 10},
        }
        for rooms, p95 in p95s.items()
    ]  # fmt: skip


def test_each_figure_is_the_median_of_the_runs_and_a_loss_in_any_run_counts() -> None:
    runs = [
        run({1: 1000, 2: 1100, 4: 1100}),
        run({1: 1200, 2: 1400, 4: 2000}, missed_at=4),
        run({1: 900, 2: 1250, 4: 1200}),
    ]
    rows = {r["rooms"]: r for r in median_results(runs)}
    assert rows[1]["v2v_p95_ms"] == 1000
    assert rows[2]["v2v_p95_ms"] == 1250
    assert rows[2]["ttfb_p95_ms"] == {"LLM": pytest.approx(125)}
    assert (rows[4]["turns"], rows[4]["missed"], rows[4]["runs"]) == (96, 1, 3)
    assert rows[4]["saturated"]
    # the median p95 at 4 (1200) is within 1.25x of 1000, but a reply was lost there
    assert held(median_results(runs), "supervisor") == 2
    runs[1] = run({1: 1200, 2: 1400, 4: 2000})
    assert held(median_results(runs), "supervisor") == 4
    assert "| supervisor | 4 (saturated) | 96 |" in format_markdown(median_results(runs))


def test_a_count_no_run_measured_keeps_its_reason() -> None:
    why = {"system": "agents", "rooms": 1, "unavailable": "no venv"}
    (row,) = median_results([[why], [why | {"unavailable": "again"}]])
    assert row == why
    assert "not available (no venv)" in format_markdown([row])
