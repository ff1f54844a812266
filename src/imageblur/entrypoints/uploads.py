"""Reading an upload off the wire with a byte cap enforced while streaming.

Starlette does not cap file parts for us; we count bytes as they arrive and stop
reading the moment the cap is passed, so an oversized body is never held in full.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from imageblur.domain import InvalidImage
from imageblur.imaging import megabytes

# Room for the multipart boundary and part headers around the image itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def too_large(max_bytes: int) -> InvalidImage:
    return InvalidImage(
        f"the upload is larger than {megabytes(max_bytes)}, the most this server accepts",
        http_status=413,
        code="too_large",
    )


async def _capped(
    request: Request, cap: int, max_bytes: int | None = None
) -> AsyncGenerator[bytes, None]:
    """The body, stopped past `cap` bytes; the message names `max_bytes` (the picture's
    own limit, without the multipart overhead the cap allows for)."""
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise too_large(max_bytes or cap)
        yield chunk


def _check_declared_length(request: Request, cap: int, max_bytes: int | None = None) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise too_large(max_bytes or cap)


async def read_raw(request: Request, *, max_bytes: int) -> bytes:
    _check_declared_length(request, max_bytes)
    body = bytearray()
    async for chunk in _capped(request, max_bytes):
        body += chunk
    return bytes(body)


async def read_multipart(
    request: Request, *, max_bytes: int
) -> tuple[bytes, str | None, dict[str, str]]:
    """The `image` part's bytes, its client-side file name (a label only) and the
    body's other fields, as text (an upload's options)."""
    limit = max_bytes + MULTIPART_OVERHEAD_BYTES
    _check_declared_length(request, limit, max_bytes)
    parser = MultiPartParser(
        request.headers, _capped(request, limit, max_bytes), max_files=1, max_fields=16
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidImage(
            f"malformed multipart body: {exc.message}", http_status=400, code="bad_multipart"
        ) from exc
    try:
        part = form.get("image")
        if not isinstance(part, UploadFile):
            raise InvalidImage(
                "the multipart body has no file part named 'image' "
                '(send it as: curl -F "image=@photo.jpg" ...)',
                http_status=400,
                code="missing_image",
            )
        data = await part.read()
        if len(data) > max_bytes:
            raise too_large(max_bytes)
        fields = {name: value for name, value in form.multi_items() if isinstance(value, str)}
        return data, part.filename, fields
    finally:
        await form.close()
