"""The webhook sender over the unit tests' fake repository and real sockets (a loopback
receiver): what it sends, how it retries under one webhook-id, when it gives up, and
what it records. Signatures are checked with an HMAC written here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
from dataclasses import replace

from tests.webhook_receiver import Receiver, webhook_receiver

from imageblur.domain import ImageRecord, Status
from imageblur.metrics import Metrics
from imageblur.webhooks.addresses import HostPolicy
from imageblur.webhooks.sender import SenderTerms, WebhookSender, retry_delay_s
from imageblur.webhooks.signing import parse_secrets
from records import pending_picture
from support import wait_until

from .fakes import Clock, FakeRepository

KEY = os.urandom(32)


def _terms(operator_url: str | None, *, allowed: str = "*", patience_s: float = 600) -> SenderTerms:
    return SenderTerms(
        keys=parse_secrets("whsec_" + base64.b64encode(KEY).decode()),
        operator_url=operator_url,
        allowed=HostPolicy.parse(allowed),
        patience_s=patience_s,
        lease_s=30,
    )


def _shown(record: ImageRecord) -> dict[str, object]:
    return {"id": record.id, "status": record.status.public}


def _done(repo: FakeRepository, clock: Clock) -> str:
    repo.add(pending_picture(at=clock.now, image_id="p1"))
    assert repo.claim("p1", owner="w", lease_s=30, now=clock.now)
    assert repo.complete("p1", owner="w", output_key="o", url="u", faces=1, now=clock.now)
    return "p1"


def _sender(
    repo: FakeRepository, clock: Clock, terms: SenderTerms, metrics: Metrics
) -> WebhookSender:
    return WebhookSender(
        repository=repo,
        render=_shown,
        terms=terms,
        owner="s",
        metrics=metrics,
        clock=clock,
        jitter=lambda: 0.999,
    )


def _verified(receiver: Receiver) -> list[str]:
    """The webhook-id of each delivery received, each signature checked."""
    ids = []
    for got in receiver.got:
        h = {k.lower(): v for k, v in got.headers.items()}
        signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + got.body
        digest = hmac.new(KEY, signed, hashlib.sha256).digest()
        assert h["webhook-signature"] == "v1," + base64.b64encode(digest).decode()
        ids.append(h["webhook-id"])
    return ids


def test_an_event_is_delivered_signed_in_its_envelope() -> None:
    repo, clock, metrics = FakeRepository(), Clock(), Metrics()
    with webhook_receiver() as receiver:
        repo.webhook_url = receiver.url
        image_id = _done(repo, clock)
        clock.advance(2)
        sender = _sender(repo, clock, _terms(receiver.url, allowed="hooks.example"), metrics)
        assert sender.send_due() == 1
        assert sender.send_due() == 0
    (webhook_id,) = _verified(receiver)
    (row,) = repo.webhooks(image_id)
    assert (row.id, row.outcome, row.attempts) == (webhook_id, "delivered", 1)
    assert json.loads(receiver.got[0].body) == {
        "type": "picture.done",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {"id": "p1", "status": "done"},
    }
    assert metrics.webhook_deliveries.labels(outcome="delivered")._value.get() == 1
    assert metrics.webhook_latency._sum.get() == 2.0


def test_a_receiver_that_fails_twice_gets_the_event_under_one_id() -> None:
    repo, clock, metrics = FakeRepository(), Clock(), Metrics()
    with webhook_receiver([500, 500]) as receiver:
        repo.webhook_url = receiver.url
        image_id = _done(repo, clock)
        sender = _sender(repo, clock, _terms(receiver.url), metrics)
        assert sender.send_due() == 1
        (row,) = repo.webhooks(image_id)
        assert (row.last_error, row.outcome) == ("HTTP 500", None)
        assert sender.send_due() == 0  # not due yet
        for _ in range(2):
            clock.now = repo.webhooks(image_id)[0].next_attempt_at or clock.now
            assert sender.send_due() == 1
    ids = _verified(receiver)
    assert len(ids) == 3 and len(set(ids)) == 1
    assert repo.webhooks(image_id)[0].outcome == "delivered"
    assert metrics.webhook_deliveries.labels(outcome="retry")._value.get() == 2


def test_the_delays_grow_from_5_s_to_an_hour_jittered() -> None:
    assert [round(retry_delay_s(n, 0.999)) for n in (1, 2, 3)] == [5, 10, 20]
    assert retry_delay_s(40, 0.999) <= 3600
    assert retry_delay_s(1, 0.0) == 2.5


def test_an_event_is_given_up_after_the_patience_and_the_history_says_why() -> None:
    repo, clock = FakeRepository(), Clock()
    with webhook_receiver([500] * 50) as receiver:
        repo.webhook_url = receiver.url
        image_id = _done(repo, clock)
        sender = _sender(repo, clock, _terms(receiver.url, patience_s=60), Metrics())
        while repo.webhooks(image_id)[0].outcome is None:
            clock.now = repo.webhooks(image_id)[0].next_attempt_at or clock.now
            assert sender.send_due() == 1
    (row,) = repo.webhooks(image_id)
    assert row.outcome == "given_up" and 3 <= row.attempts <= 6
    last = repo.history(image_id)[-1]
    assert (last.action, last.role) == ("webhook_given_up", "system")
    assert last.detail is not None and last.detail.startswith("picture.done: HTTP 500, after")


def test_a_refused_address_is_given_up_at_once() -> None:
    repo, clock = FakeRepository(), Clock()
    with webhook_receiver() as receiver:
        # A client's URL (not the operator's) to loopback, which the list does not name.
        repo.webhook_url = receiver.url
        image_id = _done(repo, clock)
        _as_callback(repo, image_id)
        _sender(repo, clock, _terms(None, allowed="*"), Metrics()).send_due()
    assert receiver.got == []
    (row,) = repo.webhooks(image_id)
    assert row.outcome == "given_up" and "internal address" in (row.last_error or "")
    assert "internal address" in (repo.history(image_id)[-1].detail or "")


def test_the_event_of_a_deleted_picture_is_not_sent() -> None:
    repo, clock = FakeRepository(), Clock()
    with webhook_receiver() as receiver:
        repo.webhook_url = receiver.url
        image_id = _done(repo, clock)
        sender = _sender(repo, clock, _terms(receiver.url), Metrics())
        repo.delete(image_id)
        assert sender.send_due() == 0
    assert receiver.got == []


def test_a_record_that_cannot_be_shown_is_retried_then_given_up_not_stuck() -> None:
    repo, clock = FakeRepository(), Clock()

    def broken(record: ImageRecord) -> dict[str, object]:
        raise ValueError("a bug")

    repo.webhook_url = "http://hooks.example/in"
    image_id = _done(repo, clock)
    sender = WebhookSender(
        repository=repo, render=broken, terms=_terms(None, patience_s=30), owner="s", clock=clock
    )
    while repo.webhooks(image_id)[0].outcome is None:
        clock.now = repo.webhooks(image_id)[0].next_attempt_at or clock.now
        assert sender.send_due() == 1
    (row,) = repo.webhooks(image_id)
    assert row.outcome == "given_up" and "internal error: ValueError" in (row.last_error or "")


def test_the_operators_event_goes_to_its_current_url_exempt_from_the_allowed_hosts() -> None:
    """The operator changed IMAGEBLUR_WEBHOOK_URL while an event waited: it goes to the
    new URL, a loopback one the allowed hosts (`hooks.example`) do not name."""
    repo, clock, metrics = FakeRepository(), Clock(), Metrics()
    repo.webhook_url = "http://old.example/hook"
    image_id = _done(repo, clock)
    (row,) = repo.webhooks(image_id)
    assert row.to_operator and row.url == "http://old.example/hook"
    with webhook_receiver() as receiver:
        sender = _sender(repo, clock, _terms(receiver.url, allowed="hooks.example"), metrics)
        assert sender.send_due() == 1
    assert len(_verified(receiver)) == 1
    assert repo.webhooks(image_id)[0].outcome == "delivered"


def test_the_operators_event_is_given_up_once_its_url_is_unset() -> None:
    repo, clock, metrics = FakeRepository(), Clock(), Metrics()
    repo.webhook_url = "http://old.example/hook"
    image_id = _done(repo, clock)
    assert _sender(repo, clock, _terms(None), metrics).send_due() == 1
    (row,) = repo.webhooks(image_id)
    assert row.outcome == "given_up" and "IMAGEBLUR_WEBHOOK_URL" in (row.last_error or "")


def test_a_callback_is_held_to_the_allowed_hosts_even_at_the_operators_old_url() -> None:
    """A row not flagged as the operator's is checked against the list; one at the
    operator's current URL (written before rows were flagged) is not."""
    repo, clock, metrics = FakeRepository(), Clock(), Metrics()
    with webhook_receiver() as receiver:
        repo.webhook_url = receiver.url
        image_id = _done(repo, clock)
        _as_callback(repo, image_id)  # as an older release wrote the operator's rows
        sender = _sender(repo, clock, _terms(receiver.url, allowed="hooks.example"), metrics)
        assert sender.send_due() == 1
        assert repo.webhooks(image_id)[0].outcome == "delivered"
        second = _done_again(repo, clock)
        _as_callback(repo, second)
        moved = _terms("http://new.example/hook", allowed="hooks.example")
        assert _sender(repo, clock, moved, metrics).send_due() == 1
    (refused,) = repo.webhooks(second)
    assert refused.outcome == "given_up" and "internal address" in (refused.last_error or "")


