"""Queues per kind (issue 24, item 6): a worker takes the kinds it is given
(`--kinds`, IMAGEBLUR_WORKER_KINDS), the in-process queue keeps each kind's queue apart as
RabbitMQ does, and a worker that takes pictures and long jobs keeps a thread for
pictures, so that long jobs never hold every thread.

The video kind (issue 25) is the first long kind; as in tests/contract/test_job_kinds.py,
a test-only kind, `probe`, is added beside it to `domain.JOB_KINDS` the way the next long
kind will be, one row."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

from imageblur.adapters.memory_queue import MemoryJobQueue
from imageblur.config import SettingsError, load_settings
from imageblur.domain import JOB_KINDS, Delivery, Job, JobKind, KindRoute, select_kinds
from imageblur.entrypoints import cli
from imageblur.entrypoints.startup import check_embedded, check_worker
from imageblur.entrypoints.worker import WorkerRuntime, thread_kinds
from support import wait_until
from unit.fakes import FakeDetector, FakeRepository
from unit.world import container_of

ID = "0123456789abcdef0123456789abcdef"
PROBE = KindRoute(queued="probe_queued", leased="probe_running", longest_s=1800.0)
PICTURES = frozenset({"detect", "render", "options", "options_render"})
VIDEOS = frozenset({"video", "video_options"})
LONG = VIDEOS | {"batch", "probe"}
ALL = PICTURES | LONG


@pytest.fixture
def probe_kind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This release's registry with one more long kind in it, as the next release's."""
    monkeypatch.setitem(JOB_KINDS, "probe", PROBE)  # type: ignore[arg-type]
    yield


def probe_body() -> bytes:
    return Job(image_id=ID).to_json().replace(b'"detect"', b'"probe"')


# --- the setting ----------------------------------------------------------------------


def test_every_kind_by_default() -> None:
    assert load_settings(worker_kinds="").job_kinds() == PICTURES | VIDEOS | {"batch"}
    # With videos off (as the Kubernetes base sets it) a worker neither consumes their
    # queue nor waits their shutdown grace.
    assert load_settings(worker_kinds="", video=False).job_kinds() == PICTURES | {"batch"}
    assert load_settings(worker_kinds=" render , detect ").worker_kinds == "render,detect"
    assert load_settings(worker_kinds="pictures").job_kinds() == PICTURES


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("movie", "unknown job kind 'movie'"),
        ("detect,thumbnails", "unknown job kind 'thumbnails'"),
        ("detect", "detect, render share one queue"),
    ],
)
def test_a_kind_this_release_does_not_know_is_refused(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"IMAGEBLUR_WORKER_KINDS.*{message}"):
        load_settings(worker_kinds=value)


def test_the_worker_flag_sets_it() -> None:
    args = cli._parser().parse_args(["worker", "--kinds", "pictures"])
    assert args.worker_kinds == "pictures"


def test_the_pools_follow_the_registry(probe_kind: None) -> None:
    assert select_kinds("") == ALL
    assert select_kinds("long") == LONG
    assert select_kinds("pictures") == PICTURES
    assert select_kinds("probe,video,video_options,batch,pictures") == ALL
    assert load_settings(worker_kinds="long", video=True).job_kinds() == LONG


