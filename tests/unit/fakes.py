"""In-memory fakes for unit tests of the core. Each passes the contract suite of the
port it stands for (tests/contract), so a fake that drifts from the real adapters fails
the same tests they pass. Test hooks: `down` (the back end is unreachable) and, on the
repository, `before` (called with the operation's name before each one: raise from it
to fail one operation, block in it to hang one)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from imageblur.adapters import transitions
from imageblur.domain import (
    Conflict,
    ErrorCode,
    Event,
    EventRole,
    Face,
    ImageRecord,
    JobKind,
    ObjectMissing,
    PictureStats,
    Region,
    RepositoryUnavailable,
    Review,
    Status,
    StoredObject,
    StoreUnavailable,
)
from imageblur.ports import RGBImage


class FakeStore:
    """`ObjectStore` in a dict: key -> (bytes, modified at)."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.objects: dict[str, tuple[bytes, datetime]] = {}
        self.down = False
        self.puts = 0
        self._lock = threading.Lock()

    def _guard(self) -> None:
        if self.down:
            raise StoreUnavailable(f"{self.name} is down")

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        self._guard()
        with self._lock:
            self.puts += 1
            self.objects[key] = (data, datetime.now(UTC))

    def get(self, key: str) -> bytes:
        self._guard()
        if key not in self.objects:
            raise ObjectMissing(key)
        return self.objects[key][0]

    def delete(self, key: str) -> None:
        self._guard()
        self.objects.pop(key, None)

    def exists(self, key: str) -> bool:
        self._guard()
        return key in self.objects

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        self._guard()
        for key, (data, at) in list(self.objects.items()):
            if key.startswith(prefix):
                yield StoredObject(key=key, size=len(data), modified_at=at)

    def age(self, key: str, seconds: float) -> None:
        data, at = self.objects[key]
        self.objects[key] = (data, at - timedelta(seconds=seconds))

    def url(self, key: str) -> str:
        return f"fake://{self.name}/{key}"

    def presigned_url(self, key: str, *, expires_s: int) -> str | None:
        return None

    def check(self) -> None:
        self._guard()

    def close(self) -> None:
        pass


class FakeDetector:
    """Finds `faces` in every image; `during` (if set) runs inside each detection, as
    the slow or surprising thing that happens while a job is in hand."""

    def __init__(self, faces: list[Face] | None = None) -> None:
        self.faces = faces or []
        self.calls = 0
        self.during: Callable[[], None] | None = None

    def detect(self, image: RGBImage) -> list[Face]:
        self.calls += 1
        if self.during is not None:
            self.during()
        return list(self.faces)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# The statuses a job holds under a lease, and those whose job waits in the queue.
_LEASED = (Status.PROCESSING, Status.RENDERING)
_QUEUED = (Status.PENDING, Status.RENDERING)


@dataclass
class FakeDatabase:
    """What several `FakeRepository` handles share, as processes share one database."""

    records: dict[str, ImageRecord] = field(default_factory=dict)
    published_at: dict[str, datetime] = field(default_factory=dict)
    leases: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    regions: dict[str, tuple[Region, ...]] = field(default_factory=dict)
    events: dict[str, list[Event]] = field(default_factory=dict)
    migrated: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)


