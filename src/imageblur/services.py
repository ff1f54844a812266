"""The API's use cases: submit, read, list, delete an image and fetch its result.

They see only the ports, in the `Backends` bundle. Order of writes on submit: original
object, then record, then job. A crash between any two leaves either an unreferenced
object (collected by the reconciler) or a pending record (re-published by the
reconciler): never a lost image.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from imageblur import imaging, upload_options
from imageblur.admission import UploadGate
from imageblur.backends import Backends
from imageblur.domain import (
    BackendUnavailable,
    IdempotencyKeyReused,
    ImageRecord,
    Job,
    JobKind,
    NotFound,
    NotReady,
    ObjectMissing,
    QueueUnavailable,
    Status,
    UploadOptions,
    body_digest,
    bound_digest,
    is_image_id,
    new_image_id,
    object_key,
    utcnow,
)
from imageblur.logs import get_logger
from imageblur.ports import Pictures

log = get_logger(__name__)

MAX_NAME_CHARS = 255
# Statuses with a result to serve.
_SERVED = (Status.DONE, Status.REVIEW, Status.RENDERING, Status.OPTIONS_RENDERING)


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


@dataclass(frozen=True, slots=True)
class Result:
    """What GET /picture/{id}/image answers: the bytes, or a presigned redirect."""

    content_type: str
    name: str
    data: bytes | None = None
    redirect_url: str | None = None
    final: bool = True  # False while held for review: a correction will replace it


class ImageService:
    """The API's use cases. Uploads are decoded under the `UploadGate`'s decode slots;
    with `presigned_ttl_s`, results are handed out as presigned URLs where the store has
    them."""

    def __init__(
        self,
        *,
        backends: Backends,
        gate: UploadGate,
        max_pixels: int,
        max_jpeg_scans: int,
        output_format: imaging.OutputFormat,
        presigned_ttl_s: int | None,
        clock: Callable[[], datetime] = utcnow,
        id_factory: Callable[[], str] = new_image_id,
    ) -> None:
        self._b = backends
        self._pictures: Pictures = backends.repository
        self._gate = gate
        self._max_pixels = max_pixels
        self._max_jpeg_scans = max_jpeg_scans
        self._output_format = output_format
        self._presigned_ttl_s = presigned_ttl_s
        self._clock = clock
        self._new_id = id_factory

    def submit(
        self,
        data: bytes,
        *,
        name: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
        options: UploadOptions | None = None,
    ) -> ImageRecord:
        """Check, store and queue an upload, with the client's `options` (a job of kind
        `options`). Raises `InvalidImage` (nothing stored), `InvalidOption`,
        `IdempotencyKeyReused` (the key came before with another body or other options:
        nothing kept) or `BackendUnavailable` (nothing left that the reconciler would
        not clean up)."""
        with self._gate.checking():
            checked = imaging.check(
                data,
                max_pixels=self._max_pixels,
                max_scans=self._max_jpeg_scans,
                hold=self._gate.decoding,
            )
        upload_options.check_fits(options, width=checked.width, height=checked.height)
        image_id = self._new_id()
        key = object_key(image_id, checked.format.extension)
        now = self._clock()
        # The record describes the result: a HEIC upload becomes a JPEG picture.
        result = imaging.result_format(checked.format, self._output_format)
        record = ImageRecord(
            id=image_id,
            name=result_name(clean_name(name, extension=result.extension), checked, result),
            status=Status.PENDING if options is None else Status.OPTIONS_PENDING,
            content_type=result.content_type,
            bytes=len(data),
            width=checked.width,
            height=checked.height,
            input_key=key,
            created_at=now,
            updated_at=now,
            idempotency_key=idempotency_key,
            request_id=request_id,
            body_sha256=(
                bound_digest(body_digest(data, name), options)
                if idempotency_key is not None
                else None
            ),
            options=options,
        )
        return self._store(record, data, original_type=checked.format.content_type)

    def _store(self, record: ImageRecord, data: bytes, *, original_type: str) -> ImageRecord:
        b, image_id, key = self._b, record.id, record.input_key
        b.originals.put(key, data, content_type=original_type)  # the record's is the result's
        try:
            stored = self._pictures.add(record)
        except BackendUnavailable:
            b.delete_quietly(b.originals, key, image_id=image_id)
            raise
        if stored.id != image_id:  # the idempotency key was used before
            b.delete_quietly(b.originals, key, image_id=image_id)
            # A record of an older release has no digest: it counts as the same body.
            if stored.body_sha256 not in (None, record.body_sha256):
                log.warning("image.idempotency_key_reused", image_id=stored.id)
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was sent before with another image, file name "
                    "or options; use a new key for a new upload"
                )
            log.info("image.replayed", image_id=stored.id)
            return stored
        try:
            kind = JobKind.DETECT if record.options is None else JobKind.OPTIONS
            b.queue.publish(Job(image_id=image_id, request_id=record.request_id, kind=kind))
        except QueueUnavailable:
            # Undo, so that the client's retry after our 503 does not make a second
            # image. If the undo fails too, the reconciler publishes the pending record.
            try:
                self._pictures.delete(image_id)
                b.originals.delete(key)
            except BackendUnavailable:
                log.warning("image.undo_failed", image_id=image_id)
            raise
        b.mark_published(image_id, self._clock(), seen_at=stored.updated_at)
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
        record = self._pictures.get(image_id) if is_image_id(image_id) else None
        if record is None or record.kind != "picture":  # a video's routes are /video/...
            raise NotFound(f"no image with id {image_id}")
        return record

    def list(self, *, limit: int, offset: int) -> tuple[Sequence[ImageRecord], int]:
        return self._pictures.list(limit=limit, offset=offset), self._pictures.count()

    def delete(self, image_id: str) -> ImageRecord:
        """Remove the record, then every stored object of it (originals and result).
        An object whose deletion fails is unreferenced from then on, and collected."""
        self.get(image_id)  # a video is not deleted through /picture
        record = self._pictures.delete(image_id)
        if record is None:
            raise NotFound(f"no image with id {image_id}")
        b = self._b
        b.delete_quietly(b.originals, record.input_key, image_id=image_id)
        if record.output_key:
            b.delete_quietly(b.results, record.output_key, image_id=image_id)
        log.info("image.deleted", image_id=image_id)
        return record

    def result(self, image_id: str) -> Result:
        record = self.get(image_id)
        # Held for review (or re-rendering a correction): the current result, which the
        # reviewer needs; clients that publish wait for `done`.
        if record.status not in _SERVED or record.output_key is None:
            detail = f": {record.error}" if record.status is Status.FAILED and record.error else ""
            raise NotReady(f"image {image_id} is {record.status.public}{detail}")
        if self._presigned_ttl_s is not None:
            url = self._b.results.presigned_url(record.output_key, expires_s=self._presigned_ttl_s)
            if url is not None:
                return Result(
                    content_type=record.content_type,
                    name=record.name,
                    redirect_url=url,
                    final=record.status is Status.DONE,
                )
        try:
            data = self._b.results.get(record.output_key)
        except ObjectMissing:
            raise NotReady(f"the result of image {image_id} is missing from the store") from None
        return Result(
            content_type=record.content_type,
            name=record.name,
            data=data,
            final=record.status is Status.DONE,
        )

    def check(self) -> dict[str, str | None]:
        """Reachability of every back end: name -> None if fine, else the reason."""
        return self._b.check()
