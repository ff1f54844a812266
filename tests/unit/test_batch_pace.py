"""A batch's pace (`batches.model.pace`): items per second over the last minute, or since
it started if younger, and the seconds left at that pace once its total is known."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from imageblur.batches.model import Batch, BatchCounts, Location, pace

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(*, status: str = "running", listed_all: bool = True, **counts: object) -> Batch:
    b = Batch(
        id="bat_" + "0" * 32,
        key="k",
        source=Location("s3", "in"),
        target=Location("s3", "out"),
        options={},
        dry_run=False,
        status=status,  # type: ignore[arg-type]
        created_at=T0,
        updated_at=T0,
        listed_all=listed_all,
    )
    return replace(b, counts=BatchCounts(**counts))  # type: ignore[arg-type]


def test_the_pace_of_the_last_minute_gives_the_time_left() -> None:
    b = _batch(listed=1000, done=300, failed=50, skipped={"x": 50}, ended_recently=120)
    got = pace(b, T0 + timedelta(minutes=10))
    assert got.per_s == 2.0
    assert got.eta_s == 300.0  # 600 left at 2 a second


def test_a_young_batch_is_measured_since_it_started() -> None:
    got = pace(_batch(listed=100, done=20, ended_recently=20), T0 + timedelta(seconds=10))
    assert (got.per_s, got.eta_s) == (2.0, 40.0)


def test_no_time_left_without_a_total_or_a_pace() -> None:
    listing = _batch(listed_all=False, listed=100, done=10, ended_recently=10)
    assert pace(listing, T0 + timedelta(minutes=5)).eta_s is None
    stalled = _batch(listed=100, done=10)
    assert pace(stalled, T0 + timedelta(minutes=5)).eta_s is None


def test_an_ended_batch_has_nothing_left() -> None:
    got = pace(_batch(status="done", listed=5, done=5, ended_recently=5), T0)
    assert (got.per_s, got.eta_s) == (0.0, 0.0)
