"""A picture's record as an upload adds it (pending), for the tests and benchmarks that
write records straight into a repository (bench/ puts tests/ on its path)."""

from __future__ import annotations

from datetime import datetime

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
