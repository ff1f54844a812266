"""The README stays true: its set-up commands come first and its table lists every setting."""

from __future__ import annotations

import inspect
import re

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
