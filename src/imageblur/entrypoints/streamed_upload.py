"""Large uploads written to the store as they arrive: never held whole, in memory or on
the API's disk.

The body is read in the event loop and parsed as it comes (python-multipart's streaming
parser, or taken raw); the named file part's bytes, gathered into pieces of at most
`PIECE_BYTES`, are pulled one at a time by the store's `put_stream`, which runs in a
thread of the pool (it blocks on disk or S3). So a slow store slows the reading of the
body (back pressure down to the client's TCP window), and what an upload holds is one
piece here plus what `put_stream` buffers (an S3 part, an envelope segment). The byte
cap is enforced on the bytes as they come; a body that breaks the cap, is malformed,
ends early or whose client goes away makes the pull raise, so `put_stream` stores
nothing (its contract).

Each upload holds a slot of `StreamSlots` (IMAGEBLUR_MAX_STREAMED_UPLOADS) and a
thread for as long as it streams: past the bound, a new one is refused at once with
`503 overloaded` and Retry-After, before its body is read (queueing would hold the
client's connection and its unread body without bound).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass

import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from imageblur.admission import StreamSlots
from imageblur.domain import body_hasher
from imageblur.entrypoints.errors import Rejected
from imageblur.entrypoints.uploads import MULTIPART_OVERHEAD_BYTES
from imageblur.imaging import megabytes
from imageblur.ports import ObjectStore

# Checks the fields of a multipart body (an upload's options); raises to refuse it.
FieldCheck = Callable[[Mapping[str, str]], None]
# What the event loop gathers before handing bytes to the store's thread: one hand-over
# (a thread round trip) per piece, not per network read (64 KiB from uvicorn).
PIECE_BYTES = 256 * 1024
# How long a body may send nothing before it is refused (408 upload_stalled).
IDLE_TIMEOUT_S = 60.0
# The start of the upload kept for the caller, to tell its format by its magic bytes.
HEAD_BYTES = 4096
_MULTIPART = "multipart/form-data"
# The other parts of a multipart body (an upload's options: small text, sent before the
# file part, so they are known when it starts): at most this many, each this long.
MAX_FIELDS = 16
MAX_FIELD_BYTES = 16 * 1024

# A key chosen from the upload's first bytes (at least HEAD_BYTES of them, fewer only if
# the upload is shorter), with the type it is stored as: for a format told by its magic
# bytes, which come only with the body. It may raise to refuse the upload unstored.
KeyFor = Callable[[bytes], tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Streamed:
    """What was stored under `key`: its size, its first bytes (up to HEAD_BYTES), the
    client's file name and Content-Type (labels only, never trusted), `body_sha256`,
    the `domain.body_digest` of the bytes and that name (what an Idempotency-Key is
    bound to), and the multipart body's other fields, as text (an upload's options)."""

    key: str
    size: int
    head: bytes
    body_sha256: str
    filename: str | None
    content_type: str | None
    fields: dict[str, str] = dataclasses.field(default_factory=dict)


def too_large(max_bytes: int) -> Rejected:
    return Rejected(
        413, "too_large", f"the upload is larger than {megabytes(max_bytes)}, the most allowed"
    )


async def stream_upload(
    request: Request,
    *,
    store: ObjectStore,
    key: str | KeyFor,
    max_bytes: int,
    slots: StreamSlots,
    field: str = "image",
    filename: str | None = None,
    stored_type: str = "application/octet-stream",
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    check_fields: FieldCheck | None = None,
) -> Streamed:
    """Store the upload under `key` (made by the server) as it arrives: the multipart
    file part named `field`, or the whole body of any other Content-Type (its name is
    then `filename`, from the query), as `stored_type` (the client's Content-Type is a
    label, not a fact about the bytes); or, with a `KeyFor`, under the key and type it
    makes of the first bytes (what it raises refuses the upload). Raises `Overloaded`
    when every slot is taken, `Rejected` for a body it refuses (413 too_large; 400
    bad_multipart, missing_file, upload_interrupted; 408 upload_stalled when nothing
    comes for `idle_timeout_s`: the API's JSON errors), and the store's errors: in every
    case nothing is stored under `key`. `check_fields`: called with the multipart body's
    other fields when the file part starts, and again at the body's end (fields after
    it); what it raises refuses the upload, before anything is stored."""
    with slots.admit():
        declared = request.headers.get("content-length", "")
        content_type = request.headers.get("content-type", "")
        multipart = content_type.split(";")[0].strip().lower() == _MULTIPART
        cap = max_bytes + MULTIPART_OVERHEAD_BYTES if multipart else max_bytes
        if declared.isdigit() and int(declared) > cap:
            raise too_large(max_bytes)  # refused before a byte is read
        body = _Body(request, cap=cap, max_bytes=max_bytes, idle_timeout_s=idle_timeout_s)
        source = (
            _MultipartFile(body, content_type, field, max_bytes, check_fields)
            if multipart
            else _RawFile(body, content_type or None, filename)
        )
        return await _store(source, store, key, stored_type)


async def _store(
    source: _Source, store: ObjectStore, key: str | KeyFor, stored_type: str
) -> Streamed:
    loop = asyncio.get_running_loop()
    pieces = source.pieces()
    tally = _Tally()

    def pull() -> Iterator[bytes]:
        # In the store's thread: each piece is read for it in the event loop.
        while (piece := asyncio.run_coroutine_threadsafe(_next(pieces), loop).result()) is not None:
            tally.add(piece, source.filename)  # the name is known before the first piece
            yield piece

    def put() -> str:
        chunks = pull()
        if isinstance(key, str):
            store.put_stream(key, chunks, content_type=stored_type)
            return key
        first = _head(chunks)  # nothing is stored before the key is made
        name, content_type = key(first)
        store.put_stream(name, itertools.chain((first,), chunks), content_type=content_type)
        return name

    try:
        stored_key = await anyio.to_thread.run_sync(put)
    finally:
        await pieces.aclose()
    return Streamed(
        key=stored_key,
        size=tally.size,
        head=bytes(tally.head),
        body_sha256=tally.digest(source.filename),
        filename=source.filename,
        content_type=source.content_type,
        fields=dict(source.fields),
    )


def _head(chunks: Iterator[bytes]) -> bytes:
    """The first pieces, up to HEAD_BYTES at least (a piece may be short only at the
    end of the upload)."""
    head = b""
    while len(head) < HEAD_BYTES and (piece := next(chunks, None)) is not None:
        head += piece
    return head


async def _next(pieces: AsyncIterator[bytes]) -> bytes | None:
    return await anext(pieces, None)


class _Tally:
    """Size, head and digest of the bytes stored, counted in the store's thread (hashing
    a gigabyte is seconds of CPU the event loop should not spend)."""

    def __init__(self) -> None:
        self.size = 0
        self.head = bytearray()
        self._hasher: hashlib._Hash | None = None

    def add(self, piece: bytes, name: str | None) -> None:
        if self._hasher is None:
            self._hasher = body_hasher(name)
        self.size += len(piece)
        if len(self.head) < HEAD_BYTES:
            self.head += piece[: HEAD_BYTES - len(self.head)]
        self._hasher.update(piece)

    def digest(self, name: str | None) -> str:
        """`domain.body_digest` of the bytes added and `name`."""
        return (self._hasher or body_hasher(name)).hexdigest()


class _Body:
    """The request body's chunks, stopped past `cap` bytes, or when none comes for
    `idle_timeout_s` (a stalled client would hold its slot and thread for ever); a
    client gone is a refusal like any other (its answer is never read, but the log says
    what happened)."""

    def __init__(
        self, request: Request, *, cap: int, max_bytes: int, idle_timeout_s: float
    ) -> None:
        self._request = request
        self._cap = cap
        self._max_bytes = max_bytes
        self._idle_timeout_s = idle_timeout_s

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        total = 0
        stream = self._request.stream()
        try:
            while (chunk := await self._next(stream)) is not None:
                total += len(chunk)
                if total > self._cap:
                    raise too_large(self._max_bytes)
                yield chunk
        except ClientDisconnect:
            raise Rejected(
                400, "upload_interrupted", "the client went away before the upload ended"
            ) from None
        finally:
            await stream.aclose()

    async def _next(self, stream: AsyncGenerator[bytes, None]) -> bytes | None:
        try:
            async with asyncio.timeout(self._idle_timeout_s):
                return await anext(stream, None)
        except TimeoutError:
            raise Rejected(
                408,
                "upload_stalled",
                f"no bytes of the upload came for {self._idle_timeout_s:g} s",
            ) from None


class _Source:
    """A file's bytes out of a body, in pieces; its name and type once they are known."""

    filename: str | None = None
    content_type: str | None = None
    fields: dict[str, str]

    def __init__(self) -> None:
        self.fields = {}

    def pieces(self) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError


