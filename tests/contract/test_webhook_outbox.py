"""The webhook outbox role (`ports.Outbox`) on every repository (SQLite, PostgreSQL, the
unit tests' fake): rows written by the transitions that notify, taken under a lease by
one sender at a time, delivered, retried, given up (in the picture's audit trail), and
gone with their record."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from imageblur.backends import Repository
from imageblur.domain import ErrorCode, JobKind, Status, UploadOptions

from .test_image_repository import T0, record

HOOK = "http://hooks.example/imageblur"
LATER = T0 + timedelta(seconds=5)


@pytest.fixture
def repo(repo_factory: Callable[..., Repository]) -> Repository:
    made = repo_factory(webhook_url=HOOK)
    made.migrate()
    return made


def _done(repo: Repository) -> str:
    rec = repo.add(record())
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0)
    assert repo.complete(rec.id, owner="w", output_key="o", url="u", faces=1, now=T0)
    return rec.id


def test_a_picture_done_has_one_row_due_at_once(repo: Repository) -> None:
    image_id = _done(repo)
    (row,) = repo.webhooks(image_id)
    assert (row.event, row.url, row.attempts, row.outcome) == ("picture.done", HOOK, 0, None)
    assert row.id.startswith("msg_") and row.created_at == row.next_attempt_at == T0
    assert row.to_operator and row.finished_at is None  # the operator's: sent to its URL
    assert repo.outbox_depth() == 1


def test_a_repository_without_a_webhook_url_writes_no_row(
    repo_factory: Callable[..., Repository],
) -> None:
    plain = repo_factory()
    plain.migrate()
    assert plain.webhooks(_done(plain)) == []
    assert plain.outbox_depth() == 0


def test_a_failure_and_a_video_name_their_kind(repo: Repository) -> None:
    failed = repo.add(record())
    assert repo.claim(failed.id, owner="w", lease_s=30, now=T0)
    assert repo.fail(failed.id, owner="w", error="bad", code=ErrorCode.INVALID_IMAGE, now=T0)
    assert [m.event for m in repo.webhooks(failed.id)] == ["picture.failed"]
    video = repo.add(record(status=Status.VIDEO_PENDING, kind="video", frames=120, fps=30.0))
    assert repo.claim(video.id, owner="w", lease_s=30, now=T0, kind=JobKind.VIDEO)
    assert repo.complete_video(
        video.id, owner="w", output_key="o", url="u", faces=1, frames=120, audio="kept", now=T0
    )
    assert [m.event for m in repo.webhooks(video.id)] == ["video.done"]


def test_a_claim_takes_due_rows_under_a_lease(repo: Repository) -> None:
    image_id = _done(repo)
    assert repo.claim_webhooks(owner="a", lease_s=10, now=T0 - timedelta(seconds=1), limit=5) == []
    (taken,) = repo.claim_webhooks(owner="a", lease_s=10, now=T0, limit=5)
    assert (taken.image_id, taken.attempts) == (image_id, 1)
    # Leased: nobody else takes it until the lease ends, then another sender does.
    assert repo.claim_webhooks(owner="b", lease_s=10, now=T0 + timedelta(seconds=9), limit=5) == []
    (again,) = repo.claim_webhooks(owner="b", lease_s=10, now=T0 + timedelta(seconds=10), limit=5)
    assert (again.id, again.attempts) == (taken.id, 2)
    # The first sender lost it: it cannot reschedule or give it up any more.
    assert not repo.webhook_retry(taken.id, owner="a", next_attempt_at=LATER, error="x")
    assert not repo.webhook_given_up(taken.id, owner="a", reason="x", now=LATER)


def test_a_retry_frees_the_row_until_its_next_attempt(repo: Repository) -> None:
    image_id = _done(repo)
    (taken,) = repo.claim_webhooks(owner="a", lease_s=60, now=T0, limit=5)
    assert repo.webhook_retry(taken.id, owner="a", next_attempt_at=LATER, error="HTTP 500")
    assert (
        repo.claim_webhooks(owner="a", lease_s=60, now=LATER - timedelta(seconds=1), limit=5) == []
    )
    (row,) = repo.webhooks(image_id)
    assert (row.next_attempt_at, row.last_error, row.outcome) == (LATER, "HTTP 500", None)
    (again,) = repo.claim_webhooks(owner="b", lease_s=60, now=LATER, limit=5)
    assert (again.id, again.attempts) == (taken.id, 2)


def test_a_delivered_row_is_done_with(repo: Repository) -> None:
    image_id = _done(repo)
    (taken,) = repo.claim_webhooks(owner="a", lease_s=60, now=T0, limit=5)
    assert repo.webhook_delivered(taken.id, now=LATER)
    assert not repo.webhook_delivered(taken.id, now=LATER)  # once
    assert repo.webhooks(image_id)[0].outcome == "delivered"
    assert repo.outbox_depth() == 0
    assert repo.claim_webhooks(owner="a", lease_s=60, now=LATER + timedelta(days=9), limit=5) == []


def test_giving_up_is_in_the_pictures_audit_trail(repo: Repository) -> None:
    image_id = _done(repo)
    (taken,) = repo.claim_webhooks(owner="a", lease_s=60, now=T0, limit=5)
    assert repo.webhook_given_up(taken.id, owner="a", reason="HTTP 500 for a day", now=LATER)
    (row,) = repo.webhooks(image_id)
    assert (row.outcome, row.last_error) == ("given_up", "HTTP 500 for a day")
    last = repo.history(image_id)[-1]
    assert (last.action, last.role, last.status, last.at) == (
        "webhook_given_up",
        "system",
        "done",
        LATER,
    )
    assert last.detail == "picture.done: HTTP 500 for a day"
    assert repo.outbox_depth() == 0


def test_the_rows_go_with_their_record(repo: Repository) -> None:
    image_id = _done(repo)
    (taken,) = repo.claim_webhooks(owner="a", lease_s=60, now=T0, limit=5)
    assert repo.delete(image_id) is not None
    assert repo.webhooks(image_id) == []
    assert repo.outbox_depth() == 0
    assert not repo.webhook_delivered(taken.id, now=LATER)


def test_the_oldest_due_rows_come_first_and_limit_holds(repo: Repository) -> None:
    ids = [_done(repo) for _ in range(3)]
    taken = repo.claim_webhooks(owner="a", lease_s=60, now=T0, limit=2)
    assert len(taken) == 2 and {m.image_id for m in taken} <= set(ids)
    (last,) = repo.claim_webhooks(owner="a", lease_s=60, now=T0, limit=2)
    assert last.image_id not in {m.image_id for m in taken}


def test_concurrent_senders_never_take_one_row_twice(
    repo_factory: Callable[..., Repository],
) -> None:
    first = repo_factory(webhook_url=HOOK)
    first.migrate()
    for _ in range(20):
        _done(first)
    senders = [repo_factory(webhook_url=HOOK) for _ in range(4)]

    def drain(n: int) -> list[str]:
        got: list[str] = []
        while batch := senders[n].claim_webhooks(owner=f"s{n}", lease_s=60, now=T0, limit=3):
            got += [m.id for m in batch]
        return got

    with ThreadPoolExecutor(4) as pool:
        taken = [i for ids in pool.map(drain, range(4)) for i in ids]
    assert len(taken) == len(set(taken)) == 20


def test_a_callbacks_row_is_not_the_operators(repo: Repository) -> None:
    """An upload's `callback_url` takes the place of the operator's URL, unflagged: the
    sender holds it to the allowed hosts."""
    hook = "https://client.example/in"
    rec = repo.add(record(status=Status.OPTIONS_PENDING, options=UploadOptions(callback_url=hook)))
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.OPTIONS)
    assert repo.complete(rec.id, owner="w", output_key="o", url="u", faces=1, now=T0)
    (row,) = repo.webhooks(rec.id)
    assert (row.url, row.to_operator) == (hook, False)
    (taken,) = repo.claim_webhooks(owner="a", lease_s=60, now=T0, limit=5)
    assert (taken.url, taken.to_operator) == (hook, False)


def test_finished_rows_are_swept_by_their_finish_time(repo: Repository) -> None:
    delivered, given_up, waiting = _done(repo), _done(repo), _done(repo)
    taken = {m.image_id: m for m in repo.claim_webhooks(owner="a", lease_s=60, now=T0, limit=5)}
    assert repo.webhook_delivered(taken[delivered].id, now=LATER)
    assert repo.webhook_given_up(taken[given_up].id, owner="a", reason="x", now=T0)
    assert repo.webhooks(delivered)[0].finished_at == LATER
    assert repo.sweep_webhooks(finished_before=T0) == 0  # strictly before
    assert repo.sweep_webhooks(finished_before=LATER) == 1
    assert repo.webhooks(given_up) == [] and len(repo.webhooks(delivered)) == 1
    assert repo.sweep_webhooks(finished_before=LATER + timedelta(days=9)) == 1
    assert repo.webhooks(delivered) == []
    assert len(repo.webhooks(waiting)) == 1 and repo.outbox_depth() == 1  # never unsent
    assert repo.history(given_up)[-1].action == "webhook_given_up"  # the trail stays
