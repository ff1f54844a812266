"""Batches and their items in dicts, mixed into `FakeRepository`: the rules of
`imageblur.adapters.sql_batches`, written again over dicts (tests/contract/
test_batch_records.py holds both to one contract). As there, a batch's counts are kept
as its items change, under the same lock, never counted from the items on a read: the
contract then proves of the fake what it proves of the SQL adapters."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from imageblur.batches.model import (
    ALREADY_DONE,
    CANCELLED,
    OPEN_STATES,
    Batch,
    BatchCounts,
    BatchItem,
    BatchRefused,
    ended_recently,
    pace_minute,
)
from imageblur.domain import utcnow

_OPEN = ("listing", "running")
# A count's key: (state, reason), the reason kept for skipped items only; `queued`
# counts the running ones too (as the `batch_counts` rows).
_Key = tuple[str, str]


def _key(state: str, reason: str | None) -> _Key:
    return (state, reason or "") if state == "skipped" else (state, "")


@dataclass
class BatchTables:
    batches: dict[str, Batch] = field(default_factory=dict)
    items: dict[str, BatchItem] = field(default_factory=dict)
    # item id -> (lease owner, until)
    leases: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    # batch id -> items by `_Key`, and the faces of its done ones (`batch_counts`)
    counts: dict[str, Counter[_Key]] = field(default_factory=dict)
    faces: Counter[str] = field(default_factory=Counter)
    # batch id -> (minute, items ended in it, in the minute before): the batch row's pace
    paces: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)


class FakeBatches:
    """`BatchRecords` and `BatchItems` over `self.batch_tables`."""

    batch_tables: BatchTables

    def _guard(self, operation: str) -> None:
        raise NotImplementedError

    def _notify_ended(self, batch_id: str, now: datetime) -> None:
        """The `batch.done` outbox row of a batch that has just ended."""
        raise NotImplementedError

    def _items_of(self, batch_id: str) -> list[BatchItem]:
        return [i for i in self.batch_tables.items.values() if i.batch_id == batch_id]

    def _count(self, batch_id: str, deltas: Mapping[_Key, int], *, faces: int = 0) -> None:
        """Moves the kept counts by `deltas`; `faces` go with a done item."""
        t = self.batch_tables
        t.counts.setdefault(batch_id, Counter()).update(deltas)
        if ("done", "") in deltas:
            t.faces[batch_id] += faces

    def _pace(self, batch_id: str, ended: int, now: datetime) -> None:
        """`ended` items ended at `now`: counted in the batch's current minute (the one
        before kept, an older one forgotten)."""
        if ended <= 0:
            return
        minute = pace_minute(now)
        kept, current, before = self.batch_tables.paces.get(batch_id, (0, 0, 0))
        if kept == minute:
            self.batch_tables.paces[batch_id] = (minute, current + ended, before)
        else:
            before = current if kept == minute - 1 else 0
            self.batch_tables.paces[batch_id] = (minute, ended, before)

    def _counted(self, batch: Batch) -> Batch:
        """The batch with its kept counts and pace, whatever the number of its items."""
        t = self.batch_tables
        by_state: Counter[str] = Counter()
        skipped: dict[str, int] = {}
        for (state, reason), n in t.counts.get(batch.id, Counter()).items():
            by_state[state] += n
            if state == "skipped" and n:
                skipped[reason or "unknown"] = n
        counts = BatchCounts(
            listed=sum(by_state.values()),
            queued=by_state["queued"],
            done=by_state["done"],
            failed=by_state["failed"],
            skipped=skipped,
            faces=t.faces[batch.id],
            ended_recently=ended_recently(*t.paces.get(batch.id, (0, 0, 0)), utcnow()),
        )
        return replace(batch, counts=counts)

    def _drop_open_items(self, batch_id: str, now: datetime) -> None:
        """A stopped batch's items not yet running: `skipped: cancelled`."""
        t = self.batch_tables
        dropped: Counter[_Key] = Counter()
        for item in self._items_of(batch_id):
            if item.state in ("listed", "queued"):
                t.items[item.id] = replace(item, state="skipped", reason=CANCELLED, updated_at=now)
                dropped[(item.state, "")] -= 1
                dropped[("skipped", CANCELLED)] += 1
        self._count(batch_id, dropped)

    def add_batch(self, batch: Batch, *, max_running: int) -> tuple[Batch, bool]:
        self._guard("add_batch")
        t = self.batch_tables
        with t.lock:
            for existing in t.batches.values():
                if existing.key == batch.key and existing.status != "cancelled":
                    return self._counted(existing), False
            if sum(b.status in _OPEN for b in t.batches.values()) >= max_running:
                raise BatchRefused(
                    f"{max_running} batches are running: at most that many at once",
                    http_status=429,
                    code="too_many_batches",
                )
            t.batches[batch.id] = batch
            return batch, True

    def get_batch(self, batch_id: str) -> Batch | None:
        self._guard("get_batch")
        with self.batch_tables.lock:
            found = self.batch_tables.batches.get(batch_id)
            return self._counted(found) if found else None

    def list_batches(
        self, *, limit: int, offset: int = 0, ended_since: datetime | None = None
    ) -> Sequence[Batch]:
        self._guard("list_batches")
        with self.batch_tables.lock:
            ordered = sorted(
                (
                    b
                    for b in self.batch_tables.batches.values()
                    if ended_since is None
                    or b.status in _OPEN
                    or (b.finished_at is not None and b.finished_at >= ended_since)
                ),
                key=lambda b: (b.created_at, b.id),
                reverse=True,
            )
            return [self._counted(b) for b in ordered[offset : offset + limit]]

    def cancel_batch(self, batch_id: str, *, now: datetime) -> Batch | None:
        self._guard("cancel_batch")
        t = self.batch_tables
        with t.lock:
            batch = t.batches.get(batch_id)
            if batch is None:
                return None
            if batch.status in _OPEN:
                t.batches[batch_id] = replace(
                    batch, status="cancelled", finished_at=now, updated_at=now
                )
                self._notify_ended(batch_id, now)
                self._drop_open_items(batch_id, now)
            return self._counted(t.batches[batch_id])

    def item_failures(self, batch_id: str, *, limit: int, after: str | None) -> Sequence[BatchItem]:
        self._guard("item_failures")
        with self.batch_tables.lock:
            failed = sorted(
                (
                    i
                    for i in self._items_of(batch_id)
                    if i.state == "failed" and i.source_key > (after or "")
                ),
                key=lambda i: i.source_key,
            )
            return failed[:limit]

    def retry_failed(self, batch_id: str, *, now: datetime) -> int:
        self._guard("retry_failed")
        t = self.batch_tables
        with t.lock:
            batch = t.batches.get(batch_id)
            if batch is None or batch.status == "cancelled":
                return 0
            failed = [i for i in self._items_of(batch_id) if i.state == "failed"]
            for item in failed:
                t.items[item.id] = replace(
                    item, state="listed", reason=None, attempts=0, updated_at=now
                )
            self._count(batch_id, {("failed", ""): -len(failed), ("listed", ""): len(failed)})
            if failed and batch.status in ("done", "failed"):
                t.batches[batch_id] = replace(
                    batch,
                    status="running" if batch.listed_all else "listing",
                    finished_at=None,
                    error=None,
                    updated_at=now,
                )
            return len(failed)

    def written_keys(self, batch_id: str, *, limit: int, after: str | None) -> Sequence[str]:
        self._guard("written_keys")
        with self.batch_tables.lock:
            keys = sorted(
                i.target_key
                for i in self._items_of(batch_id)
                if i.wrote_target and i.target_key is not None and i.target_key > (after or "")
            )
            return keys[:limit]

    def open_batches(self) -> Sequence[Batch]:
        self._guard("open_batches")
        with self.batch_tables.lock:
            found = [b for b in self.batch_tables.batches.values() if b.status in _OPEN]
            return sorted(found, key=lambda b: (b.created_at, b.id))

    def add_items(
        self,
        batch_id: str,
        items: Sequence[BatchItem],
        *,
        after: str | None,
        listed_all: bool,
        now: datetime,
    ) -> int:
        self._guard("add_items")
        t = self.batch_tables
        with t.lock:
            batch = t.batches.get(batch_id)
            if batch is None or batch.status != "listing":
                return 0
            have = {i.source_key for i in self._items_of(batch_id)}
            done = {i.item_key for i in t.items.values() if i.state == "done"}
            added: Counter[_Key] = Counter()
            for item in items:
                if item.source_key in have:
                    continue
                have.add(item.source_key)
                skip = item.item_key in done
                t.items[item.id] = added_item = replace(
                    item,
                    state="skipped" if skip else item.state,
                    reason=ALREADY_DONE if skip else item.reason,
                    updated_at=item.created_at,
                )
                added[_key(added_item.state, added_item.reason)] += 1
            self._count(batch_id, added)
            # Those skipped as they were added (done before, a dry run) ended now.
            self._pace(batch_id, sum(n for (s, _), n in added.items() if s == "skipped"), now)
            t.batches[batch_id] = replace(
                batch,
                listing_after=after,
                listed_all=listed_all,
                status="running" if listed_all else batch.status,
                updated_at=now,
            )
            return sum(added.values())

    def to_publish(self, batch_id: str, *, window: int) -> Sequence[BatchItem]:
        self._guard("to_publish")
        t = self.batch_tables
        with t.lock:
            batch = t.batches.get(batch_id)
            if batch is None or batch.status not in _OPEN:
                return []
            items = self._items_of(batch_id)
            room = window - sum(i.state in ("queued", "processing") for i in items)
            listed = sorted((i for i in items if i.state == "listed"), key=lambda i: i.source_key)
            return listed[: max(room, 0)]

    def mark_queued(self, item_ids: Sequence[str], *, now: datetime) -> None:
        self._guard("mark_queued")
        t = self.batch_tables
        with t.lock:
            for item_id in item_ids:
                item = t.items.get(item_id)
                if item is not None and item.state == "listed":
                    t.items[item_id] = replace(item, state="queued", updated_at=now)
                    self._count(item.batch_id, {("listed", ""): -1, ("queued", ""): 1})

    def claim_item(
        self, item_id: str, *, owner: str, lease_s: float, now: datetime
    ) -> BatchItem | None:
        self._guard("claim_item")
        t = self.batch_tables
        with t.lock:
            item = t.items.get(item_id)
            if item is None or t.batches[item.batch_id].status not in _OPEN:
                return None
            expired = item.state == "processing" and t.leases[item_id][1] <= now
            if item.state not in ("listed", "queued") and not expired:
                return None
            t.leases[item_id] = (owner, now + timedelta(seconds=lease_s))
            claimed = replace(item, state="processing", attempts=item.attempts + 1, updated_at=now)
            t.items[item_id] = claimed
            if item.state == "listed":  # its message went out before it was marked queued
                self._count(item.batch_id, {("listed", ""): -1, ("queued", ""): 1})
            return claimed

    def record_mark(
        self, item_id: str, *, owner: str, target_key: str, mark: str, now: datetime
    ) -> bool:
        self._guard("record_mark")
        t = self.batch_tables
        with t.lock:
            item = t.items.get(item_id)
            if item is None or item.state != "processing" or t.leases[item_id][0] != owner:
                return False
            t.items[item_id] = replace(
                item, target_key=target_key, target_marks=(*item.target_marks, mark), updated_at=now
            )
            return True

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
        self._guard("finish_item")
        if state not in ("done", "failed", "skipped", "queued"):
            raise ValueError(f"an item cannot end {state!r}")
        t = self.batch_tables
        with t.lock:
            item = t.items.get(item_id)
            if item is None or item.state != "processing" or t.leases[item_id][0] != owner:
                return False
            del t.leases[item_id]
            t.items[item_id] = replace(
                item,
                state=state,  # type: ignore[arg-type]
                reason=reason,
                faces=faces,
                target_key=target_key if target_key is not None else item.target_key,
                wrote_target=item.wrote_target or wrote_target,
                updated_at=now,
            )
            if state != "queued":  # a retry stays among the queued
                if state != "skipped" or reason != CANCELLED:
                    self._pace(item.batch_id, 1, now)
                ended = {("queued", ""): -1, _key(state, reason): 1}
                self._count(item.batch_id, ended, faces=faces or 0)
            return True

    def requeue_stale_items(
        self, *, now: datetime, queued_before: datetime, limit: int
    ) -> Sequence[BatchItem]:
        self._guard("requeue_stale_items")
        t = self.batch_tables
        found: list[BatchItem] = []
        with t.lock:
            for item in list(t.items.values()):
                if len(found) >= limit or t.batches[item.batch_id].status not in _OPEN:
                    continue
                lapsed = item.state == "processing" and t.leases[item.id][1] <= now
                lost = item.state == "queued" and item.updated_at <= queued_before
                if lapsed or lost:
                    t.leases.pop(item.id, None)
                    t.items[item.id] = replace(item, state="queued", updated_at=now)
                    found.append(t.items[item.id])
        return found

    def fail_batch(self, batch_id: str, *, error: str, now: datetime) -> bool:
        self._guard("fail_batch")
        t = self.batch_tables
        with t.lock:
            batch = t.batches.get(batch_id)
            if batch is None or batch.status not in _OPEN:
                return False
            t.batches[batch_id] = replace(
                batch, status="failed", error=error, finished_at=now, updated_at=now
            )
            self._notify_ended(batch_id, now)
            self._drop_open_items(batch_id, now)
            return True

    def settle_batches(self, *, now: datetime) -> Sequence[Batch]:
        self._guard("settle_batches")
        t = self.batch_tables
        settled: list[Batch] = []
        with t.lock:
            for batch in list(t.batches.values()):
                if batch.status not in _OPEN or not batch.listed_all:
                    continue
                if any(i.state in OPEN_STATES for i in self._items_of(batch.id)):
                    continue
                # No recount from the items, as the SQL adapters make: theirs repairs what
                # a pod of 557906e changed without counting, which no fake handle does.
                t.batches[batch.id] = replace(batch, status="done", finished_at=now, updated_at=now)
                self._notify_ended(batch.id, now)
                settled.append(t.batches[batch.id])
        return settled
