"""Video records in the repository (issue 25, item 1): their own kind, facts, job
statuses and progress, on SQLite, PostgreSQL and the unit tests' fake. The table's
transitions themselves are checked from every state by test_lifecycle.py."""

from __future__ import annotations

from datetime import timedelta

from imageblur.backends import Repository
from imageblur.domain import ErrorCode, ImageRecord, JobKind, Review, Status

from .test_image_repository import T0, record


def video(**changes: object) -> ImageRecord:
    """A video's record as the API adds it: queued in its own status, with its facts."""
    return record(
        name="clip.mp4",
        status=Status.VIDEO_PENDING,
        content_type="video/mp4",
        bytes=5_000_000,
        width=1280,
        height=720,
        kind="video",
        duration_s=4.0,
        fps=30.0,
        frames=120,
        video_codec="h264",
    ).with_changes(**changes)


def test_a_videos_facts_round_trip(repo: Repository) -> None:
    rec = repo.add(video())
    assert repo.get(rec.id) == rec
    assert rec.kind == "video" and rec.status.public == "pending"


def test_pictures_and_videos_are_listed_and_counted_apart(repo: Repository) -> None:
    pictures = [repo.add(record(at=T0 + timedelta(seconds=i))) for i in range(2)]
    videos = [repo.add(video(created_at=T0 + timedelta(seconds=5 + i))) for i in range(3)]
    assert [r.id for r in repo.list(limit=10)] == [r.id for r in reversed(pictures)]
    assert [r.id for r in repo.list(limit=10, kind="video")] == [r.id for r in reversed(videos)]
    assert [r.id for r in repo.list(limit=1, offset=1, kind="video")] == [videos[1].id]
    assert repo.count() == 2 and repo.count(kind="video") == 3


def test_the_picture_stats_leave_videos_out(repo: Repository) -> None:
    picture = repo.add(record(at=T0))
    repo.add(video(created_at=T0 - timedelta(days=1)))  # queued, and older
    repo.add(video(status=Status.DONE))  # done is a status of both kinds
    stats = repo.picture_stats()
    assert {k: v for k, v in stats.counts.items() if v} == {"pending": 1}
    assert stats.oldest_pending_at == picture.created_at


def test_only_a_video_claim_takes_a_video(repo: Repository) -> None:
    rec = repo.add(video())
    for kind in (JobKind.DETECT, JobKind.RENDER):
        assert repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=kind) is None
    claimed = repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.VIDEO)
    assert claimed is not None and claimed.status is Status.VIDEO_PROCESSING
    assert claimed.status.public == "processing" and claimed.attempts == 1
    picture = repo.add(record())
    assert repo.claim(picture.id, owner="w", lease_s=30, now=T0, kind=JobKind.VIDEO) is None


def test_progress_is_noted_by_the_holder_only(repo: Repository) -> None:
    rec = repo.add(video())
    progress = {"frames_done": 30, "frames_total": 120, "eta_s": 3.0}
    assert not repo.note_progress(rec.id, owner="w", now=T0, **progress)  # not claimed
    repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.VIDEO)
    before = repo.get(rec.id)
    assert repo.note_progress(rec.id, owner="w", now=T0 + timedelta(seconds=1), **progress)
    assert not repo.note_progress(
        rec.id, owner="x", now=T0, frames_done=1, frames_total=1, eta_s=None
    )
    after = repo.get(rec.id)
    assert before is not None and after is not None
    assert (after.frames_done, after.frames_total, after.eta_s) == (30, 120, 3.0)
    assert after.updated_at == before.updated_at  # a progress note is not a change of state
    assert [e.action for e in repo.history(rec.id)] == ["uploaded"]
    repo.delete(rec.id)
    assert not repo.note_progress(rec.id, owner="w", now=T0, **progress)  # deleted: stop


def test_a_video_completes_with_its_outcome_and_without_its_progress(repo: Repository) -> None:
    rec = repo.add(video())
    repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.VIDEO)
    repo.note_progress(rec.id, owner="w", frames_done=60, frames_total=120, eta_s=2.0, now=T0)
    done = {"output_key": "o.mp4", "url": "u", "faces": 2, "frames": 119, "audio": "kept"}
    done["tracks_key"] = "o.json"
    assert not repo.complete_video(rec.id, owner="x", now=T0, **done)  # type: ignore[arg-type]
    assert not repo.complete(rec.id, owner="w", output_key="o", url="u", faces=1, now=T0)
    assert repo.complete_video(rec.id, owner="w", now=T0, **done)  # type: ignore[arg-type]
    got = repo.get(rec.id)
    assert got is not None and got.status is Status.DONE
    assert (got.output_key, got.faces, got.frames, got.audio) == ("o.mp4", 2, 119, "kept")
    assert got.tracks_key == "o.json"
    assert (got.frames_done, got.frames_total, got.eta_s, got.lease_owner) == (None,) * 4
    assert [e.action for e in repo.history(rec.id)] == ["uploaded", "processed"]


def test_a_held_video_goes_to_review(repo: Repository) -> None:
    rec = repo.add(video())
    repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.VIDEO)
    hold = T0 + timedelta(days=1)
    assert repo.complete_video(
        rec.id,
        owner="w",
        output_key="o",
        url="u",
        faces=0,
        frames=120,
        audio="none",
        now=T0,
        hold_until=hold,
    )
    got = repo.get(rec.id)
    assert got is not None and got.status is Status.REVIEW and got.review is Review.PENDING
    assert got.held_until == hold


def test_a_video_is_released_to_its_own_queue_and_failed_for_good(repo: Repository) -> None:
    rec = repo.add(video())
    repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.VIDEO)
    code = ErrorCode.BACKEND_UNAVAILABLE
    assert repo.release(rec.id, owner="w", error="later", code=code, now=T0)
    got = repo.get(rec.id)
    assert got is not None and got.status is Status.VIDEO_PENDING
    repo.claim(rec.id, owner="w", lease_s=30, now=T0, kind=JobKind.VIDEO)
    bad = ErrorCode.INVALID_VIDEO
    assert repo.fail(rec.id, owner="w", error=bad.message, code=bad, now=T0)
    got = repo.get(rec.id)
    assert got is not None and got.status is Status.FAILED and got.error_code is bad


def test_the_reconciler_requeues_a_video_to_its_own_status(repo: Repository) -> None:
    stale = repo.add(video())
    repo.claim(stale.id, owner="w", lease_s=30, now=T0, kind=JobKind.VIDEO)
    waiting = repo.add(video())
    late = T0 + timedelta(minutes=5)
    taken = repo.requeue_stale(pending_before=late, published_before=late, now=late, limit=10)
    assert set(taken) == {stale.id, waiting.id}
    for image_id in taken:
        got = repo.get(image_id)
        assert got is not None and got.status is Status.VIDEO_PENDING and got.lease_owner is None
