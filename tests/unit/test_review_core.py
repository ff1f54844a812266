"""Review and correct in the core, with in-memory fakes: the hold, a correction's render
job, approval, expiry, the reconciler's part, and job kinds."""

from __future__ import annotations

import json
import threading

import pytest

from imageblur.corrections import KeptRegion, ManualBox
from imageblur.domain import (
    ErrorCode,
    ImageRecord,
    InvalidJob,
    Job,
    JobKind,
    NotInReview,
    OriginalGone,
    Rendering,
    Review,
    StaleRevision,
    Status,
)
from imageblur.jobs import Outcome
from imageblur.review import ReviewService
from support import jpeg_bytes
from unit.world import World

TTL_S = 3600.0


def review(w: World, *, keep_originals: bool = False) -> ReviewService:
    return ReviewService(backends=w.backends, keep_originals=keep_originals, clock=w.clock)


def held(w: World) -> ImageRecord:
    """A picture uploaded and processed with review on: in review."""
    record = w.images.submit(jpeg_bytes(width=64, height=48))
    assert w.processor(review_ttl_s=TTL_S).handle(w.next_delivery()) is Outcome.DONE
    now = w.repo.get(record.id)
    assert now is not None
    return now


def test_with_review_on_a_processed_picture_is_held_with_its_regions(world: World) -> None:
    record = held(world)
    assert record.status is Status.REVIEW and record.review is Review.PENDING
    assert record.held_until is not None
    assert (record.held_until - world.clock()).total_seconds() == pytest.approx(TTL_S)
    assert list(world.originals.objects) == [record.input_key]  # kept for corrections
    revision, regions = review(world).regions(record.id)
    assert revision == 0 and [r.hidden for r in regions if not r.uncertain] == [True]


def test_a_correction_queues_a_render_that_uses_no_detection(world: World) -> None:
    record = held(world)
    _, regions = review(world).regions(record.id)
    wanted = [KeptRegion(regions[0].id, True), ManualBox(40, 10, 10, 10, True)]
    corrected = review(world).correct(record.id, wanted, expected_revision=0, role="reviewer")
    assert corrected.status is Status.RENDERING and corrected.revision == 1
    delivery = world.next_delivery()
    assert delivery.job.kind is JobKind.RENDER
    calls = world.detector.calls
    assert world.processor(review_ttl_s=TTL_S).handle(delivery) is Outcome.DONE
    assert world.detector.calls == calls
    rendered = world.repo.get(record.id)
    assert rendered is not None and rendered.status is Status.REVIEW
    assert rendered.output_key == f"{record.id}-r1.jpg"
    assert list(world.results.objects) == [rendered.output_key]  # the old one deleted
    assert rendered.faces == 2
    actions = [e.action for e in world.repo.history(record.id)]
    assert actions == ["uploaded", "processed", "corrected", "rendered"]


def test_the_trail_names_the_reviewer_and_keeps_their_reasons(world: World) -> None:
    record = held(world)
    service = review(world)
    _, regions = service.regions(record.id)
    face = next(r for r in regions if r.hidden)
    shown = [KeptRegion(face.id, False, reason="a painted face")]
    service.correct(record.id, shown, expected_revision=0, role="reviewer", reviewer="photo-desk")
    assert world.processor(review_ttl_s=TTL_S).handle(world.next_delivery()) is Outcome.DONE
    service.approve(record.id, role="reviewer", reviewer="night-desk")
    trail = [(e.action, e.reviewer, e.reasons) for e in world.repo.history(record.id)]
    assert trail == [
        ("uploaded", None, None),
        ("processed", None, None),
        ("corrected", "photo-desk", {face.id: "a painted face"}),
        ("rendered", None, None),
        ("approved", "night-desk", None),
    ]


def test_a_stale_revision_and_finished_pictures_are_refused(world: World) -> None:
    record = held(world)
    service = review(world)
    with pytest.raises(StaleRevision):
        service.correct(record.id, [], expected_revision=3, role="reviewer")
    service.correct(record.id, [], expected_revision=0, role="reviewer")
    with pytest.raises(StaleRevision):
        service.correct(record.id, [], expected_revision=0, role="reviewer")
    with pytest.raises(Rendering):
        service.approve(record.id, role="reviewer")
    world.processor(review_ttl_s=TTL_S).handle(world.next_delivery())
    approved = service.approve(record.id, role="reviewer")
    assert approved.status is Status.DONE and approved.review is Review.APPROVED
    assert world.originals.objects == {}
    with pytest.raises(OriginalGone):
        service.correct(record.id, [], expected_revision=1, role="reviewer")
    with pytest.raises(NotInReview):
        service.approve(record.id, role="reviewer")


def test_a_picture_not_processed_yet_cannot_be_corrected(world: World) -> None:
    record = world.images.submit(jpeg_bytes())
    with pytest.raises(Rendering):
        review(world).correct(record.id, [], expected_revision=0, role="reviewer")


def test_keep_originals_keeps_the_original_after_approval(world: World) -> None:
    record = held(world)
    review(world, keep_originals=True).approve(record.id, role="reviewer")
    assert list(world.originals.objects) == [record.input_key]


def test_a_detect_message_never_runs_a_rendering_picture(world: World) -> None:
    record = held(world)
    review(world).correct(record.id, [], expected_revision=0, role="reviewer")
    world.next_delivery()  # the render job, left aside
    world.queue.publish(Job(record.id))  # as an older release's reconciler would send
    assert world.processor(review_ttl_s=TTL_S).handle(world.next_delivery()) is Outcome.SKIPPED
    assert world.repo.get(record.id).status is Status.RENDERING  # type: ignore[union-attr]


