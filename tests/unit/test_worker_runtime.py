"""The worker's threads: a stop is bounded even when a back end hangs the reconciler."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from imageblur.adapters.memory_queue import MemoryJobQueue
from imageblur.backends import Backends
from imageblur.bootstrap import Container, build_gate, build_images
from imageblur.config import load_settings
from imageblur.entrypoints.worker import RECONCILER_STOP_S, WorkerRuntime
from unit.fakes import FakeDetector, FakeRepository, FakeStore


def test_stop_does_not_wait_for_a_hung_reconciler(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, shutdown_grace_s=60)
    repo = FakeRepository()
    repo.migrate()
    entered, release = threading.Event(), threading.Event()

    def hang_the_reconciler(operation: str) -> None:
        # A database that stopped answering (shutting down with us), for the reconciler.
        if operation == "requeue_stale":
            entered.set()
            release.wait(120)

    repo.before = hang_the_reconciler
    backends = Backends(repo, FakeStore("in"), FakeStore("out"), MemoryJobQueue())
    gate = build_gate(settings)
    container = Container(
        settings=settings,
        backends=backends,
        gate=gate,
        images=build_images(settings, backends, gate),
        detector=FakeDetector(),
    )
    runtime = WorkerRuntime(container)
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
