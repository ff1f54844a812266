"""The API's use cases: submit, read, list, delete an image and fetch its result.

They see only ports. Order of writes on submit: original object, then record, then
job. A crash between any two leaves either an unreferenced object (collected by the
reconciler) or a pending record (re-published by the reconciler): never a lost image.
"""

from __future__ import annotations

import re
import threading
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from imageblur import imaging
from imageblur.domain import (
    BackendUnavailable,
    ImageRecord,
    Job,
    NotFound,
    NotReady,
    ObjectMissing,
    Overloaded,
    QueueUnavailable,
    Status,
    utcnow,
)
from imageblur.logs import get_logger
from imageblur.ports import ImageRepository, JobQueue, ObjectStore

log = get_logger(__name__)

_ID = re.compile(r"^[0-9a-f]{32}$")
_KEY = re.compile(r"^([0-9a-f]{32})\.[a-z]{3,4}$")
MAX_NAME_CHARS = 255
CHECK_WAIT_S = 30.0


def new_image_id() -> str:
    return uuid.uuid4().hex


def is_image_id(text: str) -> bool:
    return bool(_ID.fullmatch(text))


def object_key(image_id: str, extension: str) -> str:
    """Storage keys come from the server-made id only, never from the client's name."""
    return f"{image_id}{extension}"


def image_id_of_key(key: str) -> str | None:
    """The image id of a key made by `object_key`; None for anything else."""
    match = _KEY.fullmatch(key)
    return match.group(1) if match else None


def clean_name(name: str | None, *, extension: str) -> str:
    """The client's file name as a display label: base name, printable, bounded."""
    text = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()
    return text[:MAX_NAME_CHARS] or f"upload{extension}"


def result_name(name: str, checked: imaging.CheckedImage, result: imaging.ImageFormat) -> str:
    """`IMG_0001.HEIC` -> `IMG_0001.jpg` when the result changes format."""
    stem, dot, suffix = name.rpartition(".")
    if result is checked.format or not dot or not stem:
        return name
    if f".{suffix.lower()}" not in {checked.format.extension, ".heif", ".hif"}:
        return name
    return stem + result.extension


def delete_quietly(store: ObjectStore, key: str, *, image_id: str | None = None) -> None:
    """Delete an object, logging (not raising) if the store is down: an object left
    behind is unreferenced or belongs to a finished image, and the reconciler's sweep
    deletes it later."""
    try:
        store.delete(key)
    except BackendUnavailable:
        log.warning("object.delete_failed", image_id=image_id, key=key)


def mark_published(
    repo: ImageRepository, image_id: str, now: datetime, *, seen_at: datetime
) -> None:
    """Record a confirmed publish; if the database is down, the reconciler publishes the
    job once more later, which is harmless (only one claim wins)."""
    try:
        repo.mark_published(image_id, now=now, if_updated_at=seen_at)
    except BackendUnavailable:
        log.warning("job.publish_not_recorded", image_id=image_id)


@dataclass(frozen=True, slots=True)
class Result:
    """What GET /picture/{id}/image answers: the bytes, or a presigned redirect."""

    content_type: str
    name: str
    data: bytes | None = None
    redirect_url: str | None = None


