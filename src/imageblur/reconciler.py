"""The worker's other use case: repair what crashes left behind.

Re-publishes jobs stuck pending or with an expired lease (the record is the source of
truth; duplicate messages find nothing to claim), and deletes stored objects that no
record needs any more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from imageblur.backends import Backends
from imageblur.domain import (
    ImageRecord,
    Job,
    JobKind,
    Status,
    image_id_of_key,
    kind_of_status,
    utcnow,
)
from imageblur.jobs import worker_identity
from imageblur.logs import get_logger
from imageblur.ports import ObjectStore, Upkeep

log = get_logger(__name__)

_Needed = Callable[[ImageRecord, str], bool]  # is this stored object still needed?


def _result_needed(record: ImageRecord, key: str) -> bool:
    """The current result (and a video's tracks), and any while a job may be writing one
    right now; a render's result superseded by a newer one (a crash between storing and
    cleaning up) is not."""
    working = kind_of_status(record.status) is not None  # a job of any kind waits or runs
    return working or key in (record.output_key, record.tracks_key)


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
        backends: Backends,
        pending_grace_s: float,
        queued_grace_s: float,
        orphan_grace_s: float,
        keep_originals: bool,
        gc_lease_s: float,
        batch: int = 500,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._b = backends
        self._repo: Upkeep = backends.repository
        self._owner = owner or worker_identity()
        self._gc_lease_s = gc_lease_s
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
            for job in self._jobs(ids):
                self._b.queue.publish(job)
                self._b.mark_published(job.image_id, now, seen_at=now)  # as taken
                log.info(
                    "job.republished",
                    image_id=job.image_id,
                    request_id=job.request_id,
                    kind=job.kind.value,
                )
            total += len(ids)
            if len(ids) < self._batch:
                return total

    def _jobs(self, ids: Sequence[str]) -> list[Job]:
        """The jobs of these records, of the kind their status names (`JOB_KINDS`: a
        rendering one's is a RENDER); each carries its upload's request id into the
        worker's logs. A record deleted meanwhile has none."""
        records = self._repo.get_many(ids) if ids else {}
        return [
            Job(
                image_id=record.id,
                request_id=record.request_id,
                kind=JobKind(kind_of_status(record.status) or JobKind.DETECT),
            )
            for record in (records.get(i) for i in ids)
            if record is not None
        ]

    def expire_holds(self) -> int:
        """End the review holds whose time is up: done, and the original deleted."""
        expired = self._repo.expire_holds(now=self._clock(), limit=self._batch)
        for record in expired:
            log.info("image.hold_expired", image_id=record.id)
            if not self._keep_originals:
                self._b.delete_quietly(self._b.originals, record.input_key, image_id=record.id)
        return len(expired)

    def collect_garbage(self) -> tuple[int, int] | None:
        """(originals, results) deleted; None when another process holds the gc lease."""
        now = self._clock()
        if not self._repo.take_lease(
            self.GC_LEASE, owner=self._owner, ttl_s=self._gc_lease_s, now=now
        ):
            return None
        cutoff = now - self._orphan_grace
        originals = self._sweep(self._b.originals, cutoff, self._original_needed)
        results = self._sweep(self._b.results, cutoff, _result_needed)
        return originals, results

    def _original_needed(self, record: ImageRecord, key: str) -> bool:
        """Until the picture is finished (review holds and renders need it), or always
        with `keep_originals`."""
        finished = record.status in (Status.DONE, Status.FAILED)
        return key == record.input_key and (self._keep_originals or not finished)

    def _sweep(self, store: ObjectStore, cutoff: datetime, needed: _Needed) -> int:
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
                deleted += self._sweep_page(store, page, needed)
                page = []
        if page:
            deleted += self._sweep_page(store, page, needed)
        return deleted

    def _sweep_page(self, store: ObjectStore, page: list[tuple[str, str]], needed: _Needed) -> int:
        records = self._repo.get_many([image_id for image_id, _ in page])
        deleted = 0
        for image_id, key in page:
            record = records.get(image_id)
            if record is not None and needed(record, key):
                continue
            store.delete(key)
            deleted += 1
            log.info("object.collected", image_id=image_id, key=key)
        return deleted

    def run_once(
        self, *, everything_pending: bool = False, collect: bool = True
    ) -> ReconcileReport:
        republished = self.republish(everything_pending=everything_pending)
        self.expire_holds()
        collected = self.collect_garbage() if collect else None
        originals, results = collected or (0, 0)
        return ReconcileReport(republished, originals, results)
