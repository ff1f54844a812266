"""How tokens, listen addresses and trusted Host names are read (pure)."""

from __future__ import annotations

import pytest

from imageblur.tokens import (
    DEFAULT_TRUSTED_HOSTS,
    host_name,
    host_trusted,
    is_loopback,
    parse_reviewers,
    split_hosts,
    split_tokens,
)

TOKEN = "t" * 16


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("localhost.example.org", False),  # a name may resolve to anything
    ],
)
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("[::1", ""),  # malformed: no name at all
        ("LocalHost", "localhost"),
        ("", ""),
    ],
)
def test_a_host_header_is_read_without_its_port(header: str, name: str) -> None:
    assert host_name(header) == name


def test_the_default_trusts_the_loopback_names_with_any_port() -> None:
    trusted = split_hosts(DEFAULT_TRUSTED_HOSTS)
    for header in ("localhost", "localhost:1", "127.0.0.1:8080", "[::1]:8080"):
        assert host_trusted(header, trusted), header
    for header in ("", "evil.example", "localhost.evil.example", "127.0.0.2", "[::2]:80"):
        assert not host_trusted(header, trusted), header


def test_wildcards_match_names_under_them_and_star_matches_any() -> None:
    trusted = split_hosts(" *.lan.example , Photos.Example.org ")
    assert host_trusted("desk.lan.example:443", trusted)
    assert host_trusted("photos.example.org", trusted)
    assert not host_trusted("lan.example", trusted)
    assert not host_trusted("evillan.example", trusted)
    assert host_trusted("anything", split_hosts("*"))
    assert not host_trusted("", split_hosts("*"))


def test_token_lists_and_reviewers_are_read_in_order() -> None:
    assert split_tokens(f"{TOKEN},{TOKEN}x") == [TOKEN, f"{TOKEN}x"]
    assert parse_reviewers(f"a.b_c-1:{TOKEN},z:{TOKEN}:colon") == {
        "a.b_c-1": TOKEN,
        "z": f"{TOKEN}:colon",
    }
    with pytest.raises(ValueError, match="the token must be at least 16"):
        split_tokens("short")
