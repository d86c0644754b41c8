"""The import picture the folders promise: every arrow points down.

`benchmarks` use the process, the process uses the kernel, never the other way; inside
`supervisor/`, each subpackage sits on a layer and imports only from layers below it
(imports under `TYPE_CHECKING` are annotations, not arrows, and are left out). So the
subpackages have no import cycle, and a reader can learn them bottom up.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS: tuple[tuple[str, ...], ...] = (
    ("benchmarks",),
    ("supervisor.cli",),
    ("supervisor.bench", "supervisor.commands", "supervisor.lifecycle"),
    ("supervisor.dispatch", "supervisor.observability"),
    ("supervisor.web",),
    ("supervisor.process",),
    ("supervisor.livekit_server",),
    ("supervisor.config",),
    ("supervisor.bots",),
    ("supervisor.generated",),
    ("supervisor",),  # the package itself: `__version__`
    ("actors",),
)
"""Top to bottom. Units on one layer do not import each other."""

LAYER_OF = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str | None:
    """The layered unit `module` belongs to: its longest prefix in `LAYERS`."""
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        prefix = ".".join(parts[:size])
        if prefix in LAYER_OF:
            return prefix
    return None


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of each absolute import `path` makes when it runs; `from a import b`
    counts as `a.b` so that `from supervisor import bench` is an arrow to `bench`."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_every_import_points_down_the_layers() -> None:
    upward = []
    for top in ("benchmarks", "supervisor", "actors"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            source = unit_of(module_name(path))
            assert source is not None, f"{path} is on no layer: add its package to LAYERS"
            for line, imported in runtime_imports(path):
                target = unit_of(imported)
                if target is None or target == source:
                    continue
                if LAYER_OF[target] <= LAYER_OF[source]:
                    upward.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {imported}")
    assert not upward, "\n".join(upward)


def test_every_subpackage_is_on_a_layer() -> None:
    subpackages = {
        f"supervisor.{path.parent.name}" for path in (ROOT / "supervisor").glob("*/__init__.py")
    }
    assert subpackages <= set(LAYER_OF), subpackages - set(LAYER_OF)
