"""Bucket batches' records (`batches.ports.BatchRecords` and `BatchItems`) on every
repository: SQLite, PostgreSQL and the unit tests' fake. A batch posted twice is one;
listing is stored page by page and resumes where it stopped; at most a window of items
is queued; an item is claimed once, ended only by its lease holder; counts are kept as
the items change, after each change alike on every repository; items are never
pictures."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from imageblur.backends import Repository
from imageblur.batches.model import (
    CANCELLED,
    Batch,
    BatchItem,
    BatchRefused,
    Location,
    SourceObject,
)
from imageblur.domain import utcnow
from records import listed_items, listing_batch

from .test_image_repository import T0, record

SOURCE = Location("s3", "in", "photos/")
TARGET = Location("s3", "out", "blurred/")


def batch(*, source: Location = SOURCE, target: Location = TARGET, at: datetime = T0) -> Batch:
    return listing_batch(source, target, at=at)


def items(of: Batch, keys: Sequence[str], *, tag: str = "etag1") -> list[BatchItem]:
    return listed_items(of, [SourceObject(key=key, size=10, tag=tag) for key in keys], at=T0)


def listed(repo: Repository, keys: Sequence[str], *, done: bool = True) -> Batch:
    b, _ = repo.add_batch(batch(), max_running=10)
    repo.add_items(b.id, items(b, keys), after=keys[-1] if keys else None, listed_all=done, now=T0)
    return b


def test_a_batch_posted_twice_is_one(repo: Repository) -> None:
    first, created = repo.add_batch(batch(), max_running=10)
    assert created
    again, created_again = repo.add_batch(batch(), max_running=10)
    assert (again.id, created_again) == (first.id, False)
    other, created_other = repo.add_batch(
        batch(target=Location("s3", "out", "b2/")), max_running=10
    )
    assert created_other and other.id != first.id
    assert {b.id for b in repo.list_batches(limit=10)} == {other.id, first.id}
    assert len(repo.list_batches(limit=1, offset=1)) == 1
    got = repo.get_batch(first.id)
    assert got is not None
    assert (got.source, got.target, got.status, got.dry_run) == (SOURCE, TARGET, "listing", False)
    assert got.created_at == T0 and got.total is None


def test_the_listing_can_keep_to_open_and_recently_ended_batches(repo: Repository) -> None:
    """What the page's section asks for: the open ones and those ended since a time."""
    made = [
        repo.add_batch(
            batch(target=Location("s3", "out", f"t{n}/"), at=T0 + timedelta(seconds=n)),
            max_running=10,
        )[0]
        for n in range(3)
    ]
    long_ago, lately, running = made
    repo.cancel_batch(long_ago.id, now=T0 + timedelta(minutes=1))
    repo.cancel_batch(lately.id, now=T0 + timedelta(minutes=10))
    since = T0 + timedelta(minutes=5)
    assert [b.id for b in repo.list_batches(limit=10, ended_since=since)] == [running.id, lately.id]
    assert [b.id for b in repo.list_batches(limit=1, offset=1, ended_since=since)] == [lately.id]
    # At the very time it ended: still shown.
    ended = repo.list_batches(limit=10, ended_since=T0 + timedelta(minutes=10))
    assert lately.id in [b.id for b in ended]
    assert len(repo.list_batches(limit=10)) == 3


