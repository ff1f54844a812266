"""The video use cases on the fakes (issue 25): an upload checked by the probe before
anything is stored, then stored, recorded and queued on the video kind's own queue; the
video job through the `VideoAnonymizer` port (a fake here: the real pipeline and a
copy-through one run in tests/e2e/test_video.py), its progress written by the lease
keeper, a delete that stops it, a corrupt video that fails it, and no temp file left."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import pytest

from contract import previous_release
from imageblur.domain import (
    AnonymizedVideo,
    ErrorCode,
    IdempotencyKeyReused,
    JobKind,
    ProcessingError,
    Rect,
    Review,
    Status,
    UploadOptions,
    VideoFacts,
    VideoRefused,
    body_digest,
    image_id_of_key,
    tracks_key,
)
from imageblur.jobs import Outcome
from imageblur.ports import VideoProgress
from imageblur.upload_options import InvalidOption
from imageblur.videos import Ingested, VideoService
from support import wait_until
from unit.world import World

CLIP = b"\x00\x00\x00\x18ftypmp42" + b"frames" * 1000
PLAN = b'{"format":"imageblur.track-plan/1","tracks":[]}'
FACTS = VideoFacts(
    container="mp4", video_codec="h264", width=64, height=48, duration_s=2.0, fps=10.0, frames=20
)


class FakeProbe:
    """Takes what starts like an MP4 as one; refuses, once stored, one that says so."""

    def extension(self, head: bytes) -> str:
        if head[4:8] != b"ftyp":
            raise VideoRefused("not a video", http_status=415, code="unsupported_video")
        return ".mp4"

    def __call__(self, source: BinaryIO) -> VideoFacts:
        source.seek(-7, os.SEEK_END)  # what it checks is at the end, as an MP4's moov may be
        if source.read() == b"refused":
            raise VideoRefused("no video stream", http_status=415, code="no_video")
        return FACTS


probe = FakeProbe()


def service(world: World) -> VideoService:
    return VideoService(
        backends=world.backends,
        probe=probe,
        playback_secret=b"k" * 32,
        playback_ttl_s=300,
        clock=world.clock,
    )


def upload(world: World, data: bytes = CLIP, name: str = "clip.mp4") -> Ingested:
    """Streamed into the originals store as the API does, under `upload_key`'s key."""
    key, content_type = service(world).upload_key()(data[:4096])
    world.originals.put_stream(
        key, [data[i : i + 999] for i in range(0, len(data), 999)], content_type=content_type
    )
    return Ingested(key, len(data), body_digest(data, name), name, "video/mp4")


class FakeVideoAnonymizer:
    """Copies the video, reporting its frames; `during(done, progress)` runs at each."""

    def __init__(
        self, during: Callable[[int, VideoProgress], None] = lambda done, progress: None
    ) -> None:
        self.during = during
        self.sources: list[Path] = []
        self.options: list[UploadOptions | None] = []  # each call's

    def anonymize(
        self,
        source: Path,
        target: Path,
        progress: VideoProgress,
        *,
        options: UploadOptions | None = None,
    ) -> AnonymizedVideo:
        self.sources.append(source)
        self.options.append(options)
        for done in range(1, FACTS.frames + 1):
            progress(done, FACTS.frames)
            self.during(done, progress)
        target.write_bytes(source.read_bytes()[::-1])
        return AnonymizedVideo(
            frames=FACTS.frames,
            tracks=2,
            audio="kept",
            extension=".mp4",
            content_type="video/mp4",
            track_plan=PLAN,
        )


def test_a_video_is_stored_recorded_and_queued_on_its_own_kind(
    world: World, tmp_path: Path
) -> None:
    record = service(world).submit(upload(world), request_id="req-1")
    assert record.kind == "video" and record.status is Status.VIDEO_PENDING
    assert (record.width, record.frames, record.fps, record.video_codec) == (64, 20, 10.0, "h264")
    assert world.originals.get(record.input_key) == CLIP
    assert record.input_key == f"{record.id}.mp4" and record.content_type == "video/mp4"
    delivery = world.queue.receive(timeout_s=0.1, kinds={"video"})
    assert delivery is not None and delivery.job.kind is JobKind.VIDEO
    assert world.queue.receive(timeout_s=0.1, kinds={"detect", "render"}) is None
    assert world.repo.list(limit=10) == [] and world.repo.count(kind="video") == 1


