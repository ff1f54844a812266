"""The API's use cases for videos: submit, read, list, delete, and serve the result.

An upload is streamed into the originals store as it arrives (`ObjectStore.put_stream`,
under a key of a new video's: `upload_key`), never held whole on the API's disk or in
its memory; then checked by the video probe (`VideoProbe`: the container header only,
under a time limit), reading the stored object by ranges (`ranged_reader`); a refused
upload is deleted at once. Then, as for pictures, the record (status `video_pending`,
kind `video`) and the job (kind `video`, on its own queue). A crash between any two
leaves an unreferenced object (collected) or a queued record (re-published by the
reconciler). The result is served by ranges, never whole in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from imageblur import playback, upload_options
from imageblur.backends import Backends
from imageblur.domain import (
    TRACKS_TYPE,
    BackendUnavailable,
    IdempotencyKeyReused,
    ImageRecord,
    Job,
    JobKind,
    NotFound,
    NotReady,
    QueueUnavailable,
    Status,
    UploadOptions,
    VideoFacts,
    bound_digest,
    image_id_of_key,
    is_image_id,
    new_image_id,
    object_key,
    utcnow,
)
from imageblur.logs import get_logger
from imageblur.ports import ObjectStore, Pictures, VideoProbe
from imageblur.ranged_reader import open_ranged
from imageblur.services import clean_name

log = get_logger(__name__)

CHUNK_BYTES = 1024 * 1024  # read from the store by ranges
# The original's type by extension; the result's by container: MP4 and MOV give MP4,
# WebM gives WebM.
ORIGINAL_TYPES = {".mp4": "video/mp4", ".webm": "video/webm"}
RESULT_TYPES = {"mp4": "video/mp4", "mov": "video/mp4", "webm": "video/webm"}
_SERVED = (Status.DONE, Status.REVIEW)  # statuses with a result to serve


@dataclass(frozen=True, slots=True)
class Ingested:
    """An upload streamed into the originals store under `key` (made by `upload_key`),
    not yet checked: its size, `body_digest` (the file name and the bytes: what an
    `Idempotency-Key` is bound to), the client's file name and declared type (labels
    only), and the multipart body's other fields (the options)."""

    key: str
    size: int
    digest: str
    filename: str | None
    content_type: str | None
    fields: Mapping[str, str] = field(default_factory=dict)  # a multipart body's others


@dataclass(frozen=True, slots=True)
class VideoFile:
    """What GET /video/{id}/file serves: the result's key, size and type."""

    key: str
    size: int
    content_type: str
    name: str
    final: bool  # False while held for review


@dataclass(frozen=True, slots=True)
class Playback:
    url: str
    expires_at: datetime


def result_name(name: str, facts: VideoFacts) -> str:
    """`clip.MOV` -> `clip.mp4`: the name the result is downloaded under."""
    stem, dot, suffix = name.rpartition(".")
    wanted = "mp4" if facts.container == "mov" else facts.container
    if dot and stem and suffix.lower() != wanted:
        return f"{stem}.{wanted}"
    return name