def test_at_most_max_running_batches_are_open(repo: Repository) -> None:
    first, _ = repo.add_batch(batch(), max_running=1)
    with pytest.raises(BatchRefused) as refused:
        repo.add_batch(batch(target=Location("s3", "out", "other/")), max_running=1)
    assert (refused.value.http_status, refused.value.code) == (429, "too_many_batches")
    # The same batch is still answered (open or done); a cancelled one frees its key:
    # posting it again then starts a new batch.
    assert repo.add_batch(batch(), max_running=1)[0].id == first.id
    repo.add_items(first.id, [], after=None, listed_all=True, now=T0)
    (done,) = repo.settle_batches(now=T0)
    assert repo.add_batch(batch(), max_running=1) == (done, False)  # done: still the one
    cancelled = repo.cancel_batch(first.id, now=T0)
    assert cancelled is not None and cancelled.status == "done"  # ended: as it was
    other, created = repo.add_batch(batch(target=Location("s3", "out", "o/")), max_running=1)
    assert created  # a done batch does not count against the limit
    assert repo.cancel_batch(other.id, now=T0).status == "cancelled"  # type: ignore[union-attr]
    fresh, created = repo.add_batch(batch(target=Location("s3", "out", "o/")), max_running=1)
    assert created and fresh.id != other.id


def test_concurrent_posts_never_open_more_than_max_running(
    repo_factory: Callable[[], Repository],
) -> None:
    """Posts racing from separate processes (a repository each): the count of open
    batches and the insert are one step, so no two both see room for the last one."""
    first = repo_factory()
    first.migrate()
    posters = [first] + [repo_factory() for _ in range(5)]
    start = threading.Barrier(len(posters) * 2)

    def post(n: int) -> bool:
        repo = posters[n % len(posters)]
        start.wait(timeout=30)
        try:
            return repo.add_batch(batch(target=Location("s3", "out", f"race{n}/")), max_running=3)[
                1
            ]
        except BatchRefused as refused:
            assert refused.code == "too_many_batches"
            return False

    with ThreadPoolExecutor(max_workers=len(posters) * 2) as pool:
        created = list(pool.map(post, range(len(posters) * 2)))
    assert sum(created) == 3
    assert sum(b.status == "listing" for b in first.list_batches(limit=100)) == 3


def test_listing_is_stored_page_by_page_and_resumes(repo_factory: Callable[[], Repository]) -> None:
    repo = repo_factory()
    repo.migrate()
    b, _ = repo.add_batch(batch(), max_running=10)
    assert (
        repo.add_items(
            b.id, items(b, ["photos/a", "photos/b"]), after="photos/b", listed_all=False, now=T0
        )
        == 2
    )
    # Another process (the API restarted) reads the position and goes on from there; a
    # page listed twice (a crash after storing it) adds nothing twice.
    other = repo_factory()
    (open_batch,) = other.open_batches()
    assert (open_batch.id, open_batch.listing_after, open_batch.listed_all) == (
        b.id,
        "photos/b",
        False,
    )
    assert (
        other.add_items(
            b.id, items(b, ["photos/b", "photos/c"]), after="photos/c", listed_all=True, now=T0
        )
        == 1
    )
    got = other.get_batch(b.id)
    assert got is not None
    assert (got.status, got.total, got.counts.listed, got.listing_after) == (
        "running",
        3,
        3,
        "photos/c",
    )
    # A listing that is over takes no more items.
    assert (
        other.add_items(b.id, items(b, ["photos/d"]), after="photos/d", listed_all=True, now=T0)
        == 0
    )


def test_an_item_an_earlier_batch_wrote_is_skipped(repo: Repository) -> None:
    first = listed(repo, ["photos/a"])
    (item,) = repo.to_publish(first.id, window=10)
    assert repo.claim_item(item.id, owner="w", lease_s=30, now=T0)
    assert repo.finish_item(
        item.id,
        owner="w",
        state="done",
        now=T0,
        faces=2,
        target_key="blurred/a.jpg",
        wrote_target=True,
    )
    repo.cancel_batch(first.id, now=T0)  # ended: the same locations may be posted again
    second, created = repo.add_batch(batch(), max_running=10)
    assert created
    repo.add_items(
        second.id,
        items(second, ["photos/a", "photos/b"]),
        after="photos/b",
        listed_all=True,
        now=T0,
    )
    got = repo.get_batch(second.id)
    assert got is not None
    assert (got.counts.listed, dict(got.counts.skipped)) == (2, {"already_done": 1})
    assert [i.source_key for i in repo.to_publish(second.id, window=10)] == ["photos/b"]


