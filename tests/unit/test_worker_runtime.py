"""The worker's threads: a stop is bounded even when a back end hangs the reconciler."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from imageblur.bootstrap import build
from imageblur.config import load_settings
from imageblur.entrypoints.worker import RECONCILER_STOP_S, WorkerRuntime
from imageblur.reconciler import ReconcileReport
from unit.fakes import FakeDetector


class HangingReconciler:
    """A reconciler whose back end stopped answering (a store shutting down with us)."""

    def __init__(self) -> None:
        self.entered = threading.Event()

    def run_once(self, **_: object) -> ReconcileReport:
        self.entered.set()
        time.sleep(120)
        return ReconcileReport()


def test_stop_does_not_wait_for_a_hung_reconciler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = build(load_settings(data_dir=tmp_path, shutdown_grace_s=60), with_detector=False)
    container.detector = FakeDetector()
    hanging = HangingReconciler()
    monkeypatch.setattr(container, "reconciler", lambda: hanging)
    runtime = WorkerRuntime(container)
    runtime.start()
    try:
        assert hanging.entered.wait(10)
        started = time.monotonic()
        runtime.stop()
        runtime.wait()
        # Bounded by the reconciler's short stop, not the 60 s grace nor its 120 s hang.
        assert time.monotonic() - started < RECONCILER_STOP_S + 10
    finally:
        container.close()
