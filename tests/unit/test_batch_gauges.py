"""The batches' gauges (`batches.gauges.BatchCollector`): open batches counted, each
open batch's items by state, read at most once per interval, left out when the read
fails."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from imageblur.batches.gauges import BatchCollector
from imageblur.batches.model import Batch, BatchCounts, Location

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(n: int, counts: BatchCounts) -> Batch:
    b = Batch(
        id=f"bat_{n:032x}",
        key=str(n),
        source=Location("s3", "in"),
        target=Location("s3", "out"),
        options={},
        dry_run=False,
        status="running",
        created_at=T0,
        updated_at=T0,
    )
    return replace(b, counts=counts)


def test_open_batches_and_their_items_by_state() -> None:
    reads: list[int] = []
    counts = BatchCounts(listed=10, queued=2, done=3, failed=1, skipped={"a": 1, "b": 1})
    batches = [_batch(1, counts), _batch(2, BatchCounts(listed=4))]
    clock = [0.0]

    def read() -> list[Batch]:
        reads.append(1)
        return batches

    registry = CollectorRegistry()
    registry.register(BatchCollector(read, every_s=15, clock=lambda: clock[0]))
    value = registry.get_sample_value
    assert value("imageblur_batches_open") == 2
    one = {"batch_id": batches[0].id}
    assert [
        value("imageblur_open_batch_items", one | {"state": s})
        for s in ("listed", "queued", "done", "failed", "skipped")
    ] == [2, 2, 3, 1, 2]
    assert value("imageblur_open_batch_items", {"batch_id": batches[1].id, "state": "listed"}) == 4
    assert len(reads) == 1  # one read for the whole scrape
    batches.pop()
    clock[0] = 20.0
    assert value("imageblur_batches_open") == 1
    assert (
        value("imageblur_open_batch_items", {"batch_id": f"bat_{2:032x}", "state": "listed"})
        is None
    )


def test_a_failed_read_leaves_the_gauges_out() -> None:
    def read() -> list[Batch]:
        raise OSError("database down")

    registry = CollectorRegistry()
    registry.register(BatchCollector(read, every_s=15))
    assert registry.get_sample_value("imageblur_batches_open") is None
