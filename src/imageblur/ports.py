"""The small interfaces the services depend on. Adapters implement them; nothing else
in the core imports a driver.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from imageblur.domain import (
    AnonymizedVideo,
    AudioOutcome,
    CloserLook,
    DeadLetter,
    Delivery,
    DetectionThresholds,
    ErrorCode,
    Event,
    EventRole,
    Face,
    ImageRecord,
    Job,
    JobKind,
    MediaKind,
    ObjectRange,
    PictureStats,
    Region,
    StoredObject,
    UploadOptions,
    VideoFacts,
    WebhookMessage,
)

RGBImage = npt.NDArray[np.uint8]  # H x W x 3, RGB, C-contiguous


class ObjectStore(Protocol):
    """Blobs under server-made keys, in one location (a folder, or a bucket plus prefix).

    Raises `ObjectMissing` for an absent key and `StoreUnavailable` when the store
    cannot be reached. Pictures go whole (`put`, `get`); large objects (videos) stream
    (`put_stream`, `open`, `get_range`), in memory bounded by a part, never the object.
    """

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store `data` atomically: readers see the whole object or none."""

    def get(self, key: str) -> bytes: ...

    def put_stream(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> None:
        """Store the concatenated `chunks` atomically, holding at most a bounded part of
        them at once. If `chunks` raises (or the store fails) midway, its exception
        propagates and nothing is left behind: no object, no temp file, no pending
        upload."""

    def open(self, key: str) -> BinaryIO:
        """The object as a readable binary stream (a context manager; close it). Raises
        `ObjectMissing` here; a read may raise `StoreUnavailable`."""

    def get_range(self, key: str, start: int, end: int) -> ObjectRange:
        """Bytes `[start, end)` of the object, clipped to its size (empty past its end),
        and its size. Raises `ValueError` unless 0 <= start <= end."""

    def delete(self, key: str) -> None:
        """Remove the object; deleting an absent key is not an error."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every object whose key starts with `prefix` (for garbage collection)."""

    def url(self, key: str) -> str:
        """A stable address of the object, recorded in the metadata (`file://`, `s3://`)."""

    def presigned_url(self, key: str, *, expires_s: int) -> str | None:
        """A time-limited URL a client can fetch directly, or None if the store has none."""

    def check(self) -> None:
        """Raise `StoreUnavailable` unless the store is reachable and usable."""

    def close(self) -> None: ...


# The image metadata and the job state machine on top of it, split by role: each use case
# depends on the roles it uses, and one adapter class (SQLite, PostgreSQL, the unit
# tests' fake) implements them all (`backends.Repository`). State changes are conditional
# updates, so that many workers, duplicate messages and crashed workers (expired leases)
# can never produce two results for one image; the transitions are written once, as data,
# in `imageblur.lifecycle`. Every method raises `RepositoryUnavailable` when the
# database cannot be reached.


class PictureLookup(Protocol):
    """Reading one picture: what every role needs."""

    def get(self, image_id: str) -> ImageRecord | None: ...

    def regions(self, image_id: str) -> tuple[int, Sequence[Region]] | None:
        """The picture's revision and regions (empty before it is processed, and for
        pictures processed before regions were recorded); None if there is no picture."""


class Pictures(PictureLookup, Protocol):
    """The pictures' records as the API keeps them: upload, list, delete, count."""

    def add(self, record: ImageRecord) -> ImageRecord:
        """Insert a new record (event `uploaded`, role api). If its idempotency key is
        already used, return the existing record (with its own `body_sha256`, so the
        caller can tell another body) instead of inserting. Raises `Conflict` if a record
        with its id exists."""

    def list(
        self, *, limit: int, offset: int = 0, kind: MediaKind = "picture"
    ) -> Sequence[ImageRecord]:
        """The records of one kind (pictures, or videos), newest first."""

    def count(self, *, kind: MediaKind = "picture") -> int: ...

    def picture_stats(self) -> PictureStats:
        """Pictures (never videos) per status and the oldest pending upload, for the
        metrics gauges: cheap on a table of millions (indexes, or the planner's estimate
        for the finished statuses of a large table), never a full scan per call."""

    def delete(self, image_id: str) -> ImageRecord | None:
        """Remove the record, its regions and its history; return what it was, or None if
        there was none."""


class JobLeases(PictureLookup, Protocol):
    """A worker's side of the job state machine: take a job under a lease, hold it, and
    end it; and the publisher's note that a job's message is in the queue."""

    def claim(
        self,
        image_id: str,
        *,
        owner: str,
        lease_s: float,
        now: datetime,
        kind: JobKind = JobKind.DETECT,
    ) -> ImageRecord | None:
        """Take the job. DETECT: pending, or processing with an expired lease, becomes
        processing under `owner` until now + lease_s, attempts + 1. RENDER: rendering
        without a live lease becomes rendering leased to `owner`, attempts + 1. None if
        it cannot be taken (another status, deleted, or leased by a live worker)."""

    def extend_lease(self, image_id: str, *, owner: str, lease_s: float, now: datetime) -> bool:
        """Hold a claimed job (processing or rendering) until now + lease_s: a worker
        renews its lease while it works, so a slow image is not taken over. False if the
        lease was lost."""

    def note_progress(
        self,
        image_id: str,
        *,
        owner: str,
        frames_done: int,
        frames_total: int,
        eta_s: float | None,
        now: datetime,
    ) -> bool:
        """A running video job's progress, written by its lease keeper (about once a
        second, never per frame): on video_processing held by `owner`, without a time
        stamp or an audit line. False if the lease was lost (deleted, taken over): the
        same write is the keeper's check."""

    def complete_video(
        self,
        image_id: str,
        *,
        owner: str,
        output_key: str,
        url: str,
        faces: int,
        frames: int,
        audio: AudioOutcome,
        now: datetime,
        hold_until: datetime | None = None,
        tracks_key: str | None = None,
    ) -> bool:
        """The end of a video job held by `owner`: video_processing -> done, or -> review
        (review pending, held until `hold_until`); `faces` is the number of face tracks
        hidden, `frames` the frames decoded, `audio` what became of the sound,
        `tracks_key` where its tracks are in the results store (None: none); the
        progress is cleared. Appends the event `processed`. False if the lease was lost."""

    def complete(
        self,
        image_id: str,
        *,
        owner: str,
        output_key: str,
        url: str,
        faces: int,
        now: datetime,
        plates: int = 0,
        regions: Sequence[Region] = (),
        hold_until: datetime | None = None,
    ) -> bool:
        """The end of a job held by `owner`, with the counts of faces and plates hidden.
        processing -> done, or -> review (review pending, held until `hold_until`) when
        `hold_until` is given; `regions` become the record's regions at its revision.
        rendering -> review (the regions are the record's already). Appends the event
        `processed` or `rendered`. False if the lease was lost."""

    def fail(
        self, image_id: str, *, owner: str, error: str, code: ErrorCode, now: datetime
    ) -> bool:
        """processing (held by owner) -> failed, with the reason: its code and short public
        text (event `failed`); rendering (held by owner) -> review, review pending, with
        the reason and the result it had before the correction (event `render_failed`): a
        render never fails a picture, whose original a reviewer still needs. False if the
        lease was lost."""

    def release(
        self,
        image_id: str,
        *,
        owner: str,
        error: str,
        code: ErrorCode,
        now: datetime,
        count_attempt: bool = True,
    ) -> bool:
        """processing (held by owner) -> pending, or rendering (held by owner) -> rendering
        unleased, keeping the reason (code and public text); for retries. The
        job counts as unpublished (its retry message may be lost on the way back from a
        delay queue). With `count_attempt` False the claim's attempt is given back: a
        back-end outage is not the image's fault and must not use up its attempts."""

    def mark_published(self, image_id: str, *, now: datetime, if_updated_at: datetime) -> None:
        """Note that the job's message is in the queue (the broker confirmed it), so the
        reconciler need not publish it again while it waits its turn. Only if the record
        is still pending (or rendering: a RENDER job) as of `if_updated_at`, the version
        the publisher saw: a worker may have claimed and released it meanwhile, and its
        retry must stay unconfirmed."""


class Reviews(PictureLookup, Protocol):
    """A reviewer's side: correct the regions, approve the result, read the trail."""

    def correct(
        self,
        image_id: str,
        *,
        expected_revision: int,
        regions: Sequence[Region],
        role: EventRole,
        now: datetime,
        reviewer: str | None = None,
        reasons: Mapping[str, str] | None = None,
    ) -> ImageRecord:
        """Replace the regions, in one conditional update: review or rendering at
        `expected_revision` -> rendering (unleased, unpublished, attempts 0), revision + 1,
        event `corrected` (naming `reviewer`, with their `reasons`). Raises `NotFound`,
        `OriginalGone` (done or failed), `Rendering` (pending or processing: not yet
        detected), `StaleRevision`."""

    def approve(
        self, image_id: str, *, role: EventRole, now: datetime, reviewer: str | None = None
    ) -> ImageRecord:
        """review -> done, review approved, event `approved` (naming `reviewer`). Raises `NotFound`,
        `Rendering` (a correction's render is pending), `NotInReview` (any other)."""

    def history(self, image_id: str) -> Sequence[Event]:
        """The picture's audit trail, oldest first (empty if there is none)."""


class Upkeep(Protocol):
    """What the reconciler repairs and expires, and the lease that lets one process out
    of many do it."""

    def get_many(self, image_ids: Sequence[str]) -> dict[str, ImageRecord]:
        """The records of those ids that exist, by id, in one round trip (garbage
        collection looks up a whole page of stored keys at once)."""

    def requeue_stale(
        self,
        *,
        pending_before: datetime,
        published_before: datetime,
        now: datetime,
        limit: int,
    ) -> Sequence[str]:
        """Take the jobs the reconciler must (re-)publish and return their ids: pending
        without a confirmed message and untouched since `pending_before` (the API died
        between record and message, or a publish failed); pending with a message
        published before `published_before` (a safety net for a message the broker
        lost, far longer than any backlog should wait); processing with a lease expired
        at `now`. They become pending and unpublished as of `now`: a long backlog is not
        re-published on every pass, and concurrent reconcilers never take the same row.
        Rendering rows are taken by the same rules and stay rendering (unleased): their
        job is a RENDER."""

    def expire_holds(self, *, now: datetime, limit: int) -> Sequence[ImageRecord]:
        """review with held_until <= now -> done, review expired, event `expired` (role
        system); the records as they are now, so their originals can be deleted."""

    def take_lease(self, name: str, *, owner: str, ttl_s: float, now: datetime) -> bool:
        """Hold the named maintenance task until now + ttl_s if it is free, expired or
        already `owner`'s; True if `owner` holds it now. Lets one process out of many
        run a periodic job such as garbage collection, and another take over when that
        process dies."""


class Outbox(Protocol):
    """The webhook outbox: rows written by the transitions that notify (`lifecycle.Notify`,
    in their transaction, when the repository was given a webhook URL), sent by each
    worker's sender. A row is taken under a lease, so of many senders one has it at a
    time, and a sender that died leaves it to another once the lease ends."""

    def claim_webhooks(
        self, *, owner: str, lease_s: float, now: datetime, limit: int
    ) -> Sequence[WebhookMessage]:
        """Take up to `limit` rows due at `now` (undelivered, not given up, next attempt
        due, no live lease), oldest due first: leased to `owner` until now + lease_s,
        attempts + 1. Concurrent callers never take the same row."""

    def webhook_delivered(self, webhook_id: str, *, now: datetime) -> bool:
        """The row was delivered (whoever holds its lease now: it was). False if it is
        gone (deleted with its record) or finished already."""

    def webhook_retry(
        self, webhook_id: str, *, owner: str, next_attempt_at: datetime, error: str
    ) -> bool:
        """An attempt failed: due again at `next_attempt_at`, the lease freed, `error`
        kept. False unless `owner` holds the row's lease."""

    def webhook_given_up(self, webhook_id: str, *, owner: str, reason: str, now: datetime) -> bool:
        """No more attempts: the row is finished as given up, and the record's audit
        trail gets the event `webhook_given_up` (role system) with the event's name and
        the reason, in one transaction. False unless `owner` holds the row's lease."""

    def webhooks(self, image_id: str) -> Sequence[WebhookMessage]:
        """The record's outbox rows, oldest first (what became of its events)."""

    def outbox_depth(self) -> int:
        """Rows still to be delivered (the `imageblur_webhook_outbox` gauge)."""

    def sweep_webhooks(self, *, finished_before: datetime) -> int:
        """Delete rows delivered or given up before `finished_before`, at most a batch
        (`outbox.SWEEP_BATCH`) a call: how many went. What became of an event stays in
        the audit trail when it was given up."""


class Schema(Protocol):
    """The database itself: its schema, its reachability, its connections."""

    def migrate(self, *, to_version: int | None = None) -> None:
        """Create or upgrade the schema, to this release's version or to `to_version` (an
        older one, for the upgrade tests); idempotent and safe to run concurrently."""

    def check(self) -> None: ...

    def close(self) -> None: ...


class JobQueue(Protocol):
    """At-least-once delivery of small JSON jobs, with delayed retry and a dead letter.

    Raises `QueueUnavailable` when the broker cannot be reached.
    """

    def publish(self, job: Job) -> None:
        """Hand the job to the broker durably (confirmed) before returning."""

    def receive(self, *, timeout_s: float, kinds: Collection[str] | None = None) -> Delivery | None:
        """The next job, or None after `timeout_s` without one. `kinds`: only from the
        queues of those job kinds (a thread kept for pictures); None: from every queue
        this handle consumes."""

    def ack(self, delivery: Delivery) -> None: ...

    def retry(self, delivery: Delivery, *, delay_s: float, reason: str) -> None:
        """Settle this delivery and deliver the job again, attempt + 1, after `delay_s`."""

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        """Settle this delivery and park the job, with its reason, for a human."""

    def take_dead_letters(self, *, limit: int = 1000) -> list[DeadLetter]:
        """Take up to `limit` parked jobs, oldest first, with their reasons (operators
        and tests read them; taken, they are gone from the queue)."""

    def check(self) -> None: ...

    def close(self) -> None: ...


class FaceDetector(Protocol):
    """Finds faces in an upright RGB image. Loaded once, shared, thread-safe."""

    def detect(self, image: RGBImage) -> list[Face]:
        """The regions to hide (and only those)."""


@runtime_checkable
class RegionDetector(FaceDetector, Protocol):
    """A detector that also lists its uncertain candidates, for a reviewer. A detector
    that does not (a test's fake, a family without a floor) stays a plain
    `FaceDetector`: callers treat it as listing none."""

    def detect_regions(self, image: RGBImage) -> tuple[list[Face], list[Face]]:
        """(hidden, uncertain): exactly what `detect` returns, and the groups that scored
        below the threshold their size needs but at least the detector's uncertain
        floor, not hidden."""


@runtime_checkable
class LooksCloser(Protocol):
    """A detector that can look again at one region, finer (`CloserLook`): the video
    detection pass asks it about faint boxes (docs/video.md, "A second look at a
    faint track")."""

    def look_closer(self, image: RGBImage, face: Face, look: CloserLook) -> float:
        """The best score the second look gives the region, 0 for none."""


@runtime_checkable
class TunableDetector(RegionDetector, Protocol):
    """A region detector whose thresholds a call may set (an upload's `preset`): the
    pyramid's families, and several of them combined."""

    def detect_regions(
        self, image: RGBImage, thresholds: DetectionThresholds | None = None
    ) -> tuple[list[Face], list[Face]]:
        """As `RegionDetector.detect_regions`, at `thresholds` (None: the detector's)."""


class VideoProbe(Protocol):
    """Checks a video from its container header, under a time limit, before it is
    recorded: the upload's first bytes as they arrive, then the stored object."""

    def extension(self, head: bytes) -> str:
        """The original's extension (`.mp4`, `.webm`) from the upload's first bytes (its
        container, never its name); raises `VideoRefused` (415) for anything else."""

    def __call__(self, source: BinaryIO) -> VideoFacts:
        """The facts of the video in `source`, a seekable binary file (read where the
        header is: an MP4 may keep it at its end); raises `VideoRefused` (with its HTTP
        status and code) for a file that is not a video we accept: its bytes, codec,
        size, length, frame size or frame count."""


# (frames done, frames in all): called by a video's work as it goes, as often as it
# likes; raises `cancel.Cancelled` once nobody wants the result.
VideoProgress = Callable[[int, int], None]


class VideoAnonymizer(Protocol):
    """Anonymizes one video file into another: every face hidden in every frame."""

    def anonymize(
        self,
        source: Path,
        target: Path,
        progress: VideoProgress,
        *,
        options: UploadOptions | None = None,
    ) -> AnonymizedVideo:
        """Write the anonymized copy of `source` to `target` (whole, or not at all), as
        the upload's `options` choose (None: the server's settings).
        Raises `VideoRefused` if `source` is not a video it accepts, and
        `ProcessingError` (its message public) for one found corrupt or truncated while
        decoding; whatever `progress` raises stops it."""
