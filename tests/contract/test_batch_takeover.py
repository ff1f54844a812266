"""A batch item whose worker wrote its result and then lost its lease (a long pause, a
partition) before recording the end: the worker that takes the item over finds the
result as its item's own (the mark recorded before the write), ends it `done`, and a
purge deletes it. And a worker whose lease was taken before it wrote writes nothing.
On every repository (SQLite, PostgreSQL, the fake) and both location kinds (a `file:`
folder, an S3 bucket on the moto server); the target holds each result exactly once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import servers
from imageblur.adapters.batch_locations import BatchLocations
from imageblur.adapters.memory_queue import MemoryJobQueue
from imageblur.anonymizer import Anonymizer
from imageblur.backends import Repository
from imageblur.batches.model import Batch, Location
from imageblur.batches.ports import ObjectLocation
from imageblur.batches.pump import BatchPump, PumpSettings
from imageblur.batches.rules import rules_from
from imageblur.batches.runner import BatchRunner
from imageblur.batches.service import BatchService
from imageblur.domain import Delivery, Face
from support import jpeg_bytes
from unit.fakes import Clock, FakeDetector
from unit.world import OPTIONS

from .test_batch_locations import make_bucket, s3_locations

LEASE_S = 30


@dataclass
class Setup:
    repo: Repository
    queue: MemoryJobQueue
    locations: BatchLocations
    clock: Clock
    service: BatchService
    pump: BatchPump
    source: Location
    target: Location

    def runner(self, owner: str, locations: BatchLocations | None = None) -> BatchRunner:
        return BatchRunner(
            self.repo,  # type: ignore[arg-type]
            self.queue,
            locations or self.locations,
            Anonymizer(FakeDetector([Face(5, 5, 30, 30, 0.9)]), OPTIONS),
            owner=owner,
            lease_s=LEASE_S,
            max_bytes=10_000_000,
            max_attempts=5,
            retry_delay_s=lambda attempt: 0.0,
            clock=self.clock,
        )

    def delivery(self) -> Delivery:
        found = self.queue.receive(timeout_s=1)
        assert found is not None, "a batch job was published"
        return found

    def keys(self, location: Location) -> list[str]:
        opened = self.locations.open(location)
        return [o.key for o in opened.list_page(location.prefix, after=None, limit=100)[0]]


@pytest.fixture(params=["file", "s3"])
def setup(request: pytest.FixtureRequest, repo: Repository, tmp_path: Path) -> Iterator[Setup]:
    locations: BatchLocations
    if request.param == "file":
        locations = BatchLocations()
        source, target = (
            Location("file", str(tmp_path / "in"), "p/"),
            Location("file", str(tmp_path / "out"), "q/"),
        )
        buckets: list[str] = []
    else:
        moto: servers.MotoServer = request.getfixturevalue("moto_server")
        locations = s3_locations(moto)
        buckets = [make_bucket(moto), make_bucket(moto)]
        source, target = Location("s3", buckets[0], "p/"), Location("s3", buckets[1], "q/")
    locations.open(source).write_new("p/a.jpg", jpeg_bytes(seed=1), content_type="image/jpeg")
    clock, queue = Clock(), MemoryJobQueue()
    service = BatchService(
        repo,
        locations,
        rules_from(buckets + [f"{b}-gone" for b in buckets], [str(tmp_path)], []),
        max_batches=2,
        allowed_options=frozenset(),
        clock=clock,
    )
    pump = BatchPump(
        repo,  # type: ignore[arg-type]
        queue,
        locations,
        owner="pump",
        settings=PumpSettings(window=10, lease_s=1e6),
        clock=clock,
    )
    yield Setup(repo, queue, locations, clock, service, pump, source, target)
    queue.close()


def _post(s: Setup) -> Batch:
    body: dict[str, Any] = {
        "source": {"bucket": _bucket(s.source), "prefix": s.source.prefix},
        "target": {"bucket": _bucket(s.target), "prefix": s.target.prefix},
    }
    batch, _ = s.service.submit(body)
    s.pump.run_once()
    return batch


def _bucket(location: Location) -> str:
    return f"file:{location.bucket}" if location.store == "file" else location.bucket


class Pausing(BatchLocations):
    """A target whose write runs `during` at a chosen point: `after` the object appeared,
    or `before` the write's mark is recorded (the worker paused there)."""

    def __init__(self, base: BatchLocations, *, at: str, during: Callable[[], None]) -> None:
        super().__init__()
        self._base, self._at, self._during = base, at, during

    def open(self, location: Location):  # type: ignore[no-untyped-def]
        opened: ObjectLocation = self._base.open(location)
        write = opened.write_new

        def write_new(key: str, data: bytes, *, content_type: str, before: Any = None) -> None:
            def paused(mark: str) -> None:
                if self._at == "before":
                    self._during()
                before(mark)

            write(key, data, content_type=content_type, before=paused)
            if self._at == "after":
                self._during()

        opened.write_new = write_new  # type: ignore[method-assign]
        return opened


def test_a_result_written_before_the_lease_lapsed_is_the_items_own(setup: Setup) -> None:
    s = setup
    batch = _post(s)
    first = s.delivery()
    taken_over: list[str] = []

    def lease_lapses() -> None:
        # The first worker stalls after its write; its lease lapses, the pump publishes
        # the item again and another worker runs it to its end.
        s.clock.advance(LEASE_S + 1)
        s.pump.run_once()
        taken_over.append(s.runner("b").handle(s.delivery()))

    paused = Pausing(s.locations, at="after", during=lease_lapses)
    s.runner("a", paused).handle(first)  # its end is not recorded: the lease is b's
    assert taken_over == ["done"]
    s.pump.run_once()
    got = s.service.get(batch.id)
    assert (got.status, got.counts.done, dict(got.counts.skipped)) == ("done", 1, {})
    assert s.keys(s.target) == ["q/a.jpg"]  # written once
    s.service.cancel(batch.id, purge=True)
    assert s.keys(s.target) == []  # the item's own result: purged
    assert s.keys(s.source) == ["p/a.jpg"]


def test_a_worker_whose_lease_was_taken_writes_nothing(setup: Setup) -> None:
    s = setup
    batch = _post(s)
    first = s.delivery()
    taken_over: list[str] = []

    def taken() -> None:
        s.clock.advance(LEASE_S + 1)
        s.pump.run_once()
        taken_over.append(s.runner("b").handle(s.delivery()))

    paused = Pausing(s.locations, at="before", during=taken)
    assert s.runner("a", paused).handle(first) == "skipped"  # stopped before writing
    assert taken_over == ["done"]
    s.pump.run_once()
    got = s.service.get(batch.id)
    assert (got.status, got.counts.done, dict(got.counts.skipped)) == ("done", 1, {})
    assert s.keys(s.target) == ["q/a.jpg"]


def test_a_foreign_object_is_still_not_the_items(setup: Setup) -> None:
    """An object someone else put at the key while the item ran carries no mark of
    the item's: `target_exists`, and a purge leaves it."""
    s = setup
    batch = _post(s)
    first = s.delivery()

    def foreign() -> None:
        s.locations.open(s.target).write_new("q/a.jpg", b"not ours", content_type="image/jpeg")

    crashed = Pausing(s.locations, at="before", during=foreign)
    assert s.runner("a", crashed).handle(first) == "skipped"
    s.pump.run_once()
    got = s.service.get(batch.id)
    assert dict(got.counts.skipped) == {"target_exists": 1}
    s.service.cancel(batch.id, purge=True)
    assert s.keys(s.target) == ["q/a.jpg"]