def test_a_refused_video_stores_nothing(world: World) -> None:
    with pytest.raises(VideoRefused) as refused:  # before a byte is stored
        upload(world, b"plain text, not a video")
    assert (refused.value.http_status, refused.value.code) == (415, "unsupported_video")
    stored = upload(world, CLIP + b"refused")
    assert [o.key for o in world.originals.list()] == [stored.key]
    with pytest.raises(VideoRefused) as refused:  # by the probe, reading the stored object
        service(world).submit(stored)
    assert refused.value.code == "no_video"
    assert list(world.originals.list()) == [] and world.repo.count(kind="video") == 0


def test_an_idempotency_key_replays_the_first_video(world: World, tmp_path: Path) -> None:
    videos = service(world)
    first = videos.submit(upload(world), idempotency_key="k1")
    assert videos.submit(upload(world), idempotency_key="k1").id == first.id
    with pytest.raises(IdempotencyKeyReused):
        videos.submit(upload(world, CLIP + b"x"), idempotency_key="k1")
    assert [o.key for o in world.originals.list()] == [first.input_key]


def test_the_video_job_stores_the_result_and_records_its_outcome(
    world: World, tmp_path: Path
) -> None:
    record = service(world).submit(upload(world))
    pipeline = FakeVideoAnonymizer()
    outcome = world.processor(video=pipeline).handle(world.next_delivery())
    assert outcome is Outcome.DONE
    done = world.repo.get(record.id)
    assert done is not None and done.status is Status.DONE
    assert (done.faces, done.frames, done.audio) == (2, 20, "kept")
    assert done.output_key == f"{record.id}-a1.mp4" and done.frames_done is None
    assert world.results.get(done.output_key) == CLIP[::-1]
    assert done.tracks_key == f"{record.id}-a1.tracks.json"  # the tracks, beside the result
    assert world.results.get(done.tracks_key) == PLAN
    assert not world.originals.exists(record.input_key)  # the original goes once done
    assert not pipeline.sources[0].exists()  # and the job's temp files with the job
    videos = service(world)
    assert videos.tracks(record.id).key == done.tracks_key
    videos.delete(record.id)
    assert list(world.results.list()) == []  # the result and the tracks went with it


def test_a_job_that_loses_its_video_after_storing_deletes_its_result_and_tracks(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The video deleted between the job's storing and its recording (past the last
    checkpoint): the job's own result and tracks go, nothing is left."""
    record = service(world).submit(upload(world))
    put = world.results.put

    def put_then_delete(key: str, data: bytes, *, content_type: str) -> None:
        put(key, data, content_type=content_type)
        world.repo.delete(record.id)  # as DELETE /video/{id} would, a moment too late

    monkeypatch.setattr(world.results, "put", put_then_delete)
    outcome = world.processor(video=FakeVideoAnonymizer()).handle(world.next_delivery())
    assert outcome is Outcome.SKIPPED
    assert list(world.results.list()) == []


def test_orphaned_video_objects_are_collected_and_referenced_ones_kept(world: World) -> None:
    """What crashes leave: an upload never recorded (a `.mp4` original), a result and
    its tracks of an attempt whose lease was lost; the done video's stay."""
    record = service(world).submit(upload(world))
    world.processor(video=FakeVideoAnonymizer()).handle(world.next_delivery())
    done = world.repo.get(record.id)
    assert done is not None and done.tracks_key is not None
    orphan = service(world).upload_key()(CLIP)[0]
    world.originals.put(orphan, CLIP, content_type="video/mp4")
    for key in (f"{record.id}-a2.mp4", f"{record.id}-a2.tracks.json"):
        world.results.put(key, b"x", content_type="application/octet-stream")
    for store in (world.originals, world.results):
        for key in store.objects:
            store.age(key, 3600)
    world.clock.now = datetime.now(UTC) + timedelta(hours=2)
    assert world.reconciler().collect_garbage() == (1, 2)
    assert sorted(world.results.objects) == sorted([done.output_key, done.tracks_key])


