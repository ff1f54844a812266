"""The worker: receive -> process -> ack / retry / dead letter, and a reconciler beside it,
and the webhook sender (with IMAGEBLUR_WEBHOOK_SECRET set).

Each job thread receives the kinds `thread_kinds` gives it (IMAGEBLUR_WORKER_KINDS; one
thread kept for pictures when long kinds are taken too). Stopping (SIGTERM, or the
API's shutdown in embedded mode) lets the job in hand finish, for at most
IMAGEBLUR_SHUTDOWN_GRACE_S; a job cut short by a hard kill, or by the end of the grace,
is taken over after its lease expires. A thread that ends
on its own (it never should: its loop logs any exception and goes on) stops the others,
the heartbeat with them, and makes the process exit non-zero, so an orchestrator
restarts it rather than keep a worker that silently does less.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from types import FrameType
from typing import Any, TypeVar

import structlog

from imageblur.batches.pump import BatchPump
from imageblur.batches.runner import BatchRunner
from imageblur.bootstrap import Container
from imageblur.domain import (
    JOB_KINDS,
    BackendUnavailable,
    Delivery,
    ImageRecord,
    Job,
    JobKind,
    KindRoute,
    QueueUnavailable,
)
from imageblur.entrypoints import schemas, video_schemas
from imageblur.jobs import JobProcessor, Outcome
from imageblur.logs import get_logger
from imageblur.metrics import BATCH_OUTCOMES
from imageblur.reconciler import Reconciler
from imageblur.webhooks.sender import WebhookSender

log = get_logger(__name__)
_T = TypeVar("_T")

RECONCILER_STOP_S = 5.0


def _batch_data(container: Container, root: str, batch_id: str) -> dict[str, Any] | None:
    """A `batch.*` event's data: the batch as `GET /batches/{id}` shows it now (the
    routes imported here, not at import: a worker has no other use for FastAPI)."""
    from imageblur.entrypoints.batch_routes import shown as shown_batch

    batch = container.backends.repository.get_batch(batch_id)
    return None if batch is None else shown_batch(batch, root)


def shown(record: ImageRecord, root: str = "") -> dict[str, Any]:
    """A record as GET /picture/{id} (or /video/{id}) shows it: a webhook's `data`."""
    if record.kind == "video":
        return video_schemas.video(record, root).model_dump(mode="json")
    return schemas.picture(record, root).model_dump(mode="json")


@contextmanager
def job_log_context(job: Job) -> Iterator[None]:
    """Every log line while a job is handled names its image and its upload's request id,
    so one picture can be followed from the upload to the acknowledgement."""
    context = {"image_id": job.image_id}
    if job.request_id is not None:
        context["request_id"] = job.request_id
    with structlog.contextvars.bound_contextvars(**context):
        yield


def thread_kinds(
    selected: frozenset[str], threads: int, kinds: Mapping[str, KindRoute] = JOB_KINDS
) -> list[frozenset[str]]:
    """The job kinds each job thread takes. A worker that takes pictures and long jobs
    keeps its first thread for pictures, so that long jobs never hold every thread while
    pictures wait; with one thread, it runs a second one for the long jobs (the pixel
    budget still bounds what both hold). Otherwise every thread takes every kind."""
    pictures = frozenset(k for k in selected if not kinds[k].long)
    if not pictures or pictures == selected:
        return [selected] * threads
    if threads == 1:
        return [pictures, selected - pictures]
    return [pictures] + [selected] * (threads - 1)


