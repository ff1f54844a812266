"""The four back ends, travelling together: what every use case receives.

A use case's signature then says "the back ends", not four of them, and the two
best-effort writes that the API's and the worker's use cases share live here once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imageblur.batches.ports import BatchItems, BatchRecords
from imageblur.domain import BackendUnavailable
from imageblur.logs import get_logger
from imageblur.ports import (
    JobLeases,
    JobQueue,
    ObjectStore,
    Outbox,
    Pictures,
    Reviews,
    Schema,
    Upkeep,
)

log = get_logger(__name__)


class Repository(
    Pictures, JobLeases, Reviews, Upkeep, Outbox, BatchRecords, BatchItems, Schema, Protocol
):
    """Every role of the image metadata, as each adapter implements them in one class.
    The bundle carries this one object; each use case keeps it typed as the roles it
    uses (`ports`), so mypy holds it to them."""


@dataclass(frozen=True, slots=True)
class Backends:
    """The repository, the originals' and the results' stores, and the job queue."""

    repository: Repository
    originals: ObjectStore
    results: ObjectStore
    queue: JobQueue

    def delete_quietly(self, store: ObjectStore, key: str, *, image_id: str | None) -> None:
        """Delete an object of `store` (one of ours), logging (not raising) if the store
        is down: an object left behind is unreferenced or belongs to a finished image,
        and the reconciler's sweep deletes it later."""
        try:
            store.delete(key)
        except BackendUnavailable:
            log.warning("object.delete_failed", image_id=image_id, key=key)

    def mark_published(self, image_id: str, now: datetime, *, seen_at: datetime) -> None:
        """Record a confirmed publish; if the database is down, the reconciler publishes
        the job once more later, which is harmless (only one claim wins)."""
        try:
            self.repository.mark_published(image_id, now=now, if_updated_at=seen_at)
        except BackendUnavailable:
            log.warning("job.publish_not_recorded", image_id=image_id)

    def check(self) -> dict[str, str | None]:
        """Reachability of every back end: name -> None if fine, else the reason."""
        report: dict[str, str | None] = {}
        for name, probe in (
            ("database", self.repository.check),
            ("originals", self.originals.check),
            ("results", self.results.check),
            ("queue", self.queue.check),
        ):
            try:
                probe()
                report[name] = None
            except BackendUnavailable as exc:
                report[name] = str(exc) or type(exc).__name__
        return report

    def close(self) -> None:
        """Close every back end; the repository last, and its error is not swallowed."""
        for closer in (self.queue.close, self.originals.close, self.results.close):
            with contextlib.suppress(Exception):
                closer()
        self.repository.close()
