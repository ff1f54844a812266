"""Image metadata in SQLite: the embedded default.

One connection guarded by a lock (SQLite serialises writers anyway); WAL so readers do
not block the worker. Every state change is a single conditional UPDATE, so the job
state machine has the same guarantees as on PostgreSQL; its line in the picture's audit
trail (`image_events`) and its webhook outbox row (`webhook_outbox`, when it notifies and
a webhook URL is set) are written in the same transaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from imageblur.adapters import outbox, sql_lifecycle, sql_rows, sqlite_schema, transitions
from imageblur.adapters.group_sync import GroupSync
from imageblur.adapters.sql_batches import Dialect, Row, Run, SqlBatches
from imageblur.domain import (
    AudioOutcome,
    Conflict,
    ErrorCode,
    Event,
    EventRole,
    ImageRecord,
    JobKind,
    MediaKind,
    PictureStats,
    Region,
    RepositoryUnavailable,
    Status,
    WebhookMessage,
    regions_from_json,
    regions_to_json,
)
from imageblur.lifecycle import Guard

_COLUMNS = sql_rows.COLUMN_LIST
_VALUES = sql_rows.placeholders(lambda name: f":{name}")
# SQLite before 3.32 allows 999 bound parameters per statement.
_IDS_PER_QUERY = 500


def _where(operation: str, **choice: Any) -> str:
    """The row condition of `operation`'s transitions, from the state machine's table."""
    return sql_lifecycle.where(operation, param=lambda name: f":{name}", **choice)


def _to(operation: str, **choice: Any) -> str:
    """The status and review `operation` leaves, from the state machine's table."""
    param = lambda name: f":{name}"  # noqa: E731 - the driver's named style
    status = sql_lifecycle.status_to(operation, param=param, **choice)
    return f"{status}, {sql_lifecycle.review_to(operation, param=param, **choice)}"


# The end of a job held by :owner. A render goes (back) to review, its regions the
# record's already; a detection to done, or to review when held (:hold), with its regions.
_FINISHED = (
    "output_key = :output_key, url = :url, faces = :faces, plates = :plates, error = NULL, "
    "error_code = NULL, "
    "lease_owner = NULL, lease_expires_at = NULL, updated_at = :now"
)
_COMPLETE_RENDER = (
    f"UPDATE images SET {_to('complete', source=Status.RENDERING)}, "
    f"held_until = COALESCE(:hold, held_until), {_FINISHED} "
    f"WHERE id = :id AND ({_where('complete', source=Status.RENDERING)})"
)


def _complete_detect(guard: Guard) -> str:
    given = frozenset({guard})
    return (
        f"UPDATE images SET {_to('complete', source=Status.PROCESSING, given=given)}, "
        f"held_until = COALESCE(:hold, held_until), regions = :regions, {_FINISHED} "
        f"WHERE id = :id AND ({_where('complete', source=Status.PROCESSING, given=given)})"
    )


# By whether a review hold is given.
_COMPLETE_DETECT = {True: _complete_detect(Guard.HOLD), False: _complete_detect(Guard.NO_HOLD)}


def _ts(value: datetime) -> str:
    # Fixed-width UTC text sorts like the instant it names.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _while_locked(step: Callable[[], object], timeout_s: float) -> None:
    """Run `step`, again while the file is locked, up to `timeout_s`: switching a new file
    to WAL takes an exclusive lock and SQLite does not call its busy handler for it, so
    processes opening one database at once (several starting together) would fail."""
    deadline = time.monotonic() + timeout_s
    pause_s = 0.005
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause_s)  # a back-off between tries, not a wait for a condition
        pause_s = min(pause_s * 2, 0.1)


def _row_to_record(row: sqlite3.Row) -> ImageRecord:
    return sql_rows.to_record(row, timestamp=_parse_ts)


def _fetch(conn: sqlite3.Connection, image_id: str) -> ImageRecord | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM images WHERE id = ?", (image_id,)).fetchone()
    return _row_to_record(row) if row is not None else None


