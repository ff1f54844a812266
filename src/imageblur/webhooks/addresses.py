"""Where a webhook may go: `IMAGEBLUR_WEBHOOK_ALLOWED_HOSTS` as a policy, and the checks
that keep a delivery from reaching the service's own network (server-side request
forgery). Pure: resolving and connecting are the sender's (`delivery.py`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never a delivery's destination unless an entry of the list names it. Python's
# `is_global` covers these and the other special ranges (documentation, benchmarking,
# reserved); they are listed to say what the operator reads in docs/operations.md.
REFUSED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7", "fe80::/10",
    )
)  # fmt: skip
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class RefusedAddressError(ValueError):
    """A callback URL or address the policy does not allow; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """A callback URL taken apart: what the sender connects to and what it asks for."""

    scheme: str
    host: str
    port: int
    path: str  # with the query


def parse_url(url: str) -> Target:
    """`http(s)://host[:port]/path?query`, no user name or password (they would be
    logged and sent to whoever the name resolves to)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedAddressError("a callback URL is http:// or https:// with a host")
    if parts.username is not None or parts.password is not None:
        raise RefusedAddressError("a callback URL may not hold a user name or password")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RefusedAddressError(
            "the callback URL's port is not a number from 1 to 65535"
        ) from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname.lower().rstrip("."), port, path)


def literal(host: str) -> IPAddress | None:
    """The host as an IP address, when it is one."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, NAT64, 6to4): checked as that
    address, since that is where such a packet ends up."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def internal(address: IPAddress) -> bool:
    """Loopback, private, link-local, shared, multicast or otherwise not a public address."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return internal(inner)
    return (
        any(address in net for net in REFUSED if net.version == address.version)
        or not address.is_global
        or address.is_multicast
    )


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """`IMAGEBLUR_WEBHOOK_ALLOWED_HOSTS`: `*` (any public address), host names (exact or
    `*.suffix`), IP addresses or CIDRs. An address or range on the list is allowed even
    when internal; a name on the list allows its public addresses only."""

    any_public: bool
    names: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, text: str) -> HostPolicy:
        words = text.replace(",", " ").split()
        networks, names = [], []
        for word in words:
            try:
                networks.append(ipaddress.ip_network(word.strip("[]"), strict=False))
            except ValueError:
                names.append(word.lower().rstrip("."))
        suffixes = tuple(n[1:] for n in names if n.startswith("*.") and len(n) > 2)
        exact = frozenset(n for n in names if not n.startswith("*"))
        return cls("*" in names, exact, suffixes, tuple(networks))

    @classmethod
    def anywhere(cls) -> HostPolicy:
        """Every address, internal ones included: the operator's own URL."""
        return cls(True, frozenset(), (), (ipaddress.ip_network("0.0.0.0/0"),
                                            ipaddress.ip_network("::/0")))  # fmt: skip

    def check_host(self, host: str) -> None:
        """At upload: a literal address outside the policy, or a name it does not list,
        is refused before anything is stored. A name's addresses are checked at sending."""
        address = literal(host)
        if address is not None:
            self.check_address(host, address)
        elif not (self.any_public or self._lists_name(host)):
            raise RefusedAddressError(f"callbacks to {host} are not allowed on this server")

    def check_address(self, host: str, address: IPAddress) -> None:
        """Whether a delivery for `host` may connect to `address`."""
        if any(address in net for net in self.networks if net.version == address.version):
            return
        if internal(address):
            raise RefusedAddressError(f"{host} is an internal address ({address}): not allowed")
        if not (self.any_public or (literal(host) is None and self._lists_name(host))):
            raise RefusedAddressError(f"callbacks to {host} are not allowed on this server")

    def _lists_name(self, host: str) -> bool:
        return host in self.names or any(host.endswith(s) for s in self.suffixes)
