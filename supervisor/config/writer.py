"""Configs written as TOML, for programs that write them for `supervisor run` (the
benchmarks, the tests) and for the reference's defaults; the standard library reads
TOML but does not write it."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def config_toml(doc: Mapping[str, Any]) -> str:
    """`doc` written as TOML, such that `tomllib.loads` gives it back.

    Values are strings, booleans, numbers, lists of those, tables (mappings) and arrays
    of tables (lists of mappings), as in config.toml; a table's plain values come before
    its subtables, as TOML requires.
    """
    lines: list[str] = []
    _write_table(doc, "", lines)
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A plain value (not a table) as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r}: config values are finite numbers")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"{value!r}: not a TOML value")


def _write_table(table: Mapping[str, Any], path: str, lines: list[str]) -> None:
    nested = [(key, value) for key, value in table.items() if _is_table(value)]
    for key, value in table.items():
        if not _is_table(value):
            lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    for key, value in nested:
        name = f"{path}.{_toml_key(key)}" if path else _toml_key(key)
        for item in [value] if isinstance(value, Mapping) else value:
            lines.append(f"[{name}]" if isinstance(value, Mapping) else f"[[{name}]]")
            _write_table(item, name, lines)


def _is_table(value: Any) -> bool:
    """A table, or an array of tables (a non-empty list of them)."""
    return isinstance(value, Mapping) or (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(item, Mapping) for item in value)
    )


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    """A basic string: JSON escapes what TOML must have escaped, except DEL."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
