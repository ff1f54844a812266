"""The only place that builds adapters from settings. Nothing connects at import time.

Back ends are chosen from closed sets; the drivers of the distributed back ends are
imported only when selected, so the embedded install does not need them.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Literal

from imageblur.anonymizer import AnonymizeOptions, Anonymizer
from imageblur.config import Settings
from imageblur.ports import FaceDetector, ImageRepository, JobQueue, ObjectStore
from imageblur.processing import JobProcessor, Reconciler, RetryPolicy
from imageblur.services import ImageService


def build_repository(settings: Settings) -> ImageRepository:
    if settings.repository == "postgres":
        from imageblur.adapters.postgres_repo import PostgresImageRepository

        return PostgresImageRepository.from_settings(settings)
    from imageblur.adapters.sqlite_repo import SqliteImageRepository

    return SqliteImageRepository(settings.sqlite_file)


def build_store(settings: Settings, role: Literal["input", "output"]) -> ObjectStore:
    if settings.store == "s3":
        from imageblur.adapters.s3_store import S3ObjectStore

        return S3ObjectStore.from_settings(settings, role=role)
    from imageblur.adapters.local_store import LocalObjectStore

    folder = "originals" if role == "input" else "results"
    return LocalObjectStore(settings.data_dir / folder)


def build_queue(settings: Settings) -> JobQueue:
    if settings.queue == "rabbitmq":
        from imageblur.adapters.rabbitmq_queue import RabbitMQJobQueue

        return RabbitMQJobQueue.from_settings(settings)
    from imageblur.adapters.memory_queue import MemoryJobQueue

    return MemoryJobQueue()


def build_detector(settings: Settings) -> FaceDetector:
    from imageblur.detection import CenterFaceDetector

    return CenterFaceDetector(
        model_path=settings.model_path,
        threshold=settings.detection_threshold,
        threads=settings.detector_threads,
        runtime=settings.detector_runtime,
    )


def anonymize_options(settings: Settings) -> AnonymizeOptions:
    return AnonymizeOptions(
        mode=settings.blur_mode,
        shape=settings.mask_shape,
        mask_scale=settings.mask_scale,
        jpeg_quality=settings.jpeg_quality,
        max_pixels=settings.max_pixels,
    )


@dataclass
class Container:
    """Everything a process needs, built once and closed once."""

    settings: Settings
    repository: ImageRepository
    originals: ObjectStore
    results: ObjectStore
    queue: JobQueue
    images: ImageService
    detector: FaceDetector | None = None
    _closed: bool = field(default=False, repr=False)

    def processor(self, *, owner: str | None = None) -> JobProcessor:
        if self.detector is None:
            raise RuntimeError("this container was built without a face detector")
        s = self.settings
        return JobProcessor(
            repository=self.repository,
            originals=self.originals,
            results=self.results,
            queue=self.queue,
            anonymizer=Anonymizer(self.detector, anonymize_options(s)),
            retry=RetryPolicy(
                max_attempts=s.max_attempts,
                base_delay_s=s.retry_base_delay_s,
                max_delay_s=s.retry_max_delay_s,
            ),
            lease_s=s.lease_s,
            keep_originals=s.keep_originals,
            owner=owner,
            # Retries come at most every retry_max_delay_s once the back-off has grown.
            outage_retries=math.ceil(s.outage_patience_s / max(s.retry_max_delay_s, 1.0)),
        )

    def reconciler(self) -> Reconciler:
        s = self.settings
        return Reconciler(
            repository=self.repository,
            originals=self.originals,
            results=self.results,
            queue=self.queue,
            pending_grace_s=s.pending_grace_s,
            queued_grace_s=s.queued_grace_s,
            orphan_grace_s=s.orphan_grace_s,
            keep_originals=s.keep_originals,
            # The collecting process renews its lease every gc interval; half an interval
            # of slack keeps a slow pass from handing collection to a second process.
            gc_lease_s=1.5 * s.gc_interval_s,
        )

    @property
    def embedded_queue(self) -> bool:
        """True when queued jobs die with the process (the reconciler must re-publish)."""
        return self.settings.queue == "memory"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for closer in (self.queue.close, self.originals.close, self.results.close):
            with contextlib.suppress(Exception):
                closer()
        self.repository.close()


def build(settings: Settings, *, with_detector: bool) -> Container:
    """Wire the process. With `with_detector` the face model is loaded (workers only)."""
    detector = build_detector(settings) if with_detector else None
    repository = build_repository(settings)
    if settings.repository == "sqlite":
        # A local file has a single owner: create/upgrade it on start. PostgreSQL is
        # migrated by the explicit `imageblur migrate` step (a Job on Kubernetes).
        repository.migrate()
    originals = build_store(settings, "input")
    results = build_store(settings, "output")
    queue = build_queue(settings)
    images = ImageService(
        repository=repository,
        originals=originals,
        results=results,
        queue=queue,
        max_pixels=settings.max_pixels,
        max_concurrent_checks=settings.max_concurrent_checks,
        presigned_ttl_s=settings.presigned_ttl_s
        if settings.result_delivery == "presigned"
        else None,
    )
    return Container(
        settings=settings,
        repository=repository,
        originals=originals,
        results=results,
        queue=queue,
        images=images,
        detector=detector,
    )
