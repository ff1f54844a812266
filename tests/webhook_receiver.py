"""A webhook receiver on loopback, for the tests: it records every POST it gets and
answers with the statuses it is told to, in turn (then 204); told to `hold`, it keeps
each request unanswered (recorded) until `release()`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    port: int
    answers: list[int] = field(default_factory=list)  # statuses to give first, in turn
    redirect_to: str | None = None
    got: list[Received] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)  # the statuses sent back, in turn
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)

    def hold(self) -> None:
        """Keep the requests from now on unanswered until `release()`."""
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def delivered(self) -> bool:
        """Some request was answered 204."""
        with self.lock:
            return 204 in self.answered

    def verified(self, keys: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
        """(webhook-id, body) of every request received, its signature checked with an
        HMAC written here from the Standard Webhooks specification: one `v1,` signature
        per key, in order."""
        found = []
        for got in self.got:
            h = {k.lower(): v for k, v in got.headers.items()}
            signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + got.body
            expected = [
                "v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode()
                for k in keys
            ]
            assert h["webhook-signature"].split(" ") == expected
            assert h["content-type"] == "application/json"
            found.append((h["webhook-id"], json.loads(got.body)))
        return found

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def next_status(self) -> int:
        with self.lock:
            return self.answers.pop(0) if self.answers else 204


@contextmanager
def webhook_receiver(answers: list[int] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(0, list(answers or []))
    receiver.release()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                receiver.got.append(Received(self.path, dict(self.headers), body))
            # Bounded: a test that forgets to release must not hang the server's stop.
            receiver.released.wait(timeout=60)
            status = 302 if receiver.redirect_to else receiver.next_status()
            self.send_response(status)
            if receiver.redirect_to:
                self.send_header("Location", receiver.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            with receiver.lock:
                receiver.answered.append(status)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release()
        server.shutdown()
        server.server_close()
