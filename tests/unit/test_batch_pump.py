"""The batch pump on the fakes with a real `file:` folder: listing stored page by page
and resumed by another process after a crash mid-listing, with every object listed
exactly once; at most a window of items queued, topped up as they end; a dry run lists
and publishes nothing; a stale item published again, never one never published."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from imageblur.adapters.batch_locations import BatchLocations
from imageblur.adapters.file_location import FileLocation
from imageblur.batches.model import Batch, Location, SourceObject
from imageblur.batches.pump import BatchPump, PumpSettings
from imageblur.batches.rules import rules_from
from imageblur.batches.service import BatchService
from unit.world import World

COUNT = 25


class Crashing(BatchLocations):
    """Listing dies (the process killed) after `pages` pages."""

    def __init__(self, pages: int | None) -> None:
        super().__init__()
        self.pages = pages

    def open(self, location: Location):  # type: ignore[no-untyped-def]
        opened = super().open(location)
        assert isinstance(opened, FileLocation)
        page = opened.list_page

        def list_page(
            prefix: str, *, after: str | None, limit: int
        ) -> tuple[Sequence[SourceObject], bool]:
            if self.pages is not None:
                if self.pages == 0:
                    raise KeyboardInterrupt("killed mid-listing")
                self.pages -= 1
            return page(prefix, after=after, limit=limit)

        opened.list_page = list_page  # type: ignore[method-assign]
        return opened


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    for n in range(COUNT):
        (folder / "p").mkdir(parents=True, exist_ok=True)
        (folder / f"p/{n:03}.jpg").write_bytes(b"x" * n)
    return folder


def _post(world: World, source: Path, *, dry_run: bool = False) -> Batch:
    service = BatchService(
        world.repo,
        BatchLocations(),
        rules_from([], [str(source.parent)], []),
        max_batches=4,
        allowed_options=frozenset(),
        clock=lambda: world.clock.now,
    )
    body = {
        "source": {"bucket": f"file:{source}", "prefix": "p/"},
        "target": {"bucket": f"file:{source.parent / 'out'}", "prefix": ""},
        "dry_run": dry_run,
    }
    return service.submit(body)[0]


def _pump(world: World, locations: BatchLocations, *, window: int = 1000) -> BatchPump:
    return BatchPump(
        world.repo,
        world.queue,
        locations,
        owner="pump",
        settings=PumpSettings(window=window, page_size=4, lease_s=0.0),
        clock=lambda: world.clock.now,
    )


def test_listing_resumes_after_a_crash_with_every_object_once(world: World, source: Path) -> None:
    batch = _post(world, source)
    with pytest.raises(KeyboardInterrupt):
        _pump(world, Crashing(pages=3)).run_once()
    partway = world.repo.get_batch(batch.id)
    assert partway is not None
    assert (partway.status, partway.counts.listed, partway.listing_after) == (
        "listing",
        12,
        "p/011.jpg",
    )
    world.clock.advance(1)  # the dead pump's lease (0 s here) is over
    _pump(world, Crashing(pages=None)).run_once()
    done = world.repo.get_batch(batch.id)
    assert done is not None and (done.status, done.total) == ("running", COUNT)
    keys = sorted(i.source_key for i in world.repo.batch_tables.items.values())
    assert keys == [f"p/{n:03}.jpg" for n in range(COUNT)]


def test_at_most_a_window_is_queued(world: World, source: Path) -> None:
    batch = _post(world, source)
    pump = _pump(world, BatchLocations(), window=5)
    assert pump.run_once().published == 5
    assert world.queue.depth("batch") == 5
    assert pump.run_once().published == 0  # nothing ended: nothing more
    delivery = world.next_delivery()
    item = world.repo.claim_item(delivery.job.image_id, owner="w", lease_s=60, now=world.clock.now)
    assert item is not None and item.batch_id == batch.id
    world.repo.finish_item(item.id, owner="w", state="done", now=world.clock.now, faces=0)
    world.queue.ack(delivery)
    assert pump.run_once().published == 1  # topped up as one ended


def test_a_dry_run_lists_and_runs_nothing(world: World, source: Path) -> None:
    batch = _post(world, source, dry_run=True)
    report = _pump(world, BatchLocations()).run_once()
    assert (report.listed, report.published, report.settled) == (COUNT, 0, 1)
    got = world.repo.get_batch(batch.id)
    assert got is not None
    assert (got.status, got.total, dict(got.counts.skipped)) == ("done", COUNT, {"dry_run": COUNT})
    assert world.queue.depth("batch") == 0
    # No picture, and no picture.* webhook row, for any item.
    assert world.repo.count() == 0 and world.repo.db.outbox == {}


def test_only_published_items_are_published_again(world: World, source: Path) -> None:
    _post(world, source)
    pump = _pump(world, BatchLocations(), window=3)
    pump.run_once()
    for _ in range(3):  # the broker lost the three messages
        world.queue.ack(world.next_delivery())
    world.clock.advance(PumpSettings().queued_grace_s + 1)
    report = pump.run_once()
    assert report.republished == 3 and report.published == 0
    assert world.queue.depth("batch") == 3
