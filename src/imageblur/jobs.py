"""The worker's use case: process one job (the reconciler repairs what crashes left).

The record is the source of truth. A job is claimed (conditional update with a lease),
processed, its result stored under a key made from the image id and the attempt (a
worker whose lease lapsed never touches the result of the one that took over; a result
no record points to is collected), then marked done, then acknowledged. A crash anywhere
leaves the record pending or leased; the reconciler re-publishes it, and duplicate
messages find nothing to claim.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from imageblur.anonymizer import AnonymizedImage, Anonymizer
from imageblur.backends import Backends
from imageblur.cancel import Cancelled, Progress, checkpoint, watched
from imageblur.domain import (
    MAX_ERROR_CHARS,
    TRACKS_TYPE,
    AnonymizedVideo,
    BackendUnavailable,
    Delivery,
    ErrorCode,
    ImageRecord,
    InvalidImage,
    JobKind,
    ObjectMissing,
    OriginalUnreadable,
    ProcessingError,
    QueueUnavailable,
    VideoRefused,
    attempt_key,
    render_key,
    tracks_key,
    utcnow,
)
from imageblur.leases import LeaseKeeper, LeaseTerms
from imageblur.logs import get_logger
from imageblur.metrics import Metrics
from imageblur.ports import JobLeases, VideoAnonymizer, VideoProgress
from imageblur.workdir import WorkDir, WorkSpaceShort, job_folder

log = get_logger(__name__)

STREAM_CHUNK_BYTES = 1024 * 1024  # a video's original and result, to and from the store


def _reporter(progress: Progress) -> VideoProgress:
    """A video's progress callback: counts frames for the lease keeper (which writes
    them to the record about once a second) and stops the work once it is cancelled."""

    def report(done: int, total: int) -> None:
        progress.done, progress.total = done, total
        if progress.cancelled.is_set():
            raise Cancelled("the job's lease was lost")

    return report


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(STREAM_CHUNK_BYTES):
            yield chunk


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """The job's own work folder (`workdir`), or, in a process without work folders
    (unit tests), a temporary folder of its own; removed when the job ends either way."""
    folder = job_folder()
    if folder is not None:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="imageblur-video-") as made:
        yield Path(made)


def worker_identity() -> str:
    """Unique per process: a lease names the process that holds it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# Room beside a video's original and result (the pipeline's own small files).
VIDEO_WORK_SLACK_BYTES = 16 * 1024 * 1024
# How often a video job's lease keeper writes its progress (and checks its record).
VIDEO_PROGRESS_S = 1.0


def work_space_needed(kind: JobKind, record: ImageRecord) -> int:
    """Bytes of work folder a job of `kind` may write at most, checked free before it
    starts. A picture is read, decoded, anonymized and encoded in memory (its pixels
    bounded by the pixel budget), and a sandboxed HEIC/AVIF decoder writes nothing:
    none. A video is downloaded to the folder and its result written there: twice its
    size (the result is re-encoded at a like bit rate), and some slack."""
    if kind.video:
        return 2 * record.bytes + VIDEO_WORK_SLACK_BYTES
    return 0


WorkNeed = Callable[[JobKind, ImageRecord], int]


def _code_of(exc: InvalidImage) -> ErrorCode:
    return ErrorCode.TOO_MANY_SCANS if exc.code == "too_many_scans" else ErrorCode.INVALID_IMAGE


# The pipeline's `BrokenVideo` codes that are the render's own failure, not the input's
# (read by value: the worker does not import the pipeline).
_OUR_FAILURES = {code.value: code for code in (ErrorCode.AUDIO_FAILED, ErrorCode.ENCODE_FAILED)}


def _video_code(exc: ProcessingError) -> ErrorCode:
    """A video's failure: its sound or its frames not written, else undecodable input."""
    return _OUR_FAILURES.get(str(getattr(exc, "code", "")), ErrorCode.INVALID_VIDEO)


class Outcome(StrEnum):
    DONE = "done"
    FAILED = "failed"
    RETRY = "retry"
    DEAD_LETTERED = "dead_lettered"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    base_delay_s: float
    max_delay_s: float

    def delay_s(self, attempt: int) -> float:
        """Exponential back-off: base, 2 base, 4 base, ... capped."""
        # The exponent is capped: a retry count in the thousands (a long outage) would
        # overflow the float long after the delay reached its cap.
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** min(max(attempt - 1, 0), 60)))


