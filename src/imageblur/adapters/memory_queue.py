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

from imageblur.domain import DeadLetter, Delivery, InvalidJob, Job, QueueUnavailable


class MemoryJobQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        # (ready_at monotonic, sequence, body): the sequence keeps FIFO order among equals.
        self._heap: list[tuple[float, int, bytes]] = []
        self._seq = itertools.count()
        self._in_flight: dict[int, Job] = {}
        self._dead: list[DeadLetter] = []
        self._closed = False

    def _push(self, body: bytes, delay_s: float = 0.0) -> None:
        heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._seq), body))
        self._cond.notify_all()

    def publish(self, job: Job) -> None:
        self.publish_raw(job.to_json())

    def receive(self, *, timeout_s: float) -> Delivery | None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    _, seq, body = heapq.heappop(self._heap)
                    try:
                        job = Job.from_json(body)
                    except InvalidJob as exc:  # no worker can run it: park it, as RabbitMQ
                        self._dead.append(DeadLetter(job=None, body=body, reason=str(exc)))
                        continue
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
            self._push(job.next_attempt().to_json(), delay_s)

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

    def publish_raw(self, body: bytes) -> None:
        """Queue these bytes as a message, as any client of a broker could."""
        with self._cond:
            if self._closed:
                raise QueueUnavailable("queue is closed")
            self._push(body)

    def depth(self) -> int:
        """Jobs waiting or in flight."""
        with self._cond:
            return len(self._heap) + len(self._in_flight)
