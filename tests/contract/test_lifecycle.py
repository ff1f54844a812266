"""Every transition of the job state machine's table (`imageblur.lifecycle`), and every
refusal, on every repository (SQLite, PostgreSQL, the unit tests' fake): each operation
is called on a picture in each state, at a time when leases are live and at one when
they have expired and holds are due, and the row after it must be what the table says:
the status, the review, the fields it sets and clears (and no other), the time stamp,
the audit line, the webhook outbox row; or, when the table refuses, the row, its trail
and its outbox unchanged."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import pytest

from imageblur import lifecycle
from imageblur.backends import Repository
from imageblur.domain import (
    ErrorCode,
    ImageblurError,
    ImageRecord,
    JobKind,
    Status,
    UploadOptions,
)
from unit.fakes import FakeRepository

from .test_image_repository import CORRECTED, HOLD, T0, detected, record

LIVE = T0 + timedelta(seconds=1)  # every lease (30 s from T0) is live, no hold is due
LATE = HOLD + timedelta(seconds=1)  # every lease has expired, every hold is due
OTHER_HOLD = HOLD + timedelta(days=1)
_RECORD_FIELDS = tuple(f.name for f in fields(ImageRecord))
HOOK = "http://hooks.example/imageblur"


@pytest.fixture
def repo(repo_factory: Callable[..., Repository]) -> Repository:
    """Every repository here notifies: its transitions' outbox rows are checked too."""
    made = repo_factory(webhook_url=HOOK)
    made.migrate()
    return made


def _events(repo: Repository, image_id: str) -> list[str]:
    return [m.event for m in repo.webhooks(image_id)]


def _processing(repo: Repository) -> ImageRecord:
    rec = repo.add(record())
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0)
    return rec


def _rendering(repo: Repository) -> ImageRecord:
    rec = detected(repo)
    repo.correct(rec.id, expected_revision=0, regions=CORRECTED, role="api", now=T0)
    return rec


def _rendering_held(repo: Repository) -> ImageRecord:
    rec = _rendering(repo)
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.RENDER)
    return rec


def _failed(repo: Repository) -> ImageRecord:
    rec = _processing(repo)
    assert repo.fail(rec.id, owner="w", error="bad", code=ErrorCode.INTERNAL_ERROR, now=T0)
    return rec


def _render_failed(repo: Repository) -> ImageRecord:
    rec = _rendering_held(repo)
    assert repo.fail(rec.id, owner="w", error="bad", code=ErrorCode.INTERNAL_ERROR, now=T0)
    return rec


def _video_pending(repo: Repository) -> ImageRecord:
    return repo.add(record(status=Status.VIDEO_PENDING, kind="video", frames=120, fps=30.0))


def _video_processing(repo: Repository) -> ImageRecord:
    rec = _video_pending(repo)
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.VIDEO)
    return rec


def _video_progressing(repo: Repository) -> ImageRecord:
    rec = _video_processing(repo)
    assert repo.note_progress(rec.id, owner="w", frames_done=3, frames_total=120, eta_s=9.5, now=T0)
    return rec


def _video_done(repo: Repository) -> ImageRecord:
    rec = _video_processing(repo)
    assert repo.complete_video(
        rec.id, owner="w", output_key="o", url="u", faces=1, frames=120, audio="kept", now=T0
    )
    return rec


# A picture uploaded with options runs as the kinds `options` and `options_render`.
OPTIONS = UploadOptions(mode="solid")


# A video uploaded with options runs as the kind `video_options`.
def _video_options_pending(repo: Repository) -> ImageRecord:
    return repo.add(
        record(
            status=Status.VIDEO_OPTIONS_PENDING,
            kind="video",
            frames=120,
            fps=30.0,
            options=OPTIONS,
        )
    )


def _video_options_processing(repo: Repository) -> ImageRecord:
    rec = _video_options_pending(repo)
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.VIDEO_OPTIONS)
    return rec


def _options_pending(repo: Repository) -> ImageRecord:
    return repo.add(record(status=Status.OPTIONS_PENDING, options=OPTIONS))


