"""A Prometheus collector whose gauges are read from the database at a scrape, cached:
Prometheus may scrape every few seconds, and several Prometheus servers may scrape each
API pod. When the read fails the gauges are left out (a stale number would look
current); the failure shows where the read is counted (`imageblur_backend_errors`)."""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

T = TypeVar("T")


class CachedCollector(Collector, Generic[T]):
    """Calls `read` at most once per `every_s`, whatever the scrape rate; `families`
    makes the scrape's gauges from what it read."""

    def __init__(
        self,
        read: Callable[[], T],
        *,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._every_s = every_s
        self._clock = clock
        self._cached: T | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()  # concurrent scrapes read the database once

    def describe(self) -> Iterable[Metric]:
        return []  # unknown until read; keeps registration from calling the database

    def collect(self) -> Iterable[Metric]:
        value = self._value()
        return [] if value is None else self.families(value)

    @abstractmethod
    def families(self, value: T) -> list[Metric]:
        """The gauges of one scrape, from the last read."""

    def _value(self) -> T | None:
        with self._lock:
            now = self._clock()
            if now - self._read_at >= self._every_s:
                self._read_at = now  # a failed read waits for the next interval too
                try:
                    self._cached = self._read()
                except Exception:  # noqa: BLE001 - a scrape must never fail for this
                    self._cached = None
            return self._cached
