"""The one admission gate of uploads: how many this process holds, and decodes, at once.

An upload holds its body in memory (up to IMAGEBLUR_MAX_UPLOAD_BYTES) from before it is
read, and a full decode of a large image takes hundreds of MB. Each check also runs in a
thread of the API's shared pool (40 threads): a burst of uploads waiting for a decode
would otherwise hold every thread, starving reads, deletes and /readyz (every pod unready
at once), and memory without bound. So uploads are admitted up to a bound and refused at
once past it (`Overloaded`, answered 503 `overloaded` with Retry-After); of those
admitted, a smaller number decode at a time and the others wait their turn.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from imageblur.domain import Overloaded
from imageblur.pixel_budget import PixelBudget


class UploadGate:
    def __init__(self, *, max_checking: int, max_in_hand: int, pixel_budget: int) -> None:
        if not 1 <= max_checking <= max_in_hand:
            raise ValueError("need 1 <= max_checking <= max_in_hand")
        self.budget = PixelBudget(pixel_budget)
        self._max_in_hand = max_in_hand
        self._in_hand = 0
        self._lock = threading.Lock()
        # The wait for a decode slot needs no timeout: admission bounds how many uploads
        # can wait (max_in_hand - max_checking).
        self._checking = threading.BoundedSemaphore(max_checking)

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one upload for the block; raises `Overloaded` at once when full."""
        with self._lock:
            if self._in_hand >= self._max_in_hand:
                raise Overloaded("too many uploads are in hand; retry shortly")
            self._in_hand += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_hand -= 1

    @contextmanager
    def checking(self) -> Iterator[None]:
        """Hold one decode slot for the block, waiting for one if need be."""
        with self._checking:
            yield

    def decoding(self, pixels: int) -> AbstractContextManager[None]:
        """Inside `checking`: hold `pixels` of the budget for the block, waiting until they
        fit or nothing else is decoding. The header is read first, under the slot only."""
        return self.budget.hold(pixels)


class StreamSlots:
    """How many large uploads this process streams to the store at once. Each holds a
    thread of the pool and the store's part buffer (an S3 part, an envelope segment) for
    as long as its client sends; past the bound a new one is refused at once
    (`Overloaded`: 503 with Retry-After), before its body is read."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("need at least one slot")
        self.limit = limit
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one slot for the block; raises `Overloaded` at once when all are taken."""
        with self._lock:
            if self._in_flight >= self.limit:
                raise Overloaded(
                    f"{self.limit} large uploads are already in flight here; retry shortly"
                )
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
