"""The sender: a thread in each worker process that takes due rows of the webhook outbox
under a lease, signs and POSTs each event, and settles the row: delivered, due again
after a growing delay, or given up (in the picture's history) once the patience is spent
or the address is refused. At least once: a worker that dies mid-delivery leaves its row
to another sender when the lease ends, under the same `webhook-id`.

The body is Standard Webhooks' envelope: `{"type": event, "timestamp": when the event
happened, "data": the record as GET /picture/{id} (or /video/{id}) shows it when sent}`.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from imageblur.domain import BackendUnavailable, ImageRecord, WebhookMessage, utcnow
from imageblur.logs import get_logger
from imageblur.metrics import Metrics
from imageblur.ports import Outbox, PictureLookup
from imageblur.webhooks import delivery
from imageblur.webhooks.addresses import HostPolicy, parse_url
from imageblur.webhooks.signing import signed_headers

log = get_logger(__name__)

BASE_DELAY_S = 5.0  # the first retry's delay; doubled after each failed attempt
MAX_DELAY_S = 3600.0
IDLE_S = 1.0  # between looks at an outbox with nothing due
BACKOFF_S = 5.0  # after the database failed
DEPTH_EVERY_S = 15.0  # how often the outbox depth gauge is read
SWEEP_EVERY_S = 60.0  # how often finished rows past their retention are deleted

# The record as the API shows it (a dict of JSON values).
BATCH_EVENTS = "batch."
Render = Callable[[ImageRecord], Mapping[str, Any]]
# A bucket batch's event data by its id (None: no such batch). Batches are not records:
# their `batch.*` rows name a batch id where others name a picture's.
RenderBatch = Callable[[str], Mapping[str, Any] | None]


class Post(Protocol):
    def __call__(
        self, url: str, body: bytes, headers: dict[str, str], *, policy: HostPolicy
    ) -> delivery.Attempt: ...


class OutboxRepository(Outbox, PictureLookup, Protocol):
    """The roles the sender uses."""


def retry_delay_s(attempts: int, jitter: float) -> float:
    """5 s, 10 s, 20 s, ... at most an hour, after `attempts` failed attempts; `jitter`
    in [0, 1) takes it to 50-100 %, so that the events a receiver's outage held back do
    not all come back in the same second."""
    grown: float = BASE_DELAY_S * 2.0 ** min(max(attempts - 1, 0), 20)
    return min(MAX_DELAY_S, grown) * (0.5 + jitter / 2)


def envelope(message: WebhookMessage, data: Mapping[str, Any]) -> bytes:
    """The body of a delivery, the same bytes the signature covers."""
    when = message.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    document = {"type": message.event, "timestamp": when, "data": data}
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class SenderTerms:
    """Where events may go and how long they are tried."""

    keys: list[bytes]  # IMAGEBLUR_WEBHOOK_SECRET's
    operator_url: str | None  # IMAGEBLUR_WEBHOOK_URL: exempt from the allowed hosts
    allowed: HostPolicy  # IMAGEBLUR_WEBHOOK_ALLOWED_HOSTS, for every other URL
    patience_s: float
    lease_s: float
    retention_s: float = 86400.0  # how long a finished row is kept (then swept)
    concurrency: int = 1  # deliveries in flight at once (`run`)

    def target(self, message: WebhookMessage) -> tuple[str, HostPolicy] | None:
        """Where `message` goes and under which policy: an operator's row to the current
        IMAGEBLUR_WEBHOOK_URL, exempt from the allowed hosts (None: unset since); any
        other to its own URL, under them, unless it is the operator's URL (a row written
        before operator rows were flagged)."""
        if message.to_operator:
            url = self.operator_url
            return None if url is None else (url, HostPolicy.anywhere())
        exempt = message.url == self.operator_url
        return message.url, HostPolicy.anywhere() if exempt else self.allowed


class WebhookSender:
    """Sends the outbox's due events until `stop` is set, up to `terms.concurrency` at
    once: one slow receiver (each attempt may wait its time-outs) must not hold back
    every other event."""

    def __init__(
        self,
        *,
        repository: OutboxRepository,
        render: Render,
        terms: SenderTerms,
        owner: str,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        post: Post = delivery.post,
        jitter: Callable[[], float] = random.random,
        render_batch: RenderBatch | None = None,
    ) -> None:
        self._repo = repository
        self._render = render
        self._render_batch = render_batch
        self._terms = terms
        self._owner = owner
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._post = post
        self._jitter = jitter

    def send_due(self) -> int:
        """Take one due event and send it; how many were taken (0: nothing due)."""
        taken = self._repo.claim_webhooks(
            owner=self._owner, lease_s=self._terms.lease_s, now=self._clock(), limit=1
        )
        for message in taken:
            self._send(message)
        return len(taken)

    def _data(self, message: WebhookMessage) -> Mapping[str, Any] | None:
        """The event's data, from its record or batch as it is now (None: gone)."""
        if message.event.startswith(BATCH_EVENTS):
            return None if self._render_batch is None else self._render_batch(message.image_id)
        record = self._repo.get(message.image_id)
        return None if record is None else self._render(record)

    def _send(self, message: WebhookMessage) -> None:
        try:
            data = self._data(message)
            if data is None:  # deleted meanwhile: its rows went with it
                return
            body = envelope(message, data)
        except Exception as exc:  # a bug: retried like a failed attempt, given up in time
            log.exception("webhook.render_error", image_id=message.image_id, webhook_id=message.id)
            self._settle(message, delivery.Attempt(error=f"internal error: {type(exc).__name__}"))
            return
        target = self._terms.target(message)
        if target is None:
            unset = "IMAGEBLUR_WEBHOOK_URL is no longer set here"
            self._settle(message, delivery.Attempt(error=unset, final=True))
            return
        url, policy = target
        stamp = int(self._clock().timestamp())
        headers = signed_headers(self._terms.keys, message.id, stamp, body)
        self._settle(message, self._post(url, body, headers, policy=policy), url=url)

    def _settle(
        self, message: WebhookMessage, attempt: delivery.Attempt, *, url: str | None = None
    ) -> None:
        now = self._clock()
        said = {
            "image_id": message.image_id,
            "webhook_id": message.id,
            "webhook_event": message.event,
            "attempt": message.attempts,
            "host": _host(url or message.url),
            "status": attempt.status,
        }
        if attempt.delivered:
            self._repo.webhook_delivered(message.id, now=now)
            latency_s = (now - message.created_at).total_seconds()
            self._metrics.webhook_delivered(latency_s=latency_s)
            log.info("webhook.attempt", outcome="delivered", latency_s=round(latency_s, 3), **said)
            return
        reason = attempt.error or f"HTTP {attempt.status}"
        if attempt.status is not None and 300 <= attempt.status < 400:
            reason += " (redirects are not followed)"
        deadline = message.created_at + timedelta(seconds=self._terms.patience_s)
        if attempt.final or now >= deadline:
            why = reason if attempt.final else f"{reason}, after {message.attempts} attempts"
            self._repo.webhook_given_up(message.id, owner=self._owner, reason=why, now=now)
            self._metrics.webhook_attempted("given_up")
            log.error("webhook.attempt", outcome="given_up", error=why, **said)
            return
        delay_s = retry_delay_s(message.attempts, self._jitter())
        due = min(now + timedelta(seconds=delay_s), deadline)
        self._repo.webhook_retry(message.id, owner=self._owner, next_attempt_at=due, error=reason)
        self._metrics.webhook_attempted("retry")
        log.warning("webhook.attempt", outcome="retry", error=reason, retry_in_s=delay_s, **said)

    def sweep(self) -> int:
        """Delete a batch of the rows finished (delivered or given up) longer ago than
        the retention: how many went."""
        before = self._clock() - timedelta(seconds=self._terms.retention_s)
        swept = self._repo.sweep_webhooks(finished_before=before)
        if swept:
            log.info("webhook.swept", rows=swept)
        return swept

    def _send_logged(self, message: WebhookMessage) -> None:
        """`_send` in a pool thread: what it raises is logged (the row is sent again
        after its lease)."""
        try:
            self._send(message)
        except Exception:
            log.exception("webhook.sender_error", webhook_id=message.id)

    def _take(self, pool: ThreadPoolExecutor, in_flight: set[Future[None]]) -> bool:
        """Claim as many due events as there are free places, each sent in `pool`;
        whether to look again at once (some were due, or every place was busy until one
        came free or `IDLE_S` passed)."""
        in_flight -= {f for f in in_flight if f.done()}
        free = self._terms.concurrency - len(in_flight)
        if free <= 0:
            wait(in_flight, timeout=IDLE_S, return_when=FIRST_COMPLETED)
            return True
        taken = self._repo.claim_webhooks(
            owner=self._owner, lease_s=self._terms.lease_s, now=self._clock(), limit=free
        )
        in_flight |= {pool.submit(self._send_logged, m) for m in taken}
        return bool(taken)

    def run(self, stop: threading.Event) -> None:
        """Send until `stop`: at once while events are due (and places free), else every
        `IDLE_S`. Deliveries still in flight at the stop finish on their own (or their
        rows are sent again after the lease)."""
        pool = ThreadPoolExecutor(self._terms.concurrency, thread_name_prefix="webhook")
        try:
            self._loop(stop, pool)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self, stop: threading.Event, pool: ThreadPoolExecutor) -> None:
        in_flight: set[Future[None]] = set()
        next_depth = next_sweep = time.monotonic()
        while not stop.is_set():
            pause_s = 0.0
            try:
                if time.monotonic() >= next_depth:
                    self._metrics.webhook_outbox.set(self._repo.outbox_depth())
                    next_depth = time.monotonic() + DEPTH_EVERY_S
                if time.monotonic() >= next_sweep:
                    self.sweep()
                    next_sweep = time.monotonic() + SWEEP_EVERY_S
                if not self._take(pool, in_flight):
                    pause_s = IDLE_S
            except BackendUnavailable as exc:
                log.warning("webhook.sender_unavailable", error=str(exc))
                pause_s = BACKOFF_S
            except Exception:  # one bad event must not end the sender
                log.exception("webhook.sender_error")
                pause_s = BACKOFF_S
            if pause_s:
                stop.wait(pause_s)


def _host(url: str) -> str | None:
    """The host a URL names, for the log: never its path or query, which may hold a
    receiver's token."""
    try:
        return parse_url(url).host
    except ValueError:
        return None