class JobProcessor:
    """Processes one delivered job and settles it. `outage_patience_s` is how long a job
    waits out a back end's outage before the error counts as an attempt; the lease is
    renewed every `lease_renew_interval_s`, for `max_lease_renewals` leases whatever the
    job does, then as long as it makes progress (`leases`); the record is read every
    `lease_check_interval_s` between renewals, and the job stops once it is deleted;
    `on_lease_renewed` is called after every renewal that succeeded (the worker's
    heartbeat: a liveness probe then sees a long job that makes progress as alive, and a
    hung one, whose renewals stopped, as stuck); `on_stuck` is called once a job whose
    lease was given up or lost has not moved for `stuck_s` (`leases`)."""

    def __init__(
        self,
        *,
        backends: Backends,
        anonymizer: Anonymizer,
        retry: RetryPolicy,
        lease_s: float,
        lease_renew_interval_s: float,
        max_lease_renewals: int,
        outage_patience_s: float,
        lease_check_interval_s: float = 2.0,
        keep_originals: bool,
        review_ttl_s: float | None = None,
        requested_review_ttl_s: float | None = None,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_lease_renewed: Callable[[], None] | None = None,
        stuck_s: float | None = None,
        on_stuck: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
        work_dir: WorkDir | None = None,
        work_need: WorkNeed = work_space_needed,
        video: VideoAnonymizer | None = None,
    ) -> None:
        self._b = backends
        self._repo: JobLeases = backends.repository
        self._queue = backends.queue
        self._anonymize = anonymizer
        self._retry = retry
        self._lease_s = lease_s
        # Renewed whatever the progress for max_lease_renewals leases, then while the
        # job progresses (`leases`); the record read between renewals.
        self._lease_terms = LeaseTerms(
            lease_s=lease_s,
            renew_s=lease_renew_interval_s,
            check_s=lease_check_interval_s,
            floor_s=max_lease_renewals * lease_s,
        )
        # Retries come at most every max_delay_s once the back-off has grown, so this
        # many retries of one message take at least the patience.
        self._outage_retries = math.ceil(outage_patience_s / max(retry.max_delay_s, 1.0))
        self._keep_originals = keep_originals
        # None: review off (done at once); else how long a result is held for review.
        self._review_ttl_s = review_ttl_s
        self._review_ttl = timedelta(seconds=review_ttl_s or 0)
        # The hold of a picture whose upload asked for review (`review=required`) on a
        # server that holds none otherwise (the API refuses it without the means).
        self._requested_review_ttl = timedelta(seconds=requested_review_ttl_s or 0)
        self.owner = owner or worker_identity()
        self._clock = clock
        self._on_lease_renewed = on_lease_renewed
        self._stuck_s, self._on_stuck = stuck_s, on_stuck
        self._metrics = metrics or Metrics()
        # None: no work folders (the unit tests of other things, `imageblur blur`).
        self._work_dir = work_dir
        self._work_need = work_need
        # None: this worker runs no video (IMAGEBLUR_VIDEO off here).
        self._video = video
        self._video_terms = replace(self._lease_terms, check_s=VIDEO_PROGRESS_S)

    def _lease_owner(self) -> str:
        """Who holds the lease of the job this thread handles: the process and the
        thread. Two job threads of one worker must not pass for each other: a render
        that a newer correction superseded would otherwise complete, as the lease's
        owner, over the newer render another thread of the same worker had claimed."""
        return f"{self.owner}:{threading.get_native_id()}"

    def handle(self, delivery: Delivery) -> Outcome:
        """Process one delivery and settle it (ack, retry or dead letter)."""
        job = delivery.job
        bound = log.bind(image_id=job.image_id, attempt=job.attempt)
        try:
            record = self._repo.claim(
                job.image_id,
                owner=self._lease_owner(),
                lease_s=self._lease_s,
                now=self._clock(),
                kind=job.kind,
            )
        except BackendUnavailable as exc:
            # The record cannot be read, so the attempt cannot count: an outage of the
            # database must not park good jobs. Wait the longest delay and try again; the
            # record stays pending, and the reconciler re-publishes it in any case.
            delay_s = self._retry.max_delay_s
            reason = f"{exc.backend}: {exc}"
            bound.warning("job.claim_unavailable", delay_s=delay_s, reason=reason)
            self._retry_later(delivery, delay_s, reason)
            return Outcome.RETRY
        if record is None:
            bound.info("job.skipped", reason="not claimable (done, failed, deleted or leased)")
            self._settle(self._queue.ack, delivery)
            return Outcome.SKIPPED
        bound = bound.bind(attempt=record.attempts)
        if record.attempts > self._retry.max_attempts:
            # Earlier attempts ended without settling: the worker died on this image
            # (out of memory, a crash in native code). Stop before it kills another.
            return self._retry_or_dead_letter(
                delivery, record, ErrorCode.WORKER_STOPPED, ErrorCode.WORKER_STOPPED.message
            )
        bound.info("job.claimed", kind=job.kind.value)
        if record.attempts == 1 and job.kind.detects:  # the wait since upload
            self._metrics.claimed(created_at=record.created_at, now=self._clock())
        return self._run(delivery, record, bound)

    def _run(self, delivery: Delivery, record: ImageRecord, bound: Any) -> Outcome:
        """Run a claimed job in its work folder; settle it by what it raised."""
        job = delivery.job
        try:
            with self._job_folder(job.kind, record):
                if job.kind.video:
                    return self._process_video(delivery, record)
                if job.kind.renders:
                    return self._render(delivery, record)
                return self._process(delivery, record)
        except Cancelled:  # deleted, or the lease lost, mid-job: the work stopped early
            return self._lease_lost(delivery, record.id, None)
        except VideoRefused as exc:  # the pipeline refused what the API's probe passed
            reason = f"cannot process the video: {exc.message}"
            return self._fail(delivery, record, ErrorCode.INVALID_VIDEO, reason, public=exc.message)
        except InvalidImage as exc:  # its message is public: the API answers it to uploads
            reason = f"cannot decode the image: {exc.message}"
            return self._fail(delivery, record, _code_of(exc), reason, public=exc.message)
        except ObjectMissing as exc:
            return self._fail(delivery, record, ErrorCode.ORIGINAL_MISSING, str(exc))
        except OriginalUnreadable as exc:  # names key ids only
            return self._wait_for_keys(delivery, record, str(exc))
        except ProcessingError as exc:  # for a video: corrupt or truncated mid-file
            code = _video_code(exc) if job.kind.video else ErrorCode.INTERNAL_ERROR
            return self._fail(delivery, record, code, str(exc))
        except WorkSpaceShort as exc:  # the disk is not the image's fault: wait for it
            bound.warning("job.work_space_short", need=exc.need, available=exc.available)
            self._metrics.work_space_short.inc()
            return self._wait_for_backend(delivery, record, f"{exc.backend}: {exc}")
        except BackendUnavailable as exc:
            return self._wait_for_backend(delivery, record, f"{exc.backend}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bug or a library failure: retry, then park
            bound.exception("job.error")
            reason = f"internal error: {type(exc).__name__}: {exc}"
            return self._retry_or_dead_letter(delivery, record, ErrorCode.INTERNAL_ERROR, reason)

    def _process(self, delivery: Delivery, record: ImageRecord) -> Outcome:
        """A first job: detect, hide, store; held for review when review is on."""
        with self._keep_lease(record.id):
            with self._metrics.stage("read"):
                original = self._b.originals.get(record.input_key)
            # The record says which format the result is in (decided at upload), and
            # what the client chose (`options`).
            anonymize = self._anonymize.choosing(record.options)
            result = anonymize(original, content_type=record.content_type)
            checkpoint()  # deleted meanwhile: store nothing
            # A key of this attempt's: see `attempt_key`.
            key = attempt_key(record.id, record.attempts, result.extension)
            out_key = self._store_result(record, result, key)
        now = self._clock()
        hold_until = self._hold_until(record, now)
        done = self._complete(
            record, result, out_key, now, regions=result.regions, hold_until=hold_until
        )
        if not done:
            return self._lease_lost(delivery, record.id, out_key)
        self._finished(result, record.id, held=hold_until is not None)
        if hold_until is None and not self._keep_originals:
            self._b.delete_quietly(self._b.originals, record.input_key, image_id=record.id)
        self._settle(self._queue.ack, delivery)
        return Outcome.DONE

    def _hold_until(self, record: ImageRecord, now: datetime) -> datetime | None:
        """When a first job's result stops waiting for review; None: not held."""
        if self._review_ttl_s is not None:
            return now + self._review_ttl
        if record.options is not None and record.options.review:
            return now + self._requested_review_ttl
        return None

    def _process_video(self, delivery: Delivery, record: ImageRecord) -> Outcome:
        """A video: its original streamed into the job's folder, anonymized there
        (`VideoAnonymizer`, whose progress the lease keeper writes to the record about
        once a second), the result streamed to the store under its attempt's key; the
        folder goes with the job, whatever the way it ends."""
        if self._video is None:  # given back, uncounted, for a worker that runs videos
            reason = "videos are not enabled on this worker (IMAGEBLUR_VIDEO)"
            return self._wait_for_backend(delivery, record, reason)
        with self._keep_lease(record.id, video=True) as progress, _scratch() as folder:
            source = folder / f"original{Path(record.input_key).suffix}"
            with self._metrics.stage("read"):
                self._download(record.input_key, source)
            with self._metrics.stage("video"):
                result = self._video.anonymize(
                    source, folder / "result", _reporter(progress), options=record.options
                )
            checkpoint()  # deleted meanwhile: store nothing
            key, plan_key = self._store_video(record, result, folder / "result")
        now = self._clock()
        hold_until = self._hold_until(record, now)
        done = self._repo.complete_video(
            record.id,
            owner=self._lease_owner(),
            output_key=key,
            url=self._b.results.url(key),
            faces=result.tracks,
            frames=result.frames,
            audio=result.audio,
            now=now,
            hold_until=hold_until,
            tracks_key=plan_key,
        )
        if not done:
            if plan_key is not None:
                self._b.delete_quietly(self._b.results, plan_key, image_id=record.id)
            return self._lease_lost(delivery, record.id, key)
        log.info(
            "job.done",
            image_id=record.id,
            kind=delivery.job.kind.value,
            faces=result.tracks,
            frames=result.frames,
            audio=result.audio,
            held_for_review=hold_until is not None,
        )
        self._metrics.video_done(seconds=record.duration_s, frames=result.frames)
        if hold_until is None and not self._keep_originals:
            self._b.delete_quietly(self._b.originals, record.input_key, image_id=record.id)
        self._settle(self._queue.ack, delivery)
        return Outcome.DONE

    def _store_video(
        self, record: ImageRecord, result: AnonymizedVideo, path: Path
    ) -> tuple[str, str | None]:
        """The result streamed to the store, and its tracks beside it, under this
        attempt's keys (`attempt_key`, `tracks_key`): (result key, tracks key or None)."""
        key = attempt_key(record.id, record.attempts, result.extension)
        plan_key = None if result.track_plan is None else tracks_key(record.id, record.attempts)
        with self._metrics.stage("store"):
            chunks = _file_chunks(path)
            self._b.results.put_stream(key, chunks, content_type=result.content_type)
            if plan_key is not None and result.track_plan is not None:
                self._b.results.put(plan_key, result.track_plan, content_type=TRACKS_TYPE)
        return key, plan_key

    def _download(self, key: str, target: Path) -> None:
        """An original streamed from the store into a file, a chunk at a time."""
        with self._b.originals.open(key) as src, target.open("wb") as out:
            shutil.copyfileobj(src, out, STREAM_CHUNK_BYTES)

    def _render(self, delivery: Delivery, record: ImageRecord) -> Outcome:
        """A correction's job: hide exactly the recorded regions, no detection; the result
        goes under its revision's key, and the one it replaces is deleted."""
        with self._keep_lease(record.id):
            found = self._repo.regions(record.id)
            if found is None:  # deleted meanwhile
                return self._lease_lost(delivery, record.id, None)
            revision, regions = found
            with self._metrics.stage("read"):
                original = self._b.originals.get(record.input_key)
            anonymize = self._anonymize.choosing(record.options)
            result = anonymize.render(original, regions, content_type=record.content_type)
            checkpoint()
            key = render_key(record.id, revision, result.extension)
            out_key = self._store_result(record, result, key)
        if not self._complete(record, result, out_key, self._clock()):
            return self._lease_lost(delivery, record.id, out_key)
        if record.output_key and record.output_key != out_key:
            self._b.delete_quietly(self._b.results, record.output_key, image_id=record.id)
        self._finished(result, record.id, held=True, revision=revision)
        self._settle(self._queue.ack, delivery)
        return Outcome.DONE

    def _complete(
        self,
        record: ImageRecord,
        result: AnonymizedImage,
        out_key: str,
        now: datetime,
        **first_job: Any,
    ) -> bool:
        """Record the stored result (a first job also passes its regions and hold)."""
        return self._repo.complete(
            record.id,
            owner=self._lease_owner(),
            output_key=out_key,
            url=self._b.results.url(out_key),
            faces=result.faces,
            plates=result.plates,
            now=now,
            **first_job,
        )

    def _store_result(self, record: ImageRecord, result: AnonymizedImage, key: str) -> str:
        if result.jpeg_fallback:
            log.info("jpeg.full_reencode", image_id=record.id, reason=result.jpeg_fallback)
        with self._metrics.stage("store"):
            self._b.results.put(key, result.data, content_type=result.content_type)
        return key

    def _lease_lost(self, delivery: Delivery, image_id: str, out_key: str | None) -> Outcome:
        """The lease was lost: the image was deleted meanwhile, our lease expired and
        another worker took over, or a newer correction superseded this render. Our
        result's key is our attempt's (or revision's) own, so deleting it never deletes
        the result of the worker that took over."""
        record = self._repo.get(image_id)
        if out_key is not None and (record is None or record.output_key != out_key):
            self._b.delete_quietly(self._b.results, out_key, image_id=image_id)
        log.warning("job.lease_lost", image_id=image_id)
        self._settle(self._queue.ack, delivery)
        return Outcome.SKIPPED

    def _finished(
        self, result: AnonymizedImage, image_id: str, *, held: bool, revision: int | None = None
    ) -> None:
        log.info(
            "job.done",
            image_id=image_id,
            faces=result.faces,
            plates=result.plates,
            bytes=len(result.data),
            held_for_review=held,
            revision=revision,
        )
        if revision is None:  # a picture anonymized, not a correction's re-render
            self._metrics.anonymized(
                faces=result.faces,
                plates=result.plates,
                width=result.width,
                height=result.height,
                timings=result.timings,
            )

    @contextlib.contextmanager
    def _job_folder(self, kind: JobKind, record: ImageRecord) -> Iterator[None]:
        """The job's own work folder, removed when it ends whatever the way; raises
        `WorkSpaceShort` before the job starts when the space it needs is not free."""
        if self._work_dir is None:
            yield
            return
        name = f"{record.id}-{record.attempts}"
        with self._work_dir.job(name, self._work_need(kind, record)):
            yield

    @contextlib.contextmanager
    def _keep_lease(self, image_id: str, *, video: bool = False) -> Iterator[Progress]:
        """Renew the lease while the job runs and makes progress (`leases.LeaseKeeper`):
        on a slow or throttled node a large image may take longer than one lease, and a
        job taken over mid-way would run twice and count an attempt it did not fail.
        Once the keeper finds the record deleted or the lease lost, the work in the block
        stops at its next checkpoint (`Cancelled`, between stages and detection tiles):
        its result would be thrown away."""
        keeper = LeaseKeeper(
            self._repo,
            image_id,
            self._lease_owner(),  # the job's thread's, not the keeper's
            self._video_terms if video else self._lease_terms,
            clock=self._clock,  # leases are measured on it (a test's, too)
            on_renewed=self._on_lease_renewed,
            notes_progress=video,
            stuck_s=self._stuck_s,
            on_stuck=self._on_stuck,
        )
        keeper.start()
        try:
            with watched(keeper.progress) as progress:
                yield progress
        finally:
            keeper.stop()

    def _fail(
        self,
        delivery: Delivery,
        record: ImageRecord,
        code: ErrorCode,
        reason: str,
        *,
        public: str | None = None,
    ) -> Outcome:
        """Fail the picture for a reason retrying will not fix: the record gets the code
        and a short public text (`public`, else the code's), the log the whole `reason`.
        A detect job's picture fails and its original goes; a render's picture goes back
        to review with its previous result (the repository's `fail`)."""
        error = (public or code.message)[:MAX_ERROR_CHARS]
        try:
            failed = self._repo.fail(
                record.id, owner=self._lease_owner(), error=error, code=code, now=self._clock()
            )
        except BackendUnavailable:
            # Settle anyway: an unsettled message would hold this worker's prefetch
            # slot until the broker's consumer timeout. If the retry comes back while
            # our lease still runs it is skipped; once the lease has expired the
            # reconciler re-publishes the job and it is judged again.
            delay_s = self._retry.max_delay_s
            log.warning("job.fail_not_recorded", image_id=record.id, reason=reason)
            self._retry_later(delivery, delay_s, reason)
            return Outcome.RETRY
        log.warning(
            "job.failed",
            image_id=record.id,
            kind=delivery.job.kind.value,
            code=code.value,
            reason=reason,
        )
        if failed:
            self._forget_original(delivery, record)
        self._settle(self._queue.ack, delivery)
        return Outcome.FAILED

    def _forget_original(self, delivery: Delivery, record: ImageRecord) -> None:
        """Once a detect job has failed or is parked, its original is deleted at once
        (unless kept): nobody will process it. A render's picture is back in review,
        where a reviewer still needs it."""
        first = delivery.job.kind.detects or delivery.job.kind.video
        if first and not self._keep_originals:
            self._b.delete_quietly(self._b.originals, record.input_key, image_id=record.id)

    def _wait_for_backend(self, delivery: Delivery, record: ImageRecord, reason: str) -> Outcome:
        """A back end failed mid-job. Not the image's fault: the attempt is given back and
        the job retried, with delays growing to `max_delay_s`, for as long as the outage
        lasts. Counting it would dead-letter every image in flight during a 15 s store
        restart, and garbage collection would then delete their originals.

        Patience has an end: after `outage_patience_s` of retries of the message, the
        error is treated as the image's own (a store refusing one object, say) and
        counts."""
        code = ErrorCode.BACKEND_UNAVAILABLE
        if delivery.job.attempt >= self._outage_retries:
            return self._retry_or_dead_letter(delivery, record, code, reason)
        self._release_uncounted(record, code)
        delay_s = self._retry.delay_s(delivery.job.attempt + 1)
        log.warning("job.backend_unavailable", image_id=record.id, delay_s=delay_s, reason=reason)
        self._retry_later(delivery, delay_s, reason)
        return Outcome.RETRY

    def _release_uncounted(self, record: ImageRecord, code: ErrorCode) -> None:
        """Give the job back without using an attempt: the fault is not the image's."""
        with contextlib.suppress(BackendUnavailable):  # else the lease expires by itself
            self._repo.release(
                record.id,
                owner=self._lease_owner(),
                error=code.message,
                code=code,
                now=self._clock(),
                count_attempt=False,
            )

    def _wait_for_keys(self, delivery: Delivery, record: ImageRecord, reason: str) -> Outcome:
        """The original does not open: a key missing from this process (a wrong key, a
        rotation done out of order), or a plaintext original refused. Fixing the keys
        fixes it, and failing would delete the original for good: the attempt is given
        back and the job comes back every `max_delay_s`, with no patience and no dead
        letter, until the keys are fixed or the picture is finished or deleted. The
        process's readiness (`originals_key`) shows it meanwhile."""
        code = ErrorCode.ORIGINAL_UNREADABLE
        self._release_uncounted(record, code)
        delay_s = self._retry.max_delay_s
        log.error("job.original_unreadable", image_id=record.id, delay_s=delay_s, reason=reason)
        self._retry_later(delivery, delay_s, reason)
        return Outcome.RETRY

    def _retry_or_dead_letter(
        self, delivery: Delivery, record: ImageRecord, code: ErrorCode, reason: str
    ) -> Outcome:
        """Retry after a delay, or past the attempts fail and park the job. The record
        gets the code and its public text; `reason`, which may name hosts and paths, goes
        to the log and the dead letter only."""
        attempt = record.attempts
        image_id = delivery.job.image_id
        now = self._clock()
        if attempt >= self._retry.max_attempts:
            try:
                if self._repo.fail(
                    image_id, owner=self._lease_owner(), error=code.message, code=code, now=now
                ):
                    self._forget_original(delivery, record)
            except BackendUnavailable:
                log.warning("job.fail_not_recorded", image_id=image_id)
            log.error("job.dead_lettered", image_id=image_id, attempt=attempt, reason=reason)
            self._settle(lambda d: self._queue.dead_letter(d, reason=reason), delivery)
            return Outcome.DEAD_LETTERED
        # If this fails the lease expires by itself, then the job can be claimed again.
        with contextlib.suppress(BackendUnavailable):
            self._repo.release(
                image_id, owner=self._lease_owner(), error=code.message, code=code, now=now
            )
        delay_s = self._retry.delay_s(attempt)
        log.warning("job.retry", image_id=image_id, attempt=attempt, delay_s=delay_s, reason=reason)
        self._retry_later(delivery, delay_s, reason)
        return Outcome.RETRY

    def _retry_later(self, delivery: Delivery, delay_s: float, reason: str) -> None:
        self._settle(lambda d: self._queue.retry(d, delay_s=delay_s, reason=reason), delivery)

    def _settle(self, action: Callable[[Delivery], None], delivery: Delivery) -> None:
        try:
            action(delivery)
        except QueueUnavailable:
            # The broker redelivers an unsettled message; claiming makes that harmless.
            log.warning("job.settle_failed", image_id=delivery.job.image_id)