def test_a_worker_taking_nothing_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry without a long kind (the release before videos): a long worker would
    idle for ever."""
    check_worker(load_settings(worker_kinds="long", data_dir=tmp_path, video=True))
    for kind in (*VIDEOS, "batch"):
        monkeypatch.delitem(JOB_KINDS, kind)  # type: ignore[attr-defined]
    settings = load_settings(worker_kinds="long", data_dir=tmp_path)
    assert settings.job_kinds() == frozenset()
    with pytest.raises(SettingsError, match="selects no job kind"):
        check_worker(settings)


def test_serve_on_the_in_process_queue_takes_every_kind(probe_kind: None) -> None:
    check_embedded(load_settings())
    with pytest.raises(SettingsError, match="must take every job kind"):
        check_embedded(load_settings(worker_kinds="pictures"))
    check_embedded(load_settings(worker_kinds="pictures", queue="rabbitmq"))


# --- the in-process queue ----------------------------------------------------------------


def test_the_memory_queue_keeps_each_kinds_queue_apart(probe_kind: None) -> None:
    queue = MemoryJobQueue()
    queue.publish_raw(probe_body(), kind="probe")
    assert queue.receive(timeout_s=0.05, kinds=PICTURES) is None
    assert queue.depth("probe") == 1
    queue.publish(Job(image_id=ID, kind=JobKind.RENDER))
    delivery = queue.receive(timeout_s=0.05, kinds=PICTURES)
    assert delivery is not None and delivery.job.kind is JobKind.RENDER
    queue.ack(delivery)
    queue.publish(Job(image_id=ID))
    # A worker of the long kinds never takes a picture; this release cannot run the
    # test-only kind, so taking it parks it (proof that it came off its own queue).
    assert queue.receive(timeout_s=0.05, kinds={"probe"}) is None
    assert queue.depth("probe") == 0 and queue.depth("detect") == 1
    assert [d.reason for d in queue.take_dead_letters()] == ["malformed job message: unknown kind"]


def test_a_retry_goes_back_to_its_kinds_queue(probe_kind: None) -> None:
    queue = MemoryJobQueue()
    queue.publish(Job(image_id=ID, kind=JobKind.RENDER))
    delivery = queue.receive(timeout_s=0.05)
    assert delivery is not None
    queue.retry(delivery, delay_s=0, reason="again")
    assert queue.depth("render") == 1 and queue.depth("probe") == 0


# --- the threads -------------------------------------------------------------------------


def test_thread_plans(probe_kind: None) -> None:
    assert thread_kinds(PICTURES, 2) == [PICTURES, PICTURES]
    assert thread_kinds(frozenset({"probe"}), 2) == [{"probe"}, {"probe"}]
    # pictures and long jobs: the first thread is kept for pictures
    assert thread_kinds(ALL, 3) == [PICTURES, ALL, ALL]
    # one thread: pictures keep it, and one more runs the long jobs
    assert thread_kinds(ALL, 1) == [PICTURES, LONG]


class RecordingQueue(MemoryJobQueue):
    """The in-process queue, noting which kinds each thread asks for and what it got."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: dict[str, frozenset[str]] = {}
        self.lock = threading.Lock()

    def receive(self, *, timeout_s: float, kinds: Collection[str] | None = None) -> Delivery | None:
        with self.lock:
            self.asked[threading.current_thread().name] = frozenset(kinds or ())
        return super().receive(timeout_s=timeout_s, kinds=kinds)


@pytest.mark.parametrize(("threads", "expected"), [(2, [PICTURES, ALL]), (1, [PICTURES, LONG])])
def test_the_embedded_worker_keeps_a_thread_for_pictures(
    probe_kind: None, tmp_path: Path, threads: int, expected: list[frozenset[str]]
) -> None:
    settings = load_settings(
        data_dir=tmp_path, worker_threads=threads, receive_timeout_s=0.1, video=True
    )
    queue = RecordingQueue()
    container = container_of(settings, FakeRepository(), FakeDetector(), queue)
    runtime = WorkerRuntime(container)
    runtime.start()
    try:
        names = [f"worker-{n}" for n in range(len(expected))]
        wait_until(lambda: set(queue.asked) == set(names), what="every job thread to receive")
        assert [queue.asked[n] for n in names] == expected
        # The long job is taken by a thread that may take it, never by the kept one
        # (this release parks the test-only kind once taken).
        queue.publish_raw(probe_body(), kind="probe")
        wait_until(lambda: queue.depth("probe") == 0, what="the long job to be taken")
    finally:
        runtime.stop(timeout_s=10)
        container.close()
