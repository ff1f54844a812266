"""The state machine's table itself: one answer for every row and call, and the rules
the review workflow depends on, read from the table."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from imageblur import lifecycle
from imageblur.domain import ErrorCode, ImageRecord, JobKind, Status

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _record(status: Status, *, lease: str | None, error: bool, held: bool) -> ImageRecord:
    expires = {None: None, "live": NOW + timedelta(seconds=5), "expired": NOW}[lease]
    return ImageRecord(
        id="a" * 32,
        name="x.jpg",
        status=status,
        content_type="image/jpeg",
        bytes=1,
        width=1,
        height=1,
        input_key="in/x",
        created_at=NOW,
        updated_at=NOW,
        lease_owner="w" if lease else None,
        lease_expires_at=expires,
        error_code=ErrorCode.INTERNAL_ERROR if error else None,
        held_until=NOW if held else None,
    )


def _rows() -> list[ImageRecord]:
    return [
        _record(status, lease=lease, error=error, held=held)
        for status, lease, error, held in itertools.product(
            Status, (None, "live", "expired"), (False, True), (False, True)
        )
    ]


def _calls() -> list[lifecycle.Call]:
    return [
        lifecycle.Call(
            now=NOW,
            owner=owner,
            kind=kind,
            hold_until=hold,
            expected_revision=0,
            if_updated_at=NOW,
            published_at=published,
            pending_before=NOW,
            published_before=NOW,
        )
        for owner, kind, hold, published in itertools.product(
            ("w", "x"), JobKind, (None, NOW), (None, NOW)
        )
    ]


def test_at_most_one_transition_of_an_operation_fits_a_row() -> None:
    for operation in lifecycle.OPERATIONS:
        for row in _rows():
            for call in _calls():
                fits = [
                    t
                    for t in lifecycle.TRANSITIONS
                    if t.operation == operation and lifecycle.fits(t, row, call)
                ]
                assert len(fits) <= 1, (operation, row.status, call)


def test_a_render_never_fails_a_picture() -> None:
    """Whatever a render's worker does, the picture stays reviewable (its original kept)."""
    for t in lifecycle.TRANSITIONS:
        if Status.RENDERING in t.source and t.operation != "correct":
            assert t.target in (None, Status.RENDERING, Status.REVIEW), t


def test_done_and_failed_are_final() -> None:
    for t in lifecycle.TRANSITIONS:
        assert not t.source & {Status.DONE, Status.FAILED}, t


def test_a_failed_render_is_not_approved() -> None:
    rows = [_record(Status.REVIEW, lease=None, error=error, held=False) for error in (False, True)]
    call = lifecycle.Call(now=NOW)
    assert [lifecycle.find("approve", r, call) is not None for r in rows] == [True, False]


def test_every_status_change_but_a_lease_or_a_requeue_is_in_the_audit_trail() -> None:
    quiet = {"extend_lease", "note_progress", "release", "mark_published", "requeue_stale"}
    for t in lifecycle.TRANSITIONS:
        if t.operation == "claim":
            continue  # a worker's claim is in its logs, not the picture's trail
        assert (t.event is None) is (t.operation in quiet), t


def test_a_change_into_done_failed_or_review_notifies_and_nothing_else() -> None:
    notified = {Status.DONE, Status.FAILED, Status.REVIEW}
    for t in lifecycle.TRANSITIONS:
        changes = t.target is not None and t.target not in t.source
        assert t.notifies is (changes and t.target in notified), t
    # Every return to review is told: after a re-render, and after a render that failed.
    back = {
        t.operation for t in lifecycle.TRANSITIONS if t.notifies and Status.RENDERING in t.source
    }
    assert back == {"complete", "fail"}


def test_an_event_is_named_by_kind_and_public_status() -> None:
    assert lifecycle.webhook_event("picture", Status.DONE) == "picture.done"
    assert lifecycle.webhook_event("video", Status.REVIEW) == "video.review"
