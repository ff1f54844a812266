"""A worker's batch item: claim it, read its source as listed (never write nor delete
it: it is borrowed), anonymize it as a picture, write the result where nothing is, and
record how it ended. An outage of a location or the database gives the item back to the
queue (with a growing delay) without using up an attempt's reason; anything the item
itself is at fault for ends it (`skipped` with a reason, or `failed`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from imageblur import imaging, upload_options
from imageblur.anonymizer import Anonymizer
from imageblur.batches.model import (
    CHANGED,
    NOT_AN_IMAGE,
    TARGET_EXISTS,
    Batch,
    BatchItem,
    LocationRefused,
    SourceChanged,
    TargetExists,
    result_key,
)
from imageblur.batches.ports import BatchItems, Locations
from imageblur.batches.service import BATCH_OPTIONS
from imageblur.domain import BackendUnavailable, Delivery, InvalidImage, utcnow
from imageblur.logs import get_logger
from imageblur.ports import JobQueue

log = get_logger(__name__)
TOO_LARGE = "too_large"


class LeaseLost(Exception):  # noqa: N818 - what happened, not a failure of the item
    """Another worker took the item over (this one's lease lapsed): write nothing."""


class RunnerRepository(BatchItems, Protocol):
    def get_batch(self, batch_id: str) -> Batch | None: ...


class BatchRunner:
    def __init__(
        self,
        repository: RunnerRepository,
        queue: JobQueue,
        locations: Locations,
        anonymizer: Anonymizer,
        *,
        owner: str,
        lease_s: float,
        max_bytes: int,
        max_attempts: int,
        retry_delay_s: Callable[[int], float],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._repo = repository
        self._queue = queue
        self._locations = locations
        self._anonymizer = anonymizer
        self._owner = owner
        self._lease_s = lease_s
        self._max_bytes = max_bytes
        self._max_attempts = max_attempts
        self._delay = retry_delay_s
        self._clock = clock
        self._batches: dict[str, Batch] = {}  # a batch's locations and options never change

    def handle(self, delivery: Delivery) -> str:
        """Run one item and settle its message; the outcome's name."""
        item_id = delivery.job.image_id
        try:
            item = self._repo.claim_item(
                item_id, owner=self._owner, lease_s=self._lease_s, now=self._clock()
            )
            batch = self._batch(item.batch_id) if item is not None else None
        except BackendUnavailable as exc:
            return self._again(delivery, None, str(exc))
        if item is None or batch is None:
            self._queue.ack(delivery)  # ended, dropped (cancelled) or another's
            return "skipped"
        try:
            state, fields = self._ended_by_attempts(item) or self._run(batch, item)
        except BackendUnavailable as exc:
            return self._again(delivery, item, str(exc))
        except LeaseLost:
            log.info("batch.item_taken_over", batch_id=batch.id, key=item.source_key)
            self._queue.ack(delivery)  # its new holder ends it
            return "skipped"
        except LocationRefused as exc:  # access denied to this object, say
            log.warning(
                "batch.item_refused", batch_id=batch.id, key=item.source_key, error=str(exc)
            )
            state, fields = "failed", {"reason": "location_refused"}
        except Exception:  # a bug on this item: it fails, the batch goes on
            log.exception("batch.item_error", batch_id=batch.id, key=item.source_key)
            state, fields = "failed", {"reason": "internal_error"}
        self._repo.finish_item(item.id, owner=self._owner, state=state, now=self._clock(), **fields)
        self._queue.ack(delivery)
        log.info("batch.item", batch_id=batch.id, key=item.source_key, state=state, **fields)
        return state

    def _ended_by_attempts(self, item: BatchItem) -> tuple[str, dict[str, Any]] | None:
        """Earlier attempts died without ending it (a crash in native code, out of
        memory): stop before it takes another worker down."""
        if item.attempts > self._max_attempts:
            return "failed", {"reason": "worker_stopped"}
        return None

    def _batch(self, batch_id: str) -> Batch | None:
        if batch_id not in self._batches:
            found = self._repo.get_batch(batch_id)
            if found is None:
                return None
            self._batches[batch_id] = found
        return self._batches[batch_id]

    def _run(self, batch: Batch, item: BatchItem) -> tuple[str, dict[str, Any]]:
        source = self._locations.open(batch.source)
        try:
            data = source.read(item.source_key, tag=item.source_tag, max_bytes=self._max_bytes)
        except SourceChanged:
            return "skipped", {"reason": CHANGED}
        finally:
            source.close()
        if len(data) > self._max_bytes:
            return "failed", {"reason": TOO_LARGE}
        try:
            imaging.sniff_format(data)
        except InvalidImage:
            return "skipped", {"reason": NOT_AN_IMAGE}
        choices = upload_options.parse(batch.options, allowed=BATCH_OPTIONS)
        try:
            result = self._anonymizer.choosing(choices)(data)
        except InvalidImage as exc:
            return "failed", {"reason": exc.code}
        key = result_key(batch.source, batch.target, item.source_key, result.extension)
        done: dict[str, Any] = {"faces": result.faces, "target_key": key, "wrote_target": True}
        target = self._locations.open(batch.target)
        try:
            target.write_new(
                key,
                result.data,
                content_type=result.content_type,
                before=lambda mark: self._record_mark(item, key, mark),
            )
        except TargetExists:
            # An earlier attempt of this item may have written it and then lost its
            # lease before recording the end: the mark it recorded first says so.
            if item.target_marks and target.mark_of(key) in item.target_marks:
                return "done", done
            return "skipped", {"reason": TARGET_EXISTS, "target_key": key}
        finally:
            target.close()
        return "done", done

    def _record_mark(self, item: BatchItem, key: str, mark: str) -> None:
        """Before the object can appear: which object this attempt writes, so a later
        attempt that finds it knows it as its item's own."""
        if not self._repo.record_mark(
            item.id, owner=self._owner, target_key=key, mark=mark, now=self._clock()
        ):
            raise LeaseLost(item.id)

    def _again(self, delivery: Delivery, item: BatchItem | None, reason: str) -> str:
        """A back end is down: the item waits in the queue (its lease given back)."""
        log.warning("batch.item_unavailable", item_id=delivery.job.image_id, error=reason)
        if item is not None:
            # If the database is down too, its lease lapses and the pump publishes it again.
            with contextlib.suppress(BackendUnavailable):
                self._repo.finish_item(
                    item.id, owner=self._owner, state="queued", now=self._clock()
                )
        self._queue.retry(delivery, delay_s=self._delay(delivery.job.attempt), reason=reason)
        return "retry"
