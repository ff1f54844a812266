"""A worker's Prometheus endpoint: GET /metrics of its registry on a port of its own
(`IMAGEBLUR_METRICS_PORT`), since a worker serves no HTTP otherwise.

The API serves the same text on its own port instead (`metrics_route.py`). Both ask for
`IMAGEBLUR_METRICS_TOKEN` as a bearer token when it is set.
"""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

StartResponse = Callable[..., Any]


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
    """Serves `registry` on host:port in a daemon thread; port 0 picks a free one."""

    def __init__(
        self, registry: CollectorRegistry, *, host: str, port: int, token: str | None
    ) -> None:
        self._app = make_wsgi_app(registry)
        self._host = host
        self._port = port
        self._token = token
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
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: GET /metrics\n"]
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

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
