"""In-process job queue: the embedded default, and the queue of the core's unit tests.

Jobs live only in memory; that is acceptable because the database is the source of
truth and the reconciler re-publishes whatever a restart dropped. Test hooks:
`wait_idle()` and `depth()`.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time

from imageblur.domain import DeadLetter, Delivery, Job, QueueUnavailable


class MemoryJobQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        # (ready_at monotonic, sequence, job): the sequence keeps FIFO order among equals.
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._in_flight: dict[int, Job] = {}
        self._dead: list[DeadLetter] = []
        self._closed = False

    def _push(self, job: Job, delay_s: float = 0.0) -> None:
        heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._seq), job))
        self._cond.notify_all()

    def publish(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise QueueUnavailable("queue is closed")
            self._push(job)

    def receive(self, *, timeout_s: float) -> Delivery | None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    _, seq, job = heapq.heappop(self._heap)
                    self._in_flight[seq] = job
                    return Delivery(job=job, tag=seq)
                if now >= deadline:
                    return None
                wake_at = deadline if not self._heap else min(deadline, self._heap[0][0])
                self._cond.wait(timeout=max(wake_at - now, 0.0))

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
            self._push(Job(image_id=job.image_id, attempt=job.attempt + 1), delay_s)

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

    def depth(self) -> int:
        """Jobs waiting or in flight."""
        with self._cond:
            return len(self._heap) + len(self._in_flight)

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no job is waiting or in flight; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._heap or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(timeout=min(remaining, 0.1))
            return True
