"""The worker's threads: a stop is bounded even when a back end hangs the reconciler, and
the liveness probe (`imageblur alive`) tells a slow job from a hung one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from imageblur.bootstrap import Container
from imageblur.cancel import checkpoint
from imageblur.config import Settings, load_settings
from imageblur.domain import utcnow
from imageblur.entrypoints.worker import RECONCILER_STOP_S, WorkerRuntime
from imageblur.ports import FaceDetector
from support import jpeg_bytes, wait_until
from unit.fakes import FakeDetector, FakeRepository
from unit.world import container_of

IMAGEBLUR = Path(sys.executable).parent / "imageblur"


def one_job_thread(tmp_path: Path, **changes: object) -> Settings:
    """A worker with one job thread, for pictures only (no other loop beats the heartbeat
    while its job hangs), that notices a stop within 0.2 s."""
    return load_settings(
        data_dir=tmp_path / "data",
        worker_threads=1,
        worker_kinds="pictures",
        receive_timeout_s=0.2,
        **changes,
    )


@contextmanager
def running(
    settings: Settings,
    repo: FakeRepository,
    detector: FaceDetector,
    *,
    on_failure: Callable[[], None] | None = None,
    release: Callable[[], None] = lambda: None,
) -> Iterator[tuple[WorkerRuntime, Container]]:
    """A started worker runtime on fakes; on the way out `release` lets go of what a test
    hung (first, so that the stop is not held by it), then the runtime stops, and its
    threads are waited for."""
    container = container_of(settings, repo, detector)
    runtime, before = WorkerRuntime(container, on_failure=on_failure), set(threading.enumerate())
    runtime.start()
    try:
        yield runtime, container
    finally:
        release()
        runtime.stop()
        container.close()
    wait_until(lambda: set(threading.enumerate()) <= before, what="the worker's threads to end")


def test_stop_does_not_wait_for_a_hung_reconciler(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, shutdown_grace_s=60)
    repo = FakeRepository()
    entered, release = threading.Event(), threading.Event()

    def hang_the_reconciler(operation: str) -> None:
        # A database that stopped answering (shutting down with us), for the reconciler.
        if operation == "requeue_stale":
            entered.set()
            release.wait(120)

    repo.before = hang_the_reconciler
    with running(settings, repo, FakeDetector(), release=release.set) as (runtime, _):
        assert entered.wait(10)
        started = time.monotonic()
        runtime.stop()
        runtime.wait()
        # Bounded by the reconciler's short stop, not the 60 s grace nor its 120 s hang.
        assert time.monotonic() - started < RECONCILER_STOP_S + 10


class HungDetector(FakeDetector):
    """Detection that never ends on its own (native code stuck), until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def detect(self, image):  # type: ignore[no-untyped-def]
        self.entered.set()
        self.release.wait(timeout=120)
        return super().detect(image)


def alive(heartbeat: Path, max_age_s: float) -> bool:
    """`imageblur alive`, as the liveness probe runs it."""
    env = {
        **os.environ,
        "IMAGEBLUR_HEARTBEAT_FILE": str(heartbeat),
        "IMAGEBLUR_HEARTBEAT_MAX_AGE_S": str(max_age_s),
    }
    probe = subprocess.run([str(IMAGEBLUR), "alive"], env=env, capture_output=True, timeout=60)
    return probe.returncode == 0


def renewing() -> bool:
    """A lease-renewing thread runs (the job's, named after its image)."""
    return any(t.name.startswith("lease-") for t in threading.enumerate())


def test_a_job_longer_than_the_heartbeat_age_keeps_the_worker_alive_until_it_hangs(
    tmp_path: Path,
) -> None:
    """Renewals touch the heartbeat: `alive` passes while the job holds its lease (here
    4 x 2 s), longer than the 1.5 s heartbeat age, and fails once renewals stop. Only
    conditions are waited for: a probe that passes past the age into the job, the
    renewals' end, a probe that fails."""
    heartbeat, max_age_s = tmp_path / "alive", 1.5
    settings = one_job_thread(
        tmp_path,
        heartbeat_file=heartbeat,
        heartbeat_max_age_s=max_age_s,
        lease_s=2.0,  # renewed every 2/3 s, for 8 s at most
        shutdown_grace_s=5,
    )
    detector = HungDetector()
    with running(settings, FakeRepository(), detector, release=detector.release.set) as (
        _,
        container,
    ):
        container.images.submit(jpeg_bytes())
        assert detector.entered.wait(30), "the job never started"
        started = time.time()

        def alive_past_the_age() -> bool:
            # A pass now proves a touch within the age, which is after the job started.
            return time.time() - started > max_age_s and alive(heartbeat, max_age_s)

        wait_until(alive_past_the_age, what="a job that renews its lease to look alive")
        wait_until(lambda: not renewing(), what="the renewals to end (the job hangs on)")
        assert not detector.release.is_set()
        wait_until(
            lambda: not alive(heartbeat, max_age_s), what="a hung job (renewals over) to look dead"
        )


def test_a_job_hung_past_its_lease_ends_the_worker_for_a_restart(tmp_path: Path) -> None:
    """A detection that never returns: the lease is renewed for its floor (4 x 1 s), then
    given up, so another worker can take the job over; the job then stands still for
    IMAGEBLUR_JOB_STUCK_S (1 s here), and the worker fails as a dead thread does (the
    embedded server exits non-zero on it), since the hung thread cannot be stopped.
    Only conditions are waited for: the take-over, the failure."""
    settings = one_job_thread(tmp_path, lease_s=1.0, job_stuck_s=1.0, shutdown_grace_s=1)
    detector, repo, failed = HungDetector(), FakeRepository(), threading.Event()
    with running(settings, repo, detector, on_failure=failed.set, release=detector.release.set) as (
        runtime,
        container,
    ):
        record = container.images.submit(jpeg_bytes())
        assert detector.entered.wait(30), "the job never started"
        wait_until(
            lambda: repo.claim(record.id, owner="w2", lease_s=600, now=utcnow()),
            what="the hung job's lease to be given up and taken over",
        )
        wait_until(failed.is_set, what="the worker to fail on the stuck job")
        assert runtime.failed
        runtime.wait()  # returns: the hung thread is not waited for
        assert not detector.release.is_set()  # the detection still hangs


def test_a_slow_job_that_moves_is_never_taken_for_a_stuck_one(tmp_path: Path) -> None:
    """Past its lease's ceiling a job that still passes checkpoints is only cancelled
    (taken over), never reported stuck: here it moves every 0.2 s for well over
    IMAGEBLUR_JOB_STUCK_S after its lease was given up."""
    settings = one_job_thread(tmp_path, lease_s=1.0, job_stuck_s=1.0, shutdown_grace_s=5)
    detector, failed = MovingDetector(), threading.Event()
    with running(settings, FakeRepository(), detector, on_failure=failed.set) as (
        runtime,
        container,
    ):
        container.images.submit(jpeg_bytes())
        wait_until(detector.ended.is_set, what="the slow job to end")
        assert not failed.is_set() and not runtime.failed


class MovingDetector(FakeDetector):
    """Detection that passes a checkpoint every 0.2 s, without saying its size, until
    its lease was given up (the keeper only watches) and then 3 s more."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = threading.Event()

    def detect(self, image):  # type: ignore[no-untyped-def]
        pace = threading.Event()  # never set: its wait is the work's own pace
        after = 0  # checkpoints passed since the lease was given up
        while not pace.wait(0.2):
            checkpoint()
            if after or not renewing():
                after += 1
            if after >= 15:  # 3 s of work after the lease was given up
                break
        self.ended.set()
        return super().detect(image)