def _options_processing(repo: Repository) -> ImageRecord:
    rec = _options_pending(repo)
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.OPTIONS)
    return rec


def _options_review(repo: Repository) -> ImageRecord:
    rec = _options_processing(repo)
    assert repo.complete(
        rec.id, owner="w", output_key="o", url="u", faces=1, now=T0, hold_until=HOLD
    )
    return rec


def _options_rendering(repo: Repository) -> ImageRecord:
    rec = _options_review(repo)
    repo.correct(rec.id, expected_revision=0, regions=CORRECTED, role="api", now=T0)
    return rec


def _options_rendering_held(repo: Repository) -> ImageRecord:
    rec = _options_rendering(repo)
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.OPTIONS_RENDER)
    return rec


def _options_failed(repo: Repository) -> ImageRecord:
    rec = _options_processing(repo)
    assert repo.fail(rec.id, owner="w", error="bad", code=ErrorCode.INTERNAL_ERROR, now=T0)
    return rec


def _options_render_failed(repo: Repository) -> ImageRecord:
    rec = _options_rendering_held(repo)
    assert repo.fail(rec.id, owner="w", error="bad", code=ErrorCode.INTERNAL_ERROR, now=T0)
    return rec


# Every state a picture can be in, made through the repository's own operations.
STATES: dict[str, Callable[[Repository], ImageRecord]] = {
    "pending": lambda repo: repo.add(record()),
    "processing": _processing,
    "done": lambda repo: detected(repo, hold_until=None),
    "failed": _failed,
    "review": detected,
    "review after a failed render": _render_failed,
    "rendering": _rendering,
    "rendering, leased": _rendering_held,
    "video pending": _video_pending,
    "video processing": _video_processing,
    "video processing, with progress": _video_progressing,
    "video done": _video_done,
    "video options pending": _video_options_pending,
    "video options processing": _video_options_processing,
    "options pending": _options_pending,
    "options processing": _options_processing,
    "options review": _options_review,
    "options review after a failed render": _options_render_failed,
    "options rendering": _options_rendering,
    "options rendering, leased": _options_rendering_held,
    "options failed": _options_failed,
}


@dataclass(frozen=True)
class Op:
    """One way of calling an operation on one picture: its name in the table, the call
    as the table's guards see it, and the call itself (True: the repository accepted)."""

    name: str
    call: Callable[[datetime, ImageRecord], lifecycle.Call]
    run: Callable[[Repository, ImageRecord, datetime], bool]


def _refused_as_error(run: Callable[[], object]) -> bool:
    try:
        run()
    except ImageblurError:
        return False
    return True


