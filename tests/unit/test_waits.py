"""Tests wait for conditions, never for time: every bounded wait goes through
`support.wait_until` (the one helper; it names what its predicate last raised), with a
bound of at least `support.MIN_TIMEOUT_S`, so that a loaded machine (a second test run
beside this one) slows a test down instead of failing it. Read from the source (AST),
so that a new test cannot bring back a sleep, a deadline loop or a short bound."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import MIN_TIMEOUT_S, REPO, wait_until

TESTS = REPO / "tests"
HELPER = (TESTS / "support.py", "wait_until")
CLOCKS = {"monotonic", "time", "perf_counter"}
TIMEOUT_KEYWORDS = {"timeout_s", "timeout"}


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _is_time_call(node: ast.AST, names: set[str]) -> bool:
    """`time.<name>()` for a name in `names`."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in names
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "time"
    )


def _short_literal(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
        and node.value < MIN_TIMEOUT_S
    )


def _helper_nodes(tree: ast.Module) -> set[int]:
    """The nodes of the helper itself: the one place that may sleep in a loop."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == HELPER[1]:
            return {id(n) for n in ast.walk(node)}
    raise AssertionError(f"{HELPER[1]} is gone from {HELPER[0]}")


def _pacing(tree: ast.Module) -> set[int]:
    """`while not event.wait(0.2):` paces a background loop until it is stopped: the
    short timeout is its interval, not a bound on a wait."""
    paced: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.While):
            test = node.test.operand if isinstance(node.test, ast.UnaryOp) else node.test
            paced.add(id(test))
    return paced


def violations(path: Path, root: Path = REPO) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _helper_nodes(tree) if path == HELPER[0] else set()
    paced = _pacing(tree)
    where = path.relative_to(root)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Call) and _name(node.func) == "sleep":  # time's or asyncio's
            yield f"{where}:{node.lineno}: time.sleep (wait for a condition: wait_until)"
        elif isinstance(node, ast.While | ast.For) and any(
            _is_time_call(n, CLOCKS) for n in ast.walk(node)
        ):
            yield f"{where}:{node.lineno}: a loop that reads the clock (use wait_until)"
        elif isinstance(node, ast.Call) and id(node) not in paced:
            yield from _short_bound(node, where)


def _short_bound(call: ast.Call, where: Path) -> Iterator[str]:
    """A wait (the helper, a wrapper named wait..., an Event's or a thread's wait or
    join) given a literal bound under the minimum."""
    name = _name(call.func)
    if not (name.startswith("wait") or name == "join"):
        return
    bounds = [k.value for k in call.keywords if k.arg in TIMEOUT_KEYWORDS]
    if isinstance(call.func, ast.Attribute) and name in ("wait", "join"):
        bounds += call.args  # Event.wait(5), Thread.join(5), Page.wait(check, 5)
    for bound in bounds:
        if _short_literal(bound):
            yield f"{where}:{call.lineno}: {name} bounded under {MIN_TIMEOUT_S:g} s"


def test_every_bounded_wait_goes_through_the_helper_with_a_long_enough_bound() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert HELPER[0] in files
    found = [v for path in files for v in violations(path)]
    assert found == [], "\n".join(found)


def test_the_rules_catch_what_they_are_for(tmp_path: Path) -> None:
    bad = tmp_path / "test_bad.py"
    bad.write_text(
        "import time\n"
        "def test_x(done, page):\n"
        "    time.sleep(1)\n"
        "    deadline = time.monotonic() + 5\n"
        "    while time.monotonic() < deadline:\n"
        "        pass\n"
        "    wait_until(check, timeout_s=5)\n"
        "    done.wait(2)\n"
        "    page.wait(check, 3)\n"
        "    while not done.wait(0.2):\n"  # pacing a background loop: allowed
        "        pass\n"
        "    wait_until(check, timeout_s=10)\n"  # allowed
        "    for _ in range(9):\n"
        "        if time.time() > deadline:\n"
        "            break\n"
    )
    assert sorted(violations(bad, tmp_path)) == sorted(
        [
            "test_bad.py:3: time.sleep (wait for a condition: wait_until)",
            "test_bad.py:5: a loop that reads the clock (use wait_until)",
            "test_bad.py:7: wait_until bounded under 10 s",
            "test_bad.py:8: wait bounded under 10 s",
            "test_bad.py:9: wait bounded under 10 s",
            "test_bad.py:13: a loop that reads the clock (use wait_until)",
        ]
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_timeout_names_what_the_predicate_last_raised() -> None:
    clock = FakeClock()

    def broken() -> bool:
        clock.now += 4
        raise KeyError("a bug in the predicate")

    with pytest.raises(AssertionError, match=r"KeyError.*a bug in the predicate") as caught:
        wait_until(broken, timeout_s=10, interval_s=0, what="the bug", clock=clock)
    assert "not within 10 s: the bug" in str(caught.value)
    assert isinstance(caught.value.__cause__, KeyError)  # its traceback, chained


def test_the_wait_returns_the_first_true_value_and_retries_only_what_it_is_told() -> None:
    answers = iter([None, 0, "found"])
    assert wait_until(lambda: next(answers), interval_s=0) == "found"
    with pytest.raises(ZeroDivisionError):  # not a "not yet": raised at once
        wait_until(lambda: 1 / 0, retry_on=(KeyError,), interval_s=0)


def test_a_bound_under_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 10"):
        wait_until(lambda: True, timeout_s=MIN_TIMEOUT_S - 1)
