"""Prometheus metrics: every series the service exports, on one registry per process.

The names and labels are a contract (dashboards and alerts query them; a test checks
that every name they use is exported here): add series, never rename one.

Histogram buckets come from measured times (docs/detection.md, 2-core reference
machine): a 1080p photo decodes in ~7 ms and is detected in 0.15-0.2 s, a 12 MP one in
~0.1 s and ~1.1 s, a 50 MP one takes ~6 s in all; blur, encode and a local store write
take milliseconds, an S3 write tens of them.
"""

from __future__ import annotations

import contextlib
import functools
import io
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from imageblur.backends import Backends
from imageblur.cached_collector import CachedCollector
from imageblur.domain import BackendUnavailable, PictureStats, utcnow

STAGES = ("read", "decode", "detect", "blur", "encode", "store")
GC_KINDS = ("original", "result")
# From 1 ms (a small image's blur) to 30 s (a 50 MP photo on a throttled node); dense
# around the 1080p (0.15-0.2 s) and 12 MP (~1.1 s) detection times.
STAGE_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3,
    0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
)  # fmt: skip
# From an idle worker's pick-up (a fraction of a second) to a backlog of an hour.
QUEUE_WAIT_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0,
)  # fmt: skip
# Reads and small JSON answers take milliseconds; an upload of a 25 MB photo is checked
# (a full decode) in up to ~1 s.
HTTP_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# From a receiver on the same network answering at once to a day of retries (the
# default patience).
WEBHOOK_LATENCY_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0, 14400.0, 86400.0,
)  # fmt: skip
WEBHOOK_OUTCOMES = ("delivered", "retry", "given_up")
BATCH_OUTCOMES = ("done", "failed", "skipped", "retry")
# Thumbnails, 1080p (2 MP), 12 MP phone photos, up to the 50 MP limit.
MEGAPIXEL_BUCKETS = (0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 36.0, 50.0)


