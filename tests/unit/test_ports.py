"""The ports stay small, and every repository (both SQL adapters and the unit tests'
fake) implements every role the use cases take from it."""

from __future__ import annotations

import inspect
from typing import Protocol

import pytest

from imageblur import ports
from imageblur.adapters.postgres_repo import PostgresImageRepository
from imageblur.adapters.sqlite_repo import SqliteImageRepository
from imageblur.backends import Repository
from imageblur.batches import ports as batch_ports

from .fakes import FakeRepository

MAX_METHODS = 12


PORT_MODULES = (ports, batch_ports)
_PORT_NAMES = {m.__name__ for m in PORT_MODULES}


def _protocols() -> list[type]:
    return [
        cls
        for module in PORT_MODULES
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and Protocol in cls.__mro__[1:]
    ]


def _methods(protocol: type) -> set[str]:
    """Its own methods and those it inherits from other protocols."""
    return {
        name
        for cls in protocol.__mro__
        if cls.__module__ in _PORT_NAMES
        for name, value in vars(cls).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }


def test_no_port_has_more_than_twelve_methods() -> None:
    sizes = {p.__name__: len(_methods(p)) for p in _protocols()}
    assert sizes, "no protocols found"
    assert {name: n for name, n in sizes.items() if n > MAX_METHODS} == {}


@pytest.mark.parametrize(
    "adapter", [SqliteImageRepository, PostgresImageRepository, FakeRepository]
)
def test_every_repository_implements_every_role(adapter: type) -> None:
    wanted = {name for cls in Repository.__mro__ if cls is not Repository for name in _methods(cls)}
    assert wanted, "no roles found"
    missing = {name for name in wanted if not callable(getattr(adapter, name, None))}
    assert missing == set()