class FakeRepository:
    """`ImageRepository` in dicts, with the same conditional transitions as the SQL
    adapters (each under one lock, as each is one statement there)."""

    def __init__(self, database: FakeDatabase | None = None) -> None:
        self.db = database or FakeDatabase()
        self.down = False
        self.before: Callable[[str], None] | None = None

    def _guard(self, operation: str) -> None:
        if self.down:
            raise RepositoryUnavailable("the fake database is down")
        if self.before is not None:
            self.before(operation)

    def migrate(self, *, to_version: int | None = None) -> None:
        """No schema to build: any version is this release's."""
        self._guard("migrate")
        self.db.migrated = True

    def add(self, record: ImageRecord) -> ImageRecord:
        self._guard("add")
        with self.db.lock:
            for existing in self.db.records.values():
                if record.idempotency_key and existing.idempotency_key == record.idempotency_key:
                    return existing
            if record.id in self.db.records:
                raise Conflict(f"an image with id {record.id} exists")
            self.db.records[record.id] = record
            self._log(record, role="api", action="uploaded")
            return record

    def _log(
        self,
        record: ImageRecord,
        *,
        role: EventRole,
        action: str,
        detail: str | None = None,
        reviewer: str | None = None,
        reasons: Mapping[str, str] | None = None,
    ) -> None:
        line = transitions.event(
            record, role=role, action=action, detail=detail, reviewer=reviewer, reasons=reasons
        )
        self.db.events.setdefault(record.id, []).append(line)

    def get(self, image_id: str) -> ImageRecord | None:
        self._guard("get")
        return self.db.records.get(image_id)

    def get_many(self, image_ids: Sequence[str]) -> dict[str, ImageRecord]:
        self._guard("get_many")
        with self.db.lock:
            return {i: self.db.records[i] for i in image_ids if i in self.db.records}

    def list(self, *, limit: int, offset: int = 0) -> Sequence[ImageRecord]:
        self._guard("list")
        with self.db.lock:
            ordered = sorted(
                self.db.records.values(), key=lambda r: (r.created_at, r.id), reverse=True
            )
        return ordered[offset : offset + limit]

    def count(self) -> int:
        self._guard("count")
        return len(self.db.records)

    def picture_stats(self) -> PictureStats:
        self._guard("picture_stats")
        with self.db.lock:
            records = list(self.db.records.values())
        pending = [r.created_at for r in records if r.status is Status.PENDING]
        return PictureStats(
            counts=dict(Counter(r.status.value for r in records)),
            oldest_pending_at=min(pending, default=None),
        )

    def delete(self, image_id: str) -> ImageRecord | None:
        self._guard("delete")
        with self.db.lock:
            self.db.published_at.pop(image_id, None)
            self.db.regions.pop(image_id, None)
            self.db.events.pop(image_id, None)
            return self.db.records.pop(image_id, None)

    def _change(
        self, image_id: str, allowed: Callable[[ImageRecord], bool], **changes: object
    ) -> ImageRecord | None:
        with self.db.lock:
            record = self.db.records.get(image_id)
            if record is None or not allowed(record):
                return None
            if changes.get("status") in (Status.PENDING, Status.RENDERING):
                self.db.published_at.pop(image_id, None)  # unpublished as of now
            changed = record.with_changes(**changes)
            self.db.records[image_id] = changed
            return changed

    def claim(
        self,
        image_id: str,
        *,
        owner: str,
        lease_s: float,
        now: datetime,
        kind: JobKind = JobKind.DETECT,
    ) -> ImageRecord | None:
        self._guard("claim")

        def claimable(r: ImageRecord) -> bool:
            expires = r.lease_expires_at
            if kind is JobKind.RENDER:
                return r.status is Status.RENDERING and (expires is None or expires <= now)
            expired = expires is not None and expires <= now
            return r.status is Status.PENDING or (r.status is Status.PROCESSING and expired)

        with self.db.lock:
            record = self.db.records.get(image_id)
            attempts = record.attempts + 1 if record else 0
            return self._change(
                image_id,
                claimable,
                status=Status.RENDERING if kind is JobKind.RENDER else Status.PROCESSING,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_s),
                attempts=attempts,
                updated_at=now,
            )

    @staticmethod
    def _held_by(owner: str) -> Callable[[ImageRecord], bool]:
        return lambda r: r.status in _LEASED and r.lease_owner == owner

    def extend_lease(self, image_id: str, *, owner: str, lease_s: float, now: datetime) -> bool:
        self._guard("extend_lease")
        expires = now + timedelta(seconds=lease_s)
        return self._change(image_id, self._held_by(owner), lease_expires_at=expires) is not None

    def complete(
        self,
        image_id: str,
        *,
        owner: str,
        output_key: str,
        url: str,
        faces: int,
        now: datetime,
        plates: int = 0,
        regions: Sequence[Region] = (),
        hold_until: datetime | None = None,
    ) -> bool:
        self._guard("complete")
        with self.db.lock:
            record = self.db.records.get(image_id)
            if record is None or not self._held_by(owner)(record):
                return False
            rendered = record.status is Status.RENDERING
            held = rendered or hold_until is not None
            done = record.with_changes(
                status=Status.REVIEW if held else Status.DONE,
                review=Review.PENDING if held else record.review,
                held_until=hold_until if hold_until is not None else record.held_until,
                output_key=output_key,
                url=url,
                faces=faces,
                plates=plates,
                error=None,
                error_code=None,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
            self.db.records[image_id] = done
            if rendered:
                self._log(
                    done,
                    role="worker",
                    action="rendered",
                    detail=transitions.drawn(self.db.regions.get(image_id, ())),
                )
            else:
                self.db.regions[image_id] = tuple(regions)
                detail = transitions.detected(faces=faces, plates=plates, regions=regions)
                self._log(done, role="worker", action="processed", detail=detail)
            return True

    def fail(
        self, image_id: str, *, owner: str, error: str, code: ErrorCode, now: datetime
    ) -> bool:
        self._guard("fail")
        with self.db.lock:
            record = self.db.records.get(image_id)
            rendering = record is not None and record.status is Status.RENDERING
            # A failed render goes back to review with the result it had before.
            to = {"status": Status.REVIEW, "review": Review.PENDING} if rendering else {}
            failed = self._change(
                image_id,
                self._held_by(owner),
                **({"status": Status.FAILED} | to),
                error=error,
                error_code=code,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
            if failed is not None:
                action = "render_failed" if rendering else "failed"
                self._log(failed, role="worker", action=action, detail=error)
        return failed is not None

    def release(
        self,
        image_id: str,
        *,
        owner: str,
        error: str,
        code: ErrorCode,
        now: datetime,
        count_attempt: bool = True,
    ) -> bool:
        self._guard("release")
        with self.db.lock:
            record = self.db.records.get(image_id)
            refund = 0 if count_attempt else 1
            attempts = max(record.attempts - refund, 0) if record else 0
            rendering = record is not None and record.status is Status.RENDERING
            released = self._change(
                image_id,
                self._held_by(owner),
                status=Status.RENDERING if rendering else Status.PENDING,
                error=error,
                error_code=code,
                lease_owner=None,
                lease_expires_at=None,
                attempts=attempts,
                updated_at=now,
            )
        return released is not None

    def mark_published(self, image_id: str, *, now: datetime, if_updated_at: datetime) -> None:
        self._guard("mark_published")
        with self.db.lock:
            record = self.db.records.get(image_id)
            if record and record.status in _QUEUED and record.updated_at == if_updated_at:
                self.db.published_at[image_id] = now

    def requeue_stale(
        self, *, pending_before: datetime, published_before: datetime, now: datetime, limit: int
    ) -> Sequence[str]:
        self._guard("requeue_stale")

        def stale(r: ImageRecord) -> bool:
            if r.lease_expires_at is not None:
                return r.status in _LEASED and r.lease_expires_at <= now
            published = self.db.published_at.get(r.id)
            if r.status in _QUEUED:
                if published is None:
                    return r.updated_at <= pending_before
                return published <= published_before
            return False

        with self.db.lock:
            picked = sorted(
                (r for r in self.db.records.values() if stale(r)), key=lambda r: r.updated_at
            )[:limit]
            for r in picked:
                self._change(
                    r.id,
                    lambda _: True,
                    status=Status.RENDERING if r.status is Status.RENDERING else Status.PENDING,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
        return [r.id for r in picked]

    def regions(self, image_id: str) -> tuple[int, Sequence[Region]] | None:
        self._guard("regions")
        with self.db.lock:
            record = self.db.records.get(image_id)
            if record is None:
                return None
            return record.revision, list(self.db.regions.get(image_id, ()))

    def correct(
        self,
        image_id: str,
        *,
        expected_revision: int,
        regions: Sequence[Region],
        role: EventRole,
        now: datetime,
        reviewer: str | None = None,
        reasons: Mapping[str, str] | None = None,
    ) -> ImageRecord:
        self._guard("correct")
        with self.db.lock:
            record = self.db.records.get(image_id)
            correctable = (Status.REVIEW, Status.RENDERING)
            if (
                record is None
                or record.status not in correctable
                or (record.revision != expected_revision)
            ):
                status = record.status if record else None
                revision = record.revision if record else 0
                raise transitions.correction_refused(
                    image_id, status, revision, expected_revision=expected_revision
                )
            corrected = self._change(
                image_id,
                lambda _: True,
                status=Status.RENDERING,
                revision=record.revision + 1,
                error=None,
                error_code=None,
                lease_owner=None,
                lease_expires_at=None,
                attempts=0,
                updated_at=now,
            )
            assert corrected is not None
            self.db.regions[image_id] = tuple(regions)
            self._log(
                corrected,
                role=role,
                action="corrected",
                detail=transitions.drawn(regions),
                reviewer=reviewer,
                reasons=reasons,
            )
            return corrected

    def approve(
        self, image_id: str, *, role: EventRole, now: datetime, reviewer: str | None = None
    ) -> ImageRecord:
        self._guard("approve")
        with self.db.lock:
            record = self.db.records.get(image_id)
            if record is None or record.status is not Status.REVIEW or record.error_code:
                raise transitions.approval_refused(image_id, record)
            approved = record.with_changes(
                status=Status.DONE, review=Review.APPROVED, held_until=None, updated_at=now
            )
            self.db.records[image_id] = approved
            self._log(approved, role=role, action="approved", reviewer=reviewer)
            return approved

    def expire_holds(self, *, now: datetime, limit: int) -> Sequence[ImageRecord]:
        self._guard("expire_holds")
        with self.db.lock:
            due = sorted(
                (
                    r
                    for r in self.db.records.values()
                    if r.status is Status.REVIEW and r.held_until and r.held_until <= now
                ),
                key=lambda r: (r.held_until, r.id),
            )[:limit]
            expired = [
                r.with_changes(
                    status=Status.DONE, review=Review.EXPIRED, held_until=None, updated_at=now
                )
                for r in due
            ]
            for r in expired:
                self.db.records[r.id] = r
                self._log(r, role="system", action="expired")
            return expired

    def history(self, image_id: str) -> Sequence[Event]:
        self._guard("history")
        with self.db.lock:
            return list(self.db.events.get(image_id, ()))

    def take_lease(self, name: str, *, owner: str, ttl_s: float, now: datetime) -> bool:
        self._guard("take_lease")
        with self.db.lock:
            holder = self.db.leases.get(name)
            if holder is not None and holder[0] != owner and holder[1] > now:
                return False
            self.db.leases[name] = (owner, now + timedelta(seconds=ttl_s))
            return True

    def check(self) -> None:
        self._guard("check")
        if not self.db.migrated:
            raise RepositoryUnavailable("the fake schema is not there: run `imageblur migrate`")

    def close(self) -> None:
        pass