def test_progress_is_written_by_the_lease_keeper_while_the_job_runs(
    world: World, tmp_path: Path
) -> None:
    record = service(world).submit(upload(world))

    def progress_shows(done: int, progress: VideoProgress) -> None:
        if done == 5:  # the job waits here until its record shows how far it got
            seen = wait_until(
                lambda: (world.repo.get(record.id) or record).frames_done,
                timeout_s=10,
                what="the keeper to write the progress",
            )
            assert seen == 5

    world.processor(video=FakeVideoAnonymizer(progress_shows)).handle(world.next_delivery())
    trail = [e.action for e in world.repo.history(record.id)]
    assert trail == ["uploaded", "processed"]  # progress is no line of the trail


def test_a_video_deleted_while_processing_stops_its_job(world: World, tmp_path: Path) -> None:
    videos = service(world)
    record = videos.submit(upload(world))
    deleted = threading.Event()

    def delete_at_frame_3(done: int, progress: VideoProgress) -> None:
        if done == 3:
            videos.delete(record.id)
            deleted.set()
            # The keeper's next note is refused: the job is cancelled, and the next
            # report of its progress raises `Cancelled`, which stops the work.
            wait_until(
                lambda: progress(3, FACTS.frames),
                timeout_s=10,
                what="the job to be stopped",
                retry_on=(),
            )

    pipeline = FakeVideoAnonymizer(delete_at_frame_3)
    outcome = world.processor(video=pipeline).handle(world.next_delivery())
    assert deleted.is_set() and outcome is Outcome.SKIPPED
    assert list(world.results.list()) == [] and list(world.originals.list()) == []
    assert not pipeline.sources[0].exists()


def test_a_corrupt_video_fails_for_good_with_nothing_left(world: World, tmp_path: Path) -> None:
    record = service(world).submit(upload(world))

    def corrupt(done: int, progress: VideoProgress) -> None:
        if done == 10:
            raise ProcessingError("invalid data found when decoding frame 10")

    outcome = world.processor(video=FakeVideoAnonymizer(corrupt)).handle(world.next_delivery())
    assert outcome is Outcome.FAILED
    failed = world.repo.get(record.id)
    assert failed is not None and failed.status is Status.FAILED
    assert failed.error_code is ErrorCode.INVALID_VIDEO
    assert list(world.results.list()) == [] and list(world.originals.list()) == []


@pytest.mark.parametrize("code", [ErrorCode.AUDIO_FAILED, ErrorCode.ENCODE_FAILED])
def test_a_result_not_written_fails_as_ours_not_invalid_video(
    world: World, tmp_path: Path, code: ErrorCode
) -> None:
    """The render's own failures (the sound's, the frames') keep their code: an operator
    is not told the client's file was bad."""
    from imageblur.video.errors import AUDIO_FAILED, ENCODE_FAILED, BrokenVideo

    assert (AUDIO_FAILED, ENCODE_FAILED) == (ErrorCode.AUDIO_FAILED, ErrorCode.ENCODE_FAILED)
    record = service(world).submit(upload(world))

    def refused(done: int, progress: VideoProgress) -> None:
        if done == 10:
            raise BrokenVideo("the result could not be written", code=code.value)

    outcome = world.processor(video=FakeVideoAnonymizer(refused)).handle(world.next_delivery())
    assert outcome is Outcome.FAILED
    failed = world.repo.get(record.id)
    assert failed is not None and failed.status is Status.FAILED
    assert failed.error_code is code
    assert failed.error == code.message
    assert list(world.results.list()) == [] and list(world.originals.list()) == []


def test_a_worker_without_the_pipeline_gives_the_job_back(world: World, tmp_path: Path) -> None:
    record = service(world).submit(upload(world))
    assert world.processor().handle(world.next_delivery()) is Outcome.RETRY
    back = world.repo.get(record.id)
    assert back is not None and back.status is Status.VIDEO_PENDING and back.attempts == 0
    assert world.originals.exists(record.input_key)


def test_pictures_routes_never_show_a_video(world: World, tmp_path: Path) -> None:
    from imageblur.domain import NotFound

    record = service(world).submit(upload(world))
    with pytest.raises(NotFound):
        world.images.get(record.id)
    with pytest.raises(NotFound):
        world.images.delete(record.id)
    assert service(world).get(record.id) == record


