"""docs/examples/receiver.py, run as the docs say, against deliveries signed by the
package: it takes a good one once (a retry under the same webhook-id is answered, not
repeated), and refuses a forged signature and a stale timestamp."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from imageblur.webhooks.addresses import HostPolicy
from imageblur.webhooks.delivery import post
from imageblur.webhooks.signing import parse_secrets, signed_headers
from support import REPO, free_port, wait_until

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
LOOPBACK = HostPolicy.parse("127.0.0.1")


@pytest.fixture
def receiver() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "docs" / "examples" / "receiver.py"), str(port), SECRET],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/hook"
    try:
        wait_until(
            lambda: httpx.get(url, timeout=1), timeout_s=30, retry_on=(httpx.TransportError,)
        )
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=10)


def _send(url: str, msg_id: str, *, stamp: int | None = None, secret: str = SECRET) -> int | None:
    body = json.dumps({"type": "picture.done", "data": {"id": "p1"}}).encode()
    when = int(time.time()) if stamp is None else stamp
    headers = signed_headers(parse_secrets(secret), msg_id, when, body)
    return post(url, body, headers, policy=LOOPBACK).status


def test_the_example_receiver_verifies_and_drops_duplicates(
    receiver: tuple[str, subprocess.Popen[str]],
) -> None:
    url, process = receiver
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    assert _send(url, "msg_1") == 204
    assert _send(url, "msg_1") == 204  # a retry: answered, not taken twice
    assert _send(url, "msg_2", secret=other) == 401
    assert _send(url, "msg_3", stamp=int(time.time()) - 600) == 400
    assert _send(url, "msg_4", secret=f"{other} {SECRET}") == 204  # rotating: either
    process.terminate()
    out, _ = process.communicate(timeout=10)
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["msg_1", "msg_4"]
