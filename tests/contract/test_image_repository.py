"""The repository's contract (every role in `ports`: pictures, job leases, reviews,
upkeep, schema), on every adapter (SQLite, PostgreSQL) and on the unit tests' fake."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from imageblur.backends import Repository
from imageblur.domain import (
    Conflict,
    ErrorCode,
    ImageRecord,
    JobKind,
    MaskGeometry,
    NotFound,
    NotInReview,
    OriginalGone,
    Region,
    RenderFailed,
    Rendering,
    RepositoryUnavailable,
    Review,
    StaleRevision,
    Status,
    UploadOptions,
)
from records import pending_picture

T0 = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
DAY = timedelta(days=1)


def record(*, at: datetime = T0, key: str | None = None, **changes: object) -> ImageRecord:
    return pending_picture(at=at, key=key, **changes)


def test_migrate_is_idempotent(repo: Repository) -> None:
    repo.migrate()
    repo.migrate()
    assert repo.count() == 0


def test_concurrent_migrations_are_safe(repo_factory: Callable[[], Repository]) -> None:
    repos = [repo_factory() for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda r: r.migrate(), repos))
    rec = repos[0].add(record())
    assert repos[3].get(rec.id) == rec


def test_add_then_get_round_trips_every_field(repo: Repository) -> None:
    rec = record(
        key="idem-1", name="ünïcode name.png", content_type="image/png", request_id="req-1.a_B"
    )
    assert repo.add(rec) == rec
    got = repo.get(rec.id)
    assert got == rec
    assert got is not None and got.created_at.tzinfo is not None
    assert repo.get("absent") is None


def test_same_idempotency_key_returns_the_first_record(repo: Repository) -> None:
    first = repo.add(record(key="k-1"))
    again = repo.add(record(key="k-1"))
    assert again.id == first.id
    assert repo.count() == 1


def test_a_reused_key_returns_the_first_record_with_its_body_digest(
    repo: Repository,
) -> None:
    first = repo.add(record(key="k-2", body_sha256="a" * 64))
    assert repo.get(first.id) == first
    again = repo.add(record(key="k-2", body_sha256="b" * 64))
    # The first record as stored, so that the caller can tell another body from a retry.
    assert again == first and again.body_sha256 == "a" * 64
    assert repo.count() == 1


def test_adding_an_existing_id_is_a_conflict(repo: Repository) -> None:
    first = repo.add(record())
    with pytest.raises(Conflict):
        repo.add(record(id=first.id, name="other.jpg"))
    # Nothing changed: the first record and its trail stand.
    assert repo.get(first.id) == first
    assert [e.action for e in repo.history(first.id)] == ["uploaded"]
    assert repo.count() == 1


def test_an_existing_key_wins_over_an_existing_id(repo: Repository) -> None:
    # A retry of one upload with the same key is a replay, whatever id it was given.
    first = repo.add(record(key="k-3", body_sha256="c" * 64))
    again = repo.add(record(id=first.id, key="k-3", body_sha256="d" * 64))
    assert again == first


def test_concurrent_adds_with_one_key_make_one_record(
    repo_factory: Callable[[], Repository],
) -> None:
    repos = [repo_factory() for _ in range(4)]
    repos[0].migrate()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: repos[i % 4].add(record(key="race")), range(16)))
    assert len({r.id for r in results}) == 1
    assert repos[0].count() == 1


def test_list_is_newest_first_and_paginates(repo: Repository) -> None:
    recs = [repo.add(record(at=T0 + timedelta(seconds=i))) for i in range(5)]
    assert [r.id for r in repo.list(limit=10)] == [r.id for r in reversed(recs)]
    assert [r.id for r in repo.list(limit=2, offset=1)] == [recs[3].id, recs[2].id]
    assert repo.list(limit=10, offset=5) == []
    assert repo.count() == 5


def test_delete_returns_what_was_removed(repo: Repository) -> None:
    rec = repo.add(record())
    assert repo.delete(rec.id) == rec
    assert repo.get(rec.id) is None
    assert repo.delete(rec.id) is None


def test_claim_complete_lifecycle(repo: Repository) -> None:
    rec = repo.add(record())
    now = T0 + timedelta(seconds=1)
    claimed = repo.claim(rec.id, owner="w1", lease_s=30, now=now)
    assert claimed is not None
    assert claimed.status is Status.PROCESSING
    assert claimed.attempts == 1
    assert claimed.lease_owner == "w1"
    assert claimed.lease_expires_at == now + timedelta(seconds=30)

    assert repo.claim(rec.id, owner="w2", lease_s=30, now=now) is None  # leased
    assert not repo.complete(rec.id, owner="w2", output_key="o", url="u", faces=1, now=now)

    done_at = now + timedelta(seconds=2)
    assert repo.complete(
        rec.id, owner="w1", output_key="out/x", url="s3://b/out/x", faces=2, plates=1, now=done_at
    )
    done = repo.get(rec.id)
    assert done is not None
    assert (done.status, done.output_key, done.url, done.faces, done.plates) == (
        Status.DONE,
        "out/x",
        "s3://b/out/x",
        2,
        1,
    )
    assert done.lease_owner is None and done.updated_at == done_at
    # Done is final: duplicates of the message can neither claim nor complete again.
    assert repo.claim(rec.id, owner="w3", lease_s=30, now=done_at + timedelta(days=1)) is None
    assert not repo.complete(rec.id, owner="w1", output_key="o2", url="u", faces=0, now=done_at)


def test_an_expired_lease_is_taken_over(repo: Repository) -> None:
    rec = repo.add(record())
    assert repo.claim(rec.id, owner="dead", lease_s=10, now=T0)
    later = T0 + timedelta(seconds=11)
    taken = repo.claim(rec.id, owner="alive", lease_s=10, now=later)
    assert taken is not None and taken.attempts == 2 and taken.lease_owner == "alive"
    # The dead worker wakes up: it has lost the job and cannot finish it.
    assert not repo.complete(rec.id, owner="dead", output_key="o", url="u", faces=0, now=later)
    assert not repo.release(
        rec.id, owner="dead", error="x", code=ErrorCode.BACKEND_UNAVAILABLE, now=later
    )
    assert repo.complete(rec.id, owner="alive", output_key="o", url="u", faces=0, now=later)


def test_exactly_one_of_many_concurrent_claims_wins(
    repo_factory: Callable[[], Repository],
) -> None:
    repos = [repo_factory() for _ in range(4)]
    repos[0].migrate()
    rec = repos[0].add(record())
    barrier = threading.Barrier(8)

    def claim(i: int) -> bool:
        barrier.wait()
        return repos[i % 4].claim(rec.id, owner=f"w{i}", lease_s=60, now=T0) is not None

    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(claim, range(8)))
    assert wins.count(True) == 1


def test_only_the_holder_fails_a_job(repo: Repository) -> None:
    a = repo.add(record())
    assert not repo.fail(a.id, owner="w", error="not claimed", code=ErrorCode.INVALID_IMAGE, now=T0)
    got = repo.get(a.id)
    assert got is not None and got.status is Status.PENDING and got.error is None

    b = repo.add(record())
    assert repo.claim(b.id, owner="w", lease_s=5, now=T0)
    assert not repo.fail(
        b.id, owner="other", error="not mine", code=ErrorCode.INVALID_IMAGE, now=T0
    )
    assert repo.fail(b.id, owner="w", error="corrupt", code=ErrorCode.INVALID_IMAGE, now=T0)
    got = repo.get(b.id)
    assert got is not None and got.status is Status.FAILED and got.lease_owner is None


def test_release_returns_to_pending_with_the_reason(repo: Repository) -> None:
    rec = repo.add(record())
    assert repo.claim(rec.id, owner="w", lease_s=5, now=T0)
    assert repo.release(
        rec.id,
        owner="w",
        error="store down",
        code=ErrorCode.BACKEND_UNAVAILABLE,
        now=T0 + timedelta(seconds=1),
    )
    got = repo.get(rec.id)
    assert got is not None
    assert (got.status, got.error, got.lease_owner, got.attempts) == (
        Status.PENDING,
        "store down",
        None,
        1,
    )
    again = repo.claim(rec.id, owner="w2", lease_s=5, now=T0 + timedelta(seconds=2))
    assert again is not None and again.attempts == 2


def test_an_error_keeps_its_code_until_the_job_succeeds(repo: Repository) -> None:
    rec = repo.add(record())
    assert repo.get(rec.id) == rec and rec.error is None and rec.error_code is None
    assert repo.claim(rec.id, owner="w", lease_s=5, now=T0)
    text = ErrorCode.BACKEND_UNAVAILABLE.message
    assert repo.release(rec.id, owner="w", error=text, code=ErrorCode.BACKEND_UNAVAILABLE, now=T0)
    got = repo.get(rec.id)
    assert got is not None
    assert (got.error, got.error_code) == (text, ErrorCode.BACKEND_UNAVAILABLE)
    # Done: neither is left.
    assert repo.claim(rec.id, owner="w", lease_s=5, now=LATER)
    assert repo.complete(rec.id, owner="w", output_key="o", url="u", faces=0, now=LATER)
    got = repo.get(rec.id)
    assert got is not None and (got.error, got.error_code) == (None, None)

    failing = repo.add(record())
    assert repo.claim(failing.id, owner="w", lease_s=5, now=T0)
    assert repo.fail(
        failing.id, owner="w", error="not a JPEG", code=ErrorCode.INVALID_IMAGE, now=LATER
    )
    failed = repo.get(failing.id)
    assert failed is not None
    assert (failed.status, failed.error, failed.error_code) == (
        Status.FAILED,
        "not a JPEG",
        ErrorCode.INVALID_IMAGE,
    )
    assert repo.get_many([failing.id]) == {failing.id: failed}
    assert [r.error_code for r in repo.list(limit=10) if r.id == failing.id] == [
        ErrorCode.INVALID_IMAGE
    ]
    assert repo.history(failing.id)[-1].detail == "not a JPEG"


def test_a_correction_clears_the_error_of_a_failed_render(repo: Repository) -> None:
    rec = corrected(repo)
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.RENDER)
    assert repo.release(
        rec.id, owner="w", error="down", code=ErrorCode.BACKEND_UNAVAILABLE, now=LATER
    )
    fixed = repo.correct(rec.id, expected_revision=1, regions=CORRECTED, role="api", now=LATER)
    assert (fixed.error, fixed.error_code) == (None, None)
    assert repo.get(rec.id) == fixed


def test_only_the_holder_extends_a_live_lease(repo: Repository) -> None:
    rec = repo.add(record())
    assert not repo.extend_lease(rec.id, owner="w", lease_s=10, now=T0)  # not claimed
    assert repo.claim(rec.id, owner="w", lease_s=10, now=T0)
    assert not repo.extend_lease(rec.id, owner="other", lease_s=10, now=T0)
    assert repo.extend_lease(rec.id, owner="w", lease_s=100, now=T0 + timedelta(seconds=5))
    # Past the first lease, but within the extended one: nobody can take it.
    assert repo.claim(rec.id, owner="other", lease_s=10, now=T0 + timedelta(seconds=50)) is None
    held = repo.get(rec.id)
    assert held is not None and held.lease_owner == "w" and held.attempts == 1
    assert repo.complete(rec.id, owner="w", output_key="o", url="u", faces=0, now=T0)
    assert not repo.extend_lease(rec.id, owner="w", lease_s=10, now=T0)  # done


def test_release_can_give_the_attempt_back(repo: Repository) -> None:
    rec = repo.add(record())
    for n in range(3):
        now = T0 + timedelta(seconds=n)
        claimed = repo.claim(rec.id, owner="w", lease_s=5, now=now)
        assert claimed is not None and claimed.attempts == 1
        assert repo.release(
            rec.id,
            owner="w",
            error="db down",
            code=ErrorCode.BACKEND_UNAVAILABLE,
            now=now,
            count_attempt=False,
        )


def test_requeue_stale_takes_unpublished_pending_and_expired_leases(
    repo: Repository,
) -> None:
    old_pending = repo.add(record(at=T0))
    fresh_pending = repo.add(record(at=T0 + timedelta(seconds=100)))
    queued = repo.add(record(at=T0))
    repo.mark_published(queued.id, now=T0, if_updated_at=queued.updated_at)
    expired = repo.add(record(at=T0))
    live = repo.add(record(at=T0))
    done = repo.add(record(at=T0))
    assert repo.claim(expired.id, owner="w", lease_s=10, now=T0)
    assert repo.claim(live.id, owner="w", lease_s=1000, now=T0)
    assert repo.claim(done.id, owner="w", lease_s=10, now=T0)
    assert repo.complete(done.id, owner="w", output_key="o", url="u", faces=0, now=T0)

    now = T0 + timedelta(seconds=120)
    before = T0 + timedelta(seconds=50)
    ids = set(
        repo.requeue_stale(pending_before=before, published_before=T0 - DAY, now=now, limit=100)
    )
    assert ids == {old_pending.id, expired.id}
    assert fresh_pending.id not in ids and queued.id not in ids
    # The expired lease is released: anyone may claim it now, its dead owner may not finish.
    taken = repo.get(expired.id)
    assert taken is not None and taken.status is Status.PENDING and taken.lease_owner is None
    assert not repo.complete(expired.id, owner="w", output_key="o", url="u", faces=0, now=now)
    # Taken rows count as touched now: the next pass does not take them again.
    assert (
        repo.requeue_stale(pending_before=before, published_before=T0 - DAY, now=now, limit=100)
        == []
    )
    later = now + timedelta(seconds=100)
    assert (
        len(repo.requeue_stale(pending_before=later, published_before=T0 - DAY, now=later, limit=1))
        == 1
    )


def test_a_published_job_is_requeued_only_past_the_published_grace(repo: Repository) -> None:
    queued = repo.add(record(at=T0))
    repo.mark_published(queued.id, now=T0 + timedelta(seconds=1), if_updated_at=T0)
    late = T0 + DAY
    assert repo.requeue_stale(pending_before=late, published_before=T0, now=late, limit=10) == []
    ids = repo.requeue_stale(
        pending_before=late, published_before=T0 + timedelta(seconds=1), now=late, limit=10
    )
    assert ids == [queued.id]
    # Taken, it counts as unpublished until the reconciler confirms its new publish.
    later = late + timedelta(seconds=10)
    assert repo.requeue_stale(pending_before=later, published_before=T0, now=later, limit=10) == [
        queued.id
    ]


def test_a_late_publish_mark_does_not_cover_a_release(repo: Repository) -> None:
    # The API publishes; a worker claims and releases before the API marks it published.
    rec = repo.add(record(at=T0))
    assert repo.claim(rec.id, owner="w", lease_s=10, now=T0)
    released_at = T0 + timedelta(seconds=1)
    assert repo.release(
        rec.id, owner="w", error="store down", code=ErrorCode.BACKEND_UNAVAILABLE, now=released_at
    )
    repo.mark_published(rec.id, now=released_at, if_updated_at=rec.updated_at)  # too late
    later = released_at + timedelta(seconds=1)
    assert repo.requeue_stale(
        pending_before=released_at, published_before=T0 - DAY, now=later, limit=10
    ) == [rec.id]


def test_a_released_job_is_requeued_after_the_pending_grace(repo: Repository) -> None:
    # Its retry waits in a delay queue that may drop it: it counts as unconfirmed.
    rec = repo.add(record(at=T0))
    repo.mark_published(rec.id, now=T0, if_updated_at=T0)
    assert repo.claim(rec.id, owner="w", lease_s=10, now=T0)
    released_at = T0 + timedelta(seconds=1)
    assert repo.release(
        rec.id, owner="w", error="store down", code=ErrorCode.BACKEND_UNAVAILABLE, now=released_at
    )
    assert repo.requeue_stale(pending_before=T0, published_before=T0 - DAY, now=T0, limit=10) == []
    later = released_at + timedelta(seconds=1)
    assert repo.requeue_stale(
        pending_before=released_at, published_before=T0 - DAY, now=later, limit=10
    ) == [rec.id]


def test_get_many_returns_the_existing_records_by_id(repo: Repository) -> None:
    stored = [repo.add(record()) for _ in range(3)]
    missing = uuid.uuid4().hex
    ids = [stored[0].id, missing, stored[2].id, stored[0].id]
    found = repo.get_many(ids)
    assert found == {stored[0].id: stored[0], stored[2].id: stored[2]}
    assert repo.get_many([]) == {}


def test_get_many_takes_a_large_page(repo: Repository) -> None:
    stored = [repo.add(record()) for _ in range(3)]
    ids = [uuid.uuid4().hex for _ in range(1200)] + [r.id for r in stored]
    assert set(repo.get_many(ids)) == {r.id for r in stored}


def test_a_lease_is_held_renewed_and_taken_over_when_expired(repo: Repository) -> None:
    assert repo.take_lease("gc", owner="a", ttl_s=60, now=T0)
    assert not repo.take_lease("gc", owner="b", ttl_s=60, now=T0 + timedelta(seconds=30))
    assert repo.take_lease("other", owner="b", ttl_s=60, now=T0)  # leases are per name
    # The holder renews: the lease now runs to T0 + 50 + 60.
    assert repo.take_lease("gc", owner="a", ttl_s=60, now=T0 + timedelta(seconds=50))
    assert not repo.take_lease("gc", owner="b", ttl_s=60, now=T0 + timedelta(seconds=100))
    # The holder died: once its lease expires, another process takes over, and the
    # old holder does not get it back until that one's expires in turn.
    assert repo.take_lease("gc", owner="b", ttl_s=60, now=T0 + timedelta(seconds=111))
    assert not repo.take_lease("gc", owner="a", ttl_s=60, now=T0 + timedelta(seconds=120))


def test_exactly_one_of_many_concurrent_lease_takers_wins(
    repo_factory: Callable[[], Repository],
) -> None:
    repos = [repo_factory() for _ in range(4)]
    repos[0].migrate()
    barrier = threading.Barrier(8)

    def take(i: int) -> bool:
        barrier.wait()
        return repos[i % 4].take_lease("gc", owner=f"w{i}", ttl_s=60, now=T0)

    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(take, range(8)))
    assert wins.count(True) == 1


def test_check_fails_until_the_schema_is_migrated(
    repo_factory: Callable[[], Repository],
) -> None:
    fresh = repo_factory()
    with pytest.raises(RepositoryUnavailable, match="migrate"):
        fresh.check()
    fresh.migrate()
    fresh.check()


def test_check_passes_when_reachable(repo: Repository) -> None:
    repo.check()


def test_unreachable_database_raises_repository_unavailable(
    broken_repo: Repository,
) -> None:
    with pytest.raises(RepositoryUnavailable):
        broken_repo.check()
    with pytest.raises(RepositoryUnavailable):
        broken_repo.migrate()


def test_picture_stats_count_each_status_and_find_the_oldest_pending(
    repo: Repository,
) -> None:
    empty = repo.picture_stats()
    assert sum(empty.counts.values()) == 0 and empty.oldest_pending_at is None
    oldest, newer = record(at=T0 - DAY), record(at=T0)
    for rec in (newer, oldest, record(at=T0 - 2 * DAY), record(at=T0 - 3 * DAY)):
        repo.add(rec)
    done, failed = repo.list(limit=4)[2:]  # the two oldest uploads finish
    assert repo.claim(done.id, owner="w", lease_s=60, now=T0)
    assert repo.complete(done.id, owner="w", output_key="k", url="u", faces=1, now=T0)
    assert repo.claim(failed.id, owner="w", lease_s=60, now=T0)
    assert repo.fail(failed.id, owner="w", error="bad", code=ErrorCode.INVALID_IMAGE, now=T0)
    stats = repo.picture_stats()
    assert {k: v for k, v in stats.counts.items() if v} == {"pending": 2, "done": 1, "failed": 1}
    assert stats.oldest_pending_at == oldest.created_at
    assert repo.claim(oldest.id, owner="w", lease_s=60, now=T0)
    after = repo.picture_stats()
    assert after.oldest_pending_at == newer.created_at
    assert after.counts["processing"] == 1
    # A picture uploaded with options waits as options_pending: pending all the same.
    optioned = repo.add(
        record(at=T0 - 2 * DAY, status=Status.OPTIONS_PENDING, options=UploadOptions(mode="solid"))
    )
    stats = repo.picture_stats()
    assert stats.oldest_pending_at == optioned.created_at
    assert stats.counts["options_pending"] == 1


# --- review and correct -----------------------------------------------------------------

HOLD = T0 + DAY
LATER = T0 + timedelta(seconds=10)


def region(rid: str = "r1", *, hidden: bool = True, manual: bool = False) -> Region:
    return Region(
        id=rid,
        x=10,
        y=20,
        width=30,
        height=40,
        score=None if manual else 0.91,
        source="manual" if manual else "detector",
        kind="face",
        uncertain=not hidden and not manual,
        hidden=hidden,
        # Stored with a detector region, so that every round trip below checks it too.
        mask=None if manual else MaskGeometry(scale=1.25, margin_px=3.0, shape="ellipse"),
    )


DETECTED = [region("r1"), region("r2", hidden=False)]
CORRECTED = [region("r1"), region("r2"), region("r3", manual=True)]


def detected(
    repo: Repository, *, hold_until: datetime | None = HOLD, rec: ImageRecord | None = None
) -> ImageRecord:
    """A picture (`rec`, added already, or a new one) through its detection job, held for
    review unless `hold_until` is None."""
    rec = rec or repo.add(record())
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0)
    assert repo.complete(
        rec.id,
        owner="w",
        output_key="o",
        url="u",
        faces=1,
        now=T0,
        regions=DETECTED,
        hold_until=hold_until,
    )
    got = repo.get(rec.id)
    assert got is not None
    return got


def corrected(repo: Repository) -> ImageRecord:
    """A held picture with one correction waiting for its render (revision 1)."""
    held = detected(repo)
    return repo.correct(held.id, expected_revision=0, regions=CORRECTED, role="reviewer", now=T0)


def test_review_fields_round_trip(repo: Repository) -> None:
    rec = record(review=Review.PENDING, revision=3, held_until=HOLD, status=Status.REVIEW)
    assert repo.add(rec) == rec
    assert repo.get(rec.id) == rec


def test_regions_round_trip_at_revision_zero_after_complete(repo: Repository) -> None:
    rec = repo.add(record())
    assert repo.regions(rec.id) == (0, [])
    done = detected(repo, hold_until=None, rec=rec)
    assert (done.status, done.review, done.held_until) == (Status.DONE, None, None)
    got = repo.regions(rec.id)
    assert got is not None and got[0] == 0 and list(got[1]) == DETECTED
    assert repo.regions(uuid.uuid4().hex) is None


def test_a_hold_puts_the_picture_in_review(repo: Repository) -> None:
    held = detected(repo)
    assert (held.status, held.review, held.held_until) == (Status.REVIEW, Review.PENDING, HOLD)
    assert held.status.public == "review" and held.lease_owner is None


def test_correct_increments_the_revision_and_waits_for_a_render(repo: Repository) -> None:
    held = detected(repo)
    got = repo.correct(held.id, expected_revision=0, regions=CORRECTED, role="reviewer", now=LATER)
    assert (got.status, got.revision, got.attempts, got.updated_at) == (
        Status.RENDERING,
        1,
        0,
        LATER,
    )
    assert got.lease_owner is None and got.lease_expires_at is None
    assert got.review is Review.PENDING and got.status.public == "pending"
    assert repo.get(held.id) == got
    regions = repo.regions(held.id)
    assert regions is not None and regions[0] == 1 and list(regions[1]) == CORRECTED


def test_a_correction_takes_the_render_from_its_worker(repo: Repository) -> None:
    rec = corrected(repo)
    assert repo.claim(rec.id, owner="w1", lease_s=30, now=T0, kind=JobKind.RENDER)
    again = repo.correct(rec.id, expected_revision=1, regions=DETECTED, role="api", now=LATER)
    assert (again.status, again.revision, again.lease_owner) == (Status.RENDERING, 2, None)
    # The superseded render can neither hold nor finish the job.
    assert not repo.extend_lease(rec.id, owner="w1", lease_s=30, now=LATER)
    assert not repo.complete(rec.id, owner="w1", output_key="x", url="u", faces=1, now=LATER)
    took = repo.claim(rec.id, owner="w2", lease_s=30, now=LATER, kind=JobKind.RENDER)
    assert took is not None and took.attempts == 1


def test_a_stale_revision_is_refused(repo: Repository) -> None:
    held = detected(repo)
    with pytest.raises(StaleRevision):
        repo.correct(held.id, expected_revision=1, regions=CORRECTED, role="reviewer", now=T0)
    assert repo.get(held.id) == held
    regions = repo.regions(held.id)
    assert regions is not None and regions[0] == 0 and list(regions[1]) == DETECTED
    assert [e.action for e in repo.history(held.id)] == ["uploaded", "processed"]


def test_exactly_one_of_concurrent_corrections_wins(
    repo_factory: Callable[[], Repository],
) -> None:
    repos = [repo_factory() for _ in range(4)]
    repos[0].migrate()
    held = detected(repos[0])
    barrier = threading.Barrier(8)

    def correct(i: int) -> str:
        barrier.wait()
        try:
            repos[i % 4].correct(
                held.id, expected_revision=0, regions=[region(f"r{i}")], role="reviewer", now=T0
            )
        except StaleRevision:
            return "stale"
        return "won"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(correct, range(8)))
    assert outcomes.count("won") == 1 and outcomes.count("stale") == 7
    winner = outcomes.index("won")
    assert repos[1].regions(held.id) == (1, [region(f"r{winner}")])
    assert [e.action for e in repos[2].history(held.id)].count("corrected") == 1


def test_correct_needs_a_kept_original(repo: Repository) -> None:
    done = detected(repo, hold_until=None)
    failed = repo.add(record())
    assert repo.claim(failed.id, owner="w", lease_s=30, now=T0)
    assert repo.fail(failed.id, owner="w", error="bad", code=ErrorCode.INVALID_IMAGE, now=T0)
    pending = repo.add(record())
    processing = repo.add(record())
    assert repo.claim(processing.id, owner="w", lease_s=30, now=T0)

    def correct(image_id: str) -> None:
        repo.correct(image_id, expected_revision=0, regions=CORRECTED, role="api", now=T0)

    for gone in (done.id, failed.id):
        with pytest.raises(OriginalGone):
            correct(gone)
    for early in (pending.id, processing.id):
        with pytest.raises(Rendering):
            correct(early)
    with pytest.raises(NotFound):
        correct(uuid.uuid4().hex)


def test_claims_of_each_kind_take_only_their_rows(repo: Repository) -> None:
    pending = repo.add(record())
    assert repo.claim(pending.id, owner="w", lease_s=30, now=T0, kind=JobKind.RENDER) is None
    rec = corrected(repo)
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0) is None  # DETECT by default
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.DETECT) is None
    took = repo.claim(rec.id, owner="w1", lease_s=30, now=T0, kind=JobKind.RENDER)
    assert took is not None
    assert (took.status, took.lease_owner, took.attempts, took.revision) == (
        Status.RENDERING,
        "w1",
        1,
        1,
    )
    assert took.lease_expires_at == T0 + timedelta(seconds=30)
    assert repo.claim(rec.id, owner="w2", lease_s=30, now=LATER, kind=JobKind.RENDER) is None
    assert repo.extend_lease(rec.id, owner="w1", lease_s=30, now=LATER)
    expired = LATER + timedelta(seconds=31)
    assert repo.claim(rec.id, owner="w1", lease_s=30, now=expired, kind=JobKind.DETECT) is None
    over = repo.claim(rec.id, owner="w2", lease_s=30, now=expired, kind=JobKind.RENDER)
    assert over is not None and over.attempts == 2 and over.lease_owner == "w2"


def test_a_render_completes_into_review(repo: Repository) -> None:
    rec = corrected(repo)
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.RENDER)
    assert repo.complete(
        rec.id, owner="w", output_key="o-r1", url="u-r1", faces=3, now=LATER, regions=DETECTED
    )
    got = repo.get(rec.id)
    assert got is not None
    assert (got.status, got.review, got.revision, got.output_key, got.faces) == (
        Status.REVIEW,
        Review.PENDING,
        1,
        "o-r1",
        3,
    )
    assert got.held_until == HOLD and got.lease_owner is None and got.updated_at == LATER
    regions = repo.regions(rec.id)  # the record's own, not what complete was given
    assert regions is not None and list(regions[1]) == CORRECTED


def test_a_render_is_released_or_failed_by_its_holder(repo: Repository) -> None:
    rec = corrected(repo)
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.RENDER)
    assert not repo.release(
        rec.id, owner="other", error="x", code=ErrorCode.BACKEND_UNAVAILABLE, now=T0
    )
    assert repo.release(
        rec.id,
        owner="w",
        error="store down",
        code=ErrorCode.BACKEND_UNAVAILABLE,
        now=LATER,
        count_attempt=False,
    )
    got = repo.get(rec.id)
    assert got is not None
    assert (got.status, got.lease_owner, got.error, got.attempts) == (
        Status.RENDERING,
        None,
        "store down",
        0,
    )
    assert repo.claim(rec.id, owner="w", lease_s=30, now=LATER, kind=JobKind.RENDER)
    assert not repo.fail(rec.id, owner="other", error="x", code=ErrorCode.INVALID_IMAGE, now=LATER)
    assert repo.fail(
        rec.id, owner="w", error="corrupt original", code=ErrorCode.INVALID_IMAGE, now=LATER
    )
    # A render never fails the picture: back to review, with the result it had before.
    back = repo.get(rec.id)
    assert back is not None
    assert (back.status, back.review, back.output_key, back.url, back.faces) == (
        Status.REVIEW,
        Review.PENDING,
        "o",
        "u",
        1,
    )
    assert (back.lease_owner, back.error, back.error_code, back.revision, back.held_until) == (
        None,
        "corrupt original",
        ErrorCode.INVALID_IMAGE,
        1,
        HOLD,
    )
    last = repo.history(rec.id)[-1]
    assert (last.action, last.role, last.status, last.revision, last.detail) == (
        "render_failed",
        "worker",
        "review",
        1,
        "corrupt original",
    )
    again_failed = repo.fail(rec.id, owner="w", error="x", code=ErrorCode.INVALID_IMAGE, now=LATER)
    assert not again_failed  # not held any more
    # The result shown is older than the regions: approving it would publish what the
    # reviewer asked to hide.
    with pytest.raises(RenderFailed):
        repo.approve(rec.id, role="reviewer", now=LATER)
    # Corrected again from there, as a reviewer would.
    again = repo.correct(rec.id, expected_revision=1, regions=[], role="reviewer", now=LATER)
    assert again.status is Status.RENDERING and again.revision == 2
    assert repo.claim(rec.id, owner="w", lease_s=30, now=LATER, kind=JobKind.RENDER)
    assert repo.complete(
        rec.id, owner="w", output_key="o-r2", url="u-r2", faces=0, now=LATER, regions=[]
    )
    assert repo.approve(rec.id, role="reviewer", now=LATER).status is Status.DONE


def test_approve_releases_only_a_picture_in_review(repo: Repository) -> None:
    held = detected(repo)
    approved = repo.approve(held.id, role="reviewer", now=LATER)
    assert (approved.status, approved.review, approved.updated_at) == (
        Status.DONE,
        Review.APPROVED,
        LATER,
    )
    assert repo.get(held.id) == approved
    with pytest.raises(NotInReview):
        repo.approve(held.id, role="reviewer", now=LATER)
    with pytest.raises(Rendering):
        repo.approve(corrected(repo).id, role="reviewer", now=LATER)
    with pytest.raises(NotInReview):
        repo.approve(repo.add(record()).id, role="reviewer", now=LATER)
    with pytest.raises(NotInReview):
        repo.approve(detected(repo, hold_until=None).id, role="reviewer", now=LATER)
    with pytest.raises(NotFound):
        repo.approve(uuid.uuid4().hex, role="reviewer", now=LATER)


def test_expire_holds_ends_the_holds_that_are_due(repo: Repository) -> None:
    hour = timedelta(hours=1)
    first, second, third = (detected(repo, hold_until=T0 + n * hour) for n in (1, 2, 3))
    rendering = corrected(repo)  # held until HOLD, but its render is pending
    now = HOLD + hour
    assert [r.id for r in repo.expire_holds(now=now, limit=1)] == [first.id]
    rest = repo.expire_holds(now=now, limit=10)
    assert [r.id for r in rest] == [second.id, third.id]
    for r in rest:
        assert (r.status, r.review, r.updated_at) == (Status.DONE, Review.EXPIRED, now)
        assert repo.get(r.id) == r
    assert repo.expire_holds(now=now, limit=10) == []
    still = repo.get(rendering.id)
    assert still is not None and still.status is Status.RENDERING
    last = repo.history(first.id)[-1]
    assert (last.action, last.role, last.status) == ("expired", "system", "done")


def test_history_is_the_audit_trail_oldest_first(repo: Repository) -> None:
    rec = corrected(repo)
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.RENDER)
    assert repo.complete(rec.id, owner="w", output_key="o", url="u", faces=2, now=LATER)
    repo.approve(rec.id, role="reviewer", now=LATER + timedelta(seconds=1))
    events = repo.history(rec.id)
    assert [(e.action, e.role, e.status, e.revision) for e in events] == [
        ("uploaded", "api", "pending", 0),
        ("processed", "worker", "review", 0),
        ("corrected", "reviewer", "pending", 1),
        ("rendered", "worker", "review", 1),
        ("approved", "reviewer", "done", 1),
    ]
    assert [e.at for e in events] == [T0, T0, T0, LATER, LATER + timedelta(seconds=1)]
    assert all(e.at.tzinfo is not None for e in events)
    assert events[1].detail == "1 face hidden, 1 uncertain candidate"
    assert events[2].detail == events[3].detail == "3 regions hidden, 1 manual"
    assert repo.history(uuid.uuid4().hex) == []


def test_a_reviewers_events_name_them_and_keep_their_reasons(repo: Repository) -> None:
    """In the detail column an older release has: plain text rows read as before."""
    held = detected(repo)
    reason = "a face on a poster, " + "é" * 480  # 500 characters, not ASCII
    repo.correct(
        held.id,
        expected_revision=0,
        regions=CORRECTED,
        role="reviewer",
        now=T0,
        reviewer="photo-desk",
        reasons={"r1": reason},
    )
    assert repo.claim(held.id, owner="w", lease_s=30, now=T0, kind=JobKind.RENDER)
    assert repo.complete(held.id, owner="w", output_key="o", url="u", faces=2, now=LATER)
    repo.approve(held.id, role="reviewer", now=LATER, reviewer="night-desk")
    events = {e.action: e for e in repo.history(held.id)}
    corrected_event, approved = events["corrected"], events["approved"]
    assert (corrected_event.reviewer, corrected_event.reasons) == ("photo-desk", {"r1": reason})
    assert corrected_event.detail == "3 regions hidden, 1 manual"
    assert (approved.reviewer, approved.reasons, approved.detail) == ("night-desk", None, None)
    processed = events["processed"]
    assert (processed.reviewer, processed.reasons) == (None, None)
    assert processed.detail == "1 face hidden, 1 uncertain candidate"


def test_delete_removes_the_regions_and_the_history(repo: Repository) -> None:
    rec = corrected(repo)
    assert repo.delete(rec.id) is not None
    assert repo.regions(rec.id) is None
    assert repo.history(rec.id) == []


def test_requeue_stale_takes_renders_and_keeps_them_rendering(repo: Repository) -> None:
    unpublished = corrected(repo)
    queued = corrected(repo)
    repo.mark_published(queued.id, now=T0, if_updated_at=queued.updated_at)
    expired = corrected(repo)
    assert repo.claim(expired.id, owner="dead", lease_s=10, now=T0, kind=JobKind.RENDER)
    live = corrected(repo)
    assert repo.claim(live.id, owner="w", lease_s=1000, now=T0, kind=JobKind.RENDER)
    now = T0 + timedelta(seconds=120)
    ids = repo.requeue_stale(pending_before=LATER, published_before=T0 - DAY, now=now, limit=10)
    assert set(ids) == {unpublished.id, expired.id}
    for image_id in ids:
        got = repo.get(image_id)
        assert got is not None and got.status is Status.RENDERING and got.lease_owner is None
    assert not repo.complete(expired.id, owner="dead", output_key="o", url="u", faces=0, now=now)
    assert repo.claim(expired.id, owner="w2", lease_s=10, now=now, kind=JobKind.RENDER)
    # A live render is never taken, however long ago its message was published.
    late = now + DAY
    ids = repo.requeue_stale(pending_before=T0, published_before=late, now=now, limit=10)
    assert set(ids) == {queued.id}
