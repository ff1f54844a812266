"""Webhooks on the distributed back ends: real API and worker processes on PostgreSQL,
RabbitMQ and S3 (moto), each worker's sender posting to a loopback receiver (the
operator's IMAGEBLUR_WEBHOOK_URL). Signatures are checked with an HMAC written from the
Standard Webhooks specification (`Receiver.verified`), under both secrets of a rotation;
the outbox row is read back from PostgreSQL."""

from __future__ import annotations

import base64
import os

from tests.webhook_receiver import Receiver, webhook_receiver

from imageblur.domain import WebhookMessage
from support import wait_until

from .conftest import DeploymentFactory
from .harness import Backends, Deployment, generated_jpeg


def _rows(backends: Backends, image_id: str) -> list[WebhookMessage]:
    repo = backends.repository()
    try:
        return list(repo.webhooks(image_id))
    finally:
        repo.close()


KEYS = [os.urandom(32), os.urandom(48)]  # the old secret and the new, while rotating
SECRETS = " ".join("whsec_" + base64.b64encode(k).decode() for k in KEYS)


def _deploy(
    deploy: DeploymentFactory, backends: Backends, receiver: Receiver, *, workers: int
) -> Deployment:
    return deploy(
        backends,
        workers=workers,
        webhook_url=receiver.url,
        webhook_secret=SECRETS,
        webhook_allowed_hosts="hooks.example",  # not loopback: the operator's URL is exempt
        webhook_lease_s="3",
    )


def test_a_receiver_that_fails_twice_gets_picture_done_under_one_id(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    with webhook_receiver([500, 500]) as receiver:
        app = _deploy(deploy, backends, receiver, workers=2)
        image_id = app.submit(generated_jpeg(1), name="one.jpg")
        wait_until(receiver.delivered, timeout_s=120, details=app.logs)
    deliveries = receiver.verified(KEYS)
    assert receiver.answered == [500, 500, 204]
    assert len({webhook_id for webhook_id, _ in deliveries}) == 1
    body = deliveries[-1][1]
    assert (body["type"], body["data"]["id"], body["data"]["status"]) == (
        "picture.done",
        image_id,
        "done",
    )
    (row,) = _rows(backends, image_id)
    assert (row.id, row.outcome, row.attempts) == (deliveries[0][0], "delivered", 3)


def test_a_worker_killed_mid_delivery_leaves_the_event_to_another(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    # 503: the answer to the killed sender's request, which nobody reads; a 204 is then
    # the answer to a delivery made after the kill.
    with webhook_receiver([503]) as receiver:
        receiver.hold()
        app = _deploy(deploy, backends, receiver, workers=1)
        image_id = app.submit(generated_jpeg(2), name="two.jpg")
        wait_until(lambda: receiver.got, timeout_s=120, details=app.logs)
        victim = app.workers[0]
        victim.kill()  # mid-delivery: the receiver holds the request unanswered
        victim.wait()
        receiver.release()
        app.start_worker()  # another worker takes the row once its lease ends
        wait_until(receiver.delivered, timeout_s=120, details=app.logs)
    deliveries = receiver.verified(KEYS)
    assert len(deliveries) >= 2
    assert len({webhook_id for webhook_id, _ in deliveries}) == 1
    assert {(body["type"], body["data"]["id"]) for _, body in deliveries} == {
        ("picture.done", image_id)
    }
    (row,) = _rows(backends, image_id)
    assert row.outcome == "delivered" and row.attempts >= 2
