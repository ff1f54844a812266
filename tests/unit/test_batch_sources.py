"""A bucket batch's sources are borrowed, never owned: every way an item ends (done,
failed, changed, not an image, a target that exists, a store outage and its recovery,
an item that killed its workers), every way the service deletes originals
(a picture's delete, hold expiry, garbage collection) and a batch's stop with a purge,
walked one after the other on the fakes with real `file:` folders, leave every source
file exactly as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from imageblur.adapters.batch_locations import BatchLocations
from imageblur.anonymizer import Anonymizer
from imageblur.batches.model import Location
from imageblur.batches.pump import BatchPump, PumpSettings
from imageblur.batches.rules import rules_from
from imageblur.batches.runner import BatchRunner
from imageblur.batches.service import BatchService
from imageblur.domain import NotFound, StoreUnavailable
from support import jpeg_bytes, png_bytes
from unit.world import OPTIONS, World


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class Flaky(BatchLocations):
    """The target folder down while `down` is set (an S3 outage's stand-in)."""

    down = False

    def open(self, location: Location):  # type: ignore[no-untyped-def]
        opened = super().open(location)
        if location.bucket.endswith("out"):
            write = opened.write_new

            def write_new(key: str, data: bytes, *, content_type: str, **more: Any) -> None:
                if Flaky.down:
                    raise StoreUnavailable("the target is down")
                write(key, data, content_type=content_type, **more)

            opened.write_new = write_new  # type: ignore[method-assign]
        return opened


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    source, target = tmp_path / "in", tmp_path / "out"
    files = {
        "p/a.jpg": jpeg_bytes(seed=1),
        "p/b.png": png_bytes(),
        "p/broken.jpg": b"\xff\xd8\xff" + b"\x00" * 64,
        "p/notes.txt": b"text",
        "p/changed.jpg": jpeg_bytes(seed=2),
        "p/taken.jpg": jpeg_bytes(seed=3),
        "p/outage.jpg": jpeg_bytes(seed=4),
    }
    for name, data in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    (target / "q").mkdir(parents=True)
    (target / "q/taken.jpg").write_bytes(b"not ours")
    return source, target


def test_no_path_deletes_or_changes_a_source(world: World, folders: tuple[Path, Path]) -> None:
    source, target = folders
    before = _digests(source)
    locations = Flaky()
    service = BatchService(
        world.repo,
        locations,
        rules_from([], [str(source.parent)], [Location("file", "/nowhere", "")]),
        max_batches=2,
        allowed_options=frozenset(),
        clock=lambda: world.clock.now,
    )
    batch, _ = service.submit(
        {
            "source": {"bucket": f"file:{source}", "prefix": "p/"},
            "target": {"bucket": f"file:{target}", "prefix": "q/"},
        }
    )
    pump = BatchPump(
        world.repo,
        world.queue,
        locations,
        owner="pump",
        settings=PumpSettings(window=100),
        clock=lambda: world.clock.now,
    )
    pump.run_once()
    runner = BatchRunner(
        world.repo,
        world.queue,
        locations,
        Anonymizer(world.detector, OPTIONS),
        owner="w",
        lease_s=60,
        max_bytes=10_000_000,
        max_attempts=2,
        retry_delay_s=lambda attempt: 0.0,
        clock=lambda: world.clock.now,
    )
    # Changed after listing: a new tag (another size).
    (source / "p/changed.jpg").write_bytes(jpeg_bytes(seed=2) + b"\x00")
    before["p/changed.jpg"] = hashlib.sha256((source / "p/changed.jpg").read_bytes()).hexdigest()
    outcomes: dict[str, str] = {}
    Flaky.down = True  # the first pass meets an outage of the target
    for _ in range(len(before)):
        delivery = world.next_delivery()
        item = world.repo.batch_tables.items[delivery.job.image_id]
        outcomes[item.source_key] = runner.handle(delivery)
    # Every item that got as far as writing waited for the store (then was written,
    # or found the target taken).
    waited = sorted(k for k, o in outcomes.items() if o == "retry")
    assert waited == ["p/a.jpg", "p/b.png", "p/outage.jpg", "p/taken.jpg"]
    Flaky.down = False
    while (delivery := world.queue.receive(timeout_s=0.1)) is not None:  # the recovery
        item = world.repo.batch_tables.items[delivery.job.image_id]
        outcomes[item.source_key] = runner.handle(delivery)
    pump.run_once()
    got = service.get(batch.id)
    assert got.status == "done", got
    assert (got.counts.done, got.counts.failed) == (3, 1)
    assert dict(got.counts.skipped) == {"changed": 1, "not_an_image": 1, "target_exists": 1}
    assert _digests(source) == before
    # The service's own deletions: an item is no picture; hold expiry and garbage
    # collection (no grace) run over the service's stores only.
    some_item = next(iter(world.repo.batch_tables.items))
    with pytest.raises(NotFound):
        world.images.delete(some_item)
    world.clock.advance(10**6)
    world.reconciler(orphan_grace_s=0).run_once(collect=True)
    assert _digests(source) == before
    # An item whose attempts killed their workers: failed, source kept.
    service.retry(batch.id)
    pump.run_once()
    broken = world.next_delivery()
    item = world.repo.batch_tables.items[broken.job.image_id]
    for _ in range(2):  # two workers died on it: claimed, never ended
        world.repo.claim_item(item.id, owner="dead", lease_s=0, now=world.clock.now)
    assert runner.handle(broken) == "failed"
    assert world.repo.batch_tables.items[item.id].reason == "worker_stopped"
    # Stopped with a purge: only what the batch wrote goes.
    service.cancel(batch.id, purge=True)
    assert _digests(source) == before
    assert _digests(target) == {"q/taken.jpg": hashlib.sha256(b"not ours").hexdigest()}
