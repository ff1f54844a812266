"""Signed playback URLs: a video's result fetched without a bearer header.

A `<video>` element cannot send `Authorization`, so a finished video's record carries a
`playback_url`: `/video/{id}/file?expires=<unix seconds>&sig=<HMAC>`, valid a few minutes
(IMAGEBLUR_PLAYBACK_TTL_S). The signature is HMAC-SHA256 over the id and the expiry,
under the playback key (`Settings.playback_secret`); it grants that one file, read
only, until then. The token check lets such a request through without a bearer
header once `verify` accepts it. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from urllib.parse import parse_qs

_FILE_PATH = re.compile(r"/video/([0-9a-f]{32})/file$")
_SIG_CHARS = 43  # a SHA-256 in unpadded base64url


def signature(secret: bytes, image_id: str, expires: int) -> str:
    digest = hmac.new(secret, f"{image_id}.{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def signed_query(secret: bytes, image_id: str, *, expires: int) -> str:
    """The query of a playback URL of `image_id` valid until `expires` (unix seconds)."""
    return f"expires={expires}&sig={signature(secret, image_id, expires)}"


def verify(secret: bytes, path: str, query: str, *, now: float) -> bool:
    """Whether `path?query` is a playback URL signed with `secret` and not expired.
    Anything else (another path, a missing, malformed or altered parameter) is False."""
    match = _FILE_PATH.search(path)
    if match is None:
        return False
    params = parse_qs(query, max_num_fields=8)
    expires, sig = params.get("expires", []), params.get("sig", [])
    if len(expires) != 1 or len(sig) != 1 or not expires[0].isdigit() or len(expires[0]) > 12:
        return False
    if int(expires[0]) < now or len(sig[0]) != _SIG_CHARS:
        return False
    expected = signature(secret, match.group(1), int(expires[0]))
    return hmac.compare_digest(expected.encode(), sig[0].encode())
