"""Hostile queue messages and surprising errors never kill a worker: every malformed body
is `InvalidJob` and dead-lettered with its reason; a job thread that meets an unexpected
exception logs it and serves the next job; a thread that ends anyway stops the heartbeat
and the process. (The same bodies go through a real RabbitMQ in
tests/contract/test_job_queue.py, and through `make run-distributed` in
tests/distributed/test_run_distributed.py.)"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageblur import bootstrap
from imageblur.adapters.memory_queue import MemoryJobQueue
from imageblur.bootstrap import Container
from imageblur.config import load_settings
from imageblur.domain import MAX_JOB_ATTEMPT, DeadLetter, InvalidJob, Job, JobKind, Status
from imageblur.entrypoints import api, cli
from imageblur.entrypoints.worker import WorkerRuntime
from security.poison import POISON, VALID_ID
from support import free_port, jpeg_bytes, wait_until
from unit.fakes import FakeDetector, FakeRepository
from unit.world import container_of


@pytest.mark.parametrize("body", POISON.values(), ids=POISON.keys())
def test_every_poison_body_is_an_invalid_job_with_a_reason(body: bytes) -> None:
    with pytest.raises(InvalidJob, match=r"^malformed job message: .+"):
        Job.from_json(body)


@pytest.mark.parametrize(
    ("body", "job"),
    [
        (b'{"image_id": "%s"}' % VALID_ID.encode(), Job(VALID_ID)),  # an older release's
        (Job(VALID_ID, MAX_JOB_ATTEMPT, "req-1", JobKind.RENDER).to_json(), None),
        (b'{"image_id": "%s", "request_id": null, "x": [1]}' % VALID_ID.encode(), Job(VALID_ID)),
    ],
)
def test_the_messages_we_write_still_parse(body: bytes, job: Job | None) -> None:
    expected = job or Job(VALID_ID, MAX_JOB_ATTEMPT, "req-1", JobKind.RENDER)
    assert Job.from_json(body) == expected


class Escape(BaseException):
    """Something that ends a thread whatever its loop catches (a SystemExit in a library,
    say)."""


class Running:
    """A worker runtime on fakes and the in-process queue, started; always stopped."""

    def __init__(self, tmp_path: Path, *, threads: int) -> None:
        self.heartbeat = tmp_path / "alive"
        settings = load_settings(
            data_dir=tmp_path / "data",
            worker_threads=threads,
            receive_timeout_s=0.1,
            heartbeat_file=self.heartbeat,
            # Renewed every 2 s for 24 s: a hung job renews long after whatever a test
            # waits for first, however slowly this machine runs it.
            lease_s=6.0,
            retry_base_delay_s=0.05,
            retry_max_delay_s=0.1,
            shutdown_grace_s=10,
        )
        self.repo = FakeRepository()
        self.detector = FakeDetector()
        self.container: Container = container_of(settings, self.repo, self.detector)
        self.failures: list[str] = []
        self.runtime = WorkerRuntime(
            self.container, on_failure=lambda: self.failures.append("worker failed")
        )

    @property
    def queue(self) -> MemoryJobQueue:
        queue = self.container.backends.queue
        assert isinstance(queue, MemoryJobQueue)
        return queue

    def upload(self, seed: int = 0) -> str:
        return self.container.images.submit(jpeg_bytes(seed=seed)).id

    def wait_status(self, image_id: str, status: Status) -> None:
        def reached() -> bool:
            record = self.repo.get(image_id)
            return record is not None and record.status is status

        wait_until(reached, what=f"{image_id} {status}", details=lambda: self.repo.get(image_id))


@pytest.fixture
def running(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    worker = Running(tmp_path, threads=getattr(request, "param", 1))
    before = set(threading.enumerate())
    worker.runtime.start()
    yield worker
    worker.runtime.stop(timeout_s=10)
    worker.runtime.wait()
    worker.container.close()
    wait_until(lambda: set(threading.enumerate()) <= before, what="the worker's threads to end")


def test_poison_on_the_queue_is_parked_and_the_next_upload_is_done(running: Running) -> None:
    for body in POISON.values():
        running.queue.publish_raw(body)
    image_id = running.upload()
    running.wait_status(image_id, Status.DONE)
    parked = running.queue.take_dead_letters()
    assert [p.body for p in parked] == list(POISON.values())
    assert all(p.job is None and p.reason.startswith("malformed job message") for p in parked)
    assert not running.runtime.failed


def test_a_receive_that_raises_something_unexpected_is_waited_out(running: Running) -> None:
    queue, receive = running.queue, running.queue.receive
    raised: list[str] = []

    def once_broken(*, timeout_s: float, kinds: object = None) -> object:
        if not raised:
            raised.append("RecursionError")
            raise RecursionError("a parser bug in a client library")
        return receive(timeout_s=timeout_s, kinds=kinds)  # type: ignore[arg-type]

    queue.receive = once_broken  # type: ignore[method-assign]
    wait_until(lambda: bool(raised), what="the broken receive")
    image_id = running.upload()
    running.wait_status(image_id, Status.DONE)  # the same, single, thread
    assert not running.runtime.failed


def test_a_job_that_raises_out_of_its_handling_is_settled_and_the_thread_serves_on(
    running: Running,
) -> None:
    broke: list[str] = []

    def claim_breaks_once(operation: str) -> None:
        # A driver bug: not an outage the processor knows, it escapes `handle`.
        if operation == "claim" and not broke:
            broke.append(operation)
            raise ValueError("a driver bug")

    running.repo.before = claim_breaks_once
    first = running.upload(seed=1)
    running.wait_status(first, Status.DONE)  # retried after the delay, not left unacked
    assert broke == ["claim"]
    second = running.upload(seed=2)
    running.wait_status(second, Status.DONE)
    assert running.queue.depth() == 0 and not running.runtime.failed


def test_a_job_that_always_raises_out_of_its_handling_is_parked_in_the_end(
    running: Running,
) -> None:
    def claim_always_breaks(operation: str) -> None:
        if operation == "claim":
            raise ValueError("a driver bug")

    running.repo.before = claim_always_breaks
    image_id = running.upload()
    parked: list[DeadLetter] = []

    def parked_yet() -> bool:
        parked.extend(running.queue.take_dead_letters())
        return bool(parked)

    wait_until(parked_yet, what="the job parked")  # after IMAGEBLUR_MAX_ATTEMPTS tries
    assert [(p.job.image_id if p.job else None, p.reason) for p in parked] == [
        (image_id, "internal error: ValueError")
    ]
    assert running.queue.depth() == 0 and not running.runtime.failed


@pytest.mark.parametrize("running", [2], indirect=True)
def test_a_thread_that_ends_anyway_stops_the_heartbeat_and_the_worker(
    running: Running,
) -> None:
    calls, release = [], threading.Event()
    renewals: list[str] = []

    def first_hangs_second_escapes() -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            release.wait(timeout=60)  # a long job, renewing its lease (and the heartbeat)
            return
        raise Escape

    running.repo.before = lambda op: renewals.append(op) if op == "extend_lease" else None
    running.detector.during = first_hangs_second_escapes
    running.upload(seed=1)
    wait_until(lambda: len(calls) == 1, what="the first job to start")
    running.upload(seed=2)
    wait_until(lambda: running.runtime.failed, what="the dead thread to be seen")
    assert running.failures == ["worker failed"]  # `serve` stops its server on it
    running.heartbeat.unlink(missing_ok=True)
    seen = len(renewals)
    wait_until(lambda: len(renewals) > seen, what="the long job to renew its lease")
    assert not running.heartbeat.exists(), "a failed worker still looked alive"
    release.set()
    running.runtime.wait()  # the other thread ends too: the process exits (non-zero)
    assert running.runtime.failed


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_the_process_exits_non_zero_once_a_job_thread_died(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`imageblur worker` and `imageblur serve` end with exit 1, to be restarted, rather
    than run on (or exit 0) with fewer threads than they were given."""
    settings = load_settings(
        data_dir=tmp_path / "data", worker_threads=1, receive_timeout_s=0.1, shutdown_grace_s=5
    )
    detector = FakeDetector()

    def escape() -> None:
        raise Escape

    detector.during = escape
    container = container_of(settings, FakeRepository(), detector)
    container.images.submit(jpeg_bytes())
    # The command builds this container instead of the configured back ends.
    monkeypatch.setattr(bootstrap, "build", lambda *_, **__: container)
    monkeypatch.setattr(api, "build", lambda *_, **__: container)
    monkeypatch.setenv("IMAGEBLUR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMAGEBLUR_PORT", str(free_port()))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # Bounded: a process that failed to notice would serve until this SIGTERM (exit 0).
    timer = threading.Timer(60, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert cli.main([command]) == 1
    finally:
        timer.cancel()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
