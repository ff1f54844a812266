"""The use cases (submit, process, reconcile, delete) with in-memory fakes, asserting on
state: records, stored objects, queued and dead-lettered jobs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from imageblur.adapters.encrypted_store import EncryptedStore, Keyring
from imageblur.anonymizer import Anonymizer
from imageblur.backends import Backends
from imageblur.detection.pyramid import PyramidConfig, PyramidDetector
from imageblur.domain import (
    ErrorCode,
    IdempotencyKeyReused,
    ImageRecord,
    InvalidImage,
    Job,
    NotFound,
    NotReady,
    QueueUnavailable,
    RepositoryUnavailable,
    Status,
    StoreUnavailable,
)
from imageblur.jobs import JobProcessor, Outcome, RetryPolicy
from imageblur.reconciler import Reconciler
from jpeg_bombs import scan_bomb
from support import jpeg_bytes, wait_until
from unit.world import OPTIONS, NothingFound, World


def test_submit_stores_original_then_record_then_job(world: World) -> None:
    record = world.images.submit(jpeg_bytes(), name="dir/../me.jpg")
    assert record.status is Status.PENDING and record.name == "me.jpg"
    assert list(world.originals.objects) == [f"{record.id}.jpg"]
    assert world.repo.get(record.id) == record
    assert world.next_delivery().job == Job(record.id)


def test_invalid_upload_stores_nothing(world: World) -> None:
    with pytest.raises(InvalidImage):
        world.images.submit(b"not an image")
    assert world.originals.objects == {} and world.repo.count() == 0 and world.queue.depth() == 0


def test_store_down_on_submit_leaves_nothing(world: World) -> None:
    world.originals.down = True
    with pytest.raises(StoreUnavailable):
        world.images.submit(jpeg_bytes())
    assert world.repo.count() == 0 and world.queue.depth() == 0


def test_queue_down_on_submit_undoes_record_and_object(world: World) -> None:
    world.queue.close()
    with pytest.raises(QueueUnavailable):
        world.images.submit(jpeg_bytes())
    assert world.repo.count() == 0 and world.originals.objects == {}


def test_idempotency_key_replays_without_storing_twice(world: World) -> None:
    first = world.images.submit(jpeg_bytes(), name="a.jpg", idempotency_key="k1")
    second = world.images.submit(jpeg_bytes(), name="a.jpg", idempotency_key="k1")
    assert second.id == first.id
    assert world.repo.count() == 1 and len(world.originals.objects) == 1
    assert world.queue.depth() == 1


@pytest.mark.parametrize(("data", "name"), [(jpeg_bytes(seed=2), "a.jpg"), (jpeg_bytes(), "b.jpg")])
def test_an_idempotency_key_reused_with_another_body_is_refused(
    world: World, data: bytes, name: str
) -> None:
    first = world.images.submit(jpeg_bytes(), name="a.jpg", idempotency_key="k1")
    with pytest.raises(IdempotencyKeyReused):
        world.images.submit(data, name=name, idempotency_key="k1")
    assert world.repo.count() == 1 and list(world.originals.objects) == [first.input_key]
    assert world.queue.depth() == 1


def test_a_key_stored_without_a_digest_counts_as_a_match(world: World) -> None:
    first = world.images.submit(jpeg_bytes(), idempotency_key="k1")
    # As an older release stored it: no digest.
    world.repo.db.records[first.id] = first.with_changes(body_sha256=None)
    again = world.images.submit(jpeg_bytes(seed=3), name="other.jpg", idempotency_key="k1")
    assert again.id == first.id and world.repo.count() == 1
    assert list(world.originals.objects) == [first.input_key]


def test_process_blurs_stores_result_marks_done_and_drops_original(world: World) -> None:
    record = world.images.submit(jpeg_bytes(64, 48))
    outcome = world.processor().handle(world.next_delivery())
    assert outcome is Outcome.DONE
    done = world.repo.get(record.id)
    assert done is not None and done.status is Status.DONE and done.faces == 1
    key = f"{record.id}-a1.jpg"  # the first attempt's
    assert done.url == f"fake://out/{key}" and done.lease_owner is None
    assert list(world.results.objects) == [key]
    assert world.originals.objects == {}
    assert world.queue.depth() == 0
    assert world.images.result(record.id).data == world.results.objects[key][0]


def test_duplicate_message_is_harmless(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    world.queue.publish(Job(record.id))  # e.g. the reconciler raced the first delivery
    processor = world.processor()
    outcomes = [processor.handle(world.next_delivery()) for _ in range(2)]
    assert outcomes == [Outcome.DONE, Outcome.SKIPPED]
    assert world.results.puts == 1 and world.detector.calls == 1


def test_result_is_not_ready_before_done(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    with pytest.raises(NotReady):
        world.images.result(record.id)


def test_a_store_outage_never_uses_up_the_attempts(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    world.results.down = True
    processor = world.processor()  # max_attempts 3
    outcomes = [processor.handle(world.next_delivery()) for _ in range(10)]
    assert outcomes == [Outcome.RETRY] * 10
    waiting = world.repo.get(record.id)
    assert waiting is not None and waiting.status is Status.PENDING and waiting.attempts == 0
    # A short public text and its code; the details ("out is down") are in the log only.
    assert waiting.error_code is ErrorCode.BACKEND_UNAVAILABLE
    assert waiting.error == ErrorCode.BACKEND_UNAVAILABLE.message
    assert world.queue.take_dead_letters() == []
    assert record.input_key in world.originals.objects  # nothing to collect
    world.results.down = False
    assert processor.handle(world.next_delivery()) is Outcome.DONE


@pytest.mark.parametrize(
    ("renewed_leases", "outcome", "taken_over"),
    [
        (4, Outcome.DONE, False),  # slow: 2 s of work against a 1 s lease, renewed
        (1, Outcome.SKIPPED, True),  # hung past its renewals: another worker takes over
    ],
)
def test_the_lease_is_renewed_while_a_job_runs_but_not_for_ever(
    world: World, renewed_leases: int, outcome: Outcome, taken_over: bool
) -> None:
    """On the world's clock, which only the test moves: however slowly this machine
    runs the renewing thread, the job's time is what the test says."""
    record = world.images.submit(jpeg_bytes())
    renewed = threading.Event()
    claims: list[bool] = []

    def keeper_running() -> bool:
        return any(t.name.startswith("lease-") for t in threading.enumerate())

    def slowly() -> None:
        if taken_over:  # hung: the job outlives its renewals, then its last lease
            world.clock.advance(1.5)  # past the one lease it may renew for
            wait_until(lambda: not keeper_running(), what="the renewals to end")
            world.clock.advance(1.5)  # past the last lease it renewed
        else:  # slow: 2 s of work, a quarter of a second after each renewal
            for _ in range(8):
                renewed.clear()
                assert renewed.wait(timeout=30), "the lease was not renewed"
                world.clock.advance(0.25)
        claim = world.repo.claim(record.id, owner="w2", lease_s=1, now=world.clock())
        claims.append(claim is not None)

    world.detector.during = slowly
    processor = world.processor(
        lease_s=1.0,
        lease_renew_interval_s=1 / 3,
        max_lease_renewals=renewed_leases,
        on_lease_renewed=renewed.set,
    )
    assert processor.handle(world.next_delivery()) is outcome
    assert claims == [taken_over]
    wait_until(lambda: not keeper_running(), what="the renewals to end")  # none outlives its job
    if not taken_over:
        done = world.repo.get(record.id)
        assert done is not None and done.status is Status.DONE and done.attempts == 1