def _as_callback(repo: FakeRepository, image_id: str) -> None:
    """The record's row as a client's callback's (or an older release's): not flagged
    as the operator's."""
    (row,) = repo.webhooks(image_id)
    repo.db.outbox[row.id] = replace(row, to_operator=False)


def _done_again(repo: FakeRepository, clock: Clock, image_id: str = "p2") -> str:
    record = repo.get("p1")
    assert record is not None
    repo.add(replace(record, id=image_id, status=Status.PENDING, input_key=f"in/{image_id}"))
    assert repo.claim(image_id, owner="w", lease_s=30, now=clock.now)
    assert repo.complete(image_id, owner="w", output_key="o", url="u", faces=1, now=clock.now)
    return image_id


def test_finished_rows_are_swept_after_the_retention() -> None:
    repo, clock, metrics = FakeRepository(), Clock(), Metrics()
    with webhook_receiver() as receiver:
        repo.webhook_url = receiver.url
        image_id = _done(repo, clock)
        terms = replace(_terms(receiver.url), retention_s=3600)
        sender = _sender(repo, clock, terms, metrics)
        assert sender.send_due() == 1
    assert sender.sweep() == 0  # kept for the retention
    clock.advance(3599)
    assert sender.sweep() == 0 and len(repo.webhooks(image_id)) == 1
    clock.advance(2)
    assert sender.sweep() == 1 and repo.webhooks(image_id) == []


def test_the_sender_keeps_up_to_its_concurrency_in_flight() -> None:
    """Four deliveries held by a slow receiver take four places: the other two events
    wait, unclaimed, until one comes free; then every event is delivered."""
    repo, clock, metrics = FakeRepository(), Clock(), Metrics()
    with webhook_receiver() as receiver:
        repo.webhook_url = receiver.url
        ids = [_done(repo, clock)] + [_done_again(repo, clock, f"p{n}") for n in range(2, 7)]
        receiver.hold()
        terms = replace(_terms(receiver.url), concurrency=4)
        sender = _sender(repo, clock, terms, metrics)
        stop = threading.Event()
        thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
        thread.start()
        try:
            wait_until(lambda: len(receiver.got) == 4, timeout_s=30, what="four in flight")
            claimed = [m for i in ids for m in repo.webhooks(i) if m.attempts]
            assert len(claimed) == 4  # the others wait for a place
            receiver.release()
            wait_until(
                lambda: all(repo.webhooks(i)[0].outcome == "delivered" for i in ids),
                timeout_s=30,
                what="every event delivered",
            )
        finally:
            stop.set()
            thread.join(timeout=10)
    assert sorted(_verified(receiver)) == sorted(m.id for i in ids for m in repo.webhooks(i))