def _ops() -> dict[str, Op]:
    ops: dict[str, Op] = {}
    for kind in JobKind:
        ops[f"claim {kind.value}"] = Op(
            "claim",
            lambda now, r, kind=kind: lifecycle.Call(now=now, owner="x", kind=kind),
            lambda repo, r, now, kind=kind: (
                repo.claim(r.id, owner="x", lease_s=30, now=now, kind=kind) is not None
            ),
        )
    for owner in ("w", "x"):
        ops[f"extend_lease by {owner}"] = Op(
            "extend_lease",
            lambda now, r, owner=owner: lifecycle.Call(now=now, owner=owner),
            lambda repo, r, now, owner=owner: repo.extend_lease(
                r.id, owner=owner, lease_s=60, now=now
            ),
        )
        for hold in (None, OTHER_HOLD):
            ops[f"complete by {owner}, hold {hold is not None}"] = Op(
                "complete",
                lambda now, r, owner=owner, hold=hold: lifecycle.Call(
                    now=now, owner=owner, hold_until=hold
                ),
                lambda repo, r, now, owner=owner, hold=hold: repo.complete(
                    r.id,
                    owner=owner,
                    output_key="o2",
                    url="u2",
                    faces=3,
                    plates=2,
                    now=now,
                    regions=CORRECTED,
                    hold_until=hold,
                ),
            )
        ops[f"note_progress by {owner}"] = Op(
            "note_progress",
            lambda now, r, owner=owner: lifecycle.Call(now=now, owner=owner),
            lambda repo, r, now, owner=owner: repo.note_progress(
                r.id, owner=owner, frames_done=60, frames_total=121, eta_s=1.5, now=now
            ),
        )
        for hold in (None, OTHER_HOLD):
            ops[f"complete_video by {owner}, hold {hold is not None}"] = Op(
                "complete_video",
                lambda now, r, owner=owner, hold=hold: lifecycle.Call(
                    now=now, owner=owner, hold_until=hold
                ),
                lambda repo, r, now, owner=owner, hold=hold: repo.complete_video(
                    r.id,
                    owner=owner,
                    output_key="o3",
                    url="u3",
                    faces=4,
                    frames=118,
                    audio="reencoded",
                    now=now,
                    hold_until=hold,
                ),
            )
        ops[f"fail by {owner}"] = Op(
            "fail",
            lambda now, r, owner=owner: lifecycle.Call(now=now, owner=owner),
            lambda repo, r, now, owner=owner: repo.fail(
                r.id, owner=owner, error="worse", code=ErrorCode.ORIGINAL_MISSING, now=now
            ),
        )
        ops[f"release by {owner}"] = Op(
            "release",
            lambda now, r, owner=owner: lifecycle.Call(now=now, owner=owner),
            lambda repo, r, now, owner=owner: repo.release(
                r.id,
                owner=owner,
                error="later",
                code=ErrorCode.BACKEND_UNAVAILABLE,
                now=now,
                count_attempt=False,
            ),
        )
    for revision in (0, 1):
        ops[f"correct at revision {revision}"] = Op(
            "correct",
            lambda now, r, revision=revision: lifecycle.Call(now=now, expected_revision=revision),
            lambda repo, r, now, revision=revision: _refused_as_error(
                lambda: repo.correct(
                    r.id, expected_revision=revision, regions=CORRECTED[:1], role="api", now=now
                )
            ),
        )
    ops["approve"] = Op(
        "approve",
        lambda now, r: lifecycle.Call(now=now),
        lambda repo, r, now: _refused_as_error(lambda: repo.approve(r.id, role="api", now=now)),
    )
    return ops


OPS = _ops()


def _fields(rec: ImageRecord | None) -> dict[str, Any]:
    assert rec is not None
    return {name: getattr(rec, name) for name in _RECORD_FIELDS}


def _expect(
    repo: Repository, before: ImageRecord, t: lifecycle.Transition | None, now: datetime
) -> None:
    """The row after the operation is what transition `t` makes of `before` (or, for
    None, `before` itself), and its trail grew by `t`'s audit line."""
    after = repo.get(before.id)
    assert after is not None
    trail = [e.action for e in repo.history(before.id)]
    if t is None:
        assert after == before
        return
    assert after.status is (t.target or before.status)
    assert after.review is (t.review or before.review)
    assert after.updated_at == (now if t.stamps else before.updated_at)
    for name in t.clears & set(_RECORD_FIELDS):
        assert getattr(after, name) is None, name
    kept = set(_RECORD_FIELDS) - t.sets - t.clears - {"status", "review", "updated_at"}
    assert {k: v for k, v in _fields(after).items() if k in kept} == {
        k: v for k, v in _fields(before).items() if k in kept
    }
    assert trail[-1:] == ([t.event] if t.event else trail[-1:])
    if t.notifies:
        (newest, *_) = reversed(repo.webhooks(before.id))
        assert newest.event == lifecycle.webhook_event(after.kind, after.status)
        assert (newest.url, newest.created_at, newest.outcome) == (HOOK, now, None)


def _states(repo: Repository) -> list[tuple[str, ImageRecord]]:
    made = []
    for name, make in STATES.items():
        rec = repo.get(make(repo).id)
        assert rec is not None
        made.append((name, rec))
    return made


