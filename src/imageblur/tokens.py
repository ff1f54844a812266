"""Who may call the API, as settings write it: the API tokens (a comma-separated list, so
one can be rotated without downtime), the named reviewers' tokens, which listen
addresses are loopback, and which Host names a loopback listener trusts.

Pure functions: config.py validates with them, the middlewares and the start-up checks
use their results. A ValueError here never repeats a token (messages reach logs).
"""

from __future__ import annotations

import ipaddress
import re

MIN_TOKEN_CHARS = 16
REVIEWER_NAME = re.compile(r"^[a-z0-9._-]{1,64}$")
# The name the single IMAGEBLUR_REVIEWER_TOKEN of earlier releases stands for.
LEGACY_REVIEWER = "reviewer"
PLACEHOLDER = "CHANGE_ME"
DEFAULT_TRUSTED_HOSTS = "localhost,127.0.0.1,[::1]"


def check_token(token: str, where: str) -> None:
    """At least 16 characters, no whitespace: a Secret written with `echo` ends in a
    newline, better refused at start than answered 401 on every request."""
    if len(token) < MIN_TOKEN_CHARS or any(ch.isspace() for ch in token):
        raise ValueError(
            f"{where} must be at least {MIN_TOKEN_CHARS} characters without spaces or newlines"
        )


def split_tokens(text: str) -> list[str]:
    """The tokens of a comma-separated list (IMAGEBLUR_API_TOKEN), each checked."""
    parts = text.split(",")
    for number, token in enumerate(parts, start=1):
        check_token(token, f"token {number} of {len(parts)}" if len(parts) > 1 else "the token")
    return parts


def parse_reviewers(text: str) -> dict[str, str]:
    """`name:token,name:token` (IMAGEBLUR_REVIEWER_TOKENS) as {name: token}: names match
    [a-z0-9._-]{1,64} and are distinct, tokens are checked like the API's."""
    entries = text.split(",")
    reviewers: dict[str, str] = {}
    for number, entry in enumerate(entries, start=1):
        where = f"entry {number} of {len(entries)}"
        name, colon, token = entry.partition(":")
        if not colon:
            raise ValueError(f"{where} is not name:token")
        if not REVIEWER_NAME.fullmatch(name):
            # Not shown: a token written before its name would show here.
            raise ValueError(f"{where}: the name must match [a-z0-9._-]{{1,64}}")
        if name in reviewers:
            raise ValueError(f"{where}: the name {name} is given twice")
        check_token(token, f"{where} ({name})")
        reviewers[name] = token
    return reviewers


def is_loopback(host: str) -> bool:
    """Whether a listen address reaches only this machine; a name other than
    `localhost` counts as not (it may resolve to anything)."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_hosts(text: str) -> list[str]:
    """The names of IMAGEBLUR_TRUSTED_HOSTS, lower case, brackets of IPv6 kept off."""
    return [_bare(part) for part in text.split(",") if part.strip()]


def host_name(header: str) -> str:
    """The name of a Host header without its port: `[::1]:8080` -> `::1`."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else ""
    name, _, _ = value.partition(":")
    return name


def host_trusted(header: str, trusted: list[str]) -> bool:
    """Whether a Host header names one of `trusted`: an exact name, `*.example.org`
    (any name under it) or `*` (any name)."""
    name = host_name(header)
    if not name:
        return False
    for pattern in trusted:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def _bare(name: str) -> str:
    return name.strip().lower().removeprefix("[").removesuffix("]")
