"""The batches' gauges, read from the database at a scrape (the API process exports
them): how many batches are open, and each open batch's items by state.

A per-batch label is bounded: only open batches (listing or running) are shown, and at
most IMAGEBLUR_MAX_BATCHES are open at once; an ended batch's series go with it. Read at
most once per interval, as the picture gauges are (one grouped count per open batch)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from imageblur.batches.model import Batch
from imageblur.cached_collector import CachedCollector

# The states a batch's items are shown in (skipped ones summed over their reasons).
SHOWN_STATES = ("listed", "queued", "done", "failed", "skipped")


class BatchCollector(CachedCollector[Sequence[Batch]]):
    """`imageblur_batches_open` and `imageblur_open_batch_items{batch_id, state}`."""

    def families(self, value: Sequence[Batch]) -> list[Metric]:
        items = GaugeMetricFamily(
            "imageblur_open_batch_items",
            "Items of each open bucket batch by state (queued: queued or running).",
            labels=["batch_id", "state"],
        )
        for batch in value:
            for state, n in _by_state(batch).items():
                items.add_metric([batch.id, state], n)
        running = GaugeMetricFamily(
            "imageblur_batches_open", "Bucket batches listing or running.", value=len(value)
        )
        return [running, items]


def _by_state(batch: Batch) -> dict[str, int]:
    c = batch.counts
    queued_or_listed = c.listed - c.ended
    return {
        "listed": max(queued_or_listed - c.queued, 0),  # listed, not yet published
        "queued": c.queued,
        "done": c.done,
        "failed": c.failed,
        "skipped": sum(c.skipped.values()),
    }