def test_at_most_a_window_is_queued_topping_up_as_items_end(repo: Repository) -> None:
    b = listed(repo, [f"photos/{n:02}" for n in range(5)])
    first = repo.to_publish(b.id, window=2)
    assert [i.source_key for i in first] == ["photos/00", "photos/01"]
    repo.mark_queued([i.id for i in first], now=T0)
    assert repo.to_publish(b.id, window=2) == []
    assert repo.claim_item(first[0].id, owner="w", lease_s=30, now=T0)
    assert repo.to_publish(b.id, window=2) == []  # processing still counts
    assert repo.finish_item(first[0].id, owner="w", state="done", now=T0, faces=0)
    assert [i.source_key for i in repo.to_publish(b.id, window=2)] == ["photos/02"]
    got = repo.get_batch(b.id)
    assert got is not None and (got.counts.queued, got.counts.done) == (1, 1)


def test_an_item_is_claimed_once_and_ended_by_its_holder(repo: Repository) -> None:
    b = listed(repo, ["photos/a"])
    (item,) = repo.to_publish(b.id, window=10)
    repo.mark_queued([item.id], now=T0)
    claimed = repo.claim_item(item.id, owner="a", lease_s=10, now=T0)
    assert claimed is not None and (claimed.state, claimed.attempts, claimed.borrowed) == (
        "processing",
        1,
        True,
    )
    assert repo.claim_item(item.id, owner="b", lease_s=10, now=T0 + timedelta(seconds=5)) is None
    # The lease lapsed: another worker takes it; the first may no longer end it.
    later = T0 + timedelta(seconds=11)
    again = repo.claim_item(item.id, owner="b", lease_s=10, now=later)
    assert again is not None and again.attempts == 2
    assert not repo.finish_item(item.id, owner="a", state="done", now=later)
    assert repo.finish_item(item.id, owner="b", state="skipped", reason="changed", now=later)
    assert not repo.finish_item(item.id, owner="b", state="done", now=later)  # once
    got = repo.get_batch(b.id)
    assert got is not None and dict(got.counts.skipped) == {"changed": 1}


def test_each_attempts_mark_is_kept_for_the_next(repo: Repository) -> None:
    """An attempt records the mark of the object it is about to write, while it holds
    the lease; the attempt that takes the item over gets every earlier mark."""
    b = listed(repo, ["photos/a"])
    (item,) = repo.to_publish(b.id, window=10)
    first = repo.claim_item(item.id, owner="a", lease_s=10, now=T0)
    assert first is not None and first.target_marks == ()
    assert repo.record_mark(item.id, owner="a", target_key="blurred/a.jpg", mark="m1", now=T0)
    assert not repo.record_mark(item.id, owner="b", target_key="blurred/a.jpg", mark="x", now=T0)
    later = T0 + timedelta(seconds=11)
    second = repo.claim_item(item.id, owner="b", lease_s=10, now=later)
    assert second is not None and second.target_marks == ("m1",)
    assert second.target_key == "blurred/a.jpg" and not second.wrote_target
    # The first holder's lease is gone: it may record nothing more (so it writes nothing).
    assert not repo.record_mark(
        item.id, owner="a", target_key="blurred/a.jpg", mark="m9", now=later
    )
    assert repo.record_mark(item.id, owner="b", target_key="blurred/a.jpg", mark="m2", now=later)
    third = repo.claim_item(item.id, owner="c", lease_s=10, now=later + timedelta(seconds=11))
    assert third is not None and third.target_marks == ("m1", "m2")
    assert repo.finish_item(
        item.id,
        owner="c",
        state="done",
        now=later,
        faces=0,
        target_key="blurred/a.jpg",
        wrote_target=True,
    )
    assert repo.written_keys(b.id, limit=10, after=None) == ["blurred/a.jpg"]


