"""The worker's other use case: repair what crashes left behind.

Re-publishes jobs stuck pending or with an expired lease (the record is the source of
truth; duplicate messages find nothing to claim), and deletes stored objects that no
record needs any more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from imageblur.backends import Backends
from imageblur.domain import Job, Status, image_id_of_key, utcnow
from imageblur.jobs import worker_identity
from imageblur.logs import get_logger
from imageblur.ports import ObjectStore

log = get_logger(__name__)


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
        self._repo = backends.repository
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
            for image_id in ids:
                self._b.queue.publish(Job(image_id=image_id))
                self._b.mark_published(image_id, now, seen_at=now)  # as taken
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
        originals = self._sweep(self._b.originals, cutoff, finished)
        results = self._sweep(self._b.results, cutoff, ())
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
