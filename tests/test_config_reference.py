"""The schema, the committed reference and the repository's config.toml say the same."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest

from supervisor.config import Config, ConfigError, parse_config
from supervisor.config.reference import PAGE, main, reference
from supervisor.config.schema import key_of, keys
from tests.helpers.cli_process import REPO_ROOT

CONFIG_TOML = REPO_ROOT / "config.toml"

DEMO_VALUES = {"bot.audio_out_sample_rate": 16000}
"""The keys config.toml sets to other than their defaults, as its comments say why: the
echo bot answers at its input's rate, so its output is not resampled."""


def test_the_committed_reference_is_what_the_schema_generates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    committed = REPO_ROOT / PAGE
    assert committed.read_text(encoding="utf-8") == reference(), (
        f"{PAGE} is stale: run python -m supervisor.config.reference --write"
    )
    assert main(["--check", str(committed)]) == 0
    stale = tmp_path / "configuration.md"
    stale.write_text(reference().replace("| `vad` |", "| `voice` |"), encoding="utf-8")
    assert main(["--check", str(stale)]) == 1
    assert main(["--check", str(tmp_path / "absent.md")]) == 1
    assert main(["--write", str(stale)]) == 0
    assert main(["--check", str(stale)]) == 0
    assert main([]) == 0
    assert capsys.readouterr().out == reference()


def _schema(path: str) -> type:
    """The schema of the table at a dotted path ("dispatch.bot")."""
    schema: type = Config
    for name in path.split("."):
        assert name in keys(schema), f"[{path}] is not a table of the schema"
        table = key_of(keys(schema)[name]).table
        assert table is not None, f"[{path}] is a key, not a table"
        schema = table
    return schema


def _set_keys(table: dict[str, Any], path: str) -> list[tuple[str, str, Any]]:
    """(table path, key, value) for every plain key set in `table` and its subtables."""
    found = []
    for name, value in table.items():
        where = f"{path}.{name}" if path else name
        if isinstance(value, dict):
            found += _set_keys(value, where)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                found += _set_keys(item, where)
        else:
            found.append((path, name, value))
    return found


def _commented_keys() -> list[tuple[str, str, Any]]:
    """(table path, key, value) for every commented-out assignment (`# key = value`),
    the table being the last header above it, commented out or not."""
    found = []
    table = ""
    for line in CONFIG_TOML.read_text(encoding="utf-8").splitlines():
        header = re.match(r"#?\s*\[\[?([\w.]+)\]\]?", line)
        if header:
            table = header[1]
        elif re.match(r"#\s*\w+\s*=", line):
            ((name, value),) = tomllib.loads(line.lstrip("# ")).items()
            found.append((table, name, value))
    return found


def test_config_toml_sets_defaults_and_its_alternatives_are_valid() -> None:
    """config.toml is the runnable default that documents the keys. What "agree" means
    follows from its comments: a key it sets is at the schema's default (`30` agrees with
    `30.0`), unless the key has none (`url`, `factory`, a room's `name`) or is one of
    `DEMO_VALUES`, the runnable demo's deliberate choices, which must then differ from
    the default. A commented-out assignment (`# event_loop = "uvloop"`) shows an
    alternative: it names a key of its table and a value the key accepts."""
    set_keys = _set_keys(tomllib.loads(CONFIG_TOML.read_text(encoding="utf-8")), "")
    commented = _commented_keys()
    assert len(commented) >= 3, "the commented-out alternatives were not found"
    for path, name, value in [*set_keys, *commented]:
        schema = _schema(path)
        assert name in keys(schema), f"config.toml: {path}.{name} is not a key of the schema"
        assert key_of(keys(schema)[name]).value.accepts(value), f"config.toml: {path}.{name}"
    for path, name, value in set_keys:
        default = keys(_schema(path))[name].default
        if f"{path}.{name}" in DEMO_VALUES:
            assert value == DEMO_VALUES[f"{path}.{name}"] != default, f"{path}.{name}"
        elif default is not attrs.NOTHING:
            assert value == default, f"config.toml: {path}.{name} = {value!r}, default {default!r}"
    assert {f"{path}.{name}" for path, name, _ in set_keys} >= set(DEMO_VALUES)


TABLES = list(keys(Config))


@pytest.mark.parametrize("table", TABLES)
def test_a_table_knows_the_keys_of_its_schema(table: str) -> None:
    """The unknown-key error lists what the schema declares, and nothing else."""
    doc: dict[str, Any] = {
        "livekit": {"url": "ws://127.0.0.1:7880"},
        "bot": {"factory": "supervisor.bots.echo:create_bot"},
    }
    entry = {"name": "lobby", "nope": 1} if table == "rooms" else {"nope": 1}
    doc[table] = [entry] if table == "rooms" else {**doc.get(table, {}), **entry}
    where = "rooms[0]" if table == "rooms" else table
    with pytest.raises(ConfigError) as raised:
        parse_config(doc, {})
    known = ", ".join(keys(_schema(table)))
    assert str(raised.value) == f"{where}.nope is not a known key: expected one of {known}"
