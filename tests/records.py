"""Records as the service adds them: a picture as an upload adds it (pending), a bucket
batch as a post adds it (listing) and its items as its listing adds them; for the tests
and benchmarks that write records straight into a repository (bench/ puts tests/ on its
path)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from imageblur.batches.model import (
    Batch,
    BatchItem,
    Location,
    SourceObject,
    batch_key,
    item_key,
    new_batch_id,
)
from imageblur.domain import ImageRecord, Status, new_image_id


def pending_picture(
    *, at: datetime, image_id: str | None = None, key: str | None = None, **changes: object
) -> ImageRecord:
    """Uploaded `at`; `key`: its idempotency key; `changes`: any other field."""
    image_id = image_id or new_image_id()
    base = ImageRecord(
        id=image_id,
        name="bill-gates.jpg",
        status=Status.PENDING,
        content_type="image/jpeg",
        bytes=1234,
        width=640,
        height=480,
        input_key=f"in/{image_id}",
        created_at=at,
        updated_at=at,
        idempotency_key=key,
    )
    return base.with_changes(**changes)


def listing_batch(source: Location, target: Location, *, at: datetime) -> Batch:
    """Posted `at`, with no options, not a dry run: its listing not begun."""
    return Batch(
        id=new_batch_id(),
        key=batch_key(source, target, {}, dry_run=False),
        source=source,
        target=target,
        options={},
        dry_run=False,
        status="listing",
        created_at=at,
        updated_at=at,
    )


def listed_items(of: Batch, objects: Iterable[SourceObject], *, at: datetime) -> list[BatchItem]:
    """The items of `of` for the source's `objects`, listed `at`."""
    return [
        BatchItem(
            id=new_image_id(),
            batch_id=of.id,
            item_key=item_key(of.source, obj, of.target, of.options),
            source_store=of.source.store,
            source_bucket=of.source.bucket,
            source_key=obj.key,
            source_tag=obj.tag,
            source_size=obj.size,
            state="listed",
            created_at=at,
            updated_at=at,
        )
        for obj in objects
    ]
