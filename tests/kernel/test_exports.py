"""The kernel's boundary, in the spirit of trio's test_exports: the process (`supervisor/`)
uses the actor kernel and the room tree only through their public faces, `actors` and
`actors.room`, and every name those faces export exists.

Tests and benchmarks may reach inside (they test and measure the parts); the product
may not, so that the kernel's modules can be rearranged without touching it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_FACES = ("actors", "actors.room", "actors.room.models")
"""`actors.room.models` is a face of its own: it loads onnxruntime, so only a bot that
uses the shared models imports it."""


def kernel_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of an `actors` module in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "actors"
        ):
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "actors"
            ]
    return found


def test_the_process_imports_the_kernel_only_through_its_public_faces() -> None:
    leaks = []
    for path in sorted((ROOT / "supervisor").rglob("*.py")):
        for line, module, names in kernel_imports(path):
            if module not in PUBLIC_FACES:
                leaks.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
                continue
            exported = importlib.import_module(module).__all__
            leaks += [
                f"{path.relative_to(ROOT)}:{line} imports {module}.{name}, not in its __all__"
                for name in names
                if name not in exported
            ]
    assert not leaks, "\n".join(leaks)


@pytest.mark.parametrize("module", PUBLIC_FACES)
def test_every_exported_name_exists(module: str) -> None:
    face = importlib.import_module(module)
    missing = [name for name in face.__all__ if not hasattr(face, name)]
    assert not missing, f"{module}.__all__ names what it does not have: {missing}"
