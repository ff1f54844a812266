"""The API's review use cases: read a picture's regions and history, correct its
regions (a re-render from the original), approve it (the original is deleted).

Order of writes on a correction: the record (revision + 1, status rendering), then the
render job. A lost or failed publish leaves the record rendering and unpublished, and
the reconciler publishes it; a correction is never lost once answered 202.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from imageblur import corrections
from imageblur.backends import Backends
from imageblur.domain import (
    DETECTING_STATUSES,
    Event,
    EventRole,
    ImageRecord,
    Job,
    JobKind,
    NotFound,
    NotSupported,
    OriginalGone,
    QueueUnavailable,
    Region,
    Rendering,
    StaleRevision,
    Status,
    is_image_id,
    kind_of_status,
    utcnow,
)
from imageblur.logs import get_logger
from imageblur.ports import Reviews

log = get_logger(__name__)


class ReviewService:
    """Regions, corrections, approval and history. `keep_originals`: an approved
    picture's original is kept (still encrypted) instead of deleted."""

    def __init__(
        self,
        *,
        backends: Backends,
        keep_originals: bool,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._b = backends
        self._repo: Reviews = backends.repository
        self._keep_originals = keep_originals
        self._clock = clock

    def regions(self, image_id: str) -> tuple[int, Sequence[Region]]:
        found = self._repo.regions(image_id) if is_image_id(image_id) else None
        if found is None:
            raise NotFound(f"no image with id {image_id}")
        return found

    def history(self, image_id: str) -> Sequence[Event]:
        if not is_image_id(image_id) or self._repo.get(image_id) is None:
            raise NotFound(f"no image with id {image_id}")  # not an empty trail
        return self._repo.history(image_id)

    def correct(
        self,
        image_id: str,
        wanted: Sequence[corrections.Wanted],
        *,
        expected_revision: int,
        role: EventRole,
        reviewer: str | None = None,
    ) -> ImageRecord:
        """Record the regions wanted, with who wanted them and their reasons, and queue
        their render. Raises `NotFound`, `OriginalGone`, `Rendering`, `StaleRevision`,
        `InvalidRegions` or `ReasonRequired`."""
        record = self._correctable(image_id)
        revision, current = self.regions(image_id)
        if revision != expected_revision:
            raise StaleRevision(
                f"the regions are at revision {revision}, not {expected_revision}: "
                "reload them and apply the change again"
            )
        new = corrections.apply(current, wanted, width=record.width, height=record.height)
        updated = self._repo.correct(
            image_id,
            expected_revision=revision,
            regions=new,
            role=role,
            now=self._clock(),
            reviewer=reviewer,
            reasons=corrections.reasons(wanted),
        )
        log.info("image.corrected", image_id=image_id, revision=updated.revision, reviewer=reviewer)
        self._publish_render(updated)
        return updated

    def _correctable(self, image_id: str) -> ImageRecord:
        record = self._repo.get(image_id) if is_image_id(image_id) else None
        if record is None:
            raise NotFound(f"no image with id {image_id}")
        if record.kind != "picture":
            raise NotSupported(f"{image_id} is a video: its regions cannot be corrected yet")
        if record.status in (Status.DONE, Status.FAILED):
            raise OriginalGone(
                f"image {image_id} is {record.status.value}: its original is deleted, "
                "so it cannot be corrected (corrections need IMAGEBLUR_REVIEW=required)"
            )
        if record.status in DETECTING_STATUSES:
            raise Rendering(f"image {image_id} is still being processed: retry when in review")
        return record

    def _publish_render(self, record: ImageRecord) -> None:
        # The kind the record's status names: `options_render` for a picture with options.
        kind = JobKind(kind_of_status(record.status) or JobKind.RENDER)
        job = Job(image_id=record.id, request_id=record.request_id, kind=kind)
        try:
            self._b.queue.publish(job)
        except QueueUnavailable:
            # Recorded, not lost: the reconciler publishes unpublished rendering rows.
            log.warning("job.publish_failed", image_id=record.id, kind=job.kind.value)
            return
        self._b.mark_published(record.id, self._clock(), seen_at=record.updated_at)

    def approve(
        self, image_id: str, *, role: EventRole, reviewer: str | None = None
    ) -> ImageRecord:
        """review -> done; the original is deleted (unless kept). Raises `NotFound`,
        `Rendering` (approve what was seen, once its render is stored) or `NotInReview`."""
        if not is_image_id(image_id):
            raise NotFound(f"no image with id {image_id}")
        record = self._repo.approve(image_id, role=role, now=self._clock(), reviewer=reviewer)
        log.info("image.approved", image_id=image_id, revision=record.revision, reviewer=reviewer)
        if not self._keep_originals:
            self._b.delete_quietly(self._b.originals, record.input_key, image_id=image_id)
        return record
