"""The in-memory world of the core's tests, for every unit test module."""

import pytest

from unit.world import World, new_world


@pytest.fixture
def world() -> World:
    return new_world()
