"""The kernel's boundary, in the spirit of trio's test_exports: the process (`supervisor/`)
uses the actor kernel and the room tree only through their public faces, `actors` and
`actors.room`, the room tree uses the kernel only through `actors`, and every name those
faces export exists.

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


def leaks_through(paths: list[Path], faces: tuple[str, ...]) -> list[str]:
    """Each import in `paths` of an `actors` module that is not one of `faces`, or of a
    name a face does not export."""
    leaks = []
    for path in paths:
        for line, module, names in kernel_imports(path):
            if module not in faces:
                leaks.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
                continue
            exported = importlib.import_module(module).__all__
            leaks += [
                f"{path.relative_to(ROOT)}:{line} imports {module}.{name}, not in its __all__"
                for name in names
                if name not in exported
            ]
    return leaks


def test_the_process_imports_the_kernel_only_through_its_public_faces() -> None:
    leaks = leaks_through(sorted((ROOT / "supervisor").rglob("*.py")), PUBLIC_FACES)
    assert not leaks, "\n".join(leaks)


def test_the_room_tree_imports_the_kernel_only_through_its_face() -> None:
    """`actors.room` (and its own modules) may import each other; of the kernel, only
    `actors`."""
    room = sorted((ROOT / "actors" / "room").rglob("*.py"))
    leaks = [
        leak
        for leak in leaks_through(room, ("actors",))
        if not leak.split(" imports ")[1].startswith("actors.room")
    ]
    assert not leaks, "\n".join(leaks)


@pytest.mark.parametrize("module", PUBLIC_FACES)
def test_every_exported_name_exists(module: str) -> None:
    face = importlib.import_module(module)
    missing = [name for name in face.__all__ if not hasattr(face, name)]
    assert not missing, f"{module}.__all__ names what it does not have: {missing}"
