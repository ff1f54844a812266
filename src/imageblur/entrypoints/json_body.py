"""A JSON request body, read with a byte cap and parsed: the one way a route takes JSON.

FastAPI's `Body()` reads a body whole before anything looks at its size, so a route
taking JSON reads it here instead: a declared `Content-Length` over the cap is refused
before a byte is read, and the stream is cut the moment it passes the cap (the uploads'
`read_raw`). Answers, each before any use case runs: `413 too_large` over the cap,
`400 invalid_json` for a body that is not JSON (or nested deeper than the parser's stack).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from imageblur.domain import InvalidImage
from imageblur.entrypoints.errors import Rejected
from imageblur.entrypoints.uploads import read_raw
from imageblur.imaging import megabytes

# A batch names two locations, a few options and a callback URL: a few hundred bytes.
MAX_BATCH_BYTES = 64 * 1024
# A correction: its 5,000 regions at most, each a short object, fit with room to spare.
MAX_CORRECTION_BYTES = 1_000_000


def shown_size(count: int) -> str:
    """A cap as people read it: "64 KiB", "1 MB"."""
    return f"{count // 1024} KiB" if count < 1_000_000 and count % 1024 == 0 else megabytes(count)


async def read_json(request: Request, *, max_bytes: int, what: str) -> Any:
    """The body's JSON value; `what` names the body in the refusal ("a batch")."""
    try:
        raw = await read_raw(request, max_bytes=max_bytes)
    except InvalidImage as exc:
        if exc.http_status == 413:
            message = f"{what}'s body is at most {shown_size(max_bytes)} of JSON"
            raise Rejected(413, "too_large", message) from exc
        raise
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(400, "invalid_json", f"the body is not JSON: {exc}") from exc
    except RecursionError as exc:
        # Nesting deeper than the parser's stack (a few thousand "[" fit in 1 MB).
        raise Rejected(400, "invalid_json", "the body's JSON is nested too deeply") from exc
