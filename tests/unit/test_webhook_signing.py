"""Webhook signatures, checked against an HMAC written here from the Standard Webhooks
specification (not the library the package signs with)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest

from imageblur.webhooks.signing import SecretError, parse_secrets, signed_headers


def _secret(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


def _independent(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def test_a_delivery_is_signed_as_the_specification_says() -> None:
    key = os.urandom(32)
    body = b'{"id": "abc", "status": "done"}'
    headers = signed_headers(parse_secrets(_secret(key)), "msg_1", 1_796_000_000, body)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1796000000"
    assert headers["webhook-signature"] == _independent(key, "msg_1", "1796000000", body)


def test_two_secrets_give_two_signatures_while_rotating() -> None:
    old, new = os.urandom(24), os.urandom(64)
    keys = parse_secrets(f"{_secret(old)}  {_secret(new)}")
    headers = signed_headers(keys, "msg_2", 1_796_000_001, b"{}")
    assert headers["webhook-signature"].split(" ") == [
        _independent(old, "msg_2", "1796000001", b"{}"),
        _independent(new, "msg_2", "1796000001", b"{}"),
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("c2VjcmV0", "does not start with whsec_"),
        ("whsec_" + base64.b64encode(b"k" * 32).decode() + " c2VjcmV0", "secret 2 does not"),
        ("whsec_@@@@", "not base64"),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), "23 bytes"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "65 bytes"),
    ],
)
def test_a_bad_secret_is_refused_without_showing_it(text: str, says: str) -> None:
    with pytest.raises(SecretError, match=says) as caught:
        parse_secrets(text)
    for word in text.split():
        assert word.removeprefix("whsec_") not in str(caught.value)
