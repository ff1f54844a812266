"""The README stays true: its set-up commands come first, its table lists every setting
with the default config.py gives it, and it counts each interface's methods right."""

from __future__ import annotations

import inspect
import re

from pydantic import SecretStr

from imageblur import ports
from imageblur.config import Settings
from support import REPO

README = (REPO / "README.md").read_text()


def test_setup_commands_come_first() -> None:
    first_block = README.split("```")[1]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == [
        "make run",
        "make test",
    ]


def test_configuration_table_lists_every_setting() -> None:
    documented = set(re.findall(r"^\| `IMAGEBLUR_([A-Z0-9_]+)`", README, re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def _table_defaults() -> dict[str, str]:
    """Each setting's default column, by its name in config.py."""
    rows = (line.split("|") for line in README.splitlines() if line.startswith("| `IMAGEBLUR_"))
    return {
        cells[1].strip(" `").removeprefix("IMAGEBLUR_").lower(): cells[2].strip() for cells in rows
    }


def _shown(name: str) -> str:
    """A default as the table writes it: blank when unset, secrets as `(secret)`."""
    value = Settings.model_fields[name].get_default(call_default_factory=True)
    if value is None:
        return ""
    return "`(secret)`" if isinstance(value, SecretStr) else f"`{value}`"


def test_configuration_table_gives_each_settings_default() -> None:
    table = _table_defaults()
    wrong = {name: (table[name], _shown(name)) for name in table if table[name] != _shown(name)}
    assert wrong == {}, "README default column vs config.py (README, config.py)"


def test_ci_calls_the_readme_test_command() -> None:
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_the_interfaces_are_described_as_they_are() -> None:
    described = dict(re.findall(r"`(\w+)`[^`(]{0,10}\((\d+) methods?", README))
    assert set(described) == {
        "ObjectStore",
        "JobQueue",
        "FaceDetector",
        "PictureLookup",
        "Pictures",
        "JobLeases",
        "Reviews",
        "Upkeep",
        "Schema",
    }
    for name, count in described.items():
        port = getattr(ports, name)
        methods = [m for m, _ in inspect.getmembers(port, inspect.isfunction) if m[0] != "_"]
        assert len(methods) == int(count), (name, methods)
