"""The worker's use cases: process one job, and reconcile what crashes left behind.

The record is the source of truth. A job is claimed (conditional update with a lease),
processed, its result stored under a key made from the image id (so a second run
overwrites, never duplicates), then marked done, then acknowledged. A crash anywhere
leaves the record pending or leased; the reconciler re-publishes it, and duplicate
messages find nothing to claim.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from imageblur.anonymizer import Anonymizer
from imageblur.domain import (
    BackendUnavailable,
    Delivery,
    ImageRecord,
    InvalidImage,
    Job,
    ObjectMissing,
    QueueUnavailable,
    Status,
    utcnow,
)
from imageblur.logs import get_logger
from imageblur.ports import ImageRepository, JobQueue, ObjectStore
from imageblur.services import delete_quietly, image_id_of_key, mark_published, object_key

log = get_logger(__name__)


def worker_identity() -> str:
    """Unique per process: a lease names the process that holds it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# A job's lease is renewed while it runs, for at most this many lease lengths (20 min at
# the default 300 s; the largest photo takes well under a minute).
MAX_RENEWED_LEASES = 4


class Outcome(StrEnum):
    DONE = "done"
    FAILED = "failed"
    RETRY = "retry"
    DEAD_LETTERED = "dead_lettered"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay_s(self, attempt: int) -> float:
        """Exponential back-off: base, 2 base, 4 base, ... capped."""
        # The exponent is capped: a retry count in the thousands (a long outage) would
        # overflow the float long after the delay reached its cap.
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** min(max(attempt - 1, 0), 60)))


