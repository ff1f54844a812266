"""The in-memory world the core's unit tests run in: the fakes, wired as the use cases
need them (`World`, the `world` fixture of conftest.py), and a worker's container on
fakes (`container_of`). A support module, so no test module imports another."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from imageblur.adapters.memory_queue import MemoryJobQueue
from imageblur.admission import UploadGate
from imageblur.anonymizer import AnonymizeOptions, Anonymizer
from imageblur.backends import Backends
from imageblur.bootstrap import Container, build_gate, build_images, build_review
from imageblur.config import Settings
from imageblur.domain import Face
from imageblur.jobs import JobProcessor, RetryPolicy
from imageblur.ports import FaceDetector
from imageblur.reconciler import Reconciler
from imageblur.services import ImageService
from unit.fakes import Clock, FakeDetector, FakeRepository, FakeStore


@dataclass
class World:
    repo: FakeRepository
    originals: FakeStore
    results: FakeStore
    queue: MemoryJobQueue
    detector: FakeDetector
    clock: Clock
    images: ImageService

    @property
    def backends(self) -> Backends:
        return Backends(self.repo, self.originals, self.results, self.queue)

    def processor(self, owner: str = "w1", **kw: object) -> JobProcessor:
        options = {
            "retry": RetryPolicy(max_attempts=3, base_delay_s=0, max_delay_s=0),
            "lease_s": 60.0,
            "lease_renew_interval_s": 20.0,
            "max_lease_renewals": 4,
            # With no back-off delay, one retry per second of patience.
            "outage_patience_s": 360.0,
            "keep_originals": False,
            **kw,
        }
        return JobProcessor(
            backends=self.backends,
            anonymizer=Anonymizer(self.detector, OPTIONS),
            owner=owner,
            clock=self.clock,
            **options,  # type: ignore[arg-type]
        )

    def reconciler(self, **options: object) -> Reconciler:
        defaults = {
            "pending_grace_s": 30,
            "queued_grace_s": 6 * 3600.0,
            "orphan_grace_s": 600,
            "keep_originals": False,
            "gc_lease_s": 900.0,
            "owner": "this-worker",
        }
        return Reconciler(
            backends=self.backends,
            clock=self.clock,
            **{**defaults, **options},  # type: ignore[arg-type]
        )

    def next_delivery(self):  # type: ignore[no-untyped-def]
        delivery = self.queue.receive(timeout_s=0.1)
        assert delivery is not None
        return delivery


OPTIONS = AnonymizeOptions(
    mode="blur",
    shape="ellipse",
    mask_scale=1.25,
    margin_px=3.0,
    jpeg_quality=95,
    max_pixels=10_000_000,
    keep_metadata=frozenset(),
    output_format="jpeg",
)


def new_world() -> World:
    """The fakes, empty, and the submit use case on them; a detector that finds one face."""
    repo = FakeRepository()
    repo.migrate()
    originals, results, queue, clock = FakeStore("in"), FakeStore("out"), MemoryJobQueue(), Clock()
    images = ImageService(
        backends=Backends(repo, originals, results, queue),
        gate=UploadGate(max_checking=4, max_in_hand=16, pixel_budget=16_000_000),
        max_pixels=10_000_000,
        max_jpeg_scans=100,
        output_format="jpeg",
        presigned_ttl_s=None,
        clock=clock,
    )
    detector = FakeDetector([Face(5, 5, 30, 30, 0.9)])
    return World(repo, originals, results, queue, detector, clock, images)


def container_of(
    settings: Settings,
    repo: FakeRepository,
    detector: FaceDetector,
    queue: MemoryJobQueue | None = None,
) -> Container:
    """A worker's container on fakes (and the in-process queue, or `queue`)."""
    repo.migrate()
    queue = MemoryJobQueue() if queue is None else queue
    backends = Backends(repo, FakeStore("in"), FakeStore("out"), queue)
    gate = build_gate(settings)
    return Container(
        settings=settings,
        backends=backends,
        gate=gate,
        images=build_images(settings, backends, gate),
        review=build_review(settings, backends),
        detector=detector,
    )


class NothingFound:
    """A detector family's network that finds nothing; `during` runs in its first tile."""

    input_px = None

    def __init__(self, during: Callable[[], None]) -> None:
        self.during = during
        self.tiles = 0

    def run(self, tile: np.ndarray, floor: float) -> np.ndarray:
        self.tiles += 1
        if self.tiles == 1:
            self.during()
        return np.zeros((0, 6), np.float32)
