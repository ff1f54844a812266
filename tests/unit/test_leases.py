"""Leases that follow progress (`imageblur.leases`): a job that keeps reporting progress
holds its lease past MAX_LEASE_RENEWALS leases, one that stalls loses it, and a job
whose record is deleted stops at its next checkpoint without waiting for a renewal.

The processor's tests run on the world's clock, which only the test moves: however
slowly this machine runs the keeper's thread, the job's time is what the test says."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from imageblur.cancel import Cancelled, Progress, checkpoint, expect, watched
from imageblur.detection.pyramid import PyramidConfig, PyramidDetector
from imageblur.domain import RepositoryUnavailable, Status
from imageblur.jobs import Outcome
from imageblur.leases import RenewalPolicy
from support import jpeg_bytes, wait_until
from unit.world import NothingFound, World

LEASE_S = 1.0
FLOOR_S = 4 * LEASE_S  # MAX_LEASE_RENEWALS leases


def renewing() -> bool:
    """A job's keeper renews its lease (it is named `watch-...` once it only watches)."""
    return any(t.name.startswith("lease-") for t in threading.enumerate())


def keeping() -> bool:
    """A job's keeper runs at all (renewing or watching)."""
    return any(t.name.startswith(("lease-", "watch-")) for t in threading.enumerate())


# The policy alone: elapsed seconds, units done, units in all.


def test_within_the_floor_the_lease_is_renewed_whatever_the_progress() -> None:
    policy = RenewalPolicy(floor_s=FLOOR_S)
    assert all(policy.renew(t / 3, 0, 0) for t in range(12))  # 0 .. 3.67 s, no progress


def test_past_the_floor_only_progress_renews_it_and_a_stall_ends_it_for_good() -> None:
    policy = RenewalPolicy(floor_s=FLOOR_S)
    assert policy.renew(1.0, 10, 1000)
    assert policy.renew(4.0, 40, 1000)  # 10 units/s over the floor
    assert policy.renew(5.0, 41, 1000)
    assert not policy.renew(6.0, 41, 1000)  # no progress since the last renewal
    assert not policy.renew(7.0, 60, 1000)  # given up: progress now does not take it back


def test_the_ceiling_follows_the_work_s_size_and_the_rate_measured_over_the_floor() -> None:
    policy = RenewalPolicy(floor_s=FLOOR_S)
    assert policy.renew(4.0, 40, 100)  # 10 units/s: 100 units take 10 s, twice that: 20 s
    assert policy.ceiling_s(100) == pytest.approx(20.0)
    assert policy.renew(19.9, 99, 100)
    assert not policy.renew(20.0, 100, 100)  # still progressing, but past its ceiling


def test_a_job_that_said_nothing_of_its_size_keeps_today_s_bound() -> None:
    policy = RenewalPolicy(floor_s=FLOOR_S)
    assert policy.renew(3.9, 5, 0)
    assert policy.ceiling_s(0) == FLOOR_S
    assert not policy.renew(4.0, 6, 0)  # progressing, but no size: the floor is the ceiling


def test_progress_counts_checkpoints_and_sizes_and_cancels_at_the_next_one() -> None:
    progress = Progress()
    with watched(progress):
        expect(3)
        checkpoint()
        checkpoint()
        progress.cancelled.set()
        with pytest.raises(Cancelled):
            checkpoint()
    assert (progress.done, progress.total) == (2, 3)
    checkpoint()  # outside a job: nothing counts, nothing stops


# The processor, on the world's clock.


