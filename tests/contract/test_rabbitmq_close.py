"""Closing a RabbitMQ connection the broker already dropped is quiet; a connection lost
while in use is still an error.

The drop is real: a handle asks for 1 s heartbeats and, as a blocking connection does,
sends none while idle, so the broker closes its connection after a few seconds (what
happens to an API's publisher connection between uploads, at the default 60 s)."""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from collections.abc import Iterator

import pytest

import servers
from imageblur.adapters.rabbitmq_queue import RabbitMQJobQueue
from imageblur.domain import Job
from support import wait_until


@pytest.fixture
def idle_dropped(rabbitmq_url: str) -> Iterator[tuple[RabbitMQJobQueue, str]]:
    """A handle whose idle connections the broker drops within seconds, and its vhost."""
    queue = RabbitMQJobQueue(
        f"{rabbitmq_url}?heartbeat=1",
        queue=servers.unique("jobs"),
        queue_type="classic",
        prefetch=1,
        timeout_s=5,
    )
    yield queue, urllib.parse.unquote(urllib.parse.urlparse(rabbitmq_url).path.lstrip("/"))
    queue.delete_topology()
    queue.close()


def _job(label: str) -> Job:
    return Job(image_id=hashlib.sha256(label.encode()).hexdigest()[:32])


def _publish_then_idle(queue: RabbitMQJobQueue, vhost: str, label: str) -> None:
    """Publish (the publisher connection opens), then wait for the broker to drop it."""
    before = servers.rabbitmq_connections(vhost)
    queue.publish(_job(label))
    wait_until(
        lambda: servers.rabbitmq_connections(vhost) < before + 1,
        timeout_s=60,
        interval_s=0.5,
        what="the broker to drop the idle connection",
    )


def _pika_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("pika") and r.levelno >= logging.WARNING]


def test_closing_a_connection_the_broker_dropped_logs_no_error(
    idle_dropped: tuple[RabbitMQJobQueue, str], caplog: pytest.LogCaptureFixture
) -> None:
    queue, vhost = idle_dropped
    _publish_then_idle(queue, vhost, "idle")
    caplog.set_level(logging.INFO)
    queue.close()  # what a clean SIGTERM does
    assert _pika_lines(caplog) == []
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("imageblur")]
    assert any("publisher connection was already lost when closed" in m for m in ours), ours


def test_a_connection_lost_while_in_use_is_still_an_error(
    idle_dropped: tuple[RabbitMQJobQueue, str], caplog: pytest.LogCaptureFixture
) -> None:
    queue, vhost = idle_dropped
    _publish_then_idle(queue, vhost, "first")
    caplog.set_level(logging.INFO)
    queue.publish(_job("second"))  # finds the connection dead, then opens a new one
    errors = [r for r in _pika_lines(caplog) if r.levelno >= logging.ERROR]
    assert errors, [r.getMessage() for r in caplog.records]
    assert "Connection reset by peer" in "\n".join(r.getMessage() for r in errors)
