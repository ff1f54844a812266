"""One delivery attempt over real sockets to a loopback receiver: what it sends, and
the addresses it refuses to reach whatever a resolver says."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from tests.webhook_receiver import webhook_receiver

from imageblur.webhooks.addresses import HostPolicy
from imageblur.webhooks.delivery import post
from imageblur.webhooks.signing import parse_secrets, signed_headers

LOOPBACK = HostPolicy.parse("127.0.0.1")


def test_a_signed_delivery_reaches_an_allowed_loopback_receiver() -> None:
    key = os.urandom(32)
    body = b'{"id": "p1", "status": "done"}'
    keys = parse_secrets("whsec_" + base64.b64encode(key).decode())
    headers = signed_headers(keys, "m1", 1, body)
    with webhook_receiver() as receiver:
        attempt = post(receiver.url, body, headers, policy=LOOPBACK)
    assert attempt.delivered and attempt.status == 204
    (got,) = receiver.got
    assert got.body == body and got.path == "/hook"
    expected = hmac.new(key, b"m1.1." + body, hashlib.sha256).digest()
    assert got.headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    assert got.headers["Host"] == f"127.0.0.1:{receiver.port}"


def test_a_receiver_error_and_a_redirect_are_not_deliveries() -> None:
    with webhook_receiver([500]) as receiver:
        assert post(receiver.url, b"{}", {}, policy=LOOPBACK).status == 500
        receiver.redirect_to = "http://127.0.0.1:1/elsewhere"
        attempt = post(receiver.url, b"{}", {}, policy=LOOPBACK)
    assert attempt.status == 302 and not attempt.delivered and not attempt.final
    assert len(receiver.got) == 2  # the redirect was not followed


def test_loopback_is_refused_unless_the_policy_names_it() -> None:
    with webhook_receiver() as receiver:
        attempt = post(receiver.url, b"{}", {}, policy=HostPolicy.parse("*"))
    assert attempt.final and "internal address" in (attempt.error or "")
    assert receiver.got == []


def test_a_name_that_rebinds_to_loopback_never_reaches_loopback() -> None:
    """Resolved once: public when checked, 127.0.0.1 afterwards; the attempt goes to the
    public address (unreachable here) and never to the receiver on 127.0.0.1."""
    answers = [["1.1.1.1"], ["127.0.0.1"]]  # the second is never asked for
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers.pop(0) if answers else ["127.0.0.1"]

    public = HostPolicy.parse("*")
    with webhook_receiver() as receiver:
        url = f"http://hooks.example.test:{receiver.port}/hook"
        attempt = post(url, b"{}", {}, policy=public, resolver=rebinding, timeout_s=0.5)
    assert receiver.got == [] and calls == ["hooks.example.test"]
    assert not attempt.delivered and not attempt.final  # tried, not refused


def test_a_name_with_one_internal_address_among_public_ones_is_refused() -> None:
    with webhook_receiver() as receiver:
        attempt = post(
            f"http://mixed.example.test:{receiver.port}/hook",
            b"{}",
            {},
            policy=HostPolicy.parse("*"),
            resolver=lambda host, port: ["1.1.1.1", "127.0.0.1"],
        )
    assert attempt.final and "127.0.0.1" in (attempt.error or "") and receiver.got == []