def test_counts_come_from_the_items(repo: Repository) -> None:
    keys = ["photos/a", "photos/b", "photos/c", "photos/d"]
    b = listed(repo, keys)
    ends = [
        {"state": "done", "faces": 3, "target_key": "blurred/a.jpg", "wrote_target": True},
        {"state": "done", "faces": 1, "target_key": "blurred/b.png", "wrote_target": True},
        {"state": "failed", "reason": "invalid_image"},
        {"state": "skipped", "reason": "target_exists", "target_key": "blurred/d.jpg"},
    ]
    for item, end in zip(repo.to_publish(b.id, window=10), ends, strict=True):
        assert repo.claim_item(item.id, owner="w", lease_s=30, now=T0)
        assert repo.finish_item(item.id, owner="w", now=T0, **end)  # type: ignore[arg-type]
    got = repo.get_batch(b.id)
    assert got is not None
    c = got.counts
    assert (c.listed, c.queued, c.done, c.failed, c.faces) == (4, 0, 2, 1, 4)
    assert dict(c.skipped) == {"target_exists": 1}
    assert repo.written_keys(b.id, limit=10, after=None) == ["blurred/a.jpg", "blurred/b.png"]
    assert repo.written_keys(b.id, limit=10, after="blurred/a.jpg") == ["blurred/b.png"]
    (failure,) = repo.item_failures(b.id, limit=10, after=None)
    assert (failure.source_key, failure.reason) == ("photos/c", "invalid_image")
    assert repo.item_failures(b.id, limit=10, after="photos/c") == []
    # Everything ended: the batch is done, once.
    (settled,) = repo.settle_batches(now=T0)
    assert (settled.id, settled.status, settled.finished_at) == (b.id, "done", T0)
    assert repo.settle_batches(now=T0) == []


def counts_of(repo: Repository, batch_id: str) -> tuple[int, int, int, int, dict[str, int], int]:
    """Listed, queued, done, failed, skipped and faces, the same read alone and listed."""
    got = repo.get_batch(batch_id)
    assert got is not None
    c = got.counts
    assert {x.id: x.counts for x in repo.list_batches(limit=10)}[batch_id] == c
    return (c.listed, c.queued, c.done, c.failed, dict(c.skipped), c.faces)


def test_counts_follow_every_change_of_an_item(repo: Repository) -> None:
    """Counts are kept as items change (not counted from them on each read): every
    change moves them, and a second repository (another process) reads the same."""

    def counts() -> tuple[int, int, int, int, dict[str, int], int]:
        return counts_of(repo, b.id)

    b, _ = repo.add_batch(batch(), max_running=10)
    keys = [f"photos/{k}" for k in "abcdef"]
    repo.add_items(b.id, items(b, keys), after="photos/f", listed_all=False, now=T0)
    assert counts() == (6, 0, 0, 0, {}, 0)
    first = repo.to_publish(b.id, window=3)
    assert len(first) == 3
    repo.mark_queued([i.id for i in first[:2]], now=T0)
    assert counts() == (6, 2, 0, 0, {}, 0)
    # Claimed while still `listed` (its message out before it was marked): queued now.
    assert repo.claim_item(first[2].id, owner="w", lease_s=30, now=T0)
    assert repo.claim_item(first[0].id, owner="w", lease_s=30, now=T0)
    assert counts() == (6, 3, 0, 0, {}, 0)
    assert repo.finish_item(first[0].id, owner="w", state="done", faces=2, now=T0)
    assert repo.finish_item(first[2].id, owner="w", state="queued", now=T0)  # a retry
    assert counts() == (6, 2, 1, 0, {}, 2)
    # A lapsed lease and a lost message: queued again, no count moves.
    assert repo.claim_item(first[1].id, owner="w", lease_s=30, now=T0)
    later = T0 + timedelta(seconds=31)
    requeued = repo.requeue_stale_items(now=later, queued_before=later, limit=10)
    assert {i.id for i in requeued} == {first[1].id, first[2].id}
    assert counts() == (6, 2, 1, 0, {}, 2)
    assert repo.claim_item(first[1].id, owner="w", lease_s=30, now=later)
    assert repo.finish_item(first[1].id, owner="w", state="failed", reason="x", now=later)
    assert repo.claim_item(first[2].id, owner="w", lease_s=30, now=later)
    assert repo.finish_item(
        first[2].id, owner="w", state="skipped", reason="target_exists", now=later
    )
    assert counts() == (6, 0, 1, 1, {"target_exists": 1}, 2)
    assert repo.retry_failed(b.id, now=later) == 1
    assert counts() == (6, 0, 1, 0, {"target_exists": 1}, 2)
    repo.mark_queued([first[1].id], now=later)
    assert counts() == (6, 1, 1, 0, {"target_exists": 1}, 2)
    # Stopped: every item not running dropped (queued and listed alike).
    repo.cancel_batch(b.id, now=later)
    assert counts() == (6, 0, 1, 0, {"target_exists": 1, "cancelled": 4}, 2)