class ImageService:
    def __init__(
        self,
        *,
        repository: ImageRepository,
        originals: ObjectStore,
        results: ObjectStore,
        queue: JobQueue,
        max_pixels: int,
        output_format: imaging.OutputFormat = "jpeg",
        presigned_ttl_s: int | None = None,
        max_concurrent_checks: int = 4,
        clock: Callable[[], datetime] = utcnow,
        id_factory: Callable[[], str] = new_image_id,
    ) -> None:
        self._repo = repository
        self._originals = originals
        self._results = results
        self._queue = queue
        self._max_pixels = max_pixels
        self._output_format = output_format
        self._presigned_ttl_s = presigned_ttl_s
        # A full decode of a large image takes hundreds of MB; bound how many at once so
        # a burst of uploads cannot exhaust the API's memory.
        self._check_slots = threading.BoundedSemaphore(max_concurrent_checks)
        self._clock = clock
        self._new_id = id_factory

    def submit(
        self, data: bytes, *, name: str | None = None, idempotency_key: str | None = None
    ) -> ImageRecord:
        """Check, store and queue an upload. Raises `InvalidImage` (nothing stored) or
        `BackendUnavailable` (nothing left that the reconciler would not clean up)."""
        if not self._check_slots.acquire(timeout=CHECK_WAIT_S):
            raise Overloaded("too many uploads are being checked at once; retry shortly")
        try:
            checked = imaging.check(data, max_pixels=self._max_pixels)
        finally:
            self._check_slots.release()
        image_id = self._new_id()
        key = object_key(image_id, checked.format.extension)
        now = self._clock()
        # The record describes the result: a HEIC upload becomes a JPEG picture.
        result = imaging.result_format(checked.format, self._output_format)
        record = ImageRecord(
            id=image_id,
            name=result_name(clean_name(name, extension=result.extension), checked, result),
            status=Status.PENDING,
            content_type=result.content_type,
            bytes=len(data),
            width=checked.width,
            height=checked.height,
            input_key=key,
            created_at=now,
            updated_at=now,
            idempotency_key=idempotency_key,
        )
        self._originals.put(key, data, content_type=checked.format.content_type)
        try:
            stored = self._repo.add(record)
        except BackendUnavailable:
            delete_quietly(self._originals, key, image_id=image_id)
            raise
        if stored.id != image_id:  # the idempotency key was used before: a replay
            delete_quietly(self._originals, key, image_id=image_id)
            log.info("image.replayed", image_id=stored.id)
            return stored
        try:
            self._queue.publish(Job(image_id=image_id))
        except QueueUnavailable:
            # Undo, so that the client's retry after our 503 does not make a second
            # image. If the undo fails too, the reconciler publishes the pending record.
            try:
                self._repo.delete(image_id)
                self._originals.delete(key)
            except BackendUnavailable:
                log.warning("image.undo_failed", image_id=image_id)
            raise
        mark_published(self._repo, image_id, self._clock(), seen_at=stored.updated_at)
        log.info(
            "image.accepted",
            image_id=image_id,
            content_type=record.content_type,
            bytes=record.bytes,
            width=record.width,
            height=record.height,
        )
        return stored

    def get(self, image_id: str) -> ImageRecord:
        record = self._repo.get(image_id) if is_image_id(image_id) else None
        if record is None:
            raise NotFound(f"no image with id {image_id}")
        return record

    def list(self, *, limit: int, offset: int) -> tuple[Sequence[ImageRecord], int]:
        return self._repo.list(limit=limit, offset=offset), self._repo.count()

    def delete(self, image_id: str) -> ImageRecord:
        """Remove the record, then every stored object of it (originals and result).
        An object whose deletion fails is unreferenced from then on, and collected."""
        record = self._repo.delete(image_id) if is_image_id(image_id) else None
        if record is None:
            raise NotFound(f"no image with id {image_id}")
        delete_quietly(self._originals, record.input_key, image_id=image_id)
        if record.output_key:
            delete_quietly(self._results, record.output_key, image_id=image_id)
        log.info("image.deleted", image_id=image_id)
        return record

    def result(self, image_id: str) -> Result:
        record = self.get(image_id)
        if record.status is not Status.DONE or record.output_key is None:
            detail = f": {record.error}" if record.status is Status.FAILED and record.error else ""
            raise NotReady(f"image {image_id} is {record.status.value}{detail}")
        if self._presigned_ttl_s is not None:
            url = self._results.presigned_url(record.output_key, expires_s=self._presigned_ttl_s)
            if url is not None:
                return Result(content_type=record.content_type, name=record.name, redirect_url=url)
        try:
            data = self._results.get(record.output_key)
        except ObjectMissing:
            raise NotReady(f"the result of image {image_id} is missing from the store") from None
        return Result(content_type=record.content_type, name=record.name, data=data)

    def check(self) -> dict[str, str | None]:
        """Reachability of every back end: name -> None if fine, else the reason."""
        report: dict[str, str | None] = {}
        for name, probe in (
            ("database", self._repo.check),
            ("originals", self._originals.check),
            ("results", self._results.check),
            ("queue", self._queue.check),
        ):
            try:
                probe()
                report[name] = None
            except BackendUnavailable as exc:
                report[name] = str(exc) or type(exc).__name__
        return report