def test_a_killed_workers_video_is_finished_by_another(world: World, tmp_path: Path) -> None:
    """A worker that died mid-video (its lease left to expire, its message lost with
    it): the reconciler re-publishes the job on the video queue, another worker takes it
    over and finishes it; the dead one's attempt leaves nothing."""
    record = service(world).submit(upload(world))
    world.next_delivery()  # taken by the worker that dies: never settled
    assert world.repo.claim(
        record.id, owner="dead", lease_s=60, now=world.clock(), kind=JobKind.VIDEO
    )
    world.clock.advance(120)  # its lease expires
    assert world.reconciler().run_once().republished == 1
    delivery = world.queue.receive(timeout_s=0.1, kinds={"video"})
    assert delivery is not None and delivery.job.kind is JobKind.VIDEO
    assert world.processor(owner="w2", video=FakeVideoAnonymizer()).handle(delivery) is Outcome.DONE
    done = world.repo.get(record.id)
    assert done is not None and done.status is Status.DONE and done.attempts == 2
    keys = sorted(o.key for o in world.results.list())
    assert keys == [f"{record.id}-a2.mp4", f"{record.id}-a2.tracks.json"]  # result and tracks


def test_progress_is_written_about_once_a_second_never_per_frame(
    world: World, tmp_path: Path
) -> None:
    """Twenty frames reported, two progress writes: each write is the keeper's, at its
    tick (1 s), whatever number of frames passed since the last one."""
    record = service(world).submit(upload(world))
    writes: list[float] = []

    def count(operation: str) -> None:
        if operation == "note_progress":
            writes.append(time.monotonic())

    world.repo.before = count

    def halfway_and_at_the_end(done: int, progress: VideoProgress) -> None:
        if done in (10, 20):  # wait for the keeper's next write, frames reported
            wanted = done // 10
            wait_until(lambda: len(writes) >= wanted, timeout_s=10, what="a progress write")

    world.processor(video=FakeVideoAnonymizer(halfway_and_at_the_end)).handle(world.next_delivery())
    assert 2 <= len(writes) <= 3  # 20 frames; a third write may race the job's end
    assert writes[1] - writes[0] >= 0.5  # the keeper's pace (1 s ticks), not the frames'
    done = world.repo.get(record.id)
    assert done is not None and done.status is Status.DONE


def test_the_previous_releases_collection_never_takes_a_videos_tracks() -> None:
    """During a rolling upgrade, the previous release's sweep deletes any key of its
    shape that no record's `output_key` names: the tracks' key is not of its shape, and
    this release's sweep knows it."""
    image_id = "0123456789abcdef0123456789abcdef"
    key = tracks_key(image_id, 1)
    assert previous_release.COLLECTED_KEY.fullmatch(key) is None
    assert previous_release.COLLECTED_KEY.fullmatch(f"{image_id}-a1.jpg") is not None
    assert image_id_of_key(key) == image_id == image_id_of_key(f"{image_id}-a1.mp4")


def test_a_video_with_options_runs_as_its_own_kind_and_is_held_when_asked(
    world: World, tmp_path: Path
) -> None:
    """Issue 26: the options stored, bound to the Idempotency-Key, queued as
    `video_options`, handed to the pipeline; `review=required` holds it, and the hold is
    an event (`video.review`) for its callback."""
    hook = "https://hooks.example/in"
    chosen = UploadOptions(mode="solid", hide=(Rect(0, 0, 10, 10),), review=True, callback_url=hook)
    videos = service(world)
    record = videos.submit(upload(world), idempotency_key="k", options=chosen)
    assert record.status is Status.VIDEO_OPTIONS_PENDING and record.options == chosen
    with pytest.raises(IdempotencyKeyReused):  # the same video, other options
        videos.submit(upload(world), idempotency_key="k", options=UploadOptions(mode="blur"))
    with pytest.raises(InvalidOption):  # outside the 64 x 48 frames both ways up
        videos.submit(upload(world), options=UploadOptions(hide=(Rect(70, 0, 5, 5),)))
    assert [o.key for o in world.originals.list()] == [record.input_key]
    delivery = world.queue.receive(timeout_s=0.1, kinds={"video"})
    assert delivery is None  # not the plain video kind's: a worker before this never sees it
    pipeline = FakeVideoAnonymizer()
    processor = world.processor(video=pipeline, requested_review_ttl_s=60.0)
    assert processor.handle(world.next_delivery()) is Outcome.DONE
    assert pipeline.options == [chosen]
    held = world.repo.get(record.id)
    assert held is not None and held.status is Status.REVIEW and held.review is Review.PENDING
    (event,) = world.repo.webhooks(record.id)
    assert (event.event, event.url, event.to_operator) == ("video.review", hook, False)
