"""A webhook receiver that verifies imageblur's deliveries, standard library only.

    python docs/examples/receiver.py PORT SECRET

SECRET is IMAGEBLUR_WEBHOOK_SECRET (`whsec_...`; while rotating, any one of them). It
listens on 127.0.0.1:PORT, checks each POST's signature and timestamp, drops a delivery
it has already seen (by `webhook-id`: deliveries are at least once), prints each new
event as one JSON line and answers 204; a bad signature gets 401, a stale or future
timestamp 400. Answer fast and work afterwards: the sender waits 5 s at most.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE_S = 300  # Standard Webhooks' advice: refuse a timestamp 5 minutes off
MAX_BODY_BYTES = 1_000_000


def verify(key: bytes, headers: dict[str, str], body: bytes) -> str | None:
    """Why the delivery is refused, or None when it is imageblur's, signed with `key`."""
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > TOLERANCE_S:
        return "stale"
    signed = f"{msg_id}.{stamp}.".encode() + body
    mine = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # One `v1,<signature>` per secret the server signs with: any one of them will do.
    theirs = [s.removeprefix("v1,") for s in headers.get("webhook-signature", "").split()]
    return None if any(hmac.compare_digest(mine, s) for s in theirs) else "forged"


def main(port: int, secret: str) -> None:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    seen: set[str] = set()  # a real receiver keeps these in its database, for a day

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(min(int(self.headers.get("Content-Length", 0)), MAX_BODY_BYTES))
            headers = {k.lower(): v for k, v in self.headers.items()}
            refused = verify(key, headers, body)
            if refused is None and headers["webhook-id"] not in seen:
                seen.add(headers["webhook-id"])
                event = json.loads(body)
                print(json.dumps({"id": headers["webhook-id"], **event}), flush=True)
            self.send_response({None: 204, "stale": 400, "forged": 401}[refused])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
