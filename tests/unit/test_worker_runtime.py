"""The worker's threads: a stop is bounded even when a back end hangs the reconciler, and
the liveness probe (`imageblur alive`) tells a slow job from a hung one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from imageblur.config import load_settings
from imageblur.entrypoints.worker import RECONCILER_STOP_S, WorkerRuntime
from support import jpeg_bytes, wait_until
from unit.fakes import FakeDetector, FakeRepository
from unit.world import container_of

IMAGEBLUR = Path(sys.executable).parent / "imageblur"


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
    container = container_of(settings, repo, FakeDetector())
    runtime, before = WorkerRuntime(container), set(threading.enumerate())
    runtime.start()
    try:
        assert entered.wait(10)
        started = time.monotonic()
        runtime.stop()
        runtime.wait()
        # Bounded by the reconciler's short stop, not the 60 s grace nor its 120 s hang.
        assert time.monotonic() - started < RECONCILER_STOP_S + 10
    finally:
        release.set()
        container.close()
    assert wait_until(lambda: set(threading.enumerate()) <= before, timeout_s=10), "threads left"


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


def test_a_job_longer_than_the_heartbeat_age_keeps_the_worker_alive_until_it_hangs(
    tmp_path: Path,
) -> None:
    """Renewals touch the heartbeat: `alive` passes while the job holds its lease (here
    4 x 1.5 s), longer than the 2 s heartbeat age, and fails once renewals stop."""
    heartbeat, max_age_s = tmp_path / "alive", 2.0
    settings = load_settings(
        data_dir=tmp_path / "data",
        heartbeat_file=heartbeat,
        heartbeat_max_age_s=max_age_s,
        lease_s=1.5,
        receive_timeout_s=0.2,
        shutdown_grace_s=5,
    )
    detector = HungDetector()
    container = container_of(settings, FakeRepository(), detector)
    runtime, before = WorkerRuntime(container), set(threading.enumerate())
    runtime.start()
    try:
        container.images.submit(jpeg_bytes())
        assert detector.entered.wait(30), "the job never started"
        started = time.monotonic()
        probed_at: list[float] = []
        while time.monotonic() - started < 1.5 * max_age_s:
            assert alive(heartbeat, max_age_s), "a job that renews its lease looked dead"
            probed_at.append(time.monotonic() - started)
        assert probed_at and probed_at[-1] > max_age_s  # probed past the heartbeat age
        assert wait_until(lambda: not alive(heartbeat, max_age_s), timeout_s=60), (
            "a hung job (renewals over) still looks alive"
        )
    finally:
        detector.release.set()
        runtime.stop()
        container.close()
    assert wait_until(lambda: set(threading.enumerate()) <= before, timeout_s=10), "threads left"
