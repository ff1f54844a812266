"""How many pixels the worker's jobs may hold at once.

Two jobs in flight keep both cores busy: one decodes, blurs or encodes (one core each)
while the other's detection runs on all of them, which on the 2-core reference machine
gives 7-15% more images/s than one job at a time (docs/detection.md, Speed). Two large
photos at once would also double the peak memory, so a job starts only when the pixels
already in flight plus its own fit the budget, or when nothing else is in flight: a
12 MP photo runs beside a 2 MP one, never beside another 12 MP one, and a 50 MP photo runs
alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class PixelBudget:
    def __init__(self, pixels: int) -> None:
        if pixels < 1:
            raise ValueError(f"a pixel budget must be >= 1, got {pixels}")
        self.pixels = pixels
        self._in_flight = 0
        self._jobs = 0
        self._waiting = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Wait until `pixels` more fit (or nothing else is in flight), hold them for
        the block."""
        with self._changed:
            self._waiting += 1
            self._changed.wait_for(lambda: self._fits(pixels))
            self._waiting -= 1
            self._in_flight += pixels
            self._jobs += 1
        try:
            yield
        finally:
            with self._changed:
                self._in_flight -= pixels
                self._jobs -= 1
                self._changed.notify_all()

    @property
    def in_flight(self) -> int:
        """Pixels held now."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Calls waiting for room."""
        return self._waiting

    def _fits(self, pixels: int) -> bool:
        return self._jobs == 0 or self._in_flight + pixels <= self.pixels
