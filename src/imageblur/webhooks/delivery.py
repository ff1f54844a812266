"""One delivery attempt: resolve the callback's host once, check every address, connect
to a checked one (the Host header and TLS server name from the URL), POST, follow no
redirect, read a few KB of the answer at most. A name that resolves to a public address
when checked and to 127.0.0.1 a moment later cannot lead here to 127.0.0.1: the address
connected to is the one checked, never resolved again."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from imageblur.webhooks.addresses import (
    HostPolicy,
    IPAddress,
    RefusedAddressError,
    Target,
    literal,
    parse_url,
)

# host, port -> the addresses it resolves to (the tests inject their own).
Resolver = Callable[[str, int], list[str]]

TIMEOUT_S = 5.0  # connecting, and each read: a receiver should answer fast, then work
ANSWER_BYTES = 4096  # read of the answer, for the history: never the whole of it


@dataclass(frozen=True, slots=True)
class Attempt:
    """What became of one attempt: `status` when the receiver answered, `error` (a
    short reason, never a secret) otherwise. `final`: no retry can help (refused)."""

    status: int | None = None
    error: str | None = None
    final: bool = False

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    policy: HostPolicy,
    resolver: Resolver = system_resolver,
    timeout_s: float = TIMEOUT_S,
) -> Attempt:
    """POST `body` (JSON) to `url` once, under `policy`."""
    try:
        target = parse_url(url)
        address = checked_address(target, policy, resolver)
    except RefusedAddressError as exc:
        return Attempt(error=str(exc), final=True)
    except OSError as exc:
        return Attempt(error=f"cannot resolve {parse_url(url).host}: {exc.strerror or exc}")
    try:
        return Attempt(status=_send(target, address, body, headers, timeout_s))
    except (OSError, http.client.HTTPException) as exc:
        return Attempt(error=f"{type(exc).__name__}: {exc}"[:200])


def checked_address(target: Target, policy: HostPolicy, resolver: Resolver) -> IPAddress:
    """The address to connect to: the host's own when literal, else its resolution, once,
    every address checked (one internal address among public ones refuses them all: a
    receiver does not need it, an attacker does)."""
    address = literal(target.host)
    if address is not None:
        policy.check_address(target.host, address)
        return address
    found = [a for a in (literal(text) for text in resolver(target.host, target.port)) if a]
    if not found:
        raise OSError(f"{target.host} has no address")
    for each in found:
        policy.check_address(target.host, each)
    return found[0]


def _send(
    target: Target, address: IPAddress, body: bytes, headers: dict[str, str], timeout_s: float
) -> int:
    connection = _connection(target, address, timeout_s)
    try:
        sent = {**headers, "Content-Type": "application/json", "User-Agent": "imageblur-webhooks"}
        connection.request("POST", target.path, body=body, headers=sent)
        answer = connection.getresponse()
        answer.read(ANSWER_BYTES)  # a few KB at most; the rest is dropped with the socket
        return answer.status
    finally:
        connection.close()


def _connection(target: Target, address: IPAddress, timeout_s: float) -> http.client.HTTPConnection:
    if target.scheme == "https":
        return _PinnedHTTPS(target.host, target.port, str(address), timeout_s)
    return _PinnedHTTP(target.host, target.port, str(address), timeout_s)


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to a checked address, whatever the name resolves to by now."""

    def __init__(self, host: str, port: int, address: str, timeout_s: float) -> None:
        super().__init__(host, port, timeout=timeout_s)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address; the certificate is checked against the URL's name."""

    def __init__(self, host: str, port: int, address: str, timeout_s: float) -> None:
        super().__init__(host, port, timeout=timeout_s, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]
