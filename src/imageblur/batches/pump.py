"""What keeps batches moving, one pass at a time, in one process at once (a named lease):
list each listing batch's source a page at a time (the position stored with the page's
items, so a crash resumes after the last stored page), keep at most a window of each
batch's items queued (topping up as they end), publish again the items whose lease
lapsed or whose message is long lost (never one that was never published), and mark
batches done once every item ended."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from imageblur.batches.model import Batch, BatchItem, LocationRefused, SourceObject, item_key
from imageblur.batches.ports import BatchItems, Locations
from imageblur.domain import Job, JobKind, new_image_id, utcnow
from imageblur.logs import get_logger
from imageblur.ports import JobQueue

log = get_logger(__name__)
LEASE = "batch-pump"


class PumpRepository(BatchItems, Protocol):
    def take_lease(self, name: str, *, owner: str, ttl_s: float, now: datetime) -> bool: ...


@dataclass(frozen=True, slots=True)
class PumpSettings:
    window: int = 1000  # IMAGEBLUR_BATCH_WINDOW
    page_size: int = 1000
    list_budget_s: float = 2.0  # listing per pass, so topping up is never starved
    queued_grace_s: float = 600.0  # a queued item this old has lost its message
    lease_s: float = 30.0


@dataclass
class PumpReport:
    listed: int = 0
    published: int = 0
    republished: int = 0
    settled: int = 0


class BatchPump:
    def __init__(
        self,
        repository: PumpRepository,
        queue: JobQueue,
        locations: Locations,
        *,
        owner: str,
        settings: PumpSettings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._repo = repository
        self._queue = queue
        self._locations = locations
        self._owner = owner
        self._s = settings
        self._clock = clock

    def run_once(self) -> PumpReport:
        report = PumpReport()
        now = self._clock()
        if not self._repo.take_lease(LEASE, owner=self._owner, ttl_s=self._s.lease_s, now=now):
            return report
        for batch in self._repo.open_batches():
            try:
                if batch.status == "listing":
                    report.listed += self._list(batch)
            except LocationRefused as exc:  # no bucket, no access: waiting will not help
                log.warning("batch.failed", batch_id=batch.id, error=str(exc))
                self._repo.fail_batch(batch.id, error=str(exc), now=self._clock())
                continue
            if not batch.dry_run:
                report.published += self._top_up(batch)
        grace = timedelta(seconds=self._s.queued_grace_s)
        stale = self._repo.requeue_stale_items(
            now=now, queued_before=now - grace, limit=self._s.window
        )
        for item in stale:
            self._queue.publish(_job(item))
        report.republished = len(stale)
        report.settled = len(self._repo.settle_batches(now=self._clock()))
        return report

    def _list(self, batch: Batch) -> int:
        """Pages of the source until the listing ends or the pass's budget is spent."""
        source = self._locations.open(batch.source)
        deadline = time.monotonic() + self._s.list_budget_s
        after, added = batch.listing_after, 0
        try:
            while time.monotonic() < deadline:
                page, end = source.list_page(
                    batch.source.prefix, after=after, limit=self._s.page_size
                )
                now = self._clock()
                items = [_item(batch, obj, now) for obj in page]
                after = page[-1].key if page else after
                added += self._repo.add_items(batch.id, items, after=after, listed_all=end, now=now)
                if end:
                    log.info("batch.listed", batch_id=batch.id)
                    break
        finally:
            source.close()
        return added

    def _top_up(self, batch: Batch) -> int:
        items = self._repo.to_publish(batch.id, window=self._s.window)
        for item in items:
            self._queue.publish(_job(item))
        if items:
            self._repo.mark_queued([i.id for i in items], now=self._clock())
        return len(items)


def _job(item: BatchItem) -> Job:
    return Job(image_id=item.id, kind=JobKind.BATCH)


def _item(batch: Batch, obj: SourceObject, now: datetime) -> BatchItem:
    return BatchItem(
        id=new_image_id(),
        batch_id=batch.id,
        item_key=item_key(batch.source, obj, batch.target, batch.options),
        source_store=batch.source.store,
        source_bucket=batch.source.bucket,
        source_key=obj.key,
        source_tag=obj.tag,
        source_size=obj.size,
        state="skipped" if batch.dry_run else "listed",
        reason="dry_run" if batch.dry_run else None,
        created_at=now,
        updated_at=now,
    )
