"""The worker's pixel budget: jobs that fit run together, a job that does not waits for
room, and a job larger than the whole budget still runs (alone)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from imageblur.pixel_budget import PixelBudget
from support import wait_until

MP = 1_000_000


@contextmanager
def held_in_thread(
    budget: PixelBudget, pixels: int
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """A thread that holds `pixels` until told to let go: (entered, release)."""
    entered, release = threading.Event(), threading.Event()

    def run() -> None:
        with budget.hold(pixels):
            entered.set()
            release.wait(60)  # a bound for a test that went wrong

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield entered, release
    finally:
        release.set()
        thread.join(10)


def test_jobs_that_fit_run_together() -> None:
    budget = PixelBudget(16 * MP)
    with budget.hold(12 * MP), held_in_thread(budget, 2 * MP) as (entered, _):
        assert entered.wait(30)
        assert budget.in_flight == 14 * MP
    assert budget.in_flight == 0


def test_a_job_that_does_not_fit_waits_for_room() -> None:
    budget = PixelBudget(16 * MP)
    first = budget.hold(12 * MP)
    first.__enter__()
    with held_in_thread(budget, 12 * MP) as (entered, _):
        wait_until(lambda: budget.waiting == 1, what="a job waiting for room")
        assert not entered.is_set()
        first.__exit__(None, None, None)
        assert entered.wait(30)
        assert budget.waiting == 0


def test_a_job_larger_than_the_budget_runs_alone() -> None:
    budget = PixelBudget(16 * MP)
    with held_in_thread(budget, 50 * MP) as (entered, release):
        assert entered.wait(30)  # nothing else in flight: it runs
        with held_in_thread(budget, 1 * MP) as (small, _):
            wait_until(lambda: budget.waiting == 1, what="a job waiting for room")
            assert not small.is_set()
            release.set()
            assert small.wait(30)


def test_a_failing_job_gives_its_pixels_back() -> None:
    budget = PixelBudget(16 * MP)
    with pytest.raises(RuntimeError), budget.hold(12 * MP):
        raise RuntimeError("decode failed")
    assert budget.in_flight == 0
    with held_in_thread(budget, 12 * MP) as (entered, _):
        assert entered.wait(30)


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PixelBudget(0)
