"""The configuration reference, generated from the schema so it cannot fall behind it.

`python -m supervisor.config.reference [--write | --check]` (`supervisor.generated`)
makes it, committed as docs/reference/configuration.md; the tests compare the two too.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import attrs

from supervisor.config.schema import Config, key_of, keys
from supervisor.config.writer import toml_value
from supervisor.generated import page_main

PAGE = Path("docs/reference/configuration.md")
"""Where the reference is committed, from the repository's root."""

_INTRO = """\
# Configuration reference

<!-- Generated from supervisor/config/schema.py by `python -m supervisor.config.reference
--write`: edit the schema, not this file. -->

`supervisor run CONFIG` and `supervisor check CONFIG` read a TOML file; the repository's
`config.toml` is a runnable example. Every key is checked before anything runs: an unknown
key (a typo), a wrong type or a bad value stops the command with exit code 2 and one line
that names the key, the value and what was expected. Credentials are never in the file:
the keys ending in `_env` name the environment variables that hold them.

A key marked *required* must be set; any other key may be left out for its default, and a
table whose keys all have defaults may be left out as a whole. *Accepts* is the wording a
bad value's error uses.

SIGHUP reloads the file: rooms added, removed or changed start or stop, the others are
not touched, and an invalid file is refused with its error. Changes to `[livekit]`,
`[metrics]`, `[watchdog]`, `[dispatch]` and `[runtime]` take effect at the next start.
"""


def reference() -> str:
    """The reference as Markdown: a section per table, a row per key."""
    sections = [_INTRO]
    names = {key_of(field).table: name for name, field in keys(Config).items()}
    for name, field in keys(Config).items():
        key = key_of(field)
        assert key.table is not None
        heading = f"[[{name}]]" if list in key.value.types else f"[{name}]"
        required = " (required)" if field.default is attrs.NOTHING else ""
        rows = [_row(n, f, names) for n, f in keys(key.table).items()]
        sections.append(
            f"## `{heading}`{required}\n\n{inspect.cleandoc(key.table.__doc__ or '')}\n\n"
            "| key | type | default | accepts | description |\n"
            "| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
        )
    return "\n".join(sections)


def _row(name: str, field: attrs.Attribute[Any], tables: dict[Any, str]) -> str:
    key = key_of(field)
    if key.table is not None:  # a table overriding another: `[dispatch.bot]` over `[bot]`
        cells = ["table", f"`[{tables[key.table]}]`", f"any `[{tables[key.table]}]` key"]
    else:
        cells = [key.value.type_name, _default(field.default), key.value.expected]
    return "| " + " | ".join(c.replace("|", "\\|") for c in [f"`{name}`", *cells, key.doc]) + " |"


def _default(value: Any) -> str:
    if value is attrs.NOTHING:
        return "*required*"
    return "none" if value is None else f"`{toml_value(value)}`"


def main(argv: list[str] | None = None) -> int:
    return page_main("supervisor.config.reference", "the schema", PAGE, reference, argv)


if __name__ == "__main__":
    sys.exit(main())
