"""In-memory fakes for unit tests of the core. Each passes the contract suite of the
port it stands for (tests/contract), so a fake that drifts from the real adapters fails
the same tests they pass. Test hooks: `down` (the back end is unreachable) and, on the
repository, `before` (called with the operation's name before each one: raise from it
to fail one operation, block in it to hang one); the store has the same `before`."""

from __future__ import annotations

import io
import os
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import BinaryIO, cast

from imageblur import lifecycle
from imageblur.adapters import outbox, transitions
from imageblur.batches.model import BATCH_DONE
from imageblur.batches.model import destination as batch_destination
from imageblur.domain import (
    RENDERING_STATUSES,
    AudioOutcome,
    Conflict,
    ErrorCode,
    Event,
    EventRole,
    Face,
    ImageRecord,
    JobKind,
    MediaKind,
    ObjectMissing,
    ObjectRange,
    PictureStats,
    Region,
    RepositoryUnavailable,
    Status,
    StoredObject,
    StoreUnavailable,
    WebhookMessage,
)
from imageblur.ports import RGBImage

from .fake_batches import BatchTables, FakeBatches


class Spilled:
    """A streamed object's bytes, in an anonymous temp file: off the heap, so that a
    streamed gigabyte does not sit in the test process (the contract bounds its RSS)."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def __len__(self) -> int:
        self._file.flush()
        return os.fstat(self._file.fileno()).st_size

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        self._file.flush()
        stop = len(self) if end is None else min(end, len(self))
        return os.pread(self._file.fileno(), max(0, stop - start), start)

    def stream(self) -> BinaryIO:
        self._file.flush()
        # Opened anew (not dup): each reader has a file position of its own.
        return open(f"/proc/self/fd/{self._file.fileno()}", "rb")

    def close(self) -> None:
        self._file.close()


class FakeStore:
    """`ObjectStore` in a dict: key -> (bytes, modified at); a streamed object's bytes are
    a `Spilled` file. `before` is called with the operation's name and the key (the
    prefix, for `list`) before each one."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.objects: dict[str, tuple[bytes | Spilled, datetime]] = {}
        self.down = False
        self.puts = 0
        self.before: Callable[[str, str], None] | None = None
        self._lock = threading.Lock()

    def _guard(self, operation: str, key: str = "") -> None:
        if self.down:
            raise StoreUnavailable(f"{self.name} is down")
        if self.before is not None:
            self.before(operation, key)

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        self._guard("put", key)
        self._store(key, data)

    def _store(self, key: str, data: bytes | Spilled) -> None:
        with self._lock:
            self.puts += 1
            old = self.objects.get(key)
            self.objects[key] = (data, datetime.now(UTC))
        if old is not None and isinstance(old[0], Spilled):
            old[0].close()

    def put_stream(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> None:
        self._guard("put_stream", key)
        spilled = Spilled()
        try:
            for chunk in chunks:
                spilled.write(chunk)
        except BaseException:
            spilled.close()
            raise
        self._store(key, spilled)

    def _data(self, key: str) -> bytes | Spilled:
        found = self.objects.get(key)
        if found is None:
            raise ObjectMissing(key)
        return found[0]

    def get(self, key: str) -> bytes:
        self._guard("get", key)
        data = self._data(key)
        return data if isinstance(data, bytes) else data.read()

    def open(self, key: str) -> BinaryIO:
        self._guard("open", key)
        data = self._data(key)
        return io.BytesIO(data) if isinstance(data, bytes) else data.stream()

    def get_range(self, key: str, start: int, end: int) -> ObjectRange:
        self._guard("get_range", key)
        if not 0 <= start <= end:
            raise ValueError(f"invalid range [{start}, {end})")
        data = self._data(key)
        part = data[start:end] if isinstance(data, bytes) else data.read(start, end)
        return ObjectRange(data=part, start=start, size=len(data))

    def delete(self, key: str) -> None:
        self._guard("delete", key)
        with self._lock:
            found = self.objects.pop(key, None)
        if found is not None and isinstance(found[0], Spilled):
            found[0].close()

    def exists(self, key: str) -> bool:
        self._guard("exists", key)
        return key in self.objects

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        self._guard("list", prefix)
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
        self._guard("check")

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


@dataclass
class FakeDatabase:
    """What several `FakeRepository` handles share, as processes share one database."""

    records: dict[str, ImageRecord] = field(default_factory=dict)
    published_at: dict[str, datetime] = field(default_factory=dict)
    leases: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    regions: dict[str, tuple[Region, ...]] = field(default_factory=dict)
    events: dict[str, list[Event]] = field(default_factory=dict)
    # The webhook outbox, in insertion order, and each row's lease (owner, until).
    outbox: dict[str, WebhookMessage] = field(default_factory=dict)
    outbox_leases: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    migrated: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)
    batch_tables: BatchTables = field(default_factory=BatchTables)


