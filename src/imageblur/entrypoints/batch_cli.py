"""`imageblur batch SRC DST`: post a bucket batch to a running API and follow it.

The client side of `POST /batches` (issue 27): it needs no store nor model, only the
API's address (`--url`, `IMAGEBLUR_URL`) and its token (`IMAGEBLUR_API_TOKEN`, sent as a
bearer token and never printed)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

ENDED = ("done", "cancelled", "failed")
POLL_S = 1.0
S3_SCHEME = "s3://"
FILE_SCHEME = "file:"


class UsageError(ValueError):
    """A location or option the command line cannot name."""


def location(text: str) -> dict[str, str]:
    """`s3://bucket/prefix` or `file:/folder` as the API's `{"bucket", "prefix"}`."""
    if text.startswith(S3_SCHEME):
        bucket, _, prefix = text.removeprefix(S3_SCHEME).partition("/")
        if not bucket:
            raise UsageError(f"{text!r}: no bucket after s3://")
        return {"bucket": bucket, "prefix": prefix}
    if text.startswith(FILE_SCHEME):
        folder = text.removeprefix(FILE_SCHEME)
        if not folder.startswith("/"):
            raise UsageError(f"{text!r}: file: takes an absolute folder (file:/path)")
        return {"bucket": text.rstrip("/") or FILE_SCHEME + "/", "prefix": ""}
    raise UsageError(f"{text!r}: a location is s3://bucket/prefix or file:/folder")


def options(pairs: Sequence[str]) -> dict[str, str]:
    """`k=v` pairs as the batch's options."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"{pair!r}: an option is NAME=VALUE")
        found[name] = value
    return found


def progress_line(batch: Mapping[str, Any]) -> str:
    """The counts a finished batch prints."""
    skipped = batch.get("skipped") or {}
    by_reason = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
    return (
        f"batch {batch['id']} {batch['status']}: {batch['done']} done, {batch['failed']} failed, "
        f"{sum(skipped.values())} skipped{f' ({by_reason})' if by_reason else ''}, "
        f"{batch['faces']} faces hidden"
        + (f"; error: {batch['error']}" if batch.get("error") else "")
    )


def _ended_items(batch: Mapping[str, Any]) -> int:
    skipped = int(sum((batch.get("skipped") or {}).values()))
    return int(batch["done"]) + int(batch["failed"]) + skipped


def follow(
    client: httpx.Client,
    batch: dict[str, Any],
    *,
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the batch until it ends, drawing a bar as `imageblur blur` does (tqdm, off
    when stderr is no terminal): its total is what is listed until listing ends."""
    from tqdm import tqdm

    with tqdm(unit="item", disable=None, desc=batch["id"][:12]) as bar:
        while True:
            total = batch["total"] if batch["total"] is not None else batch["listed"]
            bar.total = total
            bar.n = _ended_items(batch)
            bar.set_postfix_str(batch["status"], refresh=False)
            bar.refresh()
            if batch["status"] in ENDED:
                return batch
            sleep(poll_s)
            answer = client.get(f"/batches/{batch['id']}")
            answer.raise_for_status()
            batch = answer.json()


def run(
    url: str,
    token: str | None,
    body: Mapping[str, Any],
    *,
    poll_s: float = POLL_S,
) -> int:
    """Post `body`, follow the batch; 0 when it is done with no failed item, 1 when it
    failed, was cancelled or has failed items, 2 when the API refused it. Ctrl-C leaves
    it running and says how to stop it."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per poll is noise here
    try:
        return _post_and_follow(url.rstrip("/"), token, body, poll_s=poll_s)
    except httpx.HTTPError as exc:
        print(f"imageblur: {url}: {exc}", file=sys.stderr)
        return 2


def _post_and_follow(url: str, token: str | None, body: Mapping[str, Any], *, poll_s: float) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        posted = client.post("/batches", json=dict(body))
        if posted.status_code not in (200, 202):
            print(f"imageblur: {url} refused the batch: {_why(posted)}", file=sys.stderr)
            return 2
        batch = posted.json()
        verb = "posted" if posted.status_code == 202 else "already there (the same batch)"
        try:  # from before the line that names it: Ctrl-C at once still says how to stop it
            print(f"batch {batch['id']} {verb}: {url}/batches/{batch['id']}", file=sys.stderr)
            final = follow(client, batch, poll_s=poll_s)
        except KeyboardInterrupt:
            print(
                f"\nimageblur: batch {batch['id']} keeps running on the server; stop it with "
                f"`curl -X DELETE -H 'Authorization: Bearer $IMAGEBLUR_API_TOKEN' "
                f"{url}/batches/{batch['id']}`",
                file=sys.stderr,
            )
            return 130
    print(progress_line(final))
    return 0 if final["status"] == "done" and not final["failed"] else 1


def _why(answer: httpx.Response) -> str:
    try:
        detail = answer.json()
    except ValueError:
        return f"{answer.status_code} {answer.text[:200]}"
    if isinstance(detail, dict):
        return f"{answer.status_code} {detail.get('error')}: {detail.get('message', '')}"
    return f"{answer.status_code} {detail}"
