"""The JobQueue contract, on every adapter (in-process, RabbitMQ quorum and classic)."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable

import pika
import pytest

from imageblur.adapters.memory_queue import MemoryJobQueue
from imageblur.adapters.rabbitmq_queue import RabbitMQJobQueue
from imageblur.domain import DeadLetter, Delivery, Job, JobKind, QueueUnavailable
from imageblur.ports import JobQueue
from security.poison import POISON
from support import free_port, wait_until

from .conftest import dead_letters


def iid(label: str) -> str:
    """The image id (32 hex digits, as a job message must carry) that stands for `label`
    in a test."""
    return hashlib.sha256(label.encode()).hexdigest()[:32]


def receive_all(queue: JobQueue, n: int, *, timeout_s: float = 30) -> list[Delivery]:
    got: list[Delivery] = []

    def all_in() -> bool:
        d = queue.receive(timeout_s=0.5)
        if d is not None:
            got.append(d)
        return len(got) >= n

    wait_until(all_in, timeout_s=timeout_s, interval_s=0, what=f"{n} deliveries")
    return got


def test_publish_then_receive_and_ack(queue: JobQueue) -> None:
    queue.publish(Job(image_id=iid("img-1")))
    d = queue.receive(timeout_s=5)
    assert d is not None
    assert d.job == Job(image_id=iid("img-1"), attempt=0)
    queue.ack(d)
    assert queue.receive(timeout_s=0.5) is None


def test_receive_times_out_with_none(queue: JobQueue) -> None:
    started = time.monotonic()
    assert queue.receive(timeout_s=0.3) is None
    assert time.monotonic() - started >= 0.25  # it waited (no upper bound: a busy machine)


def test_publisher_and_consumer_handles_share_the_queue(
    queue_factory: Callable[[], JobQueue],
) -> None:
    api, worker = queue_factory(), queue_factory()
    api.publish(Job(image_id=iid("shared")))
    d = worker.receive(timeout_s=5)
    assert d is not None and d.job.image_id == iid("shared")
    worker.ack(d)


def test_retry_redelivers_after_the_delay_with_attempt_plus_one(queue: JobQueue) -> None:
    queue.publish(Job(image_id=iid("r"), attempt=0))
    d = queue.receive(timeout_s=5)
    assert d is not None
    started = time.monotonic()
    queue.retry(d, delay_s=1.0, reason="store unavailable")
    again = queue.receive(timeout_s=30)
    assert again is not None
    # Not before the delay: a lower bound only, which a slow machine cannot break.
    assert time.monotonic() - started >= 0.9
    assert again.job == Job(image_id=iid("r"), attempt=1)
    queue.ack(again)


def test_the_request_id_travels_with_the_job_and_its_retries(queue: JobQueue) -> None:
    queue.publish(Job(image_id=iid("traced"), request_id="req-42"))
    d = queue.receive(timeout_s=5)
    assert d is not None and d.job.request_id == "req-42"
    queue.retry(d, delay_s=0.1, reason="store unavailable")
    again = queue.receive(timeout_s=10)
    assert again is not None
    assert again.job == Job(image_id=iid("traced"), attempt=1, request_id="req-42")
    queue.ack(again)


def test_a_video_job_waits_on_its_own_queue_and_is_retried_there(queue: JobQueue) -> None:
    """The video kind's queue (issue 25): a thread kept for pictures never receives it,
    and its retry comes back to the video queue, not the pictures'."""
    queue.publish(Job(image_id=iid("v"), kind=JobKind.VIDEO, request_id="req-v"))
    assert queue.receive(timeout_s=0.5, kinds={"detect", "render"}) is None
    d = queue.receive(timeout_s=5, kinds={"video"})
    assert d is not None and d.job == Job(iid("v"), kind=JobKind.VIDEO, request_id="req-v")
    queue.retry(d, delay_s=0.2, reason="store unavailable")
    assert queue.receive(timeout_s=1, kinds={"detect", "render"}) is None
    again = queue.receive(timeout_s=30, kinds={"video"})
    assert again is not None and again.job == Job(iid("v"), 1, "req-v", JobKind.VIDEO)
    queue.ack(again)