def test_transient_failure_then_success(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    world.results.down = True
    processor = world.processor()
    assert processor.handle(world.next_delivery()) is Outcome.RETRY
    pending = world.repo.get(record.id)
    assert pending is not None and pending.status is Status.PENDING
    world.results.down = False
    assert processor.handle(world.next_delivery()) is Outcome.DONE


def test_undecodable_original_fails_for_good(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    world.originals.objects[record.input_key] = (b"\xff\xd8\xff garbage", world.clock())
    assert world.processor().handle(world.next_delivery()) is Outcome.FAILED
    failed = world.repo.get(record.id)
    assert failed is not None and failed.status is Status.FAILED and failed.error
    assert failed.error_code is ErrorCode.INVALID_IMAGE
    assert world.queue.take_dead_letters() == [] and world.queue.depth() == 0


def test_a_stored_scan_bomb_fails_as_the_images_own_error(world: World) -> None:
    """An original stored before the scan limit (or under a higher one) is refused by the
    worker's decode before any pass over it: the picture fails, nothing is retried."""
    record = world.images.submit(jpeg_bytes())
    world.originals.objects[record.input_key] = (scan_bomb(64, 64, scans=150), world.clock())
    assert world.processor().handle(world.next_delivery()) is Outcome.FAILED
    failed = world.repo.get(record.id)
    assert failed is not None and failed.status is Status.FAILED
    assert failed.error_code is ErrorCode.TOO_MANY_SCANS and failed.error
    assert world.queue.take_dead_letters() == [] and world.queue.depth() == 0
    assert world.results.puts == 0


def test_expired_lease_is_taken_over_without_a_second_result(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    world.next_delivery()  # worker 1 takes the message and dies before claiming... or after:
    assert world.repo.claim(record.id, owner="dead", lease_s=60, now=world.clock()) is not None
    # Within the lease nobody else may take it.
    assert world.reconciler().republish() == 0
    world.clock.advance(61)
    assert world.reconciler().republish() == 1
    assert world.processor(owner="w2").handle(world.next_delivery()) is Outcome.DONE
    # The dead worker's late completion is refused.
    assert not world.repo.complete(
        record.id, owner="dead", output_key="x", url="x", faces=0, now=world.clock()
    )
    assert world.results.puts == 1


def test_a_worker_whose_lease_lapsed_never_deletes_the_result_of_the_next(
    world: World,
) -> None:
    """Worker 1 stalls past its lease; worker 2 takes the job over and stores its result
    but has not recorded it yet when worker 1 finishes, finds its lease lost and cleans
    up. Worker 1 deletes only its own attempt's result."""
    record = world.images.submit(jpeg_bytes())
    stored_by_2, go_on = threading.Event(), threading.Event()
    outcomes: dict[str, Outcome] = {}

    def hold_complete_of_2(operation: str) -> None:
        if operation == "complete" and threading.current_thread().name == "w2":
            stored_by_2.set()
            assert go_on.wait(timeout=30)

    def worker_2() -> None:
        outcomes["w2"] = world.processor("w2").handle(world.next_delivery())

    def stall_1() -> None:
        world.detector.during = None  # worker 2's detection is quick
        world.clock.advance(61)  # past worker 1's 60 s lease
        world.queue.publish(Job(record.id))  # the reconciler's republish
        threading.Thread(target=worker_2, name="w2").start()
        assert stored_by_2.wait(timeout=30)

    world.repo.before = hold_complete_of_2
    world.detector.during = stall_1
    assert world.processor("w1").handle(world.next_delivery()) is Outcome.SKIPPED
    go_on.set()
    wait_until(lambda: "w2" in outcomes, what="worker 2 to finish")
    assert outcomes["w2"] is Outcome.DONE
    done = world.repo.get(record.id)
    assert done is not None and done.status is Status.DONE and done.attempts == 2
    assert done.output_key == f"{record.id}-a2.jpg"
    assert list(world.results.objects) == [done.output_key]
    assert world.images.result(record.id).data == world.results.objects[done.output_key][0]


def test_results_of_other_attempts_and_older_releases_are_collected(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    assert world.processor().handle(world.next_delivery()) is Outcome.DONE
    done = world.repo.get(record.id)
    assert done is not None and done.output_key == f"{record.id}-a1.jpg"
    # Left by a crash between storing and recording, and by an older release's worker.
    for key in (f"{record.id}-a2.jpg", f"{record.id}.jpg"):
        world.results.put(key, b"x", content_type="image/jpeg")
    for key in world.results.objects:
        world.results.age(key, 3600)
    world.clock.now = datetime.now(UTC) + timedelta(hours=2)
    assert world.reconciler().collect_garbage() == (0, 2)
    assert list(world.results.objects) == [done.output_key]


def test_a_queued_job_is_not_republished_while_it_waits_its_turn(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    world.next_delivery()  # the broker lost the message (or it is deep in a backlog)
    world.clock.advance(3600)
    assert world.reconciler(queued_grace_s=7200).republish() == 0  # confirmed: still queued
    world.clock.advance(3601)
    assert world.reconciler(queued_grace_s=7200).republish() == 1  # the safety net
    assert world.next_delivery().job.image_id == record.id
    assert world.reconciler(queued_grace_s=7200).republish() == 0  # once, not every pass


def test_a_job_never_published_is_published_after_the_grace(world: World) -> None:
    # What an API that died between writing the record and publishing leaves behind.
    now = world.clock()
    record = world.repo.add(
        ImageRecord(
            id="0123456789abcdef0123456789abcdef",
            name="a.jpg",
            status=Status.PENDING,
            content_type="image/jpeg",
            bytes=3,
            width=1,
            height=1,
            input_key="0123456789abcdef0123456789abcdef.jpg",
            created_at=now,
            updated_at=now,
        )
    )
    assert world.reconciler().republish() == 0  # too young: the API may still publish it
    world.clock.advance(31)
    assert world.reconciler().republish() == 1
    assert world.next_delivery().job.image_id == record.id
    world.clock.advance(31)
    assert world.reconciler().republish() == 0  # its publish is confirmed now


def test_every_pending_job_is_published_when_the_queue_was_lost(world: World) -> None:
    records = [world.images.submit(jpeg_bytes(seed=i)) for i in range(5)]
    for _ in records:
        world.next_delivery()  # an in-process queue dies with its process
    world.clock.advance(1)  # the restart
    assert world.reconciler(batch=2).republish(everything_pending=True) == 5
    assert sorted(world.next_delivery().job.image_id for _ in records) == sorted(
        r.id for r in records
    )
    assert world.queue.receive(timeout_s=0.05) is None  # each exactly once
    assert world.reconciler(batch=2).republish() == 0


def test_reconciler_collects_unreferenced_objects(world: World) -> None:
    world.originals.put("0123456789abcdef0123456789abcdef.jpg", b"x", content_type="image/jpeg")
    world.originals.put("not-an-id.jpg", b"x", content_type="image/jpeg")
    kept = world.images.submit(jpeg_bytes())
    for key in world.originals.objects:
        world.originals.age(key, 3600)
    world.clock.now = world.clock.now.replace(year=2100)  # everything is old
    originals, results = world.reconciler().collect_garbage()
    assert originals == 1 and results == 0
    # Pending: still needed. A key we did not make is not ours to delete.
    assert sorted(world.originals.objects) == sorted([kept.input_key, "not-an-id.jpg"])


def test_only_the_holder_of_the_gc_lease_collects(world: World) -> None:
    world.clock.now = datetime.now(UTC) + timedelta(hours=2)  # stored objects are old
    holder = world.reconciler(gc_lease_s=900)
    other = world.reconciler(owner="another-worker", gc_lease_s=900)
    assert holder.collect_garbage() == (0, 0)  # nothing to collect; it holds the lease now
    orphan = "0123456789abcdef0123456789abcdef.jpg"
    world.originals.put(orphan, b"x", content_type="image/jpeg")
    world.originals.age(orphan, 3600)
    assert other.collect_garbage() is None
    assert other.run_once(collect=True).originals_deleted == 0
    assert orphan in world.originals.objects
    world.clock.advance(901)  # the holder is gone: its lease expires, another takes over
    assert other.collect_garbage() == (1, 0)
    assert orphan not in world.originals.objects


def test_garbage_collection_looks_records_up_a_page_at_a_time(world: World) -> None:
    kept = [world.images.submit(jpeg_bytes(seed=i)) for i in range(3)]
    orphans = [f"{i:032x}.jpg" for i in range(5)]
    for key in orphans:
        world.originals.put(key, b"x", content_type="image/jpeg")
    world.clock.now = datetime.now(UTC) + timedelta(hours=2)  # stored objects are old
    assert world.reconciler(batch=2).collect_garbage() == (5, 0)
    assert sorted(world.originals.objects) == sorted(r.input_key for r in kept)


def test_delete_removes_record_and_objects(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    world.processor().handle(world.next_delivery())
    world.images.delete(record.id)
    assert world.repo.get(record.id) is None
    assert world.originals.objects == {} and world.results.objects == {}
    with pytest.raises(NotFound):
        world.images.delete(record.id)


def test_delete_during_processing_leaves_no_result(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    delivery = world.next_delivery()
    world.detector.during = lambda: world.images.delete(record.id)
    assert world.processor().handle(delivery) is Outcome.SKIPPED
    assert world.results.objects == {} and world.repo.get(record.id) is None


def test_retry_policy_grows_and_caps() -> None:
    policy = RetryPolicy(max_attempts=9, base_delay_s=1, max_delay_s=10)
    assert [policy.delay_s(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.delay_s(5000) == 10  # a day-long outage's retry count does not overflow


def test_an_outage_that_never_ends_counts_in_the_end(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    world.results.down = True  # a store that refuses this image for good
    processor = world.processor(outage_patience_s=4.0)  # max_attempts 3
    outcomes = [processor.handle(world.next_delivery()) for _ in range(7)]
    assert outcomes == [Outcome.RETRY] * 6 + [Outcome.DEAD_LETTERED]
    failed = world.repo.get(record.id)
    assert failed is not None and failed.status is Status.FAILED
    assert world.originals.objects == {}  # parked: its original goes at once, as if failed


def test_republishing_with_no_grace_takes_each_job_once(world: World) -> None:
    for i in range(5):
        world.images.submit(jpeg_bytes(seed=i))
    world.clock.advance(1)
    reconciler = world.reconciler(batch=2, pending_grace_s=0, queued_grace_s=0)
    assert reconciler.republish() == 5


def test_an_image_that_kills_its_worker_is_parked_after_max_attempts(world: World) -> None:
    """A crash leaves no trace but the attempt count; re-publishing must stop somewhere."""
    record = world.images.submit(jpeg_bytes())
    world.next_delivery()
    for _ in range(3):  # max_attempts: each worker claims, then dies
        assert world.repo.claim(record.id, owner="doomed", lease_s=1, now=world.clock())
        world.clock.advance(2)
        assert world.reconciler().republish() == 1
        world.next_delivery()
    world.queue.publish(Job(record.id))
    assert world.processor().handle(world.next_delivery()) is Outcome.DEAD_LETTERED
    failed = world.repo.get(record.id)
    assert failed is not None and failed.status is Status.FAILED
    assert failed.error_code is ErrorCode.WORKER_STOPPED
    assert world.detector.calls == 0
    assert [d.job.image_id for d in world.queue.take_dead_letters()] == [record.id]
    assert world.originals.objects == {}  # not left for garbage collection


def test_a_failure_after_the_job_was_taken_over_leaves_the_original_to_its_holder(
    world: World,
) -> None:
    record = world.images.submit(jpeg_bytes())

    def taken_over_then_fails() -> None:
        world.clock.advance(61)  # our lease lapsed (a stall); another worker took the job
        assert world.repo.claim(record.id, owner="w2", lease_s=60, now=world.clock())
        raise InvalidImage("a decoder error on this worker only")

    world.detector.during = taken_over_then_fails
    assert world.processor().handle(world.next_delivery()) is Outcome.FAILED
    now = world.repo.get(record.id)
    assert now is not None and now.status is Status.PROCESSING and now.lease_owner == "w2"
    assert list(world.originals.objects) == [record.input_key]  # w2 needs it


def test_database_down_at_claim_retries_without_parking(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    world.repo.down = True
    processor = world.processor()
    for _ in range(5):  # more than max_attempts
        assert processor.handle(world.next_delivery()) is Outcome.RETRY
    assert world.queue.take_dead_letters() == []
    world.repo.down = False
    assert processor.handle(world.next_delivery()) is Outcome.DONE
    done = world.repo.get(record.id)
    assert done is not None and done.status is Status.DONE


def test_a_result_is_never_collected_while_its_record_lives(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    # A result left by an earlier, crashed run while the record is pending again.
    world.results.put(f"{record.id}.jpg", b"old", content_type="image/jpeg")
    world.results.age(f"{record.id}.jpg", 7200)
    world.clock.now = world.clock.now.replace(year=2100)
    assert world.reconciler().collect_garbage() == (0, 0)


def test_failure_to_record_a_failure_leaves_the_job_for_later(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    world.originals.objects[record.input_key] = (b"\xff\xd8\xff garbage", world.clock())

    def down_when_failing(operation: str) -> None:
        if operation == "fail":
            raise RepositoryUnavailable("db is down")

    world.repo.before = down_when_failing
    assert world.processor().handle(world.next_delivery()) is Outcome.RETRY
    assert world.originals.objects  # nothing decided, nothing deleted
    # Settled with a retry, not left unacked (that would hold the worker's prefetch).
    retried = world.next_delivery()
    assert retried.job.image_id == record.id and retried.job.attempt == 1


def test_a_worker_whose_lease_is_lost_stops_between_detection_passes(world: World) -> None:
    record = world.images.submit(jpeg_bytes(1000, 800))  # passes at 1, 1/2, 1/4: a tile each

    def keeper_running() -> bool:
        return any(t.name.startswith("lease-") for t in threading.enumerate())

    def taken_over() -> None:
        world.clock.advance(2)  # a stall past the lease; another worker takes the job
        assert world.repo.claim(record.id, owner="w2", lease_s=60, now=world.clock())
        # Our next renewal finds the lease lost (and the renewing thread ends).
        wait_until(lambda: not keeper_running(), what="the renewals to end")

    model = NothingFound(taken_over)
    world.detector = PyramidDetector(model, threshold=0.5, pyramid=PyramidConfig())  # type: ignore[assignment]
    processor = world.processor(lease_s=1.0, lease_renew_interval_s=0.05)
    assert processor.handle(world.next_delivery()) is Outcome.SKIPPED
    assert model.tiles == 1  # the first pass only
    assert world.results.objects == {}
    now = world.repo.get(record.id)
    assert now is not None and now.lease_owner == "w2" and now.status is Status.PROCESSING
    assert list(world.originals.objects) == [record.input_key]


@pytest.mark.parametrize("patience_s", [0.5, 360.0])
def test_an_original_that_does_not_open_waits_for_the_keys(world: World, patience_s: float) -> None:
    """A wrong key (or none, or a rotation out of order) is the deployment's fault, not
    the picture's: no attempt, no dead letter, whatever the outage patience, and never
    the original deleted; the job comes back until the keys are fixed."""
    record = world.images.submit(jpeg_bytes(64, 48))
    kept = world.originals.objects[record.input_key][0]
    EncryptedStore(world.originals, Keyring(b"A" * 32)).put(
        record.input_key, kept, content_type="image/jpeg"
    )
    sealed = world.originals.objects[record.input_key][0]

    def processor(keyring: Keyring) -> JobProcessor:
        originals = EncryptedStore(world.originals, keyring)
        return JobProcessor(
            backends=Backends(world.repo, originals, world.results, world.queue),
            anonymizer=Anonymizer(world.detector, OPTIONS),
            retry=RetryPolicy(max_attempts=2, base_delay_s=0, max_delay_s=0),
            lease_s=60.0,
            lease_renew_interval_s=20.0,
            max_lease_renewals=4,
            outage_patience_s=patience_s,
            keep_originals=False,
            owner="w1",
            clock=world.clock,
        )

    for keyring in (Keyring(b"B" * 32), Keyring(None)):  # a wrong key, then none
        wrong = processor(keyring)
        outcomes = [wrong.handle(world.next_delivery()) for _ in range(6)]
        assert outcomes == [Outcome.RETRY] * 6
    waiting = world.repo.get(record.id)
    assert waiting is not None and waiting.status is Status.PENDING and waiting.attempts == 0
    assert waiting.error_code is ErrorCode.ORIGINAL_UNREADABLE
    assert world.queue.take_dead_letters() == []
    assert world.originals.objects[record.input_key][0] == sealed  # in place, untouched
    world.reconciler(orphan_grace_s=0).run_once()
    assert record.input_key in world.originals.objects  # not collected either
    fixed = processor(Keyring(b"B" * 32, [b"A" * 32]))
    assert fixed.handle(world.next_delivery()) is Outcome.DONE
    done = world.repo.get(record.id)
    assert done is not None and done.status is Status.DONE and done.faces == 1


def test_garbage_collection_never_deletes_key_check_objects(world: World) -> None:
    EncryptedStore(world.originals, Keyring(b"A" * 32)).check_keys()
    (name,) = world.originals.objects
    assert name.startswith("_keycheck/")
    world.originals.age(name, 10 * 86400)
    sealed = EncryptedStore(world.originals, Keyring(b"A" * 32))
    for originals in (world.originals, sealed):  # as listed at rest, and through the keys
        backends = Backends(world.repo, originals, world.results, world.queue)
        reconciler = Reconciler(
            backends=backends,
            pending_grace_s=30,
            queued_grace_s=3600,
            orphan_grace_s=0,
            keep_originals=False,
            gc_lease_s=900,
            owner="gc",
            clock=world.clock,
        )
        assert reconciler.collect_garbage() == (0, 0)
    assert name in world.originals.objects