class VideoService:
    """The API's video use cases (IMAGEBLUR_VIDEO). `playback_secret` signs the
    playback URLs (`playback`); with `presigned_ttl_s`, the store's presigned URL is
    handed out instead where it has one."""

    def __init__(
        self,
        *,
        backends: Backends,
        probe: VideoProbe,
        playback_secret: bytes,
        playback_ttl_s: int,
        presigned_ttl_s: int | None = None,
        clock: Callable[[], datetime] = utcnow,
        id_factory: Callable[[], str] = new_image_id,
    ) -> None:
        self._b = backends
        self._records: Pictures = backends.repository
        self._probe = probe
        self._secret = playback_secret
        self._ttl_s = playback_ttl_s
        self._presigned_ttl_s = presigned_ttl_s
        self._clock = clock
        self._new_id = id_factory

    @property
    def originals(self) -> ObjectStore:
        """Where uploads are streamed (`upload_key`)."""
        return self._b.originals

    def upload_key(self) -> Callable[[bytes], tuple[str, str]]:
        """The key (and type) a new video's upload is streamed under, from its first
        bytes (the container: `<id>.mp4`, `<id>.webm`); it raises `VideoRefused` (415)
        for bytes of no container we take, before anything is stored."""
        image_id = self._new_id()

        def key(head: bytes) -> tuple[str, str]:
            extension = self._probe.extension(head)
            return object_key(image_id, extension), ORIGINAL_TYPES[extension]

        return key

    def submit(
        self,
        upload: Ingested,
        *,
        idempotency_key: str | None = None,
        request_id: str | None = None,
        options: UploadOptions | None = None,
    ) -> ImageRecord:
        """Check a stored upload from its header, then record and queue it, with the
        client's `options` (a job of kind `video_options`). Raises `VideoRefused`,
        `InvalidOption` (a rectangle outside the frames) or `IdempotencyKeyReused` (the
        upload deleted: nothing stays stored), or `BackendUnavailable` (nothing left
        that the reconciler would not clean up)."""
        image_id = image_id_of_key(upload.key)
        if image_id is None:
            raise ValueError(f"{upload.key} is not a key of upload_key's")
        try:
            with open_ranged(self._b.originals, upload.key) as source:
                facts = self._probe(source)
            upload_options.check_fits_video(options, width=facts.width, height=facts.height)
        except BaseException:
            self._b.delete_quietly(self._b.originals, upload.key, image_id=image_id)
            raise
        now = self._clock()
        name = clean_name(upload.filename, extension=facts.extension)
        record = ImageRecord(
            id=image_id,
            name=result_name(name, facts),
            status=Status.VIDEO_PENDING if options is None else Status.VIDEO_OPTIONS_PENDING,
            content_type=RESULT_TYPES.get(facts.container, "video/mp4"),
            bytes=upload.size,
            width=facts.width,
            height=facts.height,
            input_key=upload.key,
            created_at=now,
            updated_at=now,
            idempotency_key=idempotency_key,
            request_id=request_id,
            body_sha256=(
                bound_digest(upload.digest, options) if idempotency_key is not None else None
            ),
            kind="video",
            duration_s=facts.duration_s,
            fps=facts.fps,
            frames=facts.frames,
            video_codec=facts.video_codec,
            options=options,
        )
        return self._record(record)

    def _record(self, record: ImageRecord) -> ImageRecord:
        b, image_id, key = self._b, record.id, record.input_key
        try:
            stored = self._records.add(record)
        except BackendUnavailable:
            b.delete_quietly(b.originals, key, image_id=image_id)
            raise
        if stored.id != image_id:  # the idempotency key was used before
            b.delete_quietly(b.originals, key, image_id=image_id)
            if stored.body_sha256 not in (None, record.body_sha256) or stored.kind != "video":
                log.warning("video.idempotency_key_reused", image_id=stored.id)
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was sent before with another upload, file name or "
                    "options; use a new key for a new upload"
                )
            log.info("video.replayed", image_id=stored.id)
            return stored
        try:
            kind = JobKind.VIDEO if record.options is None else JobKind.VIDEO_OPTIONS
            job = Job(image_id=image_id, request_id=record.request_id, kind=kind)
            b.queue.publish(job)
        except QueueUnavailable:
            try:  # undo, so that the client's retry does not make a second video
                self._records.delete(image_id)
                b.originals.delete(key)
            except BackendUnavailable:
                log.warning("video.undo_failed", image_id=image_id)
            raise
        b.mark_published(image_id, self._clock(), seen_at=stored.updated_at)
        log.info(
            "video.accepted",
            image_id=image_id,
            bytes=record.bytes,
            width=record.width,
            height=record.height,
            duration_s=record.duration_s,
            video_codec=record.video_codec,
        )
        return stored

    def get(self, image_id: str) -> ImageRecord:
        record = self._records.get(image_id) if is_image_id(image_id) else None
        if record is None or record.kind != "video":
            raise NotFound(f"no video with id {image_id}")
        return record

    def list(self, *, limit: int, offset: int) -> tuple[Sequence[ImageRecord], int]:
        records = self._records.list(limit=limit, offset=offset, kind="video")
        return records, self._records.count(kind="video")

    def delete(self, image_id: str) -> ImageRecord:
        """Remove the record, then its objects. A running job notices within about a
        second (its progress note is refused: `JobLeases.note_progress`) and stops; what
        it stored of its own is removed by it, or collected."""
        self.get(image_id)  # a picture is not deleted through /video
        record = self._records.delete(image_id)
        if record is None:
            raise NotFound(f"no video with id {image_id}")
        b = self._b
        b.delete_quietly(b.originals, record.input_key, image_id=image_id)
        for key in (record.output_key, record.tracks_key):
            if key:
                b.delete_quietly(b.results, key, image_id=image_id)
        log.info("video.deleted", image_id=image_id)
        return record

    def file(self, image_id: str) -> VideoFile:
        """The result, if there is one (done, or held for review)."""
        record = self.get(image_id)
        if record.status not in _SERVED or record.output_key is None:
            detail = f": {record.error}" if record.status is Status.FAILED and record.error else ""
            raise NotReady(f"video {image_id} is {record.status.public}{detail}")
        size = self._b.results.get_range(record.output_key, 0, 0).size
        return VideoFile(
            key=record.output_key,
            size=size,
            content_type=record.content_type,
            name=record.name,
            final=record.status is Status.DONE,
        )

    def tracks(self, image_id: str) -> VideoFile:
        """The face tracks of a video with a result (key boxes per track and the rule
        that hides a face between them: `video.track_plan`); `NotReady` when it has none
        (not done yet, or processed with tracking off)."""
        record = self.get(image_id)
        if record.status not in _SERVED or record.tracks_key is None:
            raise NotReady(f"video {image_id} has no face tracks ({record.status.public})")
        size = self._b.results.get_range(record.tracks_key, 0, 0).size
        stem = record.name.rpartition(".")[0] or record.name
        return VideoFile(
            key=record.tracks_key,
            size=size,
            content_type=TRACKS_TYPE,
            name=f"{stem}.tracks.json",
            final=record.status is Status.DONE,
        )

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes `[start, end)` of a result, a chunk at a time (ranged reads)."""
        position = start
        while position < end:
            part = self._b.results.get_range(key, position, min(position + CHUNK_BYTES, end))
            if not part.data:
                return
            position += len(part.data)
            yield part.data

    def playback(self, record: ImageRecord, root: str) -> Playback | None:
        """A URL that plays the result without a bearer header, valid for the TTL; None
        while there is no result."""
        if record.status not in _SERVED or record.output_key is None:
            return None
        now = self._clock()
        if self._presigned_ttl_s is not None:
            url = self._b.results.presigned_url(record.output_key, expires_s=self._presigned_ttl_s)
            if url is not None:
                return Playback(url, now + timedelta(seconds=self._presigned_ttl_s))
        expires = math.floor(now.timestamp()) + self._ttl_s
        query = playback.signed_query(self._secret, record.id, expires=expires)
        return Playback(
            f"{root}/video/{record.id}/file?{query}", datetime.fromtimestamp(expires, now.tzinfo)
        )
