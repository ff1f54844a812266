"""In-process job queue: the embedded default, and the queue of the core's unit tests.

Jobs live only in memory; that is acceptable because the database is the source of
truth and the reconciler re-publishes whatever a restart dropped. They are kept as the
bytes a broker would carry and parsed on receipt, so a message no worker can run is
dead-lettered here as on RabbitMQ. Test hooks: `depth()`, `publish_raw()`.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Collection, Mapping

from imageblur.domain import (
    JOB_KINDS,
    DeadLetter,
    Delivery,
    InvalidJob,
    Job,
    KindRoute,
    QueueUnavailable,
    kind_queue,
)

# (ready_at monotonic, sequence, body): the sequence keeps FIFO order among equals.
_Entry = tuple[float, int, bytes]


class MemoryJobQueue:
    """One heap per job queue, as on RabbitMQ (`domain.kind_queue`: detect and render
    share the main one, a newer kind has its own), so that a thread kept for pictures
    never takes a long job (`receive(kinds=...)`)."""

    def __init__(self, kinds: Mapping[str, KindRoute] = JOB_KINDS) -> None:
        self._cond = threading.Condition()
        self._kinds = kinds
        self._heaps: dict[str, list[_Entry]] = {kind_queue("", k, kinds): [] for k in kinds}
        self._seq = itertools.count()
        self._in_flight: dict[int, Job] = {}
        self._dead: list[DeadLetter] = []
        self._closed = False

    def _push(self, body: bytes, kind: str, delay_s: float = 0.0) -> None:
        entry = (time.monotonic() + delay_s, next(self._seq), body)
        heapq.heappush(self._heaps[kind_queue("", kind, self._kinds)], entry)
        self._cond.notify_all()

    def publish(self, job: Job) -> None:
        self.publish_raw(job.to_json(), kind=job.kind.value)

    def receive(self, *, timeout_s: float, kinds: Collection[str] | None = None) -> Delivery | None:
        deadline = time.monotonic() + timeout_s
        heaps = self._heaps_of(kinds)
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                heap = min((h for h in heaps if h), key=lambda h: h[0], default=None)
                if heap is not None and heap[0][0] <= now:
                    _, seq, body = heapq.heappop(heap)
                    try:
                        job = Job.from_json(body)
                    except InvalidJob as exc:  # no worker can run it: park it, as RabbitMQ
                        self._dead.append(DeadLetter(job=None, body=body, reason=str(exc)))
                        continue
                    self._in_flight[seq] = job
                    return Delivery(job=job, tag=seq)
                if now >= deadline:
                    return None
                wake_at = deadline if heap is None else min(deadline, heap[0][0])
                self._cond.wait(timeout=max(wake_at - now, 0.0))

    def _heaps_of(self, kinds: Collection[str] | None) -> list[list[_Entry]]:
        """The heaps holding the jobs of `kinds` (None: every kind)."""
        names = self._kinds if kinds is None else kinds
        queues = dict.fromkeys(kind_queue("", k, self._kinds) for k in names)
        return [self._heaps[q] for q in queues]

    def _settle(self, delivery: Delivery) -> Job:
        job = self._in_flight.pop(delivery.tag, None)
        if job is None:
            raise ValueError(f"delivery {delivery.tag} is not in flight")
        self._cond.notify_all()
        return job

    def ack(self, delivery: Delivery) -> None:
        with self._cond:
            self._settle(delivery)

    def retry(self, delivery: Delivery, *, delay_s: float, reason: str) -> None:
        with self._cond:
            job = self._settle(delivery)
            self._push(job.next_attempt().to_json(), job.kind.value, delay_s)

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        with self._cond:
            job = self._settle(delivery)
            self._dead.append(DeadLetter(job=job, body=job.to_json(), reason=reason))

    def take_dead_letters(self, *, limit: int = 1000) -> list[DeadLetter]:
        with self._cond:
            taken, self._dead = self._dead[:limit], self._dead[limit:]
            return taken

    def check(self) -> None:
        if self._closed:
            raise QueueUnavailable("queue is closed")

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # --- test hooks ------------------------------------------------------------

    def publish_raw(self, body: bytes, *, kind: str = "detect") -> None:
        """Queue these bytes as a message of `kind`, as any client of a broker could."""
        with self._cond:
            if self._closed:
                raise QueueUnavailable("queue is closed")
            self._push(body, kind)

    def depth(self, kind: str | None = None) -> int:
        """Jobs waiting or in flight (`kind`: waiting on that kind's queue only)."""
        with self._cond:
            if kind is not None:
                return len(self._heaps[kind_queue("", kind, self._kinds)])
            return sum(len(h) for h in self._heaps.values()) + len(self._in_flight)
