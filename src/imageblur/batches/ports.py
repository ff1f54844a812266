"""The batches' ports: the repository roles that keep batches and their items, and a
location's objects (the sources read, the targets written)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from imageblur.batches.model import Batch, BatchItem, Location, SourceObject


class BatchRecords(Protocol):
    """The API's side: batches as clients see them (with their counts)."""

    def add_batch(self, batch: Batch, *, max_running: int) -> tuple[Batch, bool]:
        """Add `batch`, or return the batch with its key that is not cancelled (False:
        not added; a done batch is answered as it is).
        `BatchRefused` (too_many_batches) when `max_running` batches are open."""
        ...

    def get_batch(self, batch_id: str) -> Batch | None: ...

    def list_batches(
        self, *, limit: int, offset: int = 0, ended_since: datetime | None = None
    ) -> Sequence[Batch]:
        """Newest first. With `ended_since`, only the open batches and those that ended
        at or after it."""
        ...

    def cancel_batch(self, batch_id: str, *, now: datetime) -> Batch | None:
        """Stop it: `cancelled`, its open items dropped (a message already queued finds
        nothing to claim). An ended batch is returned as it is."""
        ...

    def item_failures(self, batch_id: str, *, limit: int, after: str | None) -> Sequence[BatchItem]:
        """Failed items by source key, from after `after`."""
        ...

    def retry_failed(self, batch_id: str, *, now: datetime) -> int:
        """Failed items back to `listed` (published again by the topping up); a batch that
        had ended runs again (listing on, if its listing had not ended). How many."""
        ...

    def written_keys(self, batch_id: str, *, limit: int, after: str | None) -> Sequence[str]:
        """Target keys this batch wrote, in order, from after `after` (what purge deletes)."""
        ...


class BatchItems(Protocol):
    """The server's side: listing into items, topping up the queue, running items."""

    def open_batches(self) -> Sequence[Batch]:
        """Batches listing or running, oldest first."""
        ...

    def add_items(
        self,
        batch_id: str,
        items: Sequence[BatchItem],
        *,
        after: str | None,
        listed_all: bool,
        now: datetime,
    ) -> int:
        """One listed page: its items (a source key the batch has is not added twice) and
        the listing's new position, in one transaction; `listed_all` ends the listing.
        Items whose `item_key` an earlier batch finished are added `skipped`
        (already_done). How many were added."""
        ...

    def to_publish(self, batch_id: str, *, window: int) -> Sequence[BatchItem]:
        """Listed items to publish so that at most `window` are queued or processing."""
        ...

    def mark_queued(self, item_ids: Sequence[str], *, now: datetime) -> None: ...

    def claim_item(
        self, item_id: str, *, owner: str, lease_s: float, now: datetime
    ) -> BatchItem | None:
        """Lease a queued (or listed) item, or one whose lease expired, of a running
        batch; attempts + 1. None: nothing to run (ended, dropped, leased)."""
        ...

    def record_mark(
        self, item_id: str, *, owner: str, target_key: str, mark: str, now: datetime
    ) -> bool:
        """Before a write: the target key and the mark the object will carry, added to
        the item's marks, if `owner` holds its lease (False: it does not; do not write)."""
        ...

    def finish_item(
        self,
        item_id: str,
        *,
        owner: str,
        state: str,
        now: datetime,
        reason: str | None = None,
        faces: int | None = None,
        target_key: str | None = None,
        wrote_target: bool = False,
    ) -> bool:
        """End an item held by `owner`: `done`, `failed`, `skipped`, or `queued` again
        (a retry); False if the lease is not the caller's."""
        ...

    def requeue_stale_items(
        self, *, now: datetime, queued_before: datetime, limit: int
    ) -> Sequence[BatchItem]:
        """Items whose lease expired, and queued ones untouched since `queued_before` (a
        lost message), `queued` and returned for publishing again. Never an item still
        `listed` (never published): the topping up publishes those, within the window."""
        ...

    def fail_batch(self, batch_id: str, *, error: str, now: datetime) -> bool:
        """An open batch that cannot go on (its location refused): `failed`, with why;
        its items not yet running dropped (`skipped: cancelled`)."""
        ...

    def settle_batches(self, *, now: datetime) -> Sequence[Batch]:
        """Batches listed to the end with no open item become `done` (returned)."""
        ...


class ObjectLocation(Protocol):
    """A batch's source or target: a bucket (or a folder), read page by page."""

    def list_page(
        self, prefix: str, *, after: str | None, limit: int
    ) -> tuple[Sequence[SourceObject], bool]:
        """Objects under `prefix` with keys after `after`, in key order; True: the end."""
        ...

    def read(self, key: str, *, tag: str, max_bytes: int) -> bytes:
        """The object as it was listed: `SourceChanged` if its tag differs or it is
        gone; `InvalidImage`-free: the caller checks the bytes."""
        ...

    def write_new(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        before: Callable[[str], None] | None = None,
    ) -> None:
        """Write `key` only if nothing is there (`TargetExists` otherwise). `before` is
        called with the object's mark before it can appear (what `mark_of` will read);
        if it raises, nothing is written."""
        ...

    def mark_of(self, key: str) -> str | None:
        """The mark of the object at `key` (None: nothing there, or not written with
        one)."""
        ...

    def exists(self) -> bool:
        """Whether the bucket (or the folder) is there."""
        ...

    def delete(self, key: str) -> None: ...

    def close(self) -> None: ...


class Locations(Protocol):
    """Opens the locations the settings allow."""

    def open(self, location: Location) -> ObjectLocation: ...
