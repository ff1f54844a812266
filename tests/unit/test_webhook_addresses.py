"""Where a webhook may go (IMAGEBLUR_WEBHOOK_ALLOWED_HOSTS), address by address."""

from __future__ import annotations

import ipaddress

import pytest

from imageblur.webhooks.addresses import HostPolicy, RefusedAddressError, internal, parse_url

INTERNAL = [
    "0.0.0.0", "10.1.2.3", "100.64.0.1", "127.0.0.1", "127.255.0.9", "169.254.169.254",
    "172.16.0.1", "172.31.255.255", "192.168.1.1", "::1", "fc00::1", "fd12::1", "fe80::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::", "224.0.0.1",
    "::",
]  # fmt: skip
PUBLIC = ["1.1.1.1", "93.184.215.14", "2606:4700::1111", "::ffff:1.1.1.1"]


@pytest.mark.parametrize("text", INTERNAL)
def test_internal_addresses_are_recognised_in_every_form(text: str) -> None:
    assert internal(ipaddress.ip_address(text))


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_are_not_internal(text: str) -> None:
    assert not internal(ipaddress.ip_address(text))


@pytest.mark.parametrize("text", INTERNAL)
def test_the_default_refuses_every_internal_literal(text: str) -> None:
    host = f"[{text}]" if ":" in text else text
    with pytest.raises(RefusedAddressError, match="internal address"):
        HostPolicy.parse("*").check_host(parse_url(f"http://{host}/hook").host)


def test_an_entry_naming_an_internal_address_or_range_allows_it() -> None:
    policy = HostPolicy.parse("127.0.0.1 10.0.0.0/8")
    policy.check_host("127.0.0.1")
    policy.check_address("hooks.internal", ipaddress.ip_address("10.9.8.7"))
    with pytest.raises(RefusedAddressError):
        policy.check_host("127.0.0.2")
    with pytest.raises(RefusedAddressError):  # not "*": a public name must be listed
        policy.check_host("example.com")


def test_names_exact_and_by_suffix_allow_public_addresses_only() -> None:
    policy = HostPolicy.parse("hooks.example.com, *.partner.org")
    public = ipaddress.ip_address("1.1.1.1")
    policy.check_address("hooks.example.com", public)
    policy.check_address("a.b.partner.org", public)
    for host in ("example.com", "partner.org", "evilpartner.org", "hooks.example.com.evil"):
        with pytest.raises(RefusedAddressError, match="not allowed on this server"):
            policy.check_address(host, public)
    with pytest.raises(RefusedAddressError, match="internal address"):
        policy.check_address("hooks.example.com", ipaddress.ip_address("127.0.0.1"))


def test_the_operators_own_url_may_be_internal() -> None:
    HostPolicy.anywhere().check_address("hooks.svc", ipaddress.ip_address("10.0.0.5"))


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "http:///nohost", "https://user:pw@example.com/", "http://a:99999/"],
)
def test_only_plain_http_urls_with_a_host_are_callbacks(url: str) -> None:
    with pytest.raises(RefusedAddressError):
        parse_url(url)


def test_a_url_keeps_its_path_and_query() -> None:
    target = parse_url("https://Hooks.Example.com.:8443/in/hook?k=v")
    assert (target.scheme, target.host, target.port, target.path) == (
        "https", "hooks.example.com", 8443, "/in/hook?k=v",
    )  # fmt: skip