def test_short_retry_is_not_held_back_by_a_long_one(queue: JobQueue) -> None:
    queue.publish(Job(image_id=iid("slow")))
    queue.publish(Job(image_id=iid("fast")))
    first, second = receive_all(queue, 2)
    by_id = {first.job.image_id: first, second.job.image_id: second}
    queue.retry(by_id[iid("slow")], delay_s=30, reason="long")
    queue.retry(by_id[iid("fast")], delay_s=0.5, reason="short")
    d = queue.receive(timeout_s=10)
    assert d is not None and d.job.image_id == iid("fast")
    queue.ack(d)


def test_dead_letter_parks_the_job_with_its_reason(queue: JobQueue) -> None:
    queue.publish(Job(image_id=iid("doomed"), attempt=4))
    d = queue.receive(timeout_s=5)
    assert d is not None
    queue.dead_letter(d, reason="gave up after 5 attempts: corrupt image")
    assert queue.receive(timeout_s=0.5) is None
    parked = dead_letters(queue, expect=1)
    assert parked == [
        (Job(image_id=iid("doomed"), attempt=4), "gave up after 5 attempts: corrupt image")
    ]


def test_many_publishers_one_consumer_nothing_lost_or_doubled(
    queue_factory: Callable[[], JobQueue],
) -> None:
    api, worker = queue_factory(), queue_factory()
    ids = [iid(f"job-{i}") for i in range(200)]
    errors: list[BaseException] = []

    def publish(chunk: list[str]) -> None:
        try:
            for image_id in chunk:
                api.publish(Job(image_id=image_id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(ids[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    seen: list[str] = []

    def all_seen() -> bool:
        d = worker.receive(timeout_s=0.5)
        if d is not None:
            seen.append(d.job.image_id)
            worker.ack(d)
        return len(seen) >= len(ids)

    wait_until(all_seen, timeout_s=60, interval_s=0, what=f"{len(ids)} jobs received")
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(seen) == sorted(ids)
    assert worker.receive(timeout_s=0.5) is None


def test_worker_threads_share_one_handle(queue: JobQueue) -> None:
    for i in range(40):
        queue.publish(Job(image_id=iid(f"t{i}")))
    seen: list[str] = []
    lock = threading.Lock()

    def taken() -> bool:
        d = queue.receive(timeout_s=0.3)
        if d is not None:
            with lock:
                seen.append(d.job.image_id)
            queue.ack(d)
        return len(seen) >= 40

    def work() -> None:  # until all are taken, by whichever thread: no idle time-out
        wait_until(taken, timeout_s=60, interval_s=0, what="all 40 jobs taken")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert sorted(seen) == sorted(iid(f"t{i}") for i in range(40))


def test_check_passes_when_reachable(queue: JobQueue) -> None:
    queue.check()


def test_unreachable_broker_raises_queue_unavailable(broken_queue: JobQueue) -> None:
    with pytest.raises(QueueUnavailable):
        broken_queue.check()
    with pytest.raises(QueueUnavailable):
        broken_queue.publish(Job(image_id=iid("x")))


def publish_raw(queue: JobQueue, body: bytes, request: pytest.FixtureRequest) -> None:
    """Put bytes on the queue as any client of the broker could, past `publish`."""
    if isinstance(queue, MemoryJobQueue):
        queue.publish_raw(body)
        return
    assert isinstance(queue, RabbitMQJobQueue)
    queue.check()  # declares the topology
    params = pika.URLParameters(request.getfixturevalue("rabbitmq_url"))
    with pika.BlockingConnection(params) as conn:
        conn.channel().basic_publish("", queue.queue, body)


def test_poison_messages_are_dead_lettered_with_their_reason_and_the_next_job_runs(
    queue: JobQueue, request: pytest.FixtureRequest
) -> None:
    for body in POISON.values():
        publish_raw(queue, body, request)
    queue.publish(Job(image_id=iid("after the poison")))
    d = queue.receive(timeout_s=10)
    assert d is not None and d.job == Job(image_id=iid("after the poison"))
    queue.ack(d)
    parked: list[DeadLetter] = []

    def all_parked() -> bool:
        parked.extend(queue.take_dead_letters())
        return len(parked) >= len(POISON)

    wait_until(all_parked, timeout_s=30, what="every poison message parked")
    assert [p.body for p in parked] == list(POISON.values())
    for letter in parked:
        assert letter.job is None and letter.reason.startswith("malformed job message: ")


# --- RabbitMQ specifics: what only a real broker can do -------------------------------------


@pytest.fixture
def rabbit(rabbit_factory: Callable[[], RabbitMQJobQueue]) -> RabbitMQJobQueue:
    return rabbit_factory()


def test_unacked_job_is_redelivered_when_its_consumer_dies(
    rabbit: RabbitMQJobQueue, rabbit_factory: Callable[[], RabbitMQJobQueue]
) -> None:
    rabbit.publish(Job(image_id=iid("orphan")))
    doomed = rabbit_factory()
    d = doomed.receive(timeout_s=5)
    assert d is not None and not d.redelivered
    doomed.close()  # the worker died holding the job, never acked
    again = rabbit.receive(timeout_s=10)
    assert again is not None and again.job.image_id == iid("orphan") and again.redelivered
    rabbit.ack(again)
    doomed.ack(d)  # a late ack from the dead handle is harmless


def test_both_connections_recover_after_the_broker_drops_them(
    rabbit: RabbitMQJobQueue, request: pytest.FixtureRequest
) -> None:
    rabbit.publish(Job(image_id=iid("before")))
    held = rabbit.receive(timeout_s=5)
    assert held is not None
    # What a broker restart looks like to clients: every connection closed under them.
    vhost = urllib.parse.urlparse(request.getfixturevalue("rabbitmq_url")).path.lstrip("/")
    subprocess.run(
        ["rabbitmqctl", "close_all_connections", "-p", vhost, "test: simulated restart"],
        check=True,
        capture_output=True,
    )
    rabbit.ack(held)  # settling a delivery of the dead connection is a harmless no-op
    rabbit.publish(Job(image_id=iid("after")))  # reconnects by itself
    got: set[str] = set()

    def both_in() -> bool:
        d = rabbit.receive(timeout_s=0.5)
        if d is not None:
            got.add(d.job.image_id)
            rabbit.ack(d)
        return got == {iid("before"), iid("after")}  # the unacked one came back

    # The first receive on the dead connection reports it (QueueUnavailable): retried.
    wait_until(both_in, timeout_s=30, interval_s=0, what="both jobs", retry_on=(QueueUnavailable,))


def test_cluster_urls_fail_over_to_a_live_node(
    rabbit: RabbitMQJobQueue, request: pytest.FixtureRequest
) -> None:
    live = request.getfixturevalue("rabbitmq_url")
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    other = RabbitMQJobQueue(
        f"{dead}, {live}",
        queue=rabbit.queue,
        queue_type=rabbit._queue_type,
        prefetch=1,
        timeout_s=2,
    )
    try:
        other.publish(Job(image_id=iid("via-second-url")))
    finally:
        other.close()
    d = rabbit.receive(timeout_s=5)
    assert d is not None and d.job.image_id == iid("via-second-url")
    rabbit.ack(d)


def test_a_job_that_kills_every_consumer_is_parked_by_the_broker(
    quorum_factory: Callable[[], RabbitMQJobQueue],
) -> None:
    # x-delivery-limit is a quorum queue feature; classic queues have no equivalent.
    first = quorum_factory()
    first.publish(Job(image_id=iid("poison")))
    for _ in range(25):  # more than the delivery limit (20)
        consumer = quorum_factory()
        d = consumer.receive(timeout_s=2)
        consumer.close()  # "crashes" without settling
        if d is None:
            break
    parked = dead_letters(first, expect=1)
    assert [job.image_id for job, _ in parked] == [iid("poison")]
    assert "delivery_limit" in parked[0][1]
