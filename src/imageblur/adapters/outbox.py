"""What both SQL adapters (and the unit tests' fake) do alike for the webhook outbox:
the row a notifying transition writes, a row read back, and the audit line of a
delivery given up."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from imageblur.adapters.transitions import MAX_DETAIL_CHARS
from imageblur.domain import Event, ImageRecord, WebhookMessage
from imageblur.lifecycle import webhook_event

# The columns a claim returns, in `WebhookMessage`'s order.
COLUMNS = (
    "id, image_id, event, url, created_at, attempts, next_attempt_at, outcome, last_error, "
    "to_operator, finished_at"
)
INSERT_COLUMNS = "id, image_id, event, url, created_at, attempts, next_attempt_at, to_operator"
# How many finished rows one sweep deletes at most (one statement, a short lock).
SWEEP_BATCH = 1000
GIVEN_UP = "webhook_given_up"  # the audit trail's action


def destination(record: ImageRecord, server_url: str | None) -> tuple[str, bool] | None:
    """Where the events of `record` go, and whether that is the operator's: the upload's
    own `callback_url` (an option), else the server's IMAGEBLUR_WEBHOOK_URL as the
    repository was built with (None: nowhere, no row). An operator's row is sent to the
    sender's current URL (`WebhookMessage.to_operator`): the one stored here only says
    where it was meant to go when it was written."""
    if record.options is not None and record.options.callback_url is not None:
        return record.options.callback_url, False
    return None if server_url is None else (server_url, True)


def new_message(record: ImageRecord, url: str, *, to_operator: bool = False) -> WebhookMessage:
    """The row of the event `record` (as it is after its transition) has just come to:
    due at once. The id is the `webhook-id` of every attempt."""
    return WebhookMessage(
        id=f"msg_{uuid.uuid4().hex}",
        image_id=record.id,
        event=webhook_event(record.kind, record.status),
        url=url,
        created_at=record.updated_at,
        next_attempt_at=record.updated_at,
        to_operator=to_operator,
    )


def insert_values(message: WebhookMessage, timestamp: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """The values of `INSERT_COLUMNS`, each time as the adapter stores one."""
    assert message.next_attempt_at is not None  # a new row is due
    return (
        message.id,
        message.image_id,
        message.event,
        message.url,
        timestamp(message.created_at),
        message.attempts,
        timestamp(message.next_attempt_at),
        message.to_operator,
    )


def message_of_row(row: Any, *, timestamp: Callable[[Any], datetime]) -> WebhookMessage:
    """A row as both SQL adapters read it back (each says how it stores a time)."""
    return WebhookMessage(
        id=row["id"],
        image_id=row["image_id"],
        event=row["event"],
        url=row["url"],
        created_at=timestamp(row["created_at"]),
        attempts=int(row["attempts"]),
        next_attempt_at=timestamp(row["next_attempt_at"]),
        outcome=row["outcome"],
        last_error=row["last_error"],
        to_operator=bool(row["to_operator"]),
        finished_at=None if row["finished_at"] is None else timestamp(row["finished_at"]),
    )


def given_up(record: ImageRecord, *, event: str, reason: str, now: datetime) -> Event:
    """The audit line of a delivery given up: which event, and why (never the URL's
    path or query, which may hold a receiver's token: the host at most, in `reason`)."""
    return Event(
        at=now,
        role="system",
        action=GIVEN_UP,
        status=record.status.public,
        revision=record.revision,
        detail=f"{event}: {reason}"[:MAX_DETAIL_CHARS],
    )