@pytest.mark.parametrize("now", [LIVE, LATE], ids=["leases live", "leases expired"])
@pytest.mark.parametrize("op_name", list(OPS))
def test_an_operation_does_what_the_table_says_from_every_state(
    repo: Repository, op_name: str, now: datetime
) -> None:
    op = OPS[op_name]
    for state, before in _states(repo):
        t = lifecycle.find(op.name, before, op.call(now, before))
        trail = repo.history(before.id)
        events = _events(repo, before.id)
        regions = repo.regions(before.id)
        accepted = op.run(repo, before, now)
        assert accepted is (t is not None), f"{op_name} from {state}"
        _expect(repo, before, t, now)
        grew = len(repo.history(before.id)) - len(trail)
        assert grew == (1 if t is not None and t.event else 0), f"{op_name} from {state}"
        notified = len(_events(repo, before.id)) - len(events)
        assert notified == (1 if t is not None and t.notifies else 0), f"{op_name} from {state}"
        if t is None or "regions" not in t.sets:
            assert repo.regions(before.id) == regions, f"{op_name} from {state}"


@pytest.mark.parametrize("now", [LIVE, LATE], ids=["leases live", "leases expired"])
def test_the_reconciler_takes_what_the_table_says(repo: Repository, now: datetime) -> None:
    states = _states(repo)
    call = lifecycle.Call(now=now, pending_before=now, published_before=now)
    expected = {r.id: lifecycle.find("requeue_stale", r, call) for _, r in states}
    taken = repo.requeue_stale(pending_before=now, published_before=now, now=now, limit=100)
    assert set(taken) == {i for i, t in expected.items() if t is not None}
    for name, before in states:
        assert (before.id in taken) is (expected[before.id] is not None), name
        _expect(repo, before, expected[before.id], now)


@pytest.mark.parametrize("now", [LIVE, LATE], ids=["holds running", "holds due"])
def test_expiry_takes_what_the_table_says(repo: Repository, now: datetime) -> None:
    states = _states(repo)
    call = lifecycle.Call(now=now)
    expected = {r.id: lifecycle.find("expire_holds", r, call) for _, r in states}
    events = {r.id: _events(repo, r.id) for _, r in states}
    expired = {r.id for r in repo.expire_holds(now=now, limit=100)}
    assert expired == {i for i, t in expected.items() if t is not None}
    for _, before in states:
        _expect(repo, before, expected[before.id], now)
        t = expected[before.id]
        grew = len(_events(repo, before.id)) - len(events[before.id])
        assert grew == (1 if t is not None and t.notifies else 0)


def test_mark_published_changes_no_field_of_the_record(repo: Repository) -> None:
    for state, before in _states(repo):
        for seen in (before.updated_at, before.updated_at - timedelta(seconds=1)):
            call = lifecycle.Call(now=LIVE, if_updated_at=seen)
            t = lifecycle.find("mark_published", before, call)
            assert t is None or before.status in lifecycle.QUEUED, state
            repo.mark_published(before.id, now=LIVE, if_updated_at=seen)
            assert repo.get(before.id) == before, state


def test_add_is_the_tables_first_transition(repo: Repository) -> None:
    (t,) = [t for t in lifecycle.TRANSITIONS if t.operation == "add"]
    rec = repo.add(record())
    assert rec.status is t.target
    assert [e.action for e in repo.history(rec.id)] == [t.event]


def test_every_transition_of_the_table_is_exercised() -> None:
    """The calls above reach every row of the table (a new row needs a call here)."""
    reached: set[lifecycle.Transition] = set()
    for now in (LIVE, LATE):
        for op in OPS.values():
            for state in _state_records():
                t = lifecycle.find(op.name, state, op.call(now, state))
                reached |= {t} if t else set()
        for state in _state_records():
            call = lifecycle.Call(now=now, pending_before=now, published_before=now)
            for name in ("requeue_stale", "expire_holds"):
                t = lifecycle.find(name, state, call)
                reached |= {t} if t else set()
            seen = lifecycle.Call(now=now, if_updated_at=state.updated_at)
            t = lifecycle.find("mark_published", state, seen)
            reached |= {t} if t else set()
    unreached = [t for t in lifecycle.TRANSITIONS if t not in reached and t.operation != "add"]
    assert unreached == []


def _state_records() -> list[ImageRecord]:
    """The states on the unit tests' fake, without a database (for the coverage check)."""
    repo = FakeRepository()
    repo.migrate()
    return [rec for _, rec in _states(repo)]
