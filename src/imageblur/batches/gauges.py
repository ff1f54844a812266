"""The batches' gauges, read from the database at a scrape (the API process exports
them): how many batches are open, and each open batch's items by state.

A per-batch label is bounded: only open batches (listing or running) are shown, and at
most IMAGEBLUR_MAX_BATCHES are open at once; an ended batch's series go with it. Read at
most once per interval, as the picture gauges are (one grouped count per open batch)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imageblur.batches.model import Batch

# The states a batch's items are shown in (skipped ones summed over their reasons).
SHOWN_STATES = ("listed", "queued", "done", "failed", "skipped")


class BatchCollector(Collector):
    """`imageblur_batches_open` and `imageblur_open_batch_items{batch_id, state}`. When the
    read fails they are left out (a stale number would look current)."""

    def __init__(
        self,
        read: Callable[[], Sequence[Batch]],
        *,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._every_s = every_s
        self._clock = clock
        self._cached: Sequence[Batch] | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()  # concurrent scrapes read the database once

    def describe(self) -> Iterable[Metric]:
        return []  # unknown until read; keeps registration from calling the database

    def collect(self) -> Iterable[Metric]:
        batches = self._batches()
        if batches is None:
            return []
        items = GaugeMetricFamily(
            "imageblur_open_batch_items",
            "Items of each open bucket batch by state (queued: queued or running).",
            labels=["batch_id", "state"],
        )
        for batch in batches:
            for state, n in _by_state(batch).items():
                items.add_metric([batch.id, state], n)
        running = GaugeMetricFamily(
            "imageblur_batches_open", "Bucket batches listing or running.", value=len(batches)
        )
        return [running, items]

    def _batches(self) -> Sequence[Batch] | None:
        with self._lock:
            now = self._clock()
            if now - self._read_at >= self._every_s:
                self._read_at = now  # a failed read waits for the next interval too
                try:
                    self._cached = self._read()
                except Exception:  # noqa: BLE001 - a scrape must never fail for this
                    self._cached = None
            return self._cached


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