def _regions(conn: sqlite3.Connection, image_id: str) -> list[Region]:
    row = conn.execute("SELECT regions FROM images WHERE id = ?", (image_id,)).fetchone()
    return regions_from_json(row[0]) if row is not None else []


def _log(conn: sqlite3.Connection, image_id: str, event: Event) -> None:
    """Append to the audit trail, in the transaction of the change it records."""
    conn.execute(
        "INSERT INTO image_events (image_id, at, role, action, status, revision, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            image_id,
            _ts(event.at),
            event.role,
            event.action,
            event.status,
            event.revision,
            transitions.stored_detail(event),
        ),
    )


_DIALECT = Dialect(tables="", named=False, ts_in=_ts, ts_out=_parse_ts)


def _message_of_row(row: sqlite3.Row) -> WebhookMessage:
    return outbox.message_of_row(row, timestamp=_parse_ts)


class SqliteImageRepository(SqlBatches):
    def __init__(
        self, path: Path, *, timeout_s: float = 10.0, webhook_url: str | None = None
    ) -> None:
        """`webhook_url`: where the events of a notifying transition go (the server's
        IMAGEBLUR_WEBHOOK_URL); None: no outbox rows."""
        self._path = path
        self._webhook_url = webhook_url
        self._timeout_s = timeout_s
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._wal = False  # the journal is a WAL, synced by `_sync_wal`
        self._wal_sync = GroupSync(self._fsync_wal)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self._path,
                    timeout=self._timeout_s,
                    check_same_thread=False,  # guarded by self._lock
                    isolation_level=None,  # explicit transactions only
                )
                conn.row_factory = sqlite3.Row
                modes: list[str] = []
                _while_locked(
                    lambda: modes.append(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]),
                    self._timeout_s,
                )
                # In WAL mode the commit itself does not sync (NORMAL: never corrupt, the
                # checkpoints sync), and `_tx` syncs the WAL after releasing the lock: see
                # `_sync_wal`. Where WAL is refused (some network file systems), FULL.
                self._wal = modes[-1].lower() == "wal"
                conn.execute(f"PRAGMA synchronous={'NORMAL' if self._wal else 'FULL'}")
                conn.execute("PRAGMA foreign_keys=ON")
                # A deleted row's bytes (names, regions, history) are overwritten with
                # zeros, not left in the file's free space for anyone who copies it.
                conn.execute("PRAGMA secure_delete=ON")
            except (sqlite3.Error, OSError) as exc:
                raise RepositoryUnavailable(f"cannot open SQLite {self._path}: {exc}") from exc
            self._conn = conn
        return self._conn

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. `durable`: on disk when the block returns (what a 202
        promises); not for what a crash may lose harmlessly."""
        ticket = self._wal_sync.ticket()  # before the commit writes the WAL
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.IntegrityError):
                    raise
                raise RepositoryUnavailable(f"SQLite error: {exc}") from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        if durable and self._wal:
            self._sync_wal(ticket)

    def _sync_wal(self, ticket: int) -> None:
        """Make every transaction committed so far durable: fsync the WAL, outside the lock.
        A sync inside the commit (synchronous=FULL) held the one lock for the disk's
        latency, so writers queued one sync each (2 of an upload's 4, the largest wait on
        a busy disk); here the next writer need not wait for it, and the commits that
        wait share one sync (a group commit: `GroupSync`), which fails them all if it
        fails."""
        try:
            self._wal_sync.wait(ticket)
        except OSError as exc:
            raise RepositoryUnavailable(f"cannot sync the SQLite WAL: {exc}") from exc

    def _fsync_wal(self) -> None:
        """A WAL that is gone was checkpointed into the database file, which the
        checkpoint synced."""
        try:
            fd = os.open(f"{self._path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def _batch_tx(self) -> Iterator[Run]:
        """A transaction for `SqlBatches`."""
        with self._tx() as conn:

            def run(sql: str, params: Mapping[str, Any]) -> list[Row]:
                return [dict(row) for row in conn.execute(sql, params).fetchall()]

            yield run

    def _batch_dialect(self) -> Dialect:
        return _DIALECT

    def _query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return list(self._connection().execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise RepositoryUnavailable(f"SQLite error: {exc}") from exc

    def migrate(self, *, to_version: int | None = None) -> None:
        target = sqlite_schema.LATEST if to_version is None else to_version
        if not 0 <= target <= sqlite_schema.LATEST:
            raise ValueError(f"no schema version {target}: 0 to {sqlite_schema.LATEST}")
        with self._tx() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] or 0
            for version, script in enumerate(sqlite_schema.MIGRATIONS, start=1):
                if version <= current or version > target:
                    continue
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def add(self, record: ImageRecord) -> ImageRecord:
        try:
            with self._tx() as conn:
                if record.idempotency_key is not None:
                    row = conn.execute(
                        f"SELECT {_COLUMNS} FROM images WHERE idempotency_key = ?",
                        (record.idempotency_key,),
                    ).fetchone()
                    if row is not None:
                        return _row_to_record(row)
                conn.execute(
                    f"INSERT INTO images ({_COLUMNS}) VALUES ({_VALUES})",
                    sql_rows.to_row(record, timestamp=_ts),
                )
                who, action = sql_lifecycle.event("add")
                detail = transitions.uploaded(record)
                _log(
                    conn,
                    record.id,
                    transitions.event(record, role=who, action=action, detail=detail),
                )
        except sqlite3.IntegrityError as exc:  # the id is taken (the key was looked up)
            raise Conflict(f"an image with id {record.id} exists") from exc
        return record

    def get(self, image_id: str) -> ImageRecord | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM images WHERE id = ?", (image_id,))
        return _row_to_record(rows[0]) if rows else None

    def get_many(self, image_ids: Sequence[str]) -> dict[str, ImageRecord]:
        found: dict[str, ImageRecord] = {}
        unique = list(dict.fromkeys(image_ids))
        for start in range(0, len(unique), _IDS_PER_QUERY):
            chunk = unique[start : start + _IDS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            rows = self._query(f"SELECT {_COLUMNS} FROM images WHERE id IN ({marks})", chunk)
            found.update((row["id"], _row_to_record(row)) for row in rows)
        return found

    def list(
        self, *, limit: int, offset: int = 0, kind: MediaKind = "picture"
    ) -> Sequence[ImageRecord]:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM images WHERE kind = ? "
            "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            (kind, limit, offset),
        )
        return [_row_to_record(r) for r in rows]

    def count(self, *, kind: MediaKind = "picture") -> int:
        return int(self._query("SELECT COUNT(*) FROM images WHERE kind = ?", (kind,))[0][0])

    def picture_stats(self) -> PictureStats:
        """Counted exactly (an embedded database is small); the oldest pending upload
        from its own index. Pictures only: videos share the table and the finished
        statuses."""
        counted = self._query(
            "SELECT status, COUNT(*) FROM images WHERE kind = 'picture' GROUP BY status"
        )
        # Pending with or without options (statuses of pictures alone).
        oldest = self._query(
            "SELECT MIN(created_at) FROM images WHERE status IN ('pending', 'options_pending')"
        )
        oldest_at = oldest[0][0]
        return PictureStats(
            counts={str(row[0]): int(row[1]) for row in counted},
            oldest_pending_at=_parse_ts(oldest_at) if oldest_at is not None else None,
        )

    def delete(self, image_id: str) -> ImageRecord | None:
        with self._tx() as conn:
            record = _fetch(conn, image_id)
            if record is None:
                return None
            conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
            conn.execute("DELETE FROM image_events WHERE image_id = ?", (image_id,))
            conn.execute("DELETE FROM webhook_outbox WHERE image_id = ?", (image_id,))
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
        guard = sql_lifecycle.CLAIM_GUARD.get(kind)
        if guard is None:  # a kind whose jobs claim no image (a batch's item), as the table
            return None
        given = frozenset({guard})
        with self._tx() as conn:
            cur = conn.execute(
                f"UPDATE images SET {_to('claim', given=given)}, lease_owner = :owner, "
                "lease_expires_at = :expires, attempts = attempts + 1, updated_at = :now "
                f"WHERE id = :id AND ({_where('claim', given=given)})",
                {
                    "id": image_id,
                    "owner": owner,
                    "now": _ts(now),
                    "expires": _ts(now + timedelta(seconds=lease_s)),
                },
            )
            return _fetch(conn, image_id) if cur.rowcount == 1 else None

    def _transition(self, sql: str, params: Mapping[str, Any]) -> bool:
        with self._tx() as conn:
            return conn.execute(sql, params).rowcount == 1

    def _notify(self, conn: sqlite3.Connection, record: ImageRecord, notifies: bool) -> None:
        """The outbox row of a transition that notifies (`lifecycle.Notify`), in its
        transaction; none without a webhook URL."""
        to = outbox.destination(record, self._webhook_url)
        if notifies and to is not None:
            message = outbox.new_message(record, to[0], to_operator=to[1])
            conn.execute(
                f"INSERT INTO webhook_outbox ({outbox.INSERT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                outbox.insert_values(message, _ts),
            )

    def extend_lease(self, image_id: str, *, owner: str, lease_s: float, now: datetime) -> bool:
        return self._transition(
            "UPDATE images SET lease_expires_at = :expires "
            f"WHERE id = :id AND ({_where('extend_lease')})",
            {"expires": _ts(now + timedelta(seconds=lease_s)), "id": image_id, "owner": owner},
        )

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
        # Not synced: a note lost in a crash is only an older progress shown.
        with self._tx(durable=False) as conn:
            cur = conn.execute(
                "UPDATE images SET frames_done = :done, frames_total = :total, eta_s = :eta "
                f"WHERE id = :id AND ({_where('note_progress')})",
                {
                    "done": frames_done,
                    "total": frames_total,
                    "eta": eta_s,
                    "id": image_id,
                    "owner": owner,
                },
            )
            return cur.rowcount == 1

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
        given = frozenset({Guard.HOLD if hold_until is not None else Guard.NO_HOLD})
        params = {
            "id": image_id,
            "owner": owner,
            "output_key": output_key,
            "url": url,
            "faces": faces,
            "frames": frames,
            "audio": audio,
            "tracks_key": tracks_key,
            "now": _ts(now),
            "hold": _ts(hold_until) if hold_until is not None else None,
        }
        with self._tx() as conn:
            cur = conn.execute(
                f"UPDATE images SET {_to('complete_video', given=given)}, "
                "held_until = COALESCE(:hold, held_until), output_key = :output_key, "
                "url = :url, faces = :faces, frames = :frames, audio = :audio, "
                "tracks_key = :tracks_key, "
                "error = NULL, error_code = NULL, lease_owner = NULL, lease_expires_at = NULL, "
                "frames_done = NULL, frames_total = NULL, eta_s = NULL, updated_at = :now "
                f"WHERE id = :id AND ({_where('complete_video', given=given)})",
                params,
            )
            record = _fetch(conn, image_id) if cur.rowcount == 1 else None
            if record is None:
                return False
            who, action = sql_lifecycle.event("complete_video", given=given)
            detail = transitions.tracked(tracks=faces)
            _log(conn, image_id, transitions.event(record, role=who, action=action, detail=detail))
            self._notify(conn, record, sql_lifecycle.notifies("complete_video", given=given))
            return True

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
        params = {
            "id": image_id,
            "owner": owner,
            "output_key": output_key,
            "url": url,
            "faces": faces,
            "plates": plates,
            "now": _ts(now),
            "hold": _ts(hold_until) if hold_until is not None else None,
            "regions": regions_to_json(regions),
        }
        with self._tx() as conn:
            rendered = conn.execute(_COMPLETE_RENDER, params).rowcount == 1
            detect = _COMPLETE_DETECT[hold_until is not None]
            if not rendered and conn.execute(detect, params).rowcount != 1:
                return False
            record = _fetch(conn, image_id)
            assert record is not None  # changed just now, in this transaction
            if rendered:
                detail = transitions.drawn(_regions(conn, image_id))
            else:
                detail = transitions.detected(faces=faces, plates=plates, regions=regions)
            source = Status.RENDERING if rendered else Status.PROCESSING
            given = frozenset({Guard.HOLD if hold_until is not None else Guard.NO_HOLD})
            who, action = sql_lifecycle.event("complete", source=source, given=given)
            _log(
                conn,
                image_id,
                transitions.event(record, role=who, action=action, detail=detail),
            )
            self._notify(
                conn, record, sql_lifecycle.notifies("complete", source=source, given=given)
            )
            return True

    def fail(
        self, image_id: str, *, owner: str, error: str, code: ErrorCode, now: datetime
    ) -> bool:
        with self._tx() as conn:
            # A failed render goes back to review with the result it had before.
            cur = conn.execute(
                f"UPDATE images SET {_to('fail')}, error = :error, error_code = :code, "
                "lease_owner = NULL, lease_expires_at = NULL, updated_at = :now "
                f"WHERE id = :id AND ({_where('fail')})",
                {
                    "error": error,
                    "code": code.value,
                    "now": _ts(now),
                    "id": image_id,
                    "owner": owner,
                },
            )
            record = _fetch(conn, image_id) if cur.rowcount == 1 else None
            if record is None:
                return False
            # Only a render returns to review.
            source = Status.RENDERING if record.status is Status.REVIEW else Status.PROCESSING
            who, action = sql_lifecycle.event("fail", source=source)
            event = transitions.event(record, role=who, action=action, detail=error)
            _log(conn, image_id, event)
            self._notify(conn, record, sql_lifecycle.notifies("fail", source=source))
            return True

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
        # Unpublished: the retry waits in a delay queue, and RabbitMQ may drop it on its
        # way back (dead-lettering is at most once on classic queues), so the job is
        # treated like one never confirmed: re-published after the pending grace. A render
        # stays rendering: its job is a RENDER.
        return self._transition(
            f"UPDATE images SET {_to('release')}, error = :error, error_code = :code, "
            "lease_owner = NULL, lease_expires_at = NULL, updated_at = :now, "
            "published_at = NULL, attempts = MAX(attempts - :refund, 0) "
            f"WHERE id = :id AND ({_where('release')})",
            {
                "error": error,
                "code": code.value,
                "now": _ts(now),
                "refund": 0 if count_attempt else 1,
                "id": image_id,
                "owner": owner,
            },
        )

    def mark_published(self, image_id: str, *, now: datetime, if_updated_at: datetime) -> None:
        # Not synced: a mark lost in a crash only makes the reconciler publish the job once
        # more, which is harmless (one claim wins); the next synced commit carries it.
        with self._tx(durable=False) as conn:
            conn.execute(
                "UPDATE images SET published_at = :now "
                f"WHERE id = :id AND ({_where('mark_published')})",
                {"now": _ts(now), "id": image_id, "if_updated_at": _ts(if_updated_at)},
            )

    def requeue_stale(
        self,
        *,
        pending_before: datetime,
        published_before: datetime,
        now: datetime,
        limit: int,
    ) -> Sequence[str]:
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT id FROM images WHERE {_where('requeue_stale')} "
                "ORDER BY updated_at LIMIT :limit",
                {
                    "pending_before": _ts(pending_before),
                    "published_before": _ts(published_before),
                    "now": _ts(now),
                    "limit": limit,
                },
            ).fetchall()
            ids = [r["id"] for r in rows]
            conn.executemany(
                f"UPDATE images SET {_to('requeue_stale')}, lease_owner = NULL, "
                "lease_expires_at = NULL, published_at = NULL, updated_at = ? WHERE id = ?",
                [(_ts(now), image_id) for image_id in ids],
            )
        return ids

    def regions(self, image_id: str) -> tuple[int, Sequence[Region]] | None:
        rows = self._query("SELECT revision, regions FROM images WHERE id = ?", (image_id,))
        return (int(rows[0][0]), regions_from_json(rows[0][1])) if rows else None

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
        with self._tx() as conn:
            cur = conn.execute(
                f"UPDATE images SET {_to('correct')}, revision = revision + 1, "
                "regions = :regions, "
                "error = NULL, error_code = NULL, lease_owner = NULL, lease_expires_at = NULL, "
                "published_at = NULL, attempts = 0, updated_at = :now "
                f"WHERE id = :id AND ({_where('correct')})",
                {
                    "regions": regions_to_json(regions),
                    "now": _ts(now),
                    "id": image_id,
                    "expected_revision": expected_revision,
                },
            )
            record = _fetch(conn, image_id)
            if cur.rowcount != 1 or record is None:
                raise transitions.correction_refused(
                    image_id,
                    record.status if record else None,
                    record.revision if record else 0,
                    expected_revision=expected_revision,
                )
            detail = transitions.drawn(regions)
            who, action = sql_lifecycle.event("correct", role=role)
            _log(
                conn,
                image_id,
                transitions.event(
                    record,
                    role=who,
                    action=action,
                    detail=detail,
                    reviewer=reviewer,
                    reasons=reasons,
                ),
            )
            return record

    def approve(
        self, image_id: str, *, role: EventRole, now: datetime, reviewer: str | None = None
    ) -> ImageRecord:
        with self._tx() as conn:
            cur = conn.execute(
                f"UPDATE images SET {_to('approve')}, held_until = NULL, "
                f"updated_at = :now WHERE id = :id AND ({_where('approve')})",
                {"now": _ts(now), "id": image_id},
            )
            record = _fetch(conn, image_id)
            if cur.rowcount != 1 or record is None:
                raise transitions.approval_refused(image_id, record)
            who, action = sql_lifecycle.event("approve", role=role)
            line = transitions.event(record, role=who, action=action, reviewer=reviewer)
            _log(conn, image_id, line)
            self._notify(conn, record, sql_lifecycle.notifies("approve"))
            return record

    def expire_holds(self, *, now: datetime, limit: int) -> Sequence[ImageRecord]:
        with self._tx() as conn:
            due = conn.execute(
                f"SELECT id FROM images WHERE {_where('expire_holds')} "
                "ORDER BY held_until, id LIMIT :limit",
                {"now": _ts(now), "limit": limit},
            ).fetchall()
            expired: list[ImageRecord] = []
            for (image_id,) in due:
                conn.execute(
                    f"UPDATE images SET {_to('expire_holds')}, held_until = NULL, "
                    "updated_at = ? WHERE id = ?",
                    (_ts(now), image_id),
                )
                record = _fetch(conn, image_id)
                assert record is not None  # changed just now, in this transaction
                who, action = sql_lifecycle.event("expire_holds")
                _log(conn, image_id, transitions.event(record, role=who, action=action))
                self._notify(conn, record, sql_lifecycle.notifies("expire_holds"))
                expired.append(record)
            return expired

    def history(self, image_id: str) -> Sequence[Event]:
        rows = self._query(
            "SELECT at, role, action, status, revision, detail FROM image_events "
            "WHERE image_id = ? ORDER BY seq",
            (image_id,),
        )
        return [transitions.event_of_row(r, timestamp=_parse_ts) for r in rows]

    # --- the webhook outbox ---------------------------------------------------------------

    def claim_webhooks(
        self, *, owner: str, lease_s: float, now: datetime, limit: int
    ) -> Sequence[WebhookMessage]:
        due_sql = (
            "SELECT id FROM webhook_outbox WHERE outcome IS NULL "
            "AND next_attempt_at <= :now "
            "AND (lease_expires_at IS NULL OR lease_expires_at <= :now) "
            "ORDER BY next_attempt_at, id LIMIT :limit"
        )
        params: dict[str, Any] = {"now": _ts(now), "limit": limit}
        # A sender looks every second: a look that finds nothing takes no write lock.
        if not self._query(due_sql, params):
            return []
        # Not synced: a claim lost in a crash only sends the event once more. Inside
        # the write lock no other sender takes the rows between the SELECT and the UPDATE.
        with self._tx(durable=False) as conn:
            due = conn.execute(due_sql, params).fetchall()
            ids = [row["id"] for row in due]
            conn.executemany(
                "UPDATE webhook_outbox SET lease_owner = ?, lease_expires_at = ?, "
                "attempts = attempts + 1 WHERE id = ?",
                [(owner, _ts(now + timedelta(seconds=lease_s)), i) for i in ids],
            )
            rows = [
                conn.execute(
                    f"SELECT {outbox.COLUMNS} FROM webhook_outbox WHERE id = ?", (i,)
                ).fetchone()
                for i in ids
            ]
        return [_message_of_row(row) for row in rows]

    def webhook_delivered(self, webhook_id: str, *, now: datetime) -> bool:
        return self._transition(
            "UPDATE webhook_outbox SET outcome = 'delivered', finished_at = :now, "
            "lease_owner = NULL, lease_expires_at = NULL "
            "WHERE id = :id AND outcome IS NULL",
            {"id": webhook_id, "now": _ts(now)},
        )

    def webhook_retry(
        self, webhook_id: str, *, owner: str, next_attempt_at: datetime, error: str
    ) -> bool:
        return self._transition(
            "UPDATE webhook_outbox SET next_attempt_at = :next, last_error = :error, "
            "lease_owner = NULL, lease_expires_at = NULL "
            "WHERE id = :id AND outcome IS NULL AND lease_owner = :owner",
            {"id": webhook_id, "owner": owner, "next": _ts(next_attempt_at), "error": error},
        )

    def webhook_given_up(self, webhook_id: str, *, owner: str, reason: str, now: datetime) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE webhook_outbox SET outcome = 'given_up', finished_at = :now, "
                "last_error = :reason, lease_owner = NULL, lease_expires_at = NULL "
                "WHERE id = :id AND outcome IS NULL AND lease_owner = :owner",
                {"id": webhook_id, "owner": owner, "now": _ts(now), "reason": reason},
            )
            if cur.rowcount != 1:
                return False
            row = conn.execute(
                "SELECT image_id, event FROM webhook_outbox WHERE id = ?", (webhook_id,)
            ).fetchone()
            record = _fetch(conn, row["image_id"])
            if record is not None:
                line = outbox.given_up(record, event=row["event"], reason=reason, now=now)
                _log(conn, record.id, line)
            return True

    def webhooks(self, image_id: str) -> Sequence[WebhookMessage]:
        rows = self._query(
            f"SELECT {outbox.COLUMNS} FROM webhook_outbox WHERE image_id = ? "
            "ORDER BY created_at, rowid",
            (image_id,),
        )
        return [_message_of_row(row) for row in rows]

    def outbox_depth(self) -> int:
        rows = self._query("SELECT COUNT(*) FROM webhook_outbox WHERE outcome IS NULL")
        return int(rows[0][0])

    def sweep_webhooks(self, *, finished_before: datetime) -> int:
        with self._tx(durable=False) as conn:  # lost in a crash: swept again
            return conn.execute(
                "DELETE FROM webhook_outbox WHERE id IN (SELECT id FROM webhook_outbox "
                "WHERE outcome IS NOT NULL AND finished_at < ? LIMIT ?)",
                (_ts(finished_before), outbox.SWEEP_BATCH),
            ).rowcount

    def take_lease(self, name: str, *, owner: str, ttl_s: float, now: datetime) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO leases (name, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at "
                "WHERE leases.owner = excluded.owner OR leases.expires_at <= ?",
                (name, owner, _ts(now + timedelta(seconds=ttl_s)), _ts(now)),
            )
            return cur.rowcount == 1

    def check(self) -> None:
        try:
            rows = self._query("SELECT MAX(version) FROM schema_version")
        except RepositoryUnavailable as exc:
            raise RepositoryUnavailable(f"{exc}; run `imageblur migrate`") from exc
        _require_schema(int(rows[0][0] or 0))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _require_schema(version: int) -> None:
    # Behind: this release's statements would fail on missing columns and tables.
    if version < sqlite_schema.LATEST:
        raise RepositoryUnavailable(
            f"the schema is at version {version}, this release needs {sqlite_schema.LATEST}: "
            "run `imageblur migrate`"
        )
