"""The in-memory world of the core's tests (test_core.py) for every unit test module."""

from unit.test_core import world  # noqa: F401 - a fixture, shared