def test_counts_follow_the_rarer_changes(repo: Repository) -> None:
    """What the test above leaves out: an item skipped as it is listed (an earlier batch
    wrote it), a lapsed lease taken over and a mark (no count moves), a batch that
    fails, an item that ends after its batch stopped, a batch settled."""
    first = listed(repo, ["photos/a"])
    (a,) = repo.to_publish(first.id, window=10)
    assert repo.claim_item(a.id, owner="w", lease_s=30, now=T0)
    assert repo.finish_item(a.id, owner="w", state="done", faces=1, now=T0)
    repo.cancel_batch(first.id, now=T0)  # ended: the same locations may be posted again
    assert counts_of(repo, first.id) == (1, 0, 1, 0, {}, 1)
    second, _ = repo.add_batch(batch(), max_running=10)
    keys = ["photos/a", "photos/b", "photos/c"]
    repo.add_items(second.id, items(second, keys), after=keys[-1], listed_all=False, now=T0)
    assert counts_of(repo, second.id) == (3, 0, 0, 0, {"already_done": 1}, 0)
    b, _ = repo.to_publish(second.id, window=10)
    assert repo.claim_item(b.id, owner="w", lease_s=30, now=T0)
    assert repo.record_mark(b.id, owner="w", target_key="blurred/b.jpg", mark="m", now=T0)
    later = T0 + timedelta(seconds=31)
    assert repo.claim_item(b.id, owner="w2", lease_s=30, now=later)
    assert counts_of(repo, second.id) == (3, 1, 0, 0, {"already_done": 1}, 0)
    assert repo.fail_batch(second.id, error="NoSuchBucket", now=later)
    assert counts_of(repo, second.id) == (3, 1, 0, 0, {"already_done": 1, "cancelled": 1}, 0)
    assert repo.finish_item(b.id, owner="w2", state="done", faces=2, now=later)
    assert counts_of(repo, second.id) == (3, 0, 1, 0, {"already_done": 1, "cancelled": 1}, 2)
    third, _ = repo.add_batch(batch(target=Location("s3", "out", "b3/")), max_running=10)
    keys = ["photos/x", "photos/y"]
    repo.add_items(third.id, items(third, keys), after=keys[-1], listed_all=True, now=T0)
    for item in repo.to_publish(third.id, window=10):
        assert repo.claim_item(item.id, owner="w", lease_s=30, now=T0)
        assert repo.finish_item(item.id, owner="w", state="failed", reason="x", now=T0)
    assert counts_of(repo, third.id) == (2, 0, 0, 2, {}, 0)
    (settled,) = repo.settle_batches(now=T0)
    assert settled.id == third.id and counts_of(repo, third.id) == (2, 0, 0, 2, {}, 0)


