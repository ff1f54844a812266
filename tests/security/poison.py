"""Queue messages no worker can run, generated here: each must become `InvalidJob` and be
dead-lettered with its reason, never raise into a worker's thread."""

from __future__ import annotations

import json

VALID_ID = "0123456789abcdef0123456789abcdef"


def _job(**fields: object) -> bytes:
    return json.dumps({"image_id": VALID_ID, **fields}).encode()


POISON: dict[str, bytes] = {
    # json.loads raises RecursionError for deep nesting: over the size cap, and under it.
    "deep nesting, 100 kB": b"[" * 100_000,
    "deep nesting, under the size cap": b"[" * 4000,
    "deep object nesting": b'{"a":' * 3000,
    # 1e999 parses as inf; int(inf) raised OverflowError.
    "attempt 1e999": b'{"image_id": "' + VALID_ID.encode() + b'", "attempt": 1e999}',
    "attempt NaN": b'{"image_id": "' + VALID_ID.encode() + b'", "attempt": NaN}',
    "attempt of 4000 digits": b'{"image_id": "'
    + VALID_ID.encode()
    + b'", "attempt": '
    + b"9" * 4000
    + b"}",
    "attempt true": _job(attempt=True),
    "attempt negative": _job(attempt=-1),
    "attempt above 10^9": _job(attempt=10**9 + 1),
    "attempt a string": _job(attempt="3"),
    "attempt a float": _job(attempt=1.5),
    "not UTF-8": b'{"image_id": "\xff\xfe"}',
    "UTF-16 garbage": "{}".encode("utf-16") + b"\xff" * 3,
    "not JSON": b"{not json",
    "empty": b"",
    "a JSON array": b"[]",
    "JSON null": b"null",
    "a JSON string": b'"' + VALID_ID.encode() + b'"',
    "a JSON number": b"12",
    "no image_id": b"{}",
    "image_id a number": json.dumps({"image_id": 7}).encode(),
    "image_id a path": json.dumps({"image_id": "../../etc/passwd"}).encode(),
    "image_id in capitals": json.dumps({"image_id": VALID_ID.upper()}).encode(),
    "image_id too long": json.dumps({"image_id": VALID_ID * 100}).encode(),
    "image_id with a newline": json.dumps({"image_id": VALID_ID + "\n"}).encode(),
    "kind unknown": _job(kind="upscale"),
    "kind a number": _job(kind=1),
    "request_id with a newline": _job(request_id="a b\nforged log line"),
    "request_id a number": _job(request_id=5),
    "too large": _job(padding="x" * 10_000),
}