class Steps:
    """The job's work: one step (a checkpoint, a quarter of a second of the world's
    time) after each renewal. The keeper waits in its heartbeat for the step, so that
    each renewal sees exactly one step, however slowly this machine runs either thread."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._renewed, self._stepped = threading.Event(), threading.Event()
        self._stepping = True

    def heartbeat(self) -> None:  # the keeper's thread, after each renewal
        if self._stepping:
            self._renewed.set()
            assert self._stepped.wait(timeout=30), "the job made no step"
            self._stepped.clear()

    def run(self, seconds: float) -> None:  # the job's thread
        for n in range(round(seconds / 0.25)):
            assert self._renewed.wait(timeout=30), "the lease was not renewed"
            self._renewed.clear()
            checkpoint()
            self._world.clock.advance(0.25)
            self._stepping = n + 1 < round(seconds / 0.25)  # then no more waits
            self._stepped.set()


def long_job(world: World, during: Callable[[Steps], None]):  # type: ignore[no-untyped-def]
    """A processor on a lease of 1 s of the world's time, renewed every 0.05 s of the
    machine's (the steps keep the two in line), whose detection runs `during` after
    saying its size: 100 units."""
    steps = Steps(world)

    def detect() -> None:
        expect(100)
        during(steps)

    world.detector.during = detect
    return world.processor(
        lease_s=LEASE_S,
        lease_renew_interval_s=0.05,
        max_lease_renewals=4,
        lease_check_interval_s=0.05,
        on_lease_renewed=steps.heartbeat,
    )


def test_a_job_that_keeps_progressing_holds_its_lease_past_its_renewals(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    claims: list[bool] = []

    def during(steps: Steps) -> None:
        steps.run(2 * FLOOR_S)  # 8 s of work, twice the old bound
        claims.append(world.repo.claim(record.id, owner="w2", lease_s=1, now=world.clock()) is None)

    processor = long_job(world, during)
    assert processor.handle(world.next_delivery()) is Outcome.DONE
    assert claims == [True]  # nobody could take it over
    done = world.repo.get(record.id)
    assert done is not None and done.status is Status.DONE and done.attempts == 1
    wait_until(lambda: not keeping(), what="the keeper to end with its job")


def test_a_job_that_stops_progressing_loses_its_lease(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    claims: list[bool] = []

    def during(steps: Steps) -> None:
        steps.run(FLOOR_S + 1)  # past the floor, then a stall
        wait_until(lambda: not renewing(), what="the renewals to end (the job stalls)")
        world.clock.advance(1.5)  # past the last lease it renewed
        claims.append(
            world.repo.claim(record.id, owner="w2", lease_s=60, now=world.clock()) is not None
        )

    processor = long_job(world, during)
    assert processor.handle(world.next_delivery()) is Outcome.SKIPPED
    assert claims == [True]  # taken over
    now = world.repo.get(record.id)
    assert now is not None and now.lease_owner == "w2" and now.status is Status.PROCESSING
    assert world.results.objects == {}  # the first worker stored nothing
    wait_until(lambda: not keeping(), what="the keeper to end with its job")


def test_a_job_whose_record_is_deleted_stops_without_waiting_for_a_renewal(
    world: World,
) -> None:
    """The lease is renewed every 100 s here, so only the keeper's read of the record
    (every 0.05 s in the test, 2 s by default) can find it gone: the job stops at the
    next tile, and no renewal was ever asked."""
    record = world.images.submit(jpeg_bytes(1000, 800))  # passes at 1, 1/2, 1/4: a tile each
    operations: list[str] = []

    def deleted() -> None:
        world.images.delete(record.id)  # as DELETE /picture/{id} does
        wait_until(lambda: not keeping(), what="the keeper to find the record gone")

    model = NothingFound(deleted)
    world.detector = PyramidDetector(model, threshold=0.5, pyramid=PyramidConfig())  # type: ignore[assignment]
    processor = world.processor(
        lease_s=300.0, lease_renew_interval_s=100.0, lease_check_interval_s=0.05
    )
    world.repo.before = operations.append
    assert processor.handle(world.next_delivery()) is Outcome.SKIPPED
    assert model.tiles == 1  # stopped before the second tile
    assert "extend_lease" not in operations and "complete" not in operations
    assert world.repo.get(record.id) is None
    assert world.results.objects == {} and world.originals.objects == {}


def test_a_record_that_cannot_be_read_does_not_stop_the_job(world: World) -> None:
    """A database outage is not a deletion: the keeper asks again at its next read, and
    the job goes on (if the outage outlasts the lease, `complete` says so)."""
    record = world.images.submit(jpeg_bytes())
    failed_reads: list[str] = []

    def unreadable(operation: str) -> None:
        if operation == "get" and len(failed_reads) < 3:
            failed_reads.append(operation)
            raise RepositoryUnavailable("the fake database is down")

    def during() -> None:
        world.repo.before = unreadable
        wait_until(lambda: len(failed_reads) == 3, what="three reads of the record to fail")
        world.repo.before = None

    world.detector.during = during
    processor = world.processor(
        lease_s=300.0, lease_renew_interval_s=100.0, lease_check_interval_s=0.05
    )
    assert processor.handle(world.next_delivery()) is Outcome.DONE
    done = world.repo.get(record.id)
    assert done is not None and done.status is Status.DONE