def test_a_retry_runs_the_failed_ones_again(repo: Repository) -> None:
    b = listed(repo, ["photos/a", "photos/b"])
    for item in repo.to_publish(b.id, window=10):
        assert repo.claim_item(item.id, owner="w", lease_s=30, now=T0)
        assert repo.finish_item(item.id, owner="w", state="failed", reason="x", now=T0)
    repo.settle_batches(now=T0)
    assert repo.retry_failed(b.id, now=T0) == 2
    got = repo.get_batch(b.id)
    assert got is not None and (got.status, got.counts.failed, got.finished_at) == (
        "running",
        0,
        None,
    )
    assert len(repo.to_publish(b.id, window=10)) == 2


def test_a_listing_batch_is_not_settled(repo: Repository) -> None:
    b = listed(repo, [], done=False)
    assert repo.settle_batches(now=T0) == []
    assert repo.get_batch(b.id).status == "listing"  # type: ignore[union-attr]


def test_cancelling_drops_what_waits_and_stops_claims(repo: Repository) -> None:
    b = listed(repo, ["photos/a", "photos/b", "photos/c"])
    waiting = repo.to_publish(b.id, window=10)
    repo.mark_queued([waiting[0].id], now=T0)
    assert repo.claim_item(waiting[2].id, owner="w", lease_s=30, now=T0)
    got = repo.cancel_batch(b.id, now=T0)
    assert got is not None and got.status == "cancelled"
    assert dict(got.counts.skipped) == {"cancelled": 2} and got.counts.queued == 1
    assert repo.claim_item(waiting[0].id, owner="w", lease_s=30, now=T0) is None
    assert repo.to_publish(b.id, window=10) == []
    # The running item may still end (its result is kept).
    assert repo.finish_item(waiting[2].id, owner="w", state="done", now=T0, faces=0)
    assert repo.cancel_batch("bat_" + "0" * 32, now=T0) is None


def test_stale_items_are_requeued_but_never_unpublished_ones(repo: Repository) -> None:
    b = listed(repo, ["photos/a", "photos/b", "photos/c"])
    a, bb, _ = repo.to_publish(b.id, window=10)
    repo.mark_queued([a.id, bb.id], now=T0)
    assert repo.claim_item(a.id, owner="w", lease_s=10, now=T0)
    later = T0 + timedelta(seconds=60)
    # Before the grace: only the lapsed lease.
    found = repo.requeue_stale_items(now=later, queued_before=T0 - timedelta(seconds=1), limit=10)
    assert [i.source_key for i in found] == ["photos/a"]
    # Past the grace, the queued one whose message may be lost; never the listed one.
    found = repo.requeue_stale_items(now=later, queued_before=T0, limit=10)
    assert [i.source_key for i in found] == ["photos/b"]
    assert all(i.state == "queued" for i in found)


def test_items_are_not_pictures(repo: Repository) -> None:
    repo.add(record())
    stats = repo.picture_stats()
    listed(repo, [f"photos/{n}" for n in range(3)])
    assert repo.count() == 1 and len(repo.list(limit=10)) == 1
    assert repo.picture_stats() == stats


def test_a_batch_that_cannot_go_on_fails(repo: Repository) -> None:
    b = listed(repo, ["photos/a", "photos/b"], done=False)
    (first, _) = repo.to_publish(b.id, window=10)
    assert repo.claim_item(first.id, owner="w", lease_s=30, now=T0)
    assert repo.fail_batch(b.id, error="NoSuchBucket", now=T0)
    assert not repo.fail_batch(b.id, error="again", now=T0)  # ended already
    got = repo.get_batch(b.id)
    assert got is not None
    assert (got.status, got.error, got.finished_at) == ("failed", "NoSuchBucket", T0)
    assert dict(got.counts.skipped) == {"cancelled": 1} and got.counts.queued == 1
    assert repo.open_batches() == []
    # Its failed items retried, it goes on listing from where it stopped.
    assert repo.finish_item(first.id, owner="w", state="failed", reason="x", now=T0)
    assert repo.retry_failed(b.id, now=T0) == 1
    (again,) = repo.open_batches()
    assert (again.status, again.error) == ("listing", None)


