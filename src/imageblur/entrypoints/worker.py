"""The worker: receive -> process -> ack / retry / dead letter, and a reconciler beside it.

Stopping (SIGTERM, or the API's shutdown in embedded mode) lets the job in hand finish;
a job cut short by a hard kill is taken over after its lease expires.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

from imageblur.bootstrap import Container
from imageblur.domain import BackendUnavailable, QueueUnavailable
from imageblur.jobs import JobProcessor
from imageblur.logs import get_logger
from imageblur.reconciler import Reconciler

log = get_logger(__name__)

RECONCILER_STOP_S = 5.0


class WorkerRuntime:
    def __init__(self, container: Container, *, burst: bool = False) -> None:
        self._c = container
        self._burst = burst
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []  # the job threads
        self._reconciler: threading.Thread | None = None

    def start(self) -> None:
        s = self._c.settings
        processor = self._c.processor()
        if self._burst:
            # One pass first, so that a drained queue really means nothing is left to do.
            self._c.reconciler().republish(everything_pending=self._c.embedded_queue)
        else:
            self._reconciler = self._start("reconciler", self._reconcile, self._c.reconciler())
        for n in range(s.worker_threads):
            self._threads.append(self._start(f"worker-{n}", self._work, processor))
        log.info("worker.started", owner=processor.owner, threads=s.worker_threads)

    def _start(self, name: str, target: object, arg: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=(arg,), name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        return thread

    def _work(self, processor: JobProcessor) -> None:
        queue, timeout_s = self._c.backends.queue, self._c.settings.receive_timeout_s
        backoff_s = 0.5
        while not self._stop.is_set():
            try:
                delivery = queue.receive(timeout_s=timeout_s)
            except QueueUnavailable as exc:
                log.warning("queue.unavailable", error=str(exc), retry_in_s=backoff_s)
                self._stop.wait(backoff_s)
                # Capped low: a broker restart takes seconds, and a worker that sleeps
                # long after it is back leaves the queue to grow.
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            backoff_s = 0.5
            self._beat()
            if delivery is not None:
                try:
                    processor.handle(delivery)
                except Exception:  # the loop must outlive any one job
                    # Unsettled: the broker redelivers it, or the reconciler re-publishes.
                    log.exception("job.unhandled_error", image_id=delivery.job.image_id)
            elif self._burst:
                return  # burst mode: the queue is drained
        log.info("worker.thread_stopped")

    def _beat(self) -> None:
        """Touch the heartbeat file: proof for a liveness probe that the loop turns."""
        path = self._c.settings.heartbeat_file
        if path is not None:
            try:
                path.touch()
            except OSError as exc:
                log.warning("worker.heartbeat_failed", error=exc.strerror)

    def _reconcile(self, reconciler: Reconciler) -> None:
        interval_s = self._c.settings.reconcile_interval_s
        gc_interval_s = self._c.settings.gc_interval_s
        # With an in-process queue, jobs queued before a restart are gone: re-publish
        # every pending record at once. With a broker they are still queued.
        everything_pending = self._c.embedded_queue
        # Garbage collection lists whole stores: far less often than re-publishing.
        next_gc = time.monotonic()
        while not self._stop.is_set():
            try:
                collect = time.monotonic() >= next_gc
                report = reconciler.run_once(everything_pending=everything_pending, collect=collect)
                if collect:
                    next_gc = time.monotonic() + gc_interval_s
                everything_pending = False
                if report.republished or report.originals_deleted or report.results_deleted:
                    log.info(
                        "reconciler.pass",
                        republished=report.republished,
                        originals_deleted=report.originals_deleted,
                        results_deleted=report.results_deleted,
                    )
            except BackendUnavailable as exc:
                log.warning("reconciler.unavailable", error=str(exc))
            except Exception:  # one bad pass must not end reconciling
                log.exception("reconciler.error")
            self._stop.wait(interval_s)

    def stop(self, *, timeout_s: float | None = None) -> None:
        self._stop.set()
        grace = self._c.settings.shutdown_grace_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + grace  # one grace for all threads, not one each
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        if self._reconciler is not None:
            # Its work is idempotent and safe to drop, and a call to a back end that hangs
            # (a store shutting down with us) must not hold the stop for the whole grace;
            # the thread is a daemon and ends with the process.
            self._reconciler.join(
                timeout=min(max(deadline - time.monotonic(), 0.0), RECONCILER_STOP_S)
            )
        busy = [
            t.name for t in [*self._threads, self._reconciler] if t is not None and t.is_alive()
        ]
        if busy:
            log.warning("worker.stopped_with_threads_busy", threads=busy)
        log.info("worker.stopped")

    def wait(self) -> None:
        """Block until the job threads end (after `stop`, a signal, or a drained queue in
        burst mode); `stop` then gives the reconciler a short while."""
        for thread in self._threads:
            while thread.is_alive():
                thread.join(timeout=0.5)

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("worker.signal", signal=signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
