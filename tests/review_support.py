"""What the tests of a server requiring review share: its tokens, its originals key,
its settings and a client holding one role's token."""

from __future__ import annotations

import base64

import httpx

from support import Server

API_TOKEN = "api-token-0123456789abcdef"
REVIEWER_TOKEN = "reviewer-token-0123456789abcdef"
KEY = base64.b64encode(bytes(range(32))).decode()


def review_env(**extra: str) -> dict[str, str]:
    """Review required, originals sealed with `KEY`, both roles' tokens set."""
    return {
        "IMAGEBLUR_REVIEW": "required",
        "IMAGEBLUR_ORIGINALS_KEY": KEY,
        "IMAGEBLUR_API_TOKEN": API_TOKEN,
        "IMAGEBLUR_REVIEWER_TOKEN": REVIEWER_TOKEN,
        **extra,
    }


def client(server: Server, token: str, timeout_s: float = 30) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, timeout=timeout_s, headers={"Authorization": f"Bearer {token}"}
    )
