"""The metrics reference page is what the registered collectors export: a metric added,
renamed or re-described without regenerating `docs/reference/metrics.md` fails here
(and the docs build, `make docs`, runs this check too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.observability import reference as metrics_reference

ROOT = Path(__file__).resolve().parents[1]


def test_the_metrics_reference_matches_the_collectors() -> None:
    page = ROOT / metrics_reference.PAGE
    assert page.read_text() == metrics_reference.render(), (
        f"{metrics_reference.PAGE} differs from the collectors: regenerate it with "
        f"`python -m supervisor.observability.reference --write`"
    )


def test_every_exported_family_is_in_the_reference() -> None:
    families, _ = metrics_reference._families()
    page = metrics_reference.render()
    for family in families:
        assert f"`{metrics_reference._name(family)}`" in page


def test_check_fails_on_a_stale_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "metrics.md"
    stale.write_text("# Metrics reference\n")
    assert metrics_reference.main(["--check", str(stale)]) == 1
    assert "--write" in capsys.readouterr().err
    stale.write_text(metrics_reference.render())
    assert metrics_reference.main(["--check", str(stale)]) == 0