class JobProcessor:
    def __init__(
        self,
        *,
        repository: ImageRepository,
        originals: ObjectStore,
        results: ObjectStore,
        queue: JobQueue,
        anonymizer: Anonymizer,
        retry: RetryPolicy,
        lease_s: float,
        keep_originals: bool = False,
        owner: str | None = None,
        outage_retries: int = 360,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._outage_retries = outage_retries
        self._repo = repository
        self._originals = originals
        self._results = results
        self._queue = queue
        self._anonymize = anonymizer
        self._retry = retry
        self._lease_s = lease_s
        self._keep_originals = keep_originals
        self.owner = owner or worker_identity()
        self._clock = clock

    def handle(self, delivery: Delivery) -> Outcome:
        """Process one delivery and settle it (ack, retry or dead letter)."""
        job = delivery.job
        bound = log.bind(image_id=job.image_id, attempt=job.attempt)
        try:
            record = self._repo.claim(
                job.image_id, owner=self.owner, lease_s=self._lease_s, now=self._clock()
            )
        except BackendUnavailable as exc:
            # The record cannot be read, so the attempt cannot count: an outage of the
            # database must not park good jobs. Wait the longest delay and try again; the
            # record stays pending, and the reconciler re-publishes it in any case.
            delay_s = self._retry.max_delay_s
            reason = f"{exc.backend}: {exc}"
            bound.warning("job.claim_unavailable", delay_s=delay_s, reason=reason)
            self._retry_later(delivery, delay_s, reason)
            return Outcome.RETRY
        if record is None:
            bound.info("job.skipped", reason="not claimable (done, failed, deleted or leased)")
            self._settle(self._queue.ack, delivery)
            return Outcome.SKIPPED
        bound = bound.bind(attempt=record.attempts)
        if record.attempts > self._retry.max_attempts:
            # Earlier attempts ended without settling: the worker died on this image
            # (out of memory, a crash in native code). Stop before it kills another.
            return self._retry_or_dead_letter(
                delivery, record, "the worker stopped while processing it, every attempt"
            )
        bound.info("job.claimed")
        try:
            return self._process(delivery, record)
        except InvalidImage as exc:
            return self._fail(delivery, record, f"cannot decode the image: {exc.message}")
        except ObjectMissing:
            return self._fail(delivery, record, "the original is missing from the store")
        except BackendUnavailable as exc:
            return self._wait_for_backend(delivery, record, f"{exc.backend}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bug or a library failure: retry, then park
            bound.exception("job.error")
            return self._retry_or_dead_letter(
                delivery, record, f"internal error: {type(exc).__name__}: {exc}"
            )

    def _process(self, delivery: Delivery, record: ImageRecord) -> Outcome:
        with self._keep_lease(record.id):
            original = self._originals.get(record.input_key)
            result = self._anonymize(original)
            if result.jpeg_fallback:
                log.info("jpeg.full_reencode", image_id=record.id, reason=result.jpeg_fallback)
            out_key = object_key(record.id, result.extension)
            self._results.put(out_key, result.data, content_type=result.content_type)
        done = self._repo.complete(
            record.id,
            owner=self.owner,
            output_key=out_key,
            url=self._results.url(out_key),
            faces=result.faces,
            now=self._clock(),
        )
        if not done:
            # The lease was lost: the image was deleted meanwhile, or our lease expired
            # and another worker took over (it writes the same key, so no duplicate).
            if self._repo.get(record.id) is None:
                self._results.delete(out_key)
            log.warning("job.lease_lost", image_id=record.id)
            self._settle(self._queue.ack, delivery)
            return Outcome.SKIPPED
        log.info("job.done", image_id=record.id, faces=result.faces, bytes=len(result.data))
        if not self._keep_originals:
            delete_quietly(self._originals, record.input_key, image_id=record.id)
        self._settle(self._queue.ack, delivery)
        return Outcome.DONE

    @contextlib.contextmanager
    def _keep_lease(self, image_id: str) -> Iterator[None]:
        """Renew the lease every third of its length while the job runs: on a slow or
        throttled node a large image may take longer than one lease, and a job taken
        over mid-way would run twice and count an attempt it did not fail."""
        stop = threading.Event()

        # Not for ever: a job hung in native code would otherwise hold its lease as long
        # as the process lives, out of reach of the reconciler and the crash guard.
        renew_until = time.monotonic() + MAX_RENEWED_LEASES * self._lease_s

        def renew() -> None:
            while not stop.wait(self._lease_s / 3) and time.monotonic() < renew_until:
                try:
                    now = self._clock()
                    if not self._repo.extend_lease(
                        image_id, owner=self.owner, lease_s=self._lease_s, now=now
                    ):
                        return  # lost (deleted, or taken over): `complete` will say so
                except BackendUnavailable:
                    log.warning("job.lease_not_renewed", image_id=image_id)

        keeper = threading.Thread(target=renew, name=f"lease-{image_id[:8]}", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()

    def _fail(self, delivery: Delivery, record: ImageRecord, reason: str) -> Outcome:
        try:
            self._repo.fail(record.id, owner=self.owner, error=reason, now=self._clock())
        except BackendUnavailable:
            # Settle anyway: an unsettled message would hold this worker's prefetch
            # slot until the broker's consumer timeout. If the retry comes back while
            # our lease still runs it is skipped; once the lease has expired the
            # reconciler re-publishes the job and it is judged again.
            delay_s = self._retry.max_delay_s
            log.warning("job.fail_not_recorded", image_id=record.id, reason=reason)
            self._retry_later(delivery, delay_s, reason)
            return Outcome.RETRY
        log.warning("job.failed", image_id=record.id, reason=reason)
        if not self._keep_originals:
            delete_quietly(self._originals, record.input_key, image_id=record.id)
        self._settle(self._queue.ack, delivery)
        return Outcome.FAILED

    def _wait_for_backend(self, delivery: Delivery, record: ImageRecord, reason: str) -> Outcome:
        """A back end failed mid-job. Not the image's fault: the attempt is given back and
        the job retried, with delays growing to `max_delay_s`, for as long as the outage
        lasts. Counting it would dead-letter every image in flight during a 15 s store
        restart, and garbage collection would then delete their originals.

        Patience has an end: after `outage_retries` retries of the message, the error is
        treated as the image's own (a store refusing one object, say) and counts."""
        if delivery.job.attempt >= self._outage_retries:
            return self._retry_or_dead_letter(delivery, record, reason)
        with contextlib.suppress(BackendUnavailable):  # else the lease expires by itself
            self._repo.release(
                record.id, owner=self.owner, error=reason, now=self._clock(), count_attempt=False
            )
        delay_s = self._retry.delay_s(delivery.job.attempt + 1)
        log.warning("job.backend_unavailable", image_id=record.id, delay_s=delay_s, reason=reason)
        self._retry_later(delivery, delay_s, reason)
        return Outcome.RETRY

    def _retry_or_dead_letter(
        self, delivery: Delivery, record: ImageRecord, reason: str
    ) -> Outcome:
        attempt = record.attempts
        image_id = delivery.job.image_id
        now = self._clock()
        if attempt >= self._retry.max_attempts:
            try:
                self._repo.fail(image_id, owner=self.owner, error=f"gave up: {reason}", now=now)
            except BackendUnavailable:
                log.warning("job.fail_not_recorded", image_id=image_id)
            log.error("job.dead_lettered", image_id=image_id, attempt=attempt, reason=reason)
            self._settle(lambda d: self._queue.dead_letter(d, reason=reason), delivery)
            return Outcome.DEAD_LETTERED
        # If this fails the lease expires by itself, then the job can be claimed again.
        with contextlib.suppress(BackendUnavailable):
            self._repo.release(image_id, owner=self.owner, error=reason, now=now)
        delay_s = self._retry.delay_s(attempt)
        log.warning("job.retry", image_id=image_id, attempt=attempt, delay_s=delay_s, reason=reason)
        self._retry_later(delivery, delay_s, reason)
        return Outcome.RETRY

    def _retry_later(self, delivery: Delivery, delay_s: float, reason: str) -> None:
        self._settle(lambda d: self._queue.retry(d, delay_s=delay_s, reason=reason), delivery)

    def _settle(self, action: Callable[[Delivery], None], delivery: Delivery) -> None:
        try:
            action(delivery)
        except QueueUnavailable:
            # The broker redelivers an unsettled message; claiming makes that harmless.
            log.warning("job.settle_failed", image_id=delivery.job.image_id)


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    republished: int = 0
    originals_deleted: int = 0
    results_deleted: int = 0


class Reconciler:
    """Re-publishes jobs stuck pending or with an expired lease; deletes objects that no
    record references (a crash before the record was written, a failed delete) and
    originals of finished images.

    Every worker runs a reconciler, but garbage collection lists whole stores, so only
    the holder of the `gc` lease collects: one process at a time, and another one after
    `gc_lease_s` if that process dies. Stored keys are looked up a page at a time.
    """

    GC_LEASE = "gc"

    def __init__(
        self,
        *,
        repository: ImageRepository,
        originals: ObjectStore,
        results: ObjectStore,
        queue: JobQueue,
        pending_grace_s: float,
        orphan_grace_s: float,
        queued_grace_s: float = 6 * 3600.0,
        keep_originals: bool = False,
        batch: int = 500,
        owner: str | None = None,
        gc_lease_s: float = 900.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._repo = repository
        self._owner = owner or worker_identity()
        self._gc_lease_s = gc_lease_s
        self._originals = originals
        self._results = results
        self._queue = queue
        self._pending_grace = timedelta(seconds=pending_grace_s)
        self._queued_grace = timedelta(seconds=queued_grace_s)
        self._orphan_grace = timedelta(seconds=orphan_grace_s)
        self._keep_originals = keep_originals
        self._batch = batch
        self._clock = clock

    def republish(self, *, everything_pending: bool = False) -> int:
        now = self._clock()
        # Rows taken in this pass are stamped `now`, after every cut-off (even with a
        # grace of 0), so no batch of the loop below takes them twice.
        latest = now - timedelta(microseconds=1)
        if everything_pending:
            # The queue itself was lost (in-process, restarted): every pending job, in as
            # many batches as it takes.
            before = published_before = latest
        else:
            before = min(now - self._pending_grace, latest)
            published_before = min(now - self._queued_grace, latest)
        total = 0
        while True:
            ids = self._repo.requeue_stale(
                pending_before=before, published_before=published_before, now=now, limit=self._batch
            )
            for image_id in ids:
                self._queue.publish(Job(image_id=image_id))
                mark_published(self._repo, image_id, now, seen_at=now)  # as taken
                log.info("job.republished", image_id=image_id)
            total += len(ids)
            if len(ids) < self._batch:
                return total

    def collect_garbage(self) -> tuple[int, int] | None:
        """(originals, results) deleted; None when another process holds the gc lease."""
        now = self._clock()
        if not self._repo.take_lease(
            self.GC_LEASE, owner=self._owner, ttl_s=self._gc_lease_s, now=now
        ):
            return None
        cutoff = now - self._orphan_grace
        finished = () if self._keep_originals else (Status.DONE, Status.FAILED)
        originals = self._sweep(self._originals, cutoff, finished)
        results = self._sweep(self._results, cutoff, ())
        return originals, results

    def _sweep(self, store: ObjectStore, cutoff: datetime, drop_when: tuple[Status, ...]) -> int:
        deleted = 0
        page: list[tuple[str, str]] = []
        for obj in store.list():
            if obj.modified_at > cutoff:
                continue  # may belong to an upload in flight
            image_id = image_id_of_key(obj.key)
            if image_id is None:
                continue  # not a key we made: not ours to delete
            page.append((image_id, obj.key))
            if len(page) >= self._batch:
                deleted += self._sweep_page(store, page, drop_when)
                page = []
        if page:
            deleted += self._sweep_page(store, page, drop_when)
        return deleted

    def _sweep_page(
        self, store: ObjectStore, page: list[tuple[str, str]], drop_when: tuple[Status, ...]
    ) -> int:
        records = self._repo.get_many([image_id for image_id, _ in page])
        deleted = 0
        for image_id, key in page:
            record = records.get(image_id)
            if record is not None and (record.status not in drop_when or key != record.input_key):
                # Kept while its record lives: a result, or an original still needed. (A
                # pending record may be rewriting this very result right now.)
                continue
            store.delete(key)
            deleted += 1
            log.info("object.collected", image_id=image_id, key=key)
        return deleted

    def run_once(
        self, *, everything_pending: bool = False, collect: bool = True
    ) -> ReconcileReport:
        republished = self.republish(everything_pending=everything_pending)
        collected = self.collect_garbage() if collect else None
        originals, results = collected or (0, 0)
        return ReconcileReport(republished, originals, results)
