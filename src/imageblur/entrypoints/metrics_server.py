"""A worker's Prometheus endpoint: GET /metrics of its registry on a port of its own
(`IMAGEBLUR_METRICS_PORT`), since a worker serves no HTTP otherwise; and GET /readyz,
its readiness probe.

The API serves the same text on its own port instead (`metrics_route.py`). Both ask for
`IMAGEBLUR_METRICS_TOKEN` as a bearer token when it is set; `/readyz` is open, like the
API's (a kubelet's probe carries no token), and names only which checks fail.
"""

from __future__ import annotations

import hmac
import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from imageblur.logs import get_logger

log = get_logger(__name__)

StartResponse = Callable[..., Any]
# Check name -> None when fine, else the reason (logged, never answered).
Readiness = Callable[[], dict[str, str | None]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds the process at exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log line per scrape (every 15-30 s, from every Prometheus)."""


def bearer_ok(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


class MetricsServer:
    """Serves `registry` on host:port in a daemon thread; port 0 picks a free one.
    `readiness` answers GET /readyz (none: always ready)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str,
        port: int,
        token: str | None,
        readiness: Readiness | None = None,
    ) -> None:
        self._app = make_wsgi_app(registry)
        self._host = host
        self._port = port
        self._token = token
        self._readiness = readiness
        self._server: _Server | None = None

    def start(self) -> int:
        """Listen, and return the port bound."""
        family = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsHTTPServer", (_Server,), {"address_family": family})
        self._server = make_server(
            self._host, self._port, self._guarded, server_class, handler_class=_QuietHandler
        )
        threading.Thread(
            target=self._server.serve_forever, name="metrics-server", daemon=True
        ).start()
        return int(self._server.server_address[1])

    def _guarded(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/readyz":
            return self._ready(start_response)
        if path not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: GET /metrics or /readyz\n"]
        if self._token is not None and not bearer_ok(
            environ.get("HTTP_AUTHORIZATION", ""), self._token
        ):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")],
            )
            return [b"send the metrics token as 'Authorization: Bearer <token>'\n"]
        result: Iterable[bytes] = self._app(environ, start_response)
        return result

    def _ready(self, start_response: StartResponse) -> Iterable[bytes]:
        checks = self._readiness() if self._readiness is not None else {}
        for name, reason in checks.items():
            if reason is not None:
                log.warning("readiness.failed", check=name, error=reason)
        ready = all(reason is None for reason in checks.values())
        body = json.dumps(
            {
                "status": "ready" if ready else "unavailable",
                "checks": {k: "ok" if v is None else "unavailable" for k, v in checks.items()},
            }
        ).encode()
        status = "200 OK" if ready else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [body]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