class FakeRepository(FakeBatches):
    """Every repository role in dicts. Its transitions are `imageblur.lifecycle`'s table,
    applied (each under one lock, as each is one statement in the SQL adapters)."""

    def __init__(
        self, database: FakeDatabase | None = None, *, webhook_url: str | None = None
    ) -> None:
        self.db = database or FakeDatabase()
        self.batch_tables = self.db.batch_tables
        self.webhook_url = webhook_url
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
            self._log(record, role="api", action="uploaded", detail=transitions.uploaded(record))
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

    def list(
        self, *, limit: int, offset: int = 0, kind: MediaKind = "picture"
    ) -> Sequence[ImageRecord]:
        self._guard("list")
        with self.db.lock:
            ordered = sorted(
                (r for r in self.db.records.values() if r.kind == kind),
                key=lambda r: (r.created_at, r.id),
                reverse=True,
            )
        return ordered[offset : offset + limit]

    def count(self, *, kind: MediaKind = "picture") -> int:
        self._guard("count")
        with self.db.lock:
            return sum(1 for r in self.db.records.values() if r.kind == kind)

    def picture_stats(self) -> PictureStats:
        self._guard("picture_stats")
        with self.db.lock:
            records = [r for r in self.db.records.values() if r.kind == "picture"]
        queued = (Status.PENDING, Status.OPTIONS_PENDING)
        pending = [r.created_at for r in records if r.status in queued]
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
            for gone in [m.id for m in self.db.outbox.values() if m.image_id == image_id]:
                del self.db.outbox[gone]
                self.db.outbox_leases.pop(gone, None)
            return self.db.records.pop(image_id, None)

    def _apply(
        self,
        operation: str,
        image_id: str,
        call: lifecycle.Call,
        **values: object,
    ) -> tuple[ImageRecord, lifecycle.Transition] | None:
        """The transition the table (`imageblur.lifecycle`) gives for the record as it is,
        applied: its status, review, the fields it clears and those the caller gives
        (only those the table says it sets); None if the table refuses."""
        with self.db.lock:
            record = self.db.records.get(image_id)
            if record is None:
                return None
            published_at = self.db.published_at.get(image_id)
            t = lifecycle.find(operation, record, replace(call, published_at=published_at))
            if t is None:
                return None
            undeclared = set(values) - t.sets
            assert not undeclared, f"{operation} sets {undeclared}, not in its transition"
            changes = dict.fromkeys(t.clears) | values
            if "published_at" in changes:
                published = changes.pop("published_at")
                if published is None:
                    self.db.published_at.pop(image_id, None)
                else:
                    self.db.published_at[image_id] = cast(datetime, published)
            if "regions" in changes:
                self.db.regions[image_id] = tuple(cast(Sequence[Region], changes.pop("regions")))
            if t.target is not None:
                changes["status"] = t.target
            if t.review is not None:
                changes["review"] = t.review
            if t.stamps:
                changes["updated_at"] = call.now
            changed = record.with_changes(**changes)
            self.db.records[image_id] = changed
            return changed, t

    def _effects(
        self,
        applied: tuple[ImageRecord, lifecycle.Transition] | None,
        *,
        role: EventRole | None = None,
        detail: str | None = None,
        reviewer: str | None = None,
        reasons: Mapping[str, str] | None = None,
    ) -> ImageRecord | None:
        """Run the applied transition's side effects (its audit line, its outbox row);
        the record."""
        if applied is None:
            return None
        record, t = applied
        for effect in t.effects:
            if isinstance(effect, lifecycle.Notify):
                to = outbox.destination(record, self.webhook_url)
                if to is not None:
                    message = outbox.new_message(record, to[0], to_operator=to[1])
                    self.db.outbox[message.id] = message
                continue
            effect_role = effect.role or role
            assert effect_role is not None, f"{t.operation}: whose event?"
            self._log(
                record,
                role=effect_role,
                action=effect.action,
                detail=detail,
                reviewer=reviewer,
                reasons=reasons,
            )
        return record

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
        with self.db.lock:
            record = self.db.records.get(image_id)
            return self._effects(
                self._apply(
                    "claim",
                    image_id,
                    lifecycle.Call(now=now, owner=owner, kind=kind),
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                    attempts=record.attempts + 1 if record else 0,
                )
            )

    def extend_lease(self, image_id: str, *, owner: str, lease_s: float, now: datetime) -> bool:
        self._guard("extend_lease")
        expires = now + timedelta(seconds=lease_s)
        call = lifecycle.Call(now=now, owner=owner)
        return self._apply("extend_lease", image_id, call, lease_expires_at=expires) is not None

    def note_progress(
        self,
        image_id: str,
        *,
        owner: str,
        frames_done: int,
        frames_total: int,
        eta_s: float | None,
        now: datetime,
    ) -> bool:
        self._guard("note_progress")
        call = lifecycle.Call(now=now, owner=owner)
        progress = {"frames_done": frames_done, "frames_total": frames_total, "eta_s": eta_s}
        return self._apply("note_progress", image_id, call, **progress) is not None

    def complete_video(
        self,
        image_id: str,
        *,
        owner: str,
        output_key: str,
        url: str,
        faces: int,
        frames: int,
        audio: AudioOutcome,
        now: datetime,
        hold_until: datetime | None = None,
        tracks_key: str | None = None,
    ) -> bool:
        self._guard("complete_video")
        result: dict[str, object] = {
            "output_key": output_key,
            "url": url,
            "faces": faces,
            "frames": frames,
            "audio": audio,
            "tracks_key": tracks_key,
        }
        if hold_until is not None:
            result["held_until"] = hold_until
        call = lifecycle.Call(now=now, owner=owner, hold_until=hold_until)
        applied = self._apply("complete_video", image_id, call, **result)
        return self._effects(applied, detail=transitions.tracked(tracks=faces)) is not None

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
            rendering = record is not None and record.status in RENDERING_STATUSES
            result: dict[str, object] = {
                "output_key": output_key,
                "url": url,
                "faces": faces,
                "plates": plates,
            }
            if hold_until is not None:
                result["held_until"] = hold_until
            if rendering:  # its regions are the record's already
                detail = transitions.drawn(self.db.regions.get(image_id, ()))
            else:
                result["regions"] = tuple(regions)
                detail = transitions.detected(faces=faces, plates=plates, regions=regions)
            call = lifecycle.Call(now=now, owner=owner, hold_until=hold_until)
            applied = self._apply("complete", image_id, call, **result)
            return self._effects(applied, detail=detail) is not None

    def fail(
        self, image_id: str, *, owner: str, error: str, code: ErrorCode, now: datetime
    ) -> bool:
        self._guard("fail")
        call = lifecycle.Call(now=now, owner=owner)
        applied = self._apply("fail", image_id, call, error=error, error_code=code)
        return self._effects(applied, detail=error) is not None

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
            call = lifecycle.Call(now=now, owner=owner)
            applied = self._apply(
                "release", image_id, call, error=error, error_code=code, attempts=attempts
            )
        return self._effects(applied) is not None

    def mark_published(self, image_id: str, *, now: datetime, if_updated_at: datetime) -> None:
        self._guard("mark_published")
        call = lifecycle.Call(now=now, if_updated_at=if_updated_at)
        self._apply("mark_published", image_id, call, published_at=now)

    def requeue_stale(
        self, *, pending_before: datetime, published_before: datetime, now: datetime, limit: int
    ) -> Sequence[str]:
        self._guard("requeue_stale")
        call = lifecycle.Call(
            now=now, pending_before=pending_before, published_before=published_before
        )

        def stale(r: ImageRecord) -> bool:
            published_at = self.db.published_at.get(r.id)
            found = lifecycle.find("requeue_stale", r, replace(call, published_at=published_at))
            return found is not None

        with self.db.lock:
            picked = sorted(
                (r for r in self.db.records.values() if stale(r)), key=lambda r: r.updated_at
            )[:limit]
            for r in picked:
                self._effects(self._apply("requeue_stale", r.id, call))
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
            call = lifecycle.Call(now=now, expected_revision=expected_revision)
            applied = self._apply(
                "correct",
                image_id,
                call,
                revision=record.revision + 1 if record else 0,
                regions=tuple(regions),
                attempts=0,
            )
            corrected = self._effects(
                applied,
                role=role,
                detail=transitions.drawn(regions),
                reviewer=reviewer,
                reasons=reasons,
            )
            if corrected is None:
                raise transitions.correction_refused(
                    image_id,
                    record.status if record else None,
                    record.revision if record else 0,
                    expected_revision=expected_revision,
                )
            return corrected

    def approve(
        self, image_id: str, *, role: EventRole, now: datetime, reviewer: str | None = None
    ) -> ImageRecord:
        self._guard("approve")
        with self.db.lock:
            applied = self._apply("approve", image_id, lifecycle.Call(now=now))
            approved = self._effects(applied, role=role, reviewer=reviewer)
            if approved is None:
                raise transitions.approval_refused(image_id, self.db.records.get(image_id))
            return approved

    def expire_holds(self, *, now: datetime, limit: int) -> Sequence[ImageRecord]:
        self._guard("expire_holds")
        call = lifecycle.Call(now=now)
        with self.db.lock:
            due = sorted(
                (
                    r
                    for r in self.db.records.values()
                    if lifecycle.find("expire_holds", r, call) is not None
                ),
                key=lambda r: (r.held_until or now, r.id),
            )[:limit]
            expired = [self._effects(self._apply("expire_holds", r.id, call)) for r in due]
            return [r for r in expired if r is not None]

    def history(self, image_id: str) -> Sequence[Event]:
        self._guard("history")
        with self.db.lock:
            return list(self.db.events.get(image_id, ()))

    def claim_webhooks(
        self, *, owner: str, lease_s: float, now: datetime, limit: int
    ) -> Sequence[WebhookMessage]:
        self._guard("claim_webhooks")
        with self.db.lock:

            def due(m: WebhookMessage) -> bool:
                lease = self.db.outbox_leases.get(m.id)
                free = lease is None or lease[1] <= now
                return (
                    m.outcome is None
                    and m.next_attempt_at is not None
                    and (m.next_attempt_at <= now and free)
                )

            picked = sorted(
                (m for m in self.db.outbox.values() if due(m)),
                key=lambda m: (m.next_attempt_at or now, m.id),
            )[:limit]
            claimed = []
            for m in picked:
                taken = replace(m, attempts=m.attempts + 1)
                self.db.outbox[m.id] = taken
                self.db.outbox_leases[m.id] = (owner, now + timedelta(seconds=lease_s))
                claimed.append(taken)
            return claimed

    def _notify_ended(self, batch_id: str, now: datetime) -> None:
        batch = self.batch_tables.batches.get(batch_id)
        where = batch_destination(batch.callback_url if batch else None, self.webhook_url)
        if where is None:
            return
        url, to_operator = where
        message = WebhookMessage(
            id=f"msg_{uuid.uuid4().hex}",
            image_id=batch_id,
            event=BATCH_DONE,
            url=url,
            created_at=now,
            next_attempt_at=now,
            to_operator=to_operator,
        )
        with self.db.lock:
            self.db.outbox[message.id] = message

    def _outbox_row(self, webhook_id: str, owner: str | None) -> WebhookMessage | None:
        """The unfinished row, if `owner` (when given) holds its lease."""
        m = self.db.outbox.get(webhook_id)
        lease = self.db.outbox_leases.get(webhook_id)
        if m is None or m.outcome is not None:
            return None
        if owner is not None and (lease is None or lease[0] != owner):
            return None
        return m

    def webhook_delivered(self, webhook_id: str, *, now: datetime) -> bool:
        self._guard("webhook_delivered")
        with self.db.lock:
            m = self._outbox_row(webhook_id, None)
            if m is None:
                return False
            self.db.outbox[webhook_id] = replace(m, outcome="delivered", finished_at=now)
            self.db.outbox_leases.pop(webhook_id, None)
            return True

    def webhook_retry(
        self, webhook_id: str, *, owner: str, next_attempt_at: datetime, error: str
    ) -> bool:
        self._guard("webhook_retry")
        with self.db.lock:
            m = self._outbox_row(webhook_id, owner)
            if m is None:
                return False
            changed = replace(m, next_attempt_at=next_attempt_at, last_error=error)
            self.db.outbox[webhook_id] = changed
            self.db.outbox_leases.pop(webhook_id, None)
            return True

    def webhook_given_up(self, webhook_id: str, *, owner: str, reason: str, now: datetime) -> bool:
        self._guard("webhook_given_up")
        with self.db.lock:
            m = self._outbox_row(webhook_id, owner)
            if m is None:
                return False
            self.db.outbox[webhook_id] = replace(
                m, outcome="given_up", last_error=reason, finished_at=now
            )
            self.db.outbox_leases.pop(webhook_id, None)
            record = self.db.records.get(m.image_id)
            if record is not None:
                line = outbox.given_up(record, event=m.event, reason=reason, now=now)
                self.db.events.setdefault(record.id, []).append(line)
            return True

    def webhooks(self, image_id: str) -> Sequence[WebhookMessage]:
        self._guard("webhooks")
        with self.db.lock:
            return [m for m in self.db.outbox.values() if m.image_id == image_id]

    def outbox_depth(self) -> int:
        self._guard("outbox_depth")
        with self.db.lock:
            return sum(1 for m in self.db.outbox.values() if m.outcome is None)

    def sweep_webhooks(self, *, finished_before: datetime) -> int:
        self._guard("sweep_webhooks")
        with self.db.lock:
            gone = [
                m.id
                for m in self.db.outbox.values()
                if m.finished_at is not None and m.finished_at < finished_before
            ][: outbox.SWEEP_BATCH]
            for webhook_id in gone:
                del self.db.outbox[webhook_id]
            return len(gone)

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
