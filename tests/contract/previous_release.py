"""What a pod of the previous release runs when a newer one adds a job kind, frozen here:
its claim and re-publish conditions (the WHERE that `adapters/sql_lifecycle` builds
from `lifecycle.TRANSITIONS`, as SQLite and PostgreSQL run it, and the same as the unit
tests' fake applies it), the queue it consumes and its message parser (`Job.from_json`:
a message it cannot run, such as one of a kind it does not know, is dead-lettered), and
the object keys its garbage collection takes.

Copied from the release that brought the job kinds rule (issue 24): do NOT update this
file when the claim conditions or the parser change. A new kind must stay invisible to
exactly this; when the oldest release still running in a rolling upgrade is a later
one, copy that release's conditions into a new fixture beside this one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

# `domain._KEY`: the object keys its garbage collection recognises (and deletes when no
# record needs them); any other key it leaves alone.
COLLECTED_KEY = re.compile(r"^([0-9a-f]{32})(?:-[ar][0-9]{1,9})?\.[a-z]{3,4}$")

# lifecycle.TRANSITIONS' "claim" rows, by the kind the message names, and
# "requeue_stale" (parameters written `:name`; PostgreSQL's `%(name)s`, see `sql`).
CLAIM_WHERE = {
    "detect": "(status IN ('pending')) OR (status IN ('processing') AND lease_expires_at <= :now)",
    "render": (
        "(status IN ('rendering') AND (lease_expires_at IS NULL OR lease_expires_at <= :now))"
    ),
}
REQUEUE_STALE_WHERE = (
    "(status IN ('pending', 'rendering') AND lease_expires_at IS NULL AND "
    "((published_at IS NULL AND updated_at <= :pending_before) OR "
    "published_at <= :published_before)) OR "
    "(status IN ('processing') AND lease_expires_at <= :now) OR "
    "(status IN ('rendering') AND lease_expires_at <= :now)"
)


def sql(where: str, style: str) -> str:
    """`where` with its parameters in the driver's style: "sqlite" or "postgres"."""
    return where if style == "sqlite" else re.sub(r":(\w+)", r"%(\1)s", where)


@dataclass(frozen=True, slots=True)
class Row:
    """The columns the conditions above read."""

    status: str
    lease_expires_at: datetime | None
    updated_at: datetime
    published_at: datetime | None = None


def fake_claims(kind: str, row: Row, now: datetime) -> bool:
    """The fake's claim (lifecycle.find over the table) as the previous release had it."""
    expired = row.lease_expires_at is not None and row.lease_expires_at <= now
    if kind == "detect":
        return row.status == "pending" or (row.status == "processing" and expired)
    if kind == "render":
        return row.status == "rendering" and (row.lease_expires_at is None or expired)
    return False


def fake_requeues(
    row: Row, now: datetime, pending_before: datetime, published_before: datetime
) -> bool:
    expired = row.lease_expires_at is not None and row.lease_expires_at <= now
    if row.status in ("pending", "rendering") and row.lease_expires_at is None:
        if row.published_at is None:
            return row.updated_at <= pending_before
        return row.published_at <= published_before
    return row.status in ("processing", "rendering") and expired


def consumed_queue(base: str) -> str:
    """The one job queue the previous release consumes (IMAGEBLUR_RABBITMQ_QUEUE)."""
    return base


def dead_queue(base: str) -> str:
    return f"{base}.dead"


class InvalidJobError(Exception):
    """The previous release parks the message with this reason."""


_ID = re.compile(r"^[0-9a-f]{32}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
KINDS = frozenset({"detect", "render"})


def parse_job(raw: bytes) -> dict[str, object]:
    """`Job.from_json` of the previous release: the job's fields, or `InvalidJobError`."""
    if len(raw) > 4096:
        raise InvalidJobError("malformed job message: too large")
    try:
        data = json.loads(raw)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidJobError(f"malformed job message: {type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise InvalidJobError("malformed job message: not a JSON object")
    image_id = data.get("image_id")
    if not isinstance(image_id, str) or not _ID.fullmatch(image_id):
        raise InvalidJobError("malformed job message: image_id is not an image id")
    attempt = data.get("attempt", 0)
    if type(attempt) is not int or not 0 <= attempt <= 10**9:
        raise InvalidJobError("malformed job message: attempt is not an integer 0..1000000000")
    kind = data.get("kind", "detect")
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidJobError("malformed job message: unknown kind")
    request_id = data.get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id)
    ):
        raise InvalidJobError("malformed job message: request_id is not a request id")
    return {"image_id": image_id, "attempt": attempt, "kind": kind, "request_id": request_id}