def test_items_ended_in_the_last_minute_are_counted(repo: Repository) -> None:
    keys = ["photos/a", "photos/b", "photos/c", "photos/d"]
    b = listed(repo, keys)
    now = utcnow()
    old = now - timedelta(minutes=5)
    ends = [(old, "done"), (now, "done"), (now, "failed"), (now, "cancelled")]
    for item, (at, state) in zip(repo.to_publish(b.id, window=10), ends, strict=True):
        assert repo.claim_item(item.id, owner="w", lease_s=30, now=at)
        if state == "cancelled":  # dropped, not run: not counted
            repo.finish_item(item.id, owner="w", now=at, state="skipped", reason=CANCELLED)
        else:
            assert repo.finish_item(item.id, owner="w", now=at, state=state)
    got = repo.get_batch(b.id)
    assert got is not None
    assert (got.counts.ended_recently, got.counts.ended) == (2, 4)
    # A failed item retried is still work done in the last minute (the pace is kept as
    # items end, never taken back).
    assert repo.retry_failed(b.id, now=now) == 1
    got = repo.get_batch(b.id)
    assert got is not None
    assert (got.counts.ended_recently, got.counts.ended) == (2, 3)


def test_a_batch_that_ends_writes_one_batch_done_row(
    repo_factory: Callable[..., Repository],
) -> None:
    """Done, cancelled or failed: one `batch.done` outbox row each, to the operator's
    URL, in the transaction that ended it; none for a batch ended already."""
    repo = repo_factory(webhook_url="https://hooks.example/in")
    repo.migrate()
    done, cancelled, failed = (
        repo.add_batch(batch(source=Location("s3", "in", f"{name}/")), max_running=10)[0]
        for name in ("done", "cancelled", "failed")
    )
    repo.add_items(done.id, [], after=None, listed_all=True, now=T0)
    (settled,) = repo.settle_batches(now=T0)
    assert settled.id == done.id
    assert repo.cancel_batch(cancelled.id, now=T0) is not None
    assert repo.fail_batch(failed.id, error="access denied", now=T0)
    # Ended already: nothing more.
    assert repo.cancel_batch(done.id, now=T0) is not None
    assert not repo.fail_batch(cancelled.id, error="again", now=T0)
    assert repo.settle_batches(now=T0) == []
    for b in (done, cancelled, failed):
        (row,) = repo.webhooks(b.id)
        assert (row.event, row.url, row.to_operator) == (
            "batch.done",
            "https://hooks.example/in",
            True,
        )
    assert repo.outbox_depth() == 3


@pytest.mark.parametrize("operator", ["https://hooks.example/in", None])
def test_a_batch_with_its_own_callback_url_sends_its_batch_done_there(
    repo_factory: Callable[..., Repository], operator: str | None
) -> None:
    """As a picture's events: to its own `callback_url` instead of the operator's URL
    (set or not), kept with the batch; a batch without one still goes to the operator."""
    repo = repo_factory(webhook_url=operator)
    repo.migrate()
    own = replace(
        batch(source=Location("s3", "in", "own/")), callback_url="https://client.example/h"
    )
    added, _ = repo.add_batch(own, max_running=10)
    got = repo.get_batch(added.id)
    assert got is not None and got.callback_url == "https://client.example/h"
    assert [b.callback_url for b in repo.list_batches(limit=10)] == ["https://client.example/h"]
    plain, _ = repo.add_batch(batch(source=Location("s3", "in", "plain/")), max_running=10)
    assert repo.cancel_batch(added.id, now=T0) is not None
    assert repo.cancel_batch(plain.id, now=T0) is not None
    (row,) = repo.webhooks(added.id)
    assert (row.event, row.url, row.to_operator) == (
        "batch.done",
        "https://client.example/h",
        False,
    )
    assert [(r.url, r.to_operator) for r in repo.webhooks(plain.id)] == (
        [(operator, True)] if operator else []
    )