class _RawFile(_Source):
    def __init__(self, body: _Body, content_type: str | None, filename: str | None) -> None:
        super().__init__()
        self._body = body
        self.content_type = content_type
        self.filename = filename

    async def pieces(self) -> AsyncGenerator[bytes, None]:
        buffer = bytearray()
        async for chunk in self._body.chunks():
            buffer += chunk
            if len(buffer) >= PIECE_BYTES:
                yield bytes(buffer)
                buffer.clear()
        if buffer:
            yield bytes(buffer)


class _MultipartFile(_Source):
    """The part named `field` of a multipart body. The pieces end only at the body's
    closing boundary, so a body cut short after the part stores nothing either."""

    def __init__(
        self,
        body: _Body,
        content_type: str,
        field: str,
        max_bytes: int,
        check_fields: FieldCheck | None = None,
    ) -> None:
        super().__init__()
        self._check_fields = check_fields
        self._body = body
        self._field = field
        self._max_bytes = max_bytes
        _, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if not boundary:
            raise _bad("no boundary in its Content-Type")
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )
        self._buffer = bytearray()
        self._header = (bytearray(), bytearray())
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self._found = False
        self._size = 0
        self._ended = False
        self._text: tuple[str, bytearray] | None = None  # a field being read: name, bytes

    async def pieces(self) -> AsyncGenerator[bytes, None]:
        async for chunk in self._body.chunks():
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise _bad(str(exc)) from None
            if len(self._buffer) >= PIECE_BYTES:
                yield bytes(self._buffer)
                self._buffer.clear()
        if not self._ended:
            raise _bad("the body ends before its closing boundary")
        if self._check_fields is not None:
            self._check_fields(self.fields)  # those after the file part too
        if not self._found:
            raise Rejected(
                400,
                "missing_file",
                f"the multipart body has no part named {self._field!r} "
                f'(send it as: curl -F "{self._field}=@file" ...)',
            )
        if self._buffer:
            yield bytes(self._buffer)

    # The parser's callbacks. Part headers are small (python-multipart bounds them).
    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header[0].extend(data[start:end])

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header[1].extend(data[start:end])

    def _on_header_end(self) -> None:
        name, value = self._header
        self._headers[bytes(name).lower()] = bytes(value)
        name.clear()
        value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name != self._field:
            self._in_file = False
            if b"filename" not in options:  # a text field: kept (another file: skipped)
                if len(self.fields) >= MAX_FIELDS:
                    raise _bad(f"more than {MAX_FIELDS} fields")
                self._text = (name, bytearray())
            return
        if self._found:
            raise _bad(f"more than one part is named {self._field!r}")
        self._found = self._in_file = True
        if self._check_fields is not None:
            self._check_fields(self.fields)  # before a byte of the file is stored
        given = options.get(b"filename")
        self.filename = given.decode("utf-8", "replace") if given is not None else None
        part_type = self._headers.get(b"content-type", b"").decode("latin-1").strip()
        self.content_type = part_type or None

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._text is not None:
            self._text[1].extend(data[start:end])
            if len(self._text[1]) > MAX_FIELD_BYTES:
                raise _bad(f"the field {self._text[0]!r} is longer than {MAX_FIELD_BYTES} bytes")
        if self._in_file:
            self._size += end - start
            if self._size > self._max_bytes:
                raise too_large(self._max_bytes)
            self._buffer += data[start:end]

    def _on_part_end(self) -> None:
        self._in_file = False
        if self._text is not None:
            name, value = self._text
            self.fields[name] = value.decode("utf-8", "replace")
            self._text = None

    def _on_end(self) -> None:
        self._ended = True


def _bad(why: str) -> Rejected:
    return Rejected(400, "bad_multipart", f"malformed multipart body: {why}")