class WorkerRuntime:
    def __init__(
        self,
        container: Container,
        *,
        burst: bool = False,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """`on_failure` is called (once) when a thread ended that was not asked to: the
        embedded API stops its server with it."""
        self._c = container
        self._burst = burst
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._failed = threading.Event()
        self._failure_lock = threading.Lock()
        self._threads: list[threading.Thread] = []  # the job threads
        self._reconciler: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self._pump: threading.Thread | None = None
        self._runner: BatchRunner | None = None  # bucket batches' items

    def start(self) -> None:
        s = self._c.settings
        # A job that renews its lease is making progress: it keeps the heartbeat fresh.
        processor = self._c.processor(on_lease_renewed=self._beat, on_stuck=self._job_stuck)
        self._c.metrics.outcomes(Outcome, s.enabled_kinds())
        self._c.metrics.watch_worker_ready(lambda: self._c.key_problem() is None)
        if self._burst:
            # One pass first, so that a drained queue really means nothing is left to do.
            republished = self._c.reconciler().republish(everything_pending=self._c.embedded_queue)
            self._c.metrics.reconciled(republished=republished)
        else:
            self._reconciler = self._start("reconciler", self._reconcile, self._c.reconciler())
        sender = self._c.sender(
            render=partial(shown, root=s.root_path),
            owner=f"{processor.owner}:webhooks",
            render_batch=partial(_batch_data, self._c, s.root_path),
        )
        if sender is not None and not self._burst:
            self._sender = self._start("webhooks", self._send, sender)
        if "batch" in s.job_kinds():
            self._runner = self._c.batch_runner(owner=f"{processor.owner}:batches")
        if not self._burst:
            pump = self._c.batch_pump(owner=f"{processor.owner}:pump")
            self._pump = self._start("batches", self._pump_batches, pump)
        plan = thread_kinds(s.job_kinds(), s.worker_threads)
        for n, kinds in enumerate(plan):
            # A burst run's job threads end once the queue is drained, as asked.
            work = partial(self._work, kinds=kinds)
            thread = self._start(f"worker-{n}", work, processor, may_end=self._burst)
            self._threads.append(thread)
        log.info(
            "worker.started",
            owner=processor.owner,
            threads=len(plan),
            kinds=[",".join(sorted(k)) for k in plan],
        )

    @property
    def failed(self) -> bool:
        """A thread ended without being asked to: the process should exit non-zero."""
        return self._failed.is_set()

    def _start(
        self, name: str, target: Callable[[_T], None], arg: _T, *, may_end: bool = False
    ) -> threading.Thread:
        """A thread that is not `may_end` must run until `stop`: else the worker failed."""

        def run() -> None:
            try:
                target(arg)
            except BaseException:  # the thread ends here either way: say why, in our format
                log.exception("worker.thread_error", thread=name)
            finally:
                if not self._stop.is_set() and not may_end:
                    self._thread_died(name)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    def _job_stuck(self) -> None:
        """A job hung past IMAGEBLUR_JOB_STUCK_S (its lease already given up, so another
        worker takes it over): the thread cannot be stopped, so the process ends as if
        it had died, non-zero, for its orchestrator to start a fresh one."""
        self._thread_died(threading.current_thread().name)

    def _thread_died(self, name: str) -> None:
        log.error("worker.thread_died", thread=name)
        with self._failure_lock:
            first = not self._failed.is_set()
            self._failed.set()  # before the stop: no heartbeat from here on
        self._stop.set()
        if first and self._on_failure is not None:
            self._on_failure()

    def _work(self, processor: JobProcessor, *, kinds: frozenset[str]) -> None:
        queue, timeout_s = self._c.backends.queue, self._c.settings.receive_timeout_s
        backoff_s = 0.5
        while not self._stop.is_set():
            try:
                delivery = queue.receive(timeout_s=timeout_s, kinds=kinds)
            except Exception as exc:  # the loop must outlive any one message
                # A bug or an unexpected library error is treated as an outage: waited
                # out, never the end of the thread.
                if isinstance(exc, QueueUnavailable):
                    log.warning("queue.unavailable", error=str(exc), retry_in_s=backoff_s)
                else:
                    log.exception("queue.receive_error", retry_in_s=backoff_s)
                self._stop.wait(backoff_s)
                # Capped low: a broker restart takes seconds, and a worker that sleeps
                # long after it is back leaves the queue to grow.
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            backoff_s = 0.5
            self._beat()
            if delivery is not None:
                self._handle(processor, delivery)
            elif self._burst:
                return  # burst mode: the queue is drained
        log.info("worker.thread_stopped")

    def _handle(self, processor: JobProcessor, delivery: Delivery) -> None:
        with job_log_context(delivery.job):
            try:
                if delivery.job.kind is JobKind.BATCH and self._runner is not None:
                    outcome: str = self._runner.handle(delivery)
                else:
                    outcome = processor.handle(delivery)
            except Exception as exc:  # the loop must outlive any one job
                log.exception("job.unhandled_error", image_id=delivery.job.image_id)
                self._settle_unhandled(delivery, f"internal error: {type(exc).__name__}")
            else:
                self._c.metrics.jobs.labels(outcome=outcome, kind=delivery.job.kind).inc()
                if delivery.job.kind is JobKind.BATCH and outcome in BATCH_OUTCOMES:
                    self._c.metrics.batch_items.labels(outcome=outcome).inc()

    def _settle_unhandled(self, delivery: Delivery, reason: str) -> None:
        """Settle a job whose handling raised: an unsettled message would hold its
        prefetch slot on a live channel until the broker's consumer timeout. Tried again
        after the longest delay, parked after as many tries as a job gets attempts."""
        queue, s = self._c.backends.queue, self._c.settings
        try:
            if delivery.job.attempt + 1 >= s.max_attempts:
                queue.dead_letter(delivery, reason=reason)
            else:
                queue.retry(delivery, delay_s=s.retry_max_delay_s, reason=reason)
        except Exception:  # left unsettled: the broker redelivers it when we reconnect
            log.exception("job.settle_failed", image_id=delivery.job.image_id)

    def _beat(self) -> None:
        """Touch the heartbeat file: proof for a liveness probe that the loop turns or a
        job's lease renewals succeed."""
        path = self._c.settings.heartbeat_file
        # Once a thread has died the process is going down: a probe must not see it alive.
        if path is not None and not self._failed.is_set():
            try:
                path.touch()
            except OSError as exc:
                log.warning("worker.heartbeat_failed", error=exc.strerror)

    def _send(self, sender: WebhookSender) -> None:
        sender.run(self._stop)

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
                self._c.metrics.reconciled(
                    republished=report.republished,
                    originals=report.originals_deleted,
                    results=report.results_deleted,
                )
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

    def _pump_batches(self, pump: BatchPump) -> None:
        """List, top up and settle bucket batches (one process at a time: the pump's
        lease), every IMAGEBLUR_BATCH_PUMP_INTERVAL_S."""
        while not self._stop.is_set():
            try:
                report = pump.run_once()
                if report.listed or report.published or report.republished or report.settled:
                    log.info("batches.pass", **vars(report))
            except BackendUnavailable as exc:
                log.warning("batches.unavailable", error=str(exc))
            except Exception:  # one bad pass must not end the pump
                log.exception("batches.error")
            self._stop.wait(self._c.settings.batch_pump_interval_s)

    def stop(self, *, timeout_s: float | None = None) -> None:
        self._stop.set()
        grace = self._c.settings.shutdown_grace_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + grace  # one grace for all threads, not one each
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        # The reconciler's work and the sender's are safe to drop (a delivery cut short
        # is sent again after its lease), and a call to a back end that hangs (a store
        # shutting down with us) must not hold the stop for the whole grace; the threads
        # are daemons and end with the process.
        for helper in (self._reconciler, self._sender, self._pump):
            if helper is not None:
                helper.join(timeout=min(max(deadline - time.monotonic(), 0.0), RECONCILER_STOP_S))
        threads = [*self._threads, self._reconciler, self._sender, self._pump]
        busy = [t.name for t in threads if t is not None and t.is_alive()]
        if busy:
            log.warning("worker.stopped_with_threads_busy", threads=busy)
        log.info("worker.stopped")

    def wait(self) -> None:
        """Block until the job threads end (after `stop`, a signal, or a drained queue in
        burst mode); `stop` then gives the reconciler a short while."""
        for thread in self._threads:
            # A failure ends the wait: a hung job's thread never ends (`_job_stuck`).
            while thread.is_alive() and not self._failed.is_set():
                thread.join(timeout=0.5)

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("worker.signal", signal=signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
