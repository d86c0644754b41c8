"""PNG charts of echo-harness runs: CPU per talking room and latency p99 against rooms.

    python -m benchmarks.charts RUN.json [RUN.json ...] [--out benchmarks] [--prefix echo]
                                [--systems floor,pipecat,supervisor] [--title TEXT]

Each RUN.json is what `python -m benchmarks.echo --json` writes; with several, each
point is the median of the runs of that system and room count, so a chart of three
runs shows what the tables' medians say. `benchmarks.echo --charts DIR` draws the same
from the run it just made. Two charts, for every system the runs hold:

- `PREFIX-cpu.png`: CPU per talking room (% of one core), all threads and, dashed,
  the Python loop (main threads) alone;
- `PREFIX-latency.png`: the load generator's echo p99 (end to end: both jitter buffers
  and Opus, the same measure for every system) and, for the supervisor, its internal
  p99 (arrival in audio-in to `capture_frame` returned; the baselines keep no such
  histogram), on a log scale; an internal p99 past the histogram's last bound (1 s) is
  drawn at that bound.

matplotlib is a benchmark dependency only (`pip install -e '.[bench]'`), imported here
and nowhere in the supervisor.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LAST_BOUND_MS = 1000.0
"""The internal-latency histogram's largest bound: a p99 beyond it is drawn there."""


def medians(
    runs: Sequence[Sequence[dict[str, Any]]], field: str, cap_ms: float | None = LAST_BOUND_MS
) -> dict[str, dict[int, float]]:
    """`field`'s median per system and room count over several runs (missing or NaN
    values left out; a time past `cap_ms`, a histogram's last bound, kept at it: None
    for times measured, not read off a histogram)."""
    found: dict[str, dict[int, list[float]]] = {}
    for results in runs:
        for r in results:
            value = r.get(field)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            value = float(value)
            if cap_ms is not None and field.endswith("_ms"):
                value = min(value, cap_ms)
            found.setdefault(r["system"], {}).setdefault(r["rooms"], []).append(value)
    return {
        system: {rooms: statistics.median(values) for rooms, values in sorted(by_rooms.items())}
        for system, by_rooms in found.items()
    }


CPU_LINES = (("cpu_per_room", "-", ""), ("loop_cpu_per_room", "--", " (Python loop)"))
LATENCY_LINES = (("echo_p99_ms", "-", " echo p99"), ("internal_p99_ms", ":", " internal p99"))
"""(result field, line style, label suffix) of each chart's lines."""


def draw(
    runs: Sequence[Sequence[dict[str, Any]]], out: Path, prefix: str, title: str
) -> list[Path]:
    """Write the two charts of `runs` into `out`; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        line_chart(
            runs, out / f"{prefix}-cpu.png", CPU_LINES, xlabel="talking rooms",
            ylabel="CPU per room, % of one core", title=f"CPU per talking room{title}",
            scale=100,
        ),
        line_chart(
            runs, out / f"{prefix}-latency.png", LATENCY_LINES, xlabel="talking rooms",
            ylabel="ms (log scale)", title=f"Latency p99{title}", log=True,
        ),
    ]  # fmt: skip


def line_chart(
    runs: Sequence[Sequence[dict[str, Any]]],
    path: Path,
    lines: Sequence[tuple[str, str, str]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    scale: float = 1.0,
    log: bool = False,
    cap_ms: float | None = LAST_BOUND_MS,
) -> Path:
    """One chart of `runs` against their room (or conversation) counts: a line per
    system and `lines` entry (result field, line style, label suffix), each point the
    median over the runs (`medians`, capped at `cap_ms`), times `scale`; a log scale if
    `log`, else from 0. Every
    harness's charts (echo's two, the conversations' latency) are drawn here."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    colours: dict[str, str] = {}
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for field, style, label in lines:
        for system, points in medians(runs, field, cap_ms).items():
            colour = colours.setdefault(system, f"C{len(colours)}")
            axes.plot(
                list(points), [v * scale for v in points.values()], style, marker="o",
                color=colour, label=system + label,
            )  # fmt: skip
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if log:
        axes.set_yscale("log")
    else:
        axes.set_ylim(bottom=0)
    axes.set_xticks(sorted({r["rooms"] for results in runs for r in results}))
    axes.grid(alpha=0.3, which="both" if log else "major")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="JSON files of benchmarks.echo --json")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--prefix", default="echo")
    parser.add_argument("--title", default="", help="appended to each chart's title")
    parser.add_argument("--systems", help="comma-separated: draw only these systems")
    args = parser.parse_args(argv)
    wanted = set(args.systems.split(",")) if args.systems else None
    runs = [
        [r for r in json.loads(path.read_text())["runs"] if wanted is None or r["system"] in wanted]
        for path in args.runs
    ]
    for path in draw(runs, args.out, args.prefix, args.title):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