def test_an_unknown_job_kind_is_never_run_as_another() -> None:
    with pytest.raises(InvalidJob):
        Job.from_json(json.dumps({"image_id": "a" * 32, "kind": "upscale"}).encode())
    assert Job.from_json(b'{"image_id": "%s"}' % (b"a" * 32)).kind is JobKind.DETECT


def test_the_reconciler_expires_holds_and_republishes_renders(world: World) -> None:
    expiring = held(world)
    rendering = held(world)
    review(world).correct(rendering.id, [], expected_revision=0, role="reviewer")
    world.next_delivery()  # the render's message is lost
    world.clock.advance(TTL_S + 60)
    world.reconciler(queued_grace_s=600).run_once(collect=False)
    expired = world.repo.get(expiring.id)
    assert expired is not None and expired.status is Status.DONE
    assert expired.review is Review.EXPIRED
    assert expiring.input_key not in world.originals.objects
    assert world.next_delivery().job == Job(rendering.id, kind=JobKind.RENDER)


def test_garbage_collection_keeps_originals_under_review_and_current_results(
    world: World,
) -> None:
    record = held(world)
    stale = f"{record.id}-r7.jpg"  # a superseded render's, left by a crash
    world.results.put(stale, b"x", content_type="image/jpeg")
    world.clock.now = world.clock.now.replace(year=2100)  # everything is old
    world.reconciler(orphan_grace_s=0).collect_garbage()
    assert record.input_key in world.originals.objects
    assert list(world.results.objects) == [record.output_key]


def test_a_superseded_render_never_completes_over_a_newer_one_of_the_same_worker(
    world: World,
) -> None:
    # Two job threads of one worker: the render of revision 1 finishes while the render
    # of revision 2, claimed by the other thread, still runs. The older one must lose.
    record = held(world)
    _, regions = review(world).regions(record.id)
    reached = [threading.Event(), threading.Event()]
    go = [threading.Event(), threading.Event()]
    calls: list[int] = []

    def pause_reads(operation: str, key: str) -> None:
        if operation != "get":
            return
        n = len(calls)
        calls.append(n)
        reached[n].set()
        assert go[n].wait(30)

    world.originals.before = pause_reads
    processor = world.processor(review_ttl_s=TTL_S)
    outcomes: dict[int, Outcome] = {}

    def render(n: int) -> threading.Thread:
        delivery = world.next_delivery()
        thread = threading.Thread(target=lambda: outcomes.update({n: processor.handle(delivery)}))
        thread.start()
        assert reached[n].wait(30)  # claimed, regions read, reading the original
        return thread

    service = review(world)
    service.correct(
        record.id,
        [KeptRegion(regions[0].id, False, reason="a poster")],
        expected_revision=0,
        role="reviewer",
    )
    older = render(0)
    service.correct(
        record.id, [KeptRegion(regions[0].id, True)], expected_revision=1, role="reviewer"
    )
    newer = render(1)
    go[0].set()
    older.join(30)
    assert outcomes[0] is Outcome.SKIPPED  # its lease passed to the newer render
    go[1].set()
    newer.join(30)
    assert outcomes[1] is Outcome.DONE
    final = world.repo.get(record.id)
    assert final is not None and final.status is Status.REVIEW and final.revision == 2
    assert final.output_key == f"{record.id}-r2.jpg"
    assert list(world.results.objects) == [final.output_key]


def test_a_render_that_fails_returns_the_picture_to_review_with_its_result(
    world: World,
) -> None:
    record = held(world)
    review(world).correct(record.id, [], expected_revision=0, role="reviewer")
    # An original no decoder opens any more (a library upgrade, say): the render fails.
    world.originals.objects[record.input_key] = (b"\xff\xd8\xff garbage", world.clock())
    assert world.processor(review_ttl_s=TTL_S).handle(world.next_delivery()) is Outcome.FAILED
    back = world.repo.get(record.id)
    assert back is not None
    assert (back.status, back.review, back.output_key, back.revision) == (
        Status.REVIEW,
        Review.PENDING,
        record.output_key,
        1,
    )
    assert list(world.originals.objects) == [record.input_key]  # a reviewer still needs it
    assert list(world.results.objects) == [record.output_key]
    last = world.repo.history(record.id)[-1]
    assert (last.action, last.status) == ("render_failed", "review")
    assert last.detail == back.error and back.error_code is ErrorCode.INVALID_IMAGE


def test_a_render_parked_after_its_attempts_returns_the_picture_to_review(
    world: World,
) -> None:
    record = held(world)
    review(world).correct(record.id, [], expected_revision=0, role="reviewer")
    world.results.down = True  # a store that refuses this result for good
    processor = world.processor(review_ttl_s=TTL_S, outage_patience_s=0.0)  # 3 attempts
    outcomes = [processor.handle(world.next_delivery()) for _ in range(3)]
    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.DEAD_LETTERED]
    back = world.repo.get(record.id)
    assert back is not None and back.status is Status.REVIEW
    assert back.output_key == record.output_key
    assert list(world.originals.objects) == [record.input_key]
    assert [d.job.kind for d in world.queue.take_dead_letters()] == [JobKind.RENDER]
    assert [e.action for e in world.repo.history(record.id)][-1] == "render_failed"
    world.results.down = False  # and the reviewer can correct it again
    review(world).correct(record.id, [], expected_revision=1, role="reviewer")
    assert processor.handle(world.next_delivery()) is Outcome.DONE
