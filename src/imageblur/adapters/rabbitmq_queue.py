"""The job queue on RabbitMQ (pika, blocking connections).

Topology, all durable, all on the default exchange:

* `<queue>`: the jobs; quorum by default (replicated, survives a node loss), classic
  selectable. It dead-letters to `<queue>.dead`, which catches messages the broker
  itself gives up on (quorum `x-delivery-limit`: a job that kills every worker).
* `<queue>.<kind>`: the jobs of a kind with a queue of its own (`domain.JOB_KINDS`,
  every kind newer than detect and render), declared like `<queue>`. A worker of an
  older release consumes only `<queue>`, so it never receives, and so never parks, a
  message of a kind it does not know. A handle given `consume` (a worker's
  IMAGEBLUR_WORKER_KINDS) consumes only those kinds' queues, so that worker pools
  scale apart; it still declares and publishes to every kind's.
* `<queue>.dead`: parked jobs. Each carries the reason in the `x-imageblur-reason`
  header (and RabbitMQ's own `x-death` when the broker parked it).
* `<queue>.delay.<ms>` (`<queue>.<kind>.delay.<ms>`): one queue per retry delay. Nobody
  consumes it; a queue-level TTL dead-letters each message back into the job queue it
  came from when its delay is over. One queue per
  delay, not per-message TTLs in one queue, because RabbitMQ only expires messages at
  the head of a queue: a 60 s retry would hold back a 1 s retry queued behind it. They
  are declared on first use and delete themselves (`x-expires`) once idle.

pika's BlockingConnection is not thread-safe. API threads publish concurrently while
worker threads receive and settle, so there are two connections, each used only under
its own lock: a publisher connection (shared by every `publish` and `check`) and a
consumer connection (receive, ack, retry, dead-letter). Either is dropped on any error
and reopened lazily on the next call, which is how we recover from a broker restart.
Deliveries remember the connection generation they came from: after a reconnect, the
broker has already requeued them, so settling one is a no-op instead of an error.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from imageblur.adapters.rabbitmq_close import close_quietly, hold_pika_errors_while_closing
from imageblur.domain import (
    JOB_KINDS,
    DeadLetter,
    Delivery,
    InvalidJob,
    Job,
    KindRoute,
    QueueUnavailable,
    kind_queue,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

REASON_HEADER = "x-imageblur-reason"
_PERSISTENT = 2
_MAX_REASON_CHARS = 2000
# Everything pika raises for a broken connection or channel, a refused declaration, an
# unconfirmed publish or a broker that blocks us for too long.
_PIKA_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)


@dataclass(frozen=True, slots=True)
class _Tag:
    generation: int
    delivery_tag: int


class _Link:
    """One connection and one channel with confirms, used only under `lock`."""

    def __init__(
        self,
        parameters: Sequence[pika.URLParameters],
        declare: Callable[[BlockingChannel], None],
        name: str,
    ) -> None:
        self.lock = threading.RLock()
        self._parameters = parameters
        self._declare = declare
        self._name = name
        self.connection: pika.BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        self.generation = 0

    def ensure(self) -> BlockingChannel:
        if (
            self.channel is not None
            and self.channel.is_open
            and self.connection is not None
            and self.connection.is_open
        ):
            return self.channel
        self.reset()
        try:
            connection = pika.BlockingConnection(list(self._parameters))
        except _PIKA_ERRORS as exc:
            raise QueueUnavailable(f"cannot connect to RabbitMQ: {_describe(exc)}") from exc
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            self._declare(channel)
        except BaseException:
            close_quietly(connection, self._name)
            raise
        self.connection, self.channel = connection, channel
        self.generation += 1
        log.debug("rabbitmq %s link open (generation %d)", self._name, self.generation)
        return channel

    def reset(self) -> None:
        connection, self.connection, self.channel = self.connection, None, None
        if connection is not None and connection.is_open:
            close_quietly(connection, self._name)


class RabbitMQJobQueue:
    """`JobQueue` on RabbitMQ; safe to share between API threads and worker threads."""

    def __init__(
        self,
        url: str,
        *,
        queue: str,
        queue_type: Literal["quorum", "classic"],
        prefetch: int,
        timeout_s: float,
        delivery_limit: int | None = 20,
        kinds: Mapping[str, KindRoute] = JOB_KINDS,
        consume: Collection[str] | None = None,
    ) -> None:
        """`consume`: the kinds whose queues this handle consumes (a worker's
        IMAGEBLUR_WORKER_KINDS); None: every kind's."""
        self.queue = queue
        self._kinds = kinds
        # Every job queue this handle declares and publishes to: `<queue>` first, then
        # one per kind with a queue of its own.
        self.job_queues = tuple(dict.fromkeys(kind_queue(queue, k, kinds) for k in kinds))
        # Those it consumes: a worker pool scaled apart takes only its kinds' queues.
        self.consumed_queues = self._queues_of(kinds if consume is None else consume)
        self._consumer_queue: dict[str, str] = {}  # consumer tag -> its queue
        self.dead_queue = f"{queue}.dead"
        self._queue_type = queue_type
        self._prefetch = prefetch
        self._timeout_s = timeout_s
        self._delivery_limit = delivery_limit
        parameters = [_parameters(u, timeout_s) for u in split_urls(url)]
        self._delay_names: set[str] = set()
        hold_pika_errors_while_closing()  # pika's loggers exist: it is imported
        self._publisher = _Link(parameters, self._declare, "publisher")
        self._consumer = _Link(parameters, self._declare_consumer, "consumer")
        self._buffer: collections.deque[tuple[Basic.Deliver, bytes]] = collections.deque()

    # --- JobQueue ------------------------------------------------------------------------

    def publish(self, job: Job) -> None:
        self.publish_body(job.to_json(), kind=job.kind.value)

    def publish_body(self, body: bytes, *, kind: str) -> None:
        """Publish a job message of `kind` to that kind's queue."""
        target = kind_queue(self.queue, kind, self._kinds)
        self._on_publisher("publish", lambda ch: _publish(ch, target, body, None))

    def receive(self, *, timeout_s: float, kinds: Collection[str] | None = None) -> Delivery | None:
        deadline = time.monotonic() + timeout_s
        wanted = self.consumed_queues if kinds is None else self._queues_of(kinds)
        link = self._consumer
        while True:
            with link.lock, self._guard(link, "receive"):
                try:
                    channel = link.ensure()
                except QueueUnavailable:
                    # Do not let a worker loop spin on a broker that refuses connections.
                    time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
                    raise
                if link.connection is None:  # pragma: no cover - ensure() sets it
                    raise QueueUnavailable("consumer connection vanished")
                if not channel.consumer_tags:
                    # First use, or the broker cancelled us (queue deleted or moved).
                    self._buffer.clear()
                    self._consumer_queue.clear()
                    # One consumer per job queue; the prefetch counts per consumer.
                    for name in self.consumed_queues:
                        tag = channel.basic_consume(name, self._on_message, auto_ack=False)
                        self._consumer_queue[tag] = name
                while (taken := self._take(wanted)) is not None:
                    method, body = taken
                    delivery = self._to_delivery(channel, link.generation, method, body)
                    if delivery is not None:
                        return delivery
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                # Short slices, so the lock is free between them for acks from other
                # worker threads.
                link.connection.process_data_events(time_limit=min(0.2, remaining))

    # Settling is best effort by design. If the connection a delivery came on is gone,
    # the broker has already requeued the message and will deliver it again; the
    # record's conditional updates make that second delivery harmless. So a broken
    # connection while settling is logged and dropped, never raised into the worker.

    def ack(self, delivery: Delivery) -> None:
        with self._settling(delivery, "ack") as channel:
            if channel is not None:
                channel.basic_ack(delivery.tag.delivery_tag)

    def retry(self, delivery: Delivery, *, delay_s: float, reason: str) -> None:
        job = delivery.job.next_attempt()
        with self._settling(delivery, "retry") as channel:
            if channel is None:
                return  # requeued by the broker: back at once rather than after the delay
            home = kind_queue(self.queue, job.kind.value, self._kinds)
            target = home if delay_s <= 0 else self._delay_queue(channel, home, delay_s)
            # Publish (confirmed) before acking: a crash in between leaves a duplicate,
            # never a lost job.
            _publish(channel, target, job.to_json(), {REASON_HEADER: _clip(reason)})
            channel.basic_ack(delivery.tag.delivery_tag)

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        headers = {
            REASON_HEADER: _clip(reason),
            "x-imageblur-attempt": delivery.job.attempt,
            "x-imageblur-dead-at": _now(),
        }
        body = delivery.job.to_json()
        with self._settling(delivery, "dead-letter") as channel:
            if channel is not None:
                _publish(channel, self.dead_queue, body, headers)
                channel.basic_ack(delivery.tag.delivery_tag)
                return
        # The original is requeued (its record is already final, so it will only be
        # acked); park a copy anyway so that the reason reaches a human.
        try:
            self._on_publisher(
                "dead-letter", lambda ch: _publish(ch, self.dead_queue, body, headers)
            )
        except QueueUnavailable as exc:
            log.warning("rabbitmq dead letter of %s not parked: %s", delivery.job.image_id, exc)

    def check(self) -> None:
        self._on_publisher("check", lambda ch: ch.queue_declare(self.queue, passive=True))

    def close(self) -> None:
        for link in (self._consumer, self._publisher):
            with link.lock:
                link.reset()
        self._buffer.clear()

    def take_dead_letters(self, *, limit: int = 1000) -> list[DeadLetter]:
        """Take up to `limit` parked jobs off the dead-letter queue, with their reasons."""

        def take(channel: BlockingChannel) -> list[DeadLetter]:
            out: list[DeadLetter] = []
            while len(out) < limit:
                method, properties, body = channel.basic_get(self.dead_queue, auto_ack=False)
                if method is None or properties is None:
                    break
                out.append(_dead_letter(properties, body))
                channel.basic_ack(method.delivery_tag)
            return out

        return self._on_publisher("read dead letters", take)

    def delete_topology(self) -> None:
        """Delete the job, dead-letter and known delay queues (tests, tear-down)."""

        def delete(channel: BlockingChannel) -> None:
            for name in (*self.job_queues, self.dead_queue, *sorted(self._delay_names)):
                channel.queue_delete(name)

        self._on_publisher("delete", delete)
        with self._publisher.lock:
            self._publisher.reset()

    # --- internals -------------------------------------------------------------------------

    def _queue_arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": self._queue_type}
        if self._queue_type == "quorum":
            # Quorum queues dead-letter at-most-once unless told otherwise.
            args |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        return args

    def _declare(self, channel: BlockingChannel) -> None:
        channel.queue_declare(self.dead_queue, durable=True, arguments=self._queue_arguments())
        args = self._queue_arguments() | {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_queue,
        }
        if self._queue_type == "quorum" and self._delivery_limit is not None:
            args["x-delivery-limit"] = self._delivery_limit
        for name in self.job_queues:
            channel.queue_declare(name, durable=True, arguments=args)

    def _declare_consumer(self, channel: BlockingChannel) -> None:
        self._declare(channel)
        self._buffer.clear()
        channel.basic_qos(prefetch_count=self._prefetch)

    def _delay_queue(self, channel: BlockingChannel, home: str, delay_s: float) -> str:
        ttl_ms = max(1, round(delay_s * 1000))
        name = f"{home}.delay.{ttl_ms}"
        # Declared on every retry: publishing does not count as use for `x-expires`, so
        # a queue declared once would expire under a steady trickle of retries (and
        # take the waiting ones with it). Retries are rare; one round trip is cheap.
        args = self._queue_arguments() | {
            "x-message-ttl": ttl_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": home,
            # Long after its last message has expired, an idle delay queue goes.
            "x-expires": 2 * ttl_ms + 600_000,
        }
        channel.queue_declare(name, durable=True, arguments=args)
        self._delay_names.add(name)
        return name

    def _queues_of(self, kinds: Collection[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(kind_queue(self.queue, k, self._kinds) for k in kinds))

    def _on_message(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        self._buffer.append((method, body))

    def _take(self, queues: Collection[str]) -> tuple[Basic.Deliver, bytes] | None:
        """The oldest buffered message from one of `queues`. Another thread's (a long
        job, for a thread kept for pictures) stays buffered for it: it holds only its
        own queue's prefetch slot."""
        for index, (method, body) in enumerate(self._buffer):
            if self._consumer_queue.get(method.consumer_tag) in queues:
                del self._buffer[index]
                return method, body
        return None

    def _to_delivery(
        self, channel: BlockingChannel, generation: int, method: Basic.Deliver, body: bytes
    ) -> Delivery | None:
        try:
            job = Job.from_json(body)
        except InvalidJob as exc:
            # Unparseable: no worker can do anything with it; park it with the reason.
            headers = {REASON_HEADER: _clip(str(exc)), "x-imageblur-dead-at": _now()}
            _publish(channel, self.dead_queue, body, headers)
            channel.basic_ack(method.delivery_tag)
            log.warning("rabbitmq parked a message of %d bytes: %s", len(body), exc)
            return None
        tag = _Tag(generation=generation, delivery_tag=method.delivery_tag)
        return Delivery(job=job, tag=tag, redelivered=bool(method.redelivered))

    def _current(self, delivery: Delivery) -> BlockingChannel | None:
        """The consumer channel if `delivery` came from it; None if it is stale."""
        tag = delivery.tag
        if not isinstance(tag, _Tag):
            raise ValueError("not a RabbitMQ delivery")
        link = self._consumer
        if tag.generation != link.generation or link.channel is None or not link.channel.is_open:
            log.info("rabbitmq delivery from a closed connection: the broker requeued it")
            return None
        return link.channel

    def _on_publisher(self, action: str, fn: Callable[[BlockingChannel], _T]) -> _T:
        """Run `fn` on the publisher channel, under its lock. Two tries: the first may
        hit a connection the broker closed while we were idle (restart, missed
        heartbeats); a fresh connection then succeeds at once."""
        link = self._publisher
        with link.lock:
            for attempt in range(2):
                try:
                    return fn(link.ensure())
                except _PIKA_ERRORS as exc:
                    link.reset()
                    if attempt == 1:
                        raise QueueUnavailable(
                            f"RabbitMQ {action} failed: {_describe(exc)}"
                        ) from exc
                except QueueUnavailable:
                    link.reset()
                    if attempt == 1:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _settling(self, delivery: Delivery, action: str) -> Iterator[BlockingChannel | None]:
        link = self._consumer
        with link.lock:
            try:
                yield self._current(delivery)
            except _PIKA_ERRORS as exc:
                link.reset()
                self._buffer.clear()
                log.warning(
                    "rabbitmq %s of %s lost with its connection (%s); the broker redelivers it",
                    action,
                    delivery.job.image_id,
                    _describe(exc),
                )

    @contextlib.contextmanager
    def _guard(self, link: _Link, action: str) -> Iterator[None]:
        try:
            yield
        except _PIKA_ERRORS as exc:
            link.reset()
            if link is self._consumer:
                self._buffer.clear()
            raise QueueUnavailable(f"RabbitMQ {action} failed: {_describe(exc)}") from exc


def split_urls(url: str) -> list[str]:
    """One AMQP URL, or several separated by commas or spaces (the nodes of a cluster,
    tried in order on every (re)connect)."""
    parts = [p for p in url.replace(",", " ").split() if p]
    return parts or [url]


def _parameters(url: str, timeout_s: float) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.socket_timeout = timeout_s
    params.stack_timeout = timeout_s
    params.blocked_connection_timeout = timeout_s
    params.connection_attempts = 1
    params.client_properties = {"connection_name": "imageblur"}
    return params


def _publish(
    channel: BlockingChannel, queue: str, body: bytes, headers: dict[str, Any] | None
) -> None:
    # With confirms on, basic_publish returns once the broker has the message (for a
    # quorum queue: on a majority of nodes); mandatory makes a missing queue an error.
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=body,
        properties=BasicProperties(
            delivery_mode=_PERSISTENT, content_type="application/json", headers=headers
        ),
        mandatory=True,
    )


def _dead_letter(properties: BasicProperties, body: bytes) -> DeadLetter:
    headers: dict[str, Any] = dict(properties.headers or {})
    reason = headers.get(REASON_HEADER)
    if reason is None and headers.get("x-death"):
        reason = f"broker: {headers['x-death'][0].get('reason', 'unknown')}"
    if isinstance(reason, bytes):
        reason = reason.decode(errors="replace")
    try:
        job: Job | None = Job.from_json(body)
    except InvalidJob:
        job = None
    return DeadLetter(job=job, body=body, reason=str(reason or ""))


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _clip(reason: str) -> str:
    return reason[:_MAX_REASON_CHARS]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