class Metrics:
    """The service's collectors, registered on `registry` (a fresh one by default, so
    that several apps in one process, as in tests, never share counts)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `*_created` series: they double the output and no rule or panel reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self._http_collectors(r)
        self._job_collectors(r)
        self._maintenance_collectors(r)
        self._webhook_collectors(r)
        self._worker_ready: Gauge | None = None
        # Series that alerts take `increase()` of exist from the start at 0: a series
        # born at 1 would hide its first increase.
        for stage in STAGES:
            self.job_stage.labels(stage=stage)
        for kind in GC_KINDS:
            self.gc_deleted.labels(kind=kind)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome=outcome)
        for outcome in BATCH_OUTCOMES:
            self.batch_items.labels(outcome=outcome)

    def _http_collectors(self, r: CollectorRegistry) -> None:
        """The API's: requests, their times, refused uploads."""
        self.http_requests = Counter(
            "imageblur_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "imageblur_http_request_duration_seconds",
            "Time to answer an HTTP request, body included.",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.uploads_rejected = Counter(
            "imageblur_uploads_rejected",
            "Uploads refused, by error code.",
            ["reason"],
            registry=r,
        )

    def _job_collectors(self, r: CollectorRegistry) -> None:
        """The worker's: outcomes, stage times, queue wait, faces and plates, image sizes."""
        self.jobs = Counter(
            "imageblur_jobs",
            "Jobs settled by a worker, by outcome and kind (detect, render, video).",
            ["outcome", "kind"],
            registry=r,
        )
        self.job_stage = Histogram(
            "imageblur_job_stage_seconds",
            "Time of each stage of a job.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "imageblur_queue_wait_seconds",
            "From upload accepted to the job's first claim by a worker.",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.faces = Counter("imageblur_faces", "Faces hidden in finished images.", registry=r)
        self.batch_items = Counter(
            "imageblur_batch_items",
            "Bucket batch items a worker handled, by outcome (done, failed, skipped, retry).",
            ["outcome"],
            registry=r,
        )
        self.plates = Counter(
            "imageblur_plates", "Licence plates hidden in finished images.", registry=r
        )
        self.work_space_short = Counter(
            "imageblur_work_space_short",
            "Jobs given back to wait because the work dir lacked the space they need.",
            registry=r,
        )
        self.video_seconds = Counter(
            "imageblur_video_seconds",
            "Seconds of video anonymized (finished video jobs).",
            registry=r,
        )
        self.video_frames = Counter(
            "imageblur_video_frames",
            "Frames of video rendered (finished video jobs); per second with the "
            'stage="video" time of imageblur_job_stage_seconds.',
            registry=r,
        )
        self.megapixels = Histogram(
            "imageblur_image_megapixels",
            "Size of the images anonymized.",
            buckets=MEGAPIXEL_BUCKETS,
            registry=r,
        )

    def _maintenance_collectors(self, r: CollectorRegistry) -> None:
        """Back-end errors (every process), the reconciler's work (workers)."""
        self.backend_errors = Counter(
            "imageblur_backend_errors",
            "Calls to a back end that failed as unavailable, by back end and operation.",
            ["backend", "operation"],
            registry=r,
        )
        self.republished = Counter(
            "imageblur_reconciler_republished", "Jobs re-published by a reconciler.", registry=r
        )
        self.gc_deleted = Counter(
            "imageblur_gc_deleted", "Unneeded objects deleted, by kind.", ["kind"], registry=r
        )

    def _webhook_collectors(self, r: CollectorRegistry) -> None:
        """A worker's sender's: its attempts, how long events took, the outbox's depth."""
        self.webhook_deliveries = Counter(
            "imageblur_webhook_deliveries",
            "Webhook delivery attempts, by outcome: delivered, retry (failed, tried again "
            "later), given_up (refused address, or patience spent).",
            ["outcome"],
            registry=r,
        )
        self.webhook_latency = Histogram(
            "imageblur_webhook_delivery_seconds",
            "From an event (the status change) to its delivery, retries included.",
            buckets=WEBHOOK_LATENCY_BUCKETS,
            registry=r,
        )
        self.webhook_outbox = Gauge(
            "imageblur_webhook_outbox",
            "Webhook events not yet delivered nor given up (the whole outbox: every worker "
            "reports the same number; read it with max()).",
            registry=r,
        )

    def webhook_attempted(self, outcome: str) -> None:
        self.webhook_deliveries.labels(outcome=outcome).inc()

    def webhook_delivered(self, *, latency_s: float) -> None:
        self.webhook_attempted("delivered")
        self.webhook_latency.observe(max(latency_s, 0.0))

    def outcomes(self, names: Iterable[str], kinds: Iterable[str]) -> None:
        """Make the job outcome series exist at 0, for each kind of job the worker takes
        (the worker knows its outcomes)."""
        for kind in sorted(kinds):
            for name in names:
                self.jobs.labels(outcome=name, kind=kind)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage of a job; a stage that raises is not recorded."""
        started = time.perf_counter()
        yield
        self.job_stage.labels(stage=name).observe(time.perf_counter() - started)

    def anonymized(
        self, *, faces: int, plates: int, width: int, height: int, timings: dict[str, float]
    ) -> None:
        self.faces.inc(faces)
        self.plates.inc(plates)
        self.megapixels.observe(width * height / 1e6)
        for stage, seconds in timings.items():
            self.job_stage.labels(stage=stage).observe(seconds)

    def video_done(self, *, seconds: float | None, frames: int) -> None:
        self.video_seconds.inc(seconds or 0.0)
        self.video_frames.inc(frames)

    def claimed(self, *, created_at: datetime, now: datetime) -> None:
        self.queue_wait.observe(max((now - created_at).total_seconds(), 0.0))

    def reconciled(self, *, republished: int, originals: int = 0, results: int = 0) -> None:
        self.republished.inc(republished)
        self.gc_deleted.labels(kind="original").inc(originals)
        self.gc_deleted.labels(kind="result").inc(results)

    def watch_worker_ready(self, ready: Callable[[], bool]) -> None:
        """Export `imageblur_worker_ready` (a process that runs a worker does): 1 while
        `ready()` (the originals open), else 0; read at every scrape. Once per registry."""
        if self._worker_ready is None:
            self._worker_ready = Gauge(
                "imageblur_worker_ready",
                "1 while this worker can open the originals (its /readyz answers 200), else 0.",
                registry=self.registry,
            )
            self._worker_ready.set_function(lambda: 1.0 if ready() else 0.0)

    def watch_pictures(
        self, read: Callable[[], PictureStats], *, statuses: Iterable[str], every_s: float
    ) -> None:
        """Export `imageblur_pictures{status}` and `imageblur_oldest_pending_age_seconds`
        (the API process does), reading the database at most once per `every_s`."""
        self.registry.register(PictureCollector(read, statuses=tuple(statuses), every_s=every_s))


class PictureCollector(CachedCollector[PictureStats]):
    """`imageblur_pictures{status}` and `imageblur_oldest_pending_age_seconds`, read
    from the database at most once per `every_s`."""

    def __init__(
        self,
        read: Callable[[], PictureStats],
        *,
        statuses: tuple[str, ...],
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(read, every_s=every_s, clock=clock)
        self._statuses = statuses
        self._now = now

    def families(self, value: PictureStats) -> list[Metric]:
        pictures = GaugeMetricFamily(
            "imageblur_pictures",
            "Pictures by status (done and failed: the planner's estimate on PostgreSQL).",
            labels=["status"],
        )
        for status in self._statuses:
            pictures.add_metric([status], value.counts.get(status, 0))
        oldest = value.oldest_pending_at
        age = 0.0 if oldest is None else max((self._now() - oldest).total_seconds(), 0.0)
        return [
            pictures,
            GaugeMetricFamily(
                "imageblur_oldest_pending_age_seconds",
                "Age of the oldest pending picture (0 when none is pending).",
                value=age,
            ),
        ]


def count_backend_errors(backends: Backends, metrics: Metrics) -> Backends:
    """The same back ends, each call that raises `BackendUnavailable` counted in
    `imageblur_backend_errors_total{backend,operation}` (then re-raised), so that no use
    case needs a line of its own for it."""
    counter = metrics.backend_errors
    return Backends(
        repository=cast(Any, _Counted(backends.repository, "database", counter)),
        originals=cast(Any, _Counted(backends.originals, "originals", counter)),
        results=cast(Any, _Counted(backends.results, "results", counter)),
        queue=cast(Any, _Counted(backends.queue, "queue", counter)),
    )


class _Counted:
    """A proxy of one back end: its methods, with unavailability counted."""

    def __init__(self, target: object, backend: str, counter: Counter) -> None:
        self._target = target
        self._backend = backend
        self._counter = counter

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr) or name.startswith("_"):
            return attr
        errors = self._counter.labels(backend=self._backend, operation=name)

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = attr(*args, **kwargs)
            except BackendUnavailable:
                errors.inc()
                raise
            # A store's listing fails while it is being iterated, not when it is made. A
            # stream (`open`) is an iterator of lines too, and stays the stream it is.
            if isinstance(result, Iterator) and not isinstance(result, io.IOBase):
                return _counting_iterator(result, errors)
            return result

        return call


def _counting_iterator(items: Iterator[Any], errors: Any) -> Iterator[Any]:
    try:
        yield from items
    except BackendUnavailable:
        errors.inc()
        raise
