"""Standard Webhooks signatures (https://www.standardwebhooks.com): the secrets as the
operator writes them, and the headers a delivery carries. Pure: no clock, no network."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

PREFIX = "whsec_"
# The specification asks for 24 to 64 random bytes: shorter is guessable, longer is
# refused by some receivers' libraries.
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64


class SecretError(ValueError):
    """A webhook secret the operator wrote is not `whsec_` + base64 of 24-64 bytes.
    The message never holds the secret."""


def parse_secrets(text: str) -> list[bytes]:
    """The HMAC keys of `IMAGEBLUR_WEBHOOK_SECRET`: space-separated `whsec_<base64>`
    secrets (several while rotating: a delivery is signed with each)."""
    keys = [_key(number, word) for number, word in enumerate(text.split(), start=1)]
    if not keys:
        raise SecretError("IMAGEBLUR_WEBHOOK_SECRET is empty")
    return keys


def _key(number: int, word: str) -> bytes:
    where = f"IMAGEBLUR_WEBHOOK_SECRET's secret {number}"
    if not word.startswith(PREFIX):
        raise SecretError(f"{where} does not start with {PREFIX}")
    try:
        key = base64.b64decode(word.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"{where} is not base64 after {PREFIX}") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise SecretError(
            f"{where} decodes to {len(key)} bytes; it must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES}"
        )
    return key


def signed_headers(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a delivery: its id (the same on every retry, so a receiver
    drops duplicates by it), when it was signed (seconds since the epoch) and one
    `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` per key, space-separated."""
    when = datetime.fromtimestamp(timestamp, UTC)
    signatures = [Webhook(key).sign(msg_id, when, body) for key in keys]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }
