"""The API's use cases for videos: submit, read, list, delete, and serve the result.

An upload arrives as a file the API spooled (`Ingested`), checked by the video probe
(`VideoProbe`: the header only, under a time limit) before anything is stored; then, as
for pictures, the original (streamed, `ObjectStore.put_stream`), the record (status
`video_pending`, kind `video`), the job (kind `video`, on its own queue). A crash
between any two leaves an unreferenced object (collected) or a queued record
(re-published by the reconciler). The result is served by ranges, never whole in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from imageblur import playback
from imageblur.backends import Backends
from imageblur.domain import (
    BackendUnavailable,
    IdempotencyKeyReused,
    ImageRecord,
    Job,
    JobKind,
    NotFound,
    NotReady,
    QueueUnavailable,
    Status,
    VideoFacts,
    is_image_id,
    new_image_id,
    object_key,
    utcnow,
)
from imageblur.logs import get_logger
from imageblur.ports import Pictures, VideoProbe
from imageblur.services import clean_name

log = get_logger(__name__)

CHUNK_BYTES = 1024 * 1024  # read from the spool file, and from the store by ranges
# The original's type by container; the result's: MP4 and MOV give MP4, WebM gives WebM.
ORIGINAL_TYPES = {"mp4": "video/mp4", "mov": "video/quicktime", "webm": "video/webm"}
RESULT_TYPES = {"mp4": "video/mp4", "mov": "video/mp4", "webm": "video/webm"}
_SERVED = (Status.DONE, Status.REVIEW)  # statuses with a result to serve


@dataclass(frozen=True, slots=True)
class Ingested:
    """An upload read off the wire into a file of the API's (the caller removes it):
    its size, `body_digest` (the file name and the bytes: what an `Idempotency-Key` is
    bound to), its first bytes, the client's file name and declared type (labels only)."""

    path: Path
    size: int
    digest: str
    head: bytes
    filename: str | None
    content_type: str | None


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


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            yield chunk


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

    def submit(
        self,
        upload: Ingested,
        *,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> ImageRecord:
        """Check, store and queue an upload. Raises `VideoRefused` (nothing stored),
        `IdempotencyKeyReused` (nothing kept) or `BackendUnavailable` (nothing left that
        the reconciler would not clean up)."""
        facts = self._probe(upload.path)
        image_id = self._new_id()
        now = self._clock()
        name = clean_name(upload.filename, extension=facts.extension)
        record = ImageRecord(
            id=image_id,
            name=result_name(name, facts),
            status=Status.VIDEO_PENDING,
            content_type=RESULT_TYPES.get(facts.container, "video/mp4"),
            bytes=upload.size,
            width=facts.width,
            height=facts.height,
            input_key=object_key(image_id, facts.extension),
            created_at=now,
            updated_at=now,
            idempotency_key=idempotency_key,
            request_id=request_id,
            body_sha256=upload.digest if idempotency_key is not None else None,
            kind="video",
            duration_s=facts.duration_s,
            fps=facts.fps,
            frames=facts.frames,
            video_codec=facts.video_codec,
        )
        original_type = ORIGINAL_TYPES.get(facts.container, "application/octet-stream")
        return self._store(record, upload.path, original_type)

    def _store(self, record: ImageRecord, path: Path, original_type: str) -> ImageRecord:
        b, image_id, key = self._b, record.id, record.input_key
        b.originals.put_stream(key, _chunks(path), content_type=original_type)
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
                    "this Idempotency-Key was sent before with another upload or file name; "
                    "use a new key for a new upload"
                )
            log.info("video.replayed", image_id=stored.id)
            return stored
        try:
            job = Job(image_id=image_id, request_id=record.request_id, kind=JobKind.VIDEO)
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
        if record.output_key:
            b.delete_quietly(b.results, record.output_key, image_id=image_id)
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
