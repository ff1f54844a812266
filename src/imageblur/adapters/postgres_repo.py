"""Image metadata in PostgreSQL (psycopg 3 with a connection pool).

Every state change is one conditional UPDATE: PostgreSQL takes the row lock and
re-checks the WHERE clause after a concurrent writer commits, so two workers racing
for one job (or a duplicate message) can never both win. Claiming is by id (the id
comes from the queue message), so the row lock of the UPDATE is all we need; a
`FOR UPDATE SKIP LOCKED` scan is used only by `requeue_stale`, where many reconcilers may scan
at once and must not block one another.

Each transition is also appended to `image_transitions` in the same statement, an
audit trail that lets an operator (and the fault tests, `tests/distributed/harness.py`)
prove a job went `done` once. The picture's own audit trail (`image_events`, what
`history()` reads: who did what) is appended in the same transaction, and so is the
webhook outbox row of a transition that notifies (`webhook_outbox`, when a webhook URL is
set). Senders take outbox rows with `FOR UPDATE SKIP LOCKED`, as reconcilers take jobs.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row

from imageblur.adapters import outbox, postgres_schema, sql_lifecycle, sql_rows, transitions
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

# Up to this many rows the gauges count exactly; past it, done and failed (the bulk of
# the table) come from the planner's statistics (ANALYZE, kept by autovacuum).
_EXACT_COUNT_ROWS = 100_000
# Counted exactly whatever the table's size, each from its partial index: the open
# statuses (images_open_idx: this list is its predicate, so that the planner uses it) and
# the held one (images_held_idx). One IN list of both matches neither index: a full scan.
_EXACT_COUNTS = (
    "SELECT status, count(*) FROM {s}.images WHERE kind = 'picture' AND status IN "
    "('pending', 'processing', 'rendering', 'video_pending', 'video_processing', "
    "'options_pending', 'options_processing', 'options_rendering', 'video_options_pending', "
    "'video_options_processing') GROUP BY status UNION ALL "
    "SELECT status, count(*) FROM {s}.images WHERE kind = 'picture' AND status = 'review' "
    "GROUP BY status"
)

_COLUMNS = sql_rows.COLUMN_LIST
_VALUES = sql_rows.placeholders(lambda name: f"%({name})s")


def _where(operation: str, *, table: str = "i", **choice: Any) -> str:
    """The row condition of `operation`'s transitions, from the state machine's table
    (columns of the UPDATE's alias `i`, or unqualified)."""
    return sql_lifecycle.where(
        operation,
        param=lambda name: f"%({name})s",
        column=lambda name: f"{table}.{name}" if table else name,
        **choice,
    )


def _to(operation: str, **choice: Any) -> str:
    """The status and review `operation` leaves, from the state machine's table."""
    column, param = (lambda name: f"i.{name}"), (lambda name: f"%({name})s")
    status = sql_lifecycle.status_to(operation, column=column, param=param, **choice)
    review = sql_lifecycle.review_to(operation, column=column, param=param, **choice)
    return f"{status}, {review}"


def _aware(value: datetime) -> datetime:
    return value.astimezone(UTC)


class PostgresImageRepository(SqlBatches):
    """Every repository role (`backends.Repository`) on PostgreSQL; thread-safe (the
    pool hands out connections)."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str,
        pool_min: int,
        pool_max: int,
        timeout_s: float,
        statement_timeout_s: float = 30.0,
        webhook_url: str | None = None,
    ) -> None:
        """`webhook_url`: where the events of a notifying transition go (the server's
        IMAGEBLUR_WEBHOOK_URL); None: no outbox rows."""
        self._webhook_url = webhook_url
        self._schema = schema
        self._s = sql.Identifier(schema)
        self._timeout_s = timeout_s
        # `check` pings a connection before handing it out, so connections broken by a
        # database restart are replaced instead of failing the first request after it.
        self._pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=pool_min,
            max_size=pool_max,
            timeout=timeout_s,
            open=False,
            check=psycopg_pool.ConnectionPool.check_connection,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, round(timeout_s)),
                # A database that accepts connections but hangs must not hang every
                # API thread with it: a stuck statement fails, as 503.
                "options": "-c timezone=UTC "
                f"-c statement_timeout={round(statement_timeout_s * 1000)}",
                "application_name": "imageblur",
            },
            name=f"imageblur-{schema}",
        )
        self._opened = False
        self._open_lock = threading.Lock()

    # --- plumbing ------------------------------------------------------------------

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._opened:
            with self._open_lock:
                if not self._opened:
                    # wait=False: opening never blocks or fails; a database that is down
                    # shows up as a pool timeout on first use (RepositoryUnavailable).
                    self._pool.open(wait=False)
                    self._opened = True
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            raise RepositoryUnavailable(f"database error: {_describe(exc)}") from exc

    @contextlib.contextmanager
    def _batch_tx(self) -> Iterator[Run]:
        """A transaction for `SqlBatches`."""
        with self._conn() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:

            def run(query: str, params: Mapping[str, Any]) -> list[Row]:
                cur.execute(query.encode(), params)
                return builtins.list(cur.fetchall()) if cur.description else []

            yield run

    def _batch_dialect(self) -> Dialect:
        quoted = '"' + self._schema.replace('"', '""') + '".'
        # A transaction-scoped advisory lock per schema: posts wait for each other, and
        # nothing else does (no table lock that would stall the pump's updates).
        name = f"imageblur.batches:{self._schema}".replace("'", "''").replace("%", "%%")
        return Dialect(
            tables=quoted,
            named=True,
            ts_in=lambda t: t,
            ts_out=_aware,
            serialize_posts=f"SELECT pg_advisory_xact_lock(hashtext('{name}'))",
            for_update=" FOR UPDATE",
        )

    def _rows(
        self, query: sql.Composed, params: Sequence[Any] | Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """The rows of one statement, outside a transaction, as dicts by column."""
        with self._conn() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def _one(self, query: sql.Composed, params: dict[str, Any]) -> ImageRecord | None:
        with self._conn() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            row = cur.fetchone()
        return _record(row) if row else None

    def _transition(
        self,
        set_clause: str,
        where_clause: str,
        params: dict[str, Any],
        *,
        event: tuple[EventRole, str] | None = None,
        detail: str | Callable[[Sequence[Region]], str] | None = None,
        reviewer: str | None = None,
        reasons: Mapping[str, str] | None = None,
        notifies: bool = False,
    ) -> ImageRecord | None:
        """One conditional UPDATE plus its row in `image_transitions` (one statement) and,
        given an `event` (role, action), its line in the picture's audit trail, and when it
        `notifies`, its webhook outbox row, in the same transaction. `detail` may be made
        from the regions as they are after the change."""
        # The regions (up to MAX_REGIONS of them) are read back only to describe them.
        extra = ", regions" if callable(detail) else ""
        query = sql.SQL(
            "WITH old AS (SELECT id, status FROM {s}.images WHERE id = %(id)s), "
            "upd AS (UPDATE {s}.images i SET " + set_clause + ", updated_at = %(now)s "
            "WHERE i.id = %(id)s AND (" + where_clause + ") RETURNING i.*), "
            "log AS (INSERT INTO {s}.image_transitions "
            "(image_id, from_status, to_status, owner, at) "
            "SELECT upd.id, old.status, upd.status, %(owner)s, %(now)s "
            "FROM upd JOIN old USING (id)) "
            "SELECT " + _COLUMNS + extra + " FROM upd"
        ).format(s=self._s)
        params = {"owner": None, **params}
        with self._conn() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            row = cur.fetchone()
            if row is None:
                return None
            record = _record(row)
            if event is not None:
                text = detail(regions_from_json(row["regions"])) if callable(detail) else detail
                line = transitions.event(
                    record,
                    role=event[0],
                    action=event[1],
                    detail=text,
                    reviewer=reviewer,
                    reasons=reasons,
                )
                self._log(cur, [(record.id, line)])
            if notifies:
                self._notify(cur, [record])
        return record

    def _notify(self, cur: psycopg.Cursor[Any], records: Sequence[ImageRecord]) -> None:
        """The outbox rows of transitions that notify (`lifecycle.Notify`), in their
        transaction; none without a webhook URL."""
        to = [(r, where) for r in records if (where := outbox.destination(r, self._webhook_url))]
        if not to:
            return
        cur.executemany(
            sql.SQL(
                "INSERT INTO {s}.webhook_outbox (" + outbox.INSERT_COLUMNS + ") "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(s=self._s),
            [
                outbox.insert_values(outbox.new_message(r, url, to_operator=mine), _utc)
                for r, (url, mine) in to
            ],
        )

    def _log(self, cur: psycopg.Cursor[Any], lines: Sequence[tuple[str, Event]]) -> None:
        """Append to the audit trail, in the transaction of the change it records."""
        cur.executemany(
            sql.SQL(
                "INSERT INTO {s}.image_events "
                "(image_id, at, role, action, status, revision, detail) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)"
            ).format(s=self._s),
            [
                (i, e.at, e.role, e.action, e.status, e.revision, transitions.stored_detail(e))
                for i, e in lines
            ],
        )

    def _status_of(self, image_id: str) -> tuple[Status, int] | None:
        query = sql.SQL("SELECT status, revision FROM {s}.images WHERE id = %s").format(s=self._s)
        with self._conn() as conn:
            row = conn.execute(query, (image_id,)).fetchone()
        return (Status(row[0]), int(row[1])) if row else None

    # --- the repository roles-----------------------------------------------------------

    def migrate(self, *, to_version: int | None = None) -> None:
        target = postgres_schema.LATEST if to_version is None else to_version
        if not 0 <= target <= postgres_schema.LATEST:
            raise ValueError(f"no schema version {target}: 0 to {postgres_schema.LATEST}")
        with self._conn() as conn, conn.transaction():
            conn.execute("SET LOCAL statement_timeout = 0")  # index builds may take long
            # One lock per schema, held to the end of the transaction: concurrent
            # `imageblur migrate` runs queue up here and the later ones find nothing to do.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"imageblur:{self._schema}",)
            )
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {s}").format(s=self._s))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {s}.schema_migrations "
                    "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(s=self._s)
            )
            row = conn.execute(
                sql.SQL("SELECT coalesce(max(version), 0) FROM {s}.schema_migrations").format(
                    s=self._s
                )
            ).fetchone()
            current = int(row[0]) if row else 0
            for version, text in enumerate(postgres_schema.MIGRATIONS, start=1):
                if version <= current or version > target:
                    continue
                conn.execute(sql.SQL(text).format(s=self._s))
                conn.execute(
                    sql.SQL("INSERT INTO {s}.schema_migrations (version) VALUES (%s)").format(
                        s=self._s
                    ),
                    (version,),
                )

    def add(self, record: ImageRecord) -> ImageRecord:
        params = _params(record)
        insert = sql.SQL(
            "INSERT INTO {s}.images (" + _COLUMNS + ") VALUES (" + _VALUES + ") "
            "ON CONFLICT DO NOTHING RETURNING " + _COLUMNS
        ).format(s=self._s)
        log = sql.SQL(
            "INSERT INTO {s}.image_transitions (image_id, from_status, to_status, at) "
            "VALUES (%(id)s, NULL, %(status)s, %(created_at)s)"
        ).format(s=self._s)
        with self._conn() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(insert, params)
            row = cur.fetchone()
            if row is not None:
                cur.execute(log, params)
                added = _record(row)
                who, action = sql_lifecycle.event("add")
                detail = transitions.uploaded(added)
                line = transitions.event(added, role=who, action=action, detail=detail)
                self._log(cur, [(added.id, line)])
                return added
            # Lost to an existing row: the same idempotency key (or the same id).
            if record.idempotency_key is not None:
                cur.execute(
                    sql.SQL(
                        "SELECT " + _COLUMNS + " FROM {s}.images WHERE idempotency_key = %s"
                    ).format(s=self._s),
                    (record.idempotency_key,),
                )
                row = cur.fetchone()
            if row is None:
                cur.execute(
                    sql.SQL("SELECT 1 FROM {s}.images WHERE id = %s").format(s=self._s),
                    (record.id,),
                )
                if cur.fetchone() is not None:
                    raise Conflict(f"an image with id {record.id} exists")
        if row is None:  # deleted between the two statements: vanishingly rare
            raise RepositoryUnavailable("conflicting record vanished; retry")
        return _record(row)

    def get(self, image_id: str) -> ImageRecord | None:
        return self._one(
            sql.SQL("SELECT " + _COLUMNS + " FROM {s}.images WHERE id = %(id)s").format(s=self._s),
            {"id": image_id},
        )

    def get_many(self, image_ids: Sequence[str]) -> dict[str, ImageRecord]:
        if not image_ids:
            return {}
        query = sql.SQL("SELECT " + _COLUMNS + " FROM {s}.images WHERE id = ANY(%s)").format(
            s=self._s
        )
        rows = self._rows(query, (builtins.list(image_ids),))
        return {row["id"]: _record(row) for row in rows}

    def list(
        self, *, limit: int, offset: int = 0, kind: MediaKind = "picture"
    ) -> Sequence[ImageRecord]:
        query = sql.SQL(
            "SELECT " + _COLUMNS + " FROM {s}.images WHERE kind = %s "
            "ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s"
        ).format(s=self._s)
        return [_record(row) for row in self._rows(query, (kind, limit, offset))]

    def count(self, *, kind: MediaKind = "picture") -> int:
        query = sql.SQL("SELECT count(*) FROM {s}.images WHERE kind = %s").format(s=self._s)
        with self._conn() as conn:
            row = conn.execute(query, (kind,))
            result = row.fetchone()
        return int(result[0]) if result else 0

    def delete(self, image_id: str) -> ImageRecord | None:
        with self._conn() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("DELETE FROM {s}.images WHERE id = %s RETURNING " + _COLUMNS).format(
                    s=self._s
                ),
                (image_id,),
            )
            row = cur.fetchone()
            for table in ("image_events", "webhook_outbox"):
                cur.execute(
                    sql.SQL("DELETE FROM {s}.{t} WHERE image_id = %s").format(
                        s=self._s, t=sql.Identifier(table)
                    ),
                    (image_id,),
                )
        return _record(row) if row else None

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
        return self._transition(
            _to("claim", given=given) + ", lease_owner = %(owner)s, "
            "lease_expires_at = %(expires)s, attempts = i.attempts + 1",
            _where("claim", given=given),
            {
                "id": image_id,
                "owner": owner,
                "now": now,
                "expires": now + timedelta(seconds=lease_s),
            },
        )

    def extend_lease(self, image_id: str, *, owner: str, lease_s: float, now: datetime) -> bool:
        # Not a change of status: no audit row.
        query = sql.SQL(
            "UPDATE {s}.images SET lease_expires_at = %(expires)s "
            "WHERE id = %(id)s AND (" + _where("extend_lease", table="") + ")"
        ).format(s=self._s)
        params = {"expires": now + timedelta(seconds=lease_s), "id": image_id, "owner": owner}
        with self._conn() as conn:
            cur = conn.execute(query, params)
            return cur.rowcount == 1

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
        # Not a change of status: no audit row, no time stamp.
        query = sql.SQL(
            "UPDATE {s}.images SET frames_done = %(done)s, frames_total = %(total)s, "
            "eta_s = %(eta)s WHERE id = %(id)s AND (" + _where("note_progress", table="") + ")"
        ).format(s=self._s)
        params = {
            "done": frames_done,
            "total": frames_total,
            "eta": eta_s,
            "id": image_id,
            "owner": owner,
        }
        with self._conn() as conn:
            return conn.execute(query, params).rowcount == 1

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
        held = "held_until = %(hold)s, " if hold_until is not None else ""
        done = self._transition(
            _to("complete_video", given=given)
            + ", "
            + held
            + "output_key = %(output_key)s, url = %(url)s, faces = %(faces)s, "
            "frames = %(frames)s, audio = %(audio)s, tracks_key = %(tracks_key)s, "
            "error = NULL, error_code = NULL, "
            "lease_owner = NULL, lease_expires_at = NULL, frames_done = NULL, "
            "frames_total = NULL, eta_s = NULL",
            _where("complete_video", given=given),
            {
                "id": image_id,
                "owner": owner,
                "now": now,
                "output_key": output_key,
                "url": url,
                "faces": faces,
                "frames": frames,
                "audio": audio,
                "tracks_key": tracks_key,
                "hold": hold_until,
            },
            event=sql_lifecycle.event("complete_video", given=given),
            detail=transitions.tracked(tracks=faces),
            notifies=sql_lifecycle.notifies("complete_video", given=given),
        )
        return done is not None

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
            "now": now,
            "output_key": output_key,
            "url": url,
            "faces": faces,
            "plates": plates,
            "hold": hold_until,
            "regions": regions_to_json(regions),
        }
        finished = (
            "output_key = %(output_key)s, url = %(url)s, faces = %(faces)s, "
            "plates = %(plates)s, error = NULL, error_code = NULL, lease_owner = NULL, "
            "lease_expires_at = NULL"
        )
        held = "held_until = %(hold)s, " if hold_until is not None else ""
        # Two conditional UPDATEs, detection first (the common job): a row is in one
        # status only, so at most one of them changes it.
        # A detection goes to done, or to review when held, with the regions it found.
        given = frozenset({Guard.HOLD if held else Guard.NO_HOLD})
        processed = self._transition(
            _to("complete", source=Status.PROCESSING, given=given)
            + ", "
            + held
            + "regions = %(regions)s, "
            + finished,
            _where("complete", source=Status.PROCESSING, given=given),
            params,
            event=sql_lifecycle.event("complete", source=Status.PROCESSING, given=given),
            detail=transitions.detected(faces=faces, plates=plates, regions=regions),
            notifies=sql_lifecycle.notifies("complete", source=Status.PROCESSING, given=given),
        )
        if processed is not None:
            return True
        # A render goes (back) to review, its regions the record's already.
        rendered = self._transition(
            _to("complete", source=Status.RENDERING) + ", " + held + finished,
            _where("complete", source=Status.RENDERING),
            params,
            event=sql_lifecycle.event("complete", source=Status.RENDERING),
            detail=transitions.drawn,
            notifies=sql_lifecycle.notifies("complete", source=Status.RENDERING),
        )
        return rendered is not None

    def fail(
        self, image_id: str, *, owner: str, error: str, code: ErrorCode, now: datetime
    ) -> bool:
        params = {"id": image_id, "owner": owner, "now": now, "error": error, "code": code.value}
        unleased = (
            "error = %(error)s, error_code = %(code)s, lease_owner = NULL, lease_expires_at = NULL"
        )
        # Two conditional UPDATEs, as in `complete`: at most one of them changes the row.
        failed = self._transition(
            _to("fail", source=Status.PROCESSING) + ", " + unleased,
            _where("fail", source=Status.PROCESSING),
            params,
            event=sql_lifecycle.event("fail", source=Status.PROCESSING),
            detail=error,
            notifies=sql_lifecycle.notifies("fail", source=Status.PROCESSING),
        )
        if failed is not None:
            return True
        # A render that failed goes back to review with the result it had before.
        returned = self._transition(
            _to("fail", source=Status.RENDERING) + ", " + unleased,
            _where("fail", source=Status.RENDERING),
            params,
            event=sql_lifecycle.event("fail", source=Status.RENDERING),
            detail=error,
            notifies=sql_lifecycle.notifies("fail", source=Status.RENDERING),
        )
        return returned is not None

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
        return (
            self._transition(
                _to("release") + ", error = %(error)s, error_code = %(code)s, "
                "lease_owner = NULL, lease_expires_at = NULL, published_at = NULL, "
                "attempts = greatest(i.attempts - %(refund)s, 0)",
                _where("release"),
                {
                    "id": image_id,
                    "owner": owner,
                    "now": now,
                    "error": error,
                    "code": code.value,
                    "refund": 0 if count_attempt else 1,
                },
            )
            is not None
        )

    def mark_published(self, image_id: str, *, now: datetime, if_updated_at: datetime) -> None:
        query = sql.SQL(
            "UPDATE {s}.images SET published_at = %(now)s "
            "WHERE id = %(id)s AND (" + _where("mark_published", table="") + ")"
        ).format(s=self._s)
        with self._conn() as conn:
            conn.execute(query, {"now": now, "id": image_id, "if_updated_at": if_updated_at})

    def requeue_stale(
        self,
        *,
        pending_before: datetime,
        published_before: datetime,
        now: datetime,
        limit: int,
    ) -> Sequence[str]:
        # SKIP LOCKED: concurrent reconcilers each take different rows, none waits. An
        # expired lease is logged as a transition (processing -> pending, or a render
        # taken from its dead worker); a job merely published again is not.
        query = sql.SQL(
            "WITH picked AS (SELECT id, status, lease_owner FROM {s}.images WHERE "
            + _where("requeue_stale", table="")
            + " "
            "ORDER BY updated_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED), "
            "upd AS (UPDATE {s}.images i SET " + _to("requeue_stale") + ", "
            "lease_owner = NULL, lease_expires_at = NULL, published_at = NULL, "
            "updated_at = %(now)s FROM picked WHERE i.id = picked.id "
            "RETURNING i.id, i.status, picked.status AS old_status, picked.lease_owner), "
            "log AS (INSERT INTO {s}.image_transitions "
            "(image_id, from_status, to_status, owner, at) "
            "SELECT id, old_status, status, NULL, %(now)s FROM upd "
            "WHERE old_status <> status OR lease_owner IS NOT NULL) "
            "SELECT id FROM upd"
        ).format(s=self._s)
        with self._conn() as conn:
            params = {
                "pending_before": pending_before,
                "published_before": published_before,
                "now": now,
                "limit": limit,
            }
            rows = conn.execute(query, params).fetchall()
        return [str(row[0]) for row in rows]

    def regions(self, image_id: str) -> tuple[int, Sequence[Region]] | None:
        query = sql.SQL("SELECT revision, regions FROM {s}.images WHERE id = %s").format(s=self._s)
        with self._conn() as conn:
            row = conn.execute(query, (image_id,)).fetchone()
        return (int(row[0]), regions_from_json(row[1])) if row else None

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
        # One conditional UPDATE: of two reviewers sending one revision, the second
        # waits for the first's row lock, then finds the revision moved on.
        corrected = self._transition(
            _to("correct") + ", revision = i.revision + 1, regions = %(regions)s, "
            "error = NULL, error_code = NULL, lease_owner = NULL, lease_expires_at = NULL, "
            "published_at = NULL, attempts = 0",
            _where("correct"),
            {
                "id": image_id,
                "now": now,
                "regions": regions_to_json(regions),
                "expected_revision": expected_revision,
            },
            event=sql_lifecycle.event("correct", role=role),
            detail=transitions.drawn(regions),
            reviewer=reviewer,
            reasons=reasons,
        )
        if corrected is not None:
            return corrected
        status, revision = self._status_of(image_id) or (None, 0)
        raise transitions.correction_refused(
            image_id, status, revision, expected_revision=expected_revision
        )

    def approve(
        self, image_id: str, *, role: EventRole, now: datetime, reviewer: str | None = None
    ) -> ImageRecord:
        approved = self._transition(
            _to("approve") + ", held_until = NULL",
            # A picture whose last render failed shows an older result than its regions
            # say: approving would publish what the reviewer asked to hide.
            _where("approve"),
            {"id": image_id, "now": now},
            event=sql_lifecycle.event("approve", role=role),
            reviewer=reviewer,
            notifies=sql_lifecycle.notifies("approve"),
        )
        if approved is not None:
            return approved
        raise transitions.approval_refused(image_id, self.get(image_id))

    def expire_holds(self, *, now: datetime, limit: int) -> Sequence[ImageRecord]:
        query = sql.SQL(
            "WITH picked AS (SELECT id, held_until FROM {s}.images "
            "WHERE " + _where("expire_holds", table="") + " "
            "ORDER BY held_until, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED), "
            "upd AS (UPDATE {s}.images i SET " + _to("expire_holds") + ", "
            "held_until = NULL, updated_at = %(now)s FROM picked WHERE i.id = picked.id "
            "RETURNING i.*, picked.held_until AS due), "
            "log AS (INSERT INTO {s}.image_transitions "
            "(image_id, from_status, to_status, owner, at) "
            "SELECT id, 'review', 'done', NULL, %(now)s FROM upd) "
            "SELECT " + _COLUMNS + ", due FROM upd ORDER BY due, id"
        ).format(s=self._s)
        who, action = sql_lifecycle.event("expire_holds")
        with self._conn() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, {"now": now, "limit": limit})
            expired = [_record(row) for row in cur.fetchall()]
            self._log(
                cur,
                [(r.id, transitions.event(r, role=who, action=action)) for r in expired],
            )
            if sql_lifecycle.notifies("expire_holds"):
                self._notify(cur, expired)
        return expired

    def history(self, image_id: str) -> Sequence[Event]:
        query = sql.SQL(
            "SELECT at, role, action, status, revision, detail FROM {s}.image_events "
            "WHERE image_id = %s ORDER BY seq"
        ).format(s=self._s)
        return [transitions.event_of_row(r, timestamp=_utc) for r in self._rows(query, (image_id,))]

    # --- the webhook outbox ---------------------------------------------------------------

    def claim_webhooks(
        self, *, owner: str, lease_s: float, now: datetime, limit: int
    ) -> Sequence[WebhookMessage]:
        # SKIP LOCKED: the senders of many workers each take different rows, none waits.
        query = sql.SQL(
            "WITH picked AS (SELECT id FROM {s}.webhook_outbox WHERE outcome IS NULL "
            "AND next_attempt_at <= %(now)s "
            "AND (lease_expires_at IS NULL OR lease_expires_at <= %(now)s) "
            "ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
            "UPDATE {s}.webhook_outbox w SET lease_owner = %(owner)s, "
            "lease_expires_at = %(expires)s, attempts = w.attempts + 1 "
            "FROM picked WHERE w.id = picked.id "
            "RETURNING " + ", ".join(f"w.{c.strip()}" for c in outbox.COLUMNS.split(","))
        ).format(s=self._s)
        params = {
            "now": now,
            "limit": limit,
            "owner": owner,
            "expires": now + timedelta(seconds=lease_s),
        }
        claimed = [outbox.message_of_row(row, timestamp=_utc) for row in self._rows(query, params)]
        return sorted(claimed, key=lambda m: (m.next_attempt_at or now, m.id))

    def _outbox_update(self, set_where: str, params: dict[str, Any]) -> bool:
        query = sql.SQL("UPDATE {s}.webhook_outbox SET " + set_where).format(s=self._s)
        with self._conn() as conn:
            return conn.execute(query, params).rowcount == 1

    def webhook_delivered(self, webhook_id: str, *, now: datetime) -> bool:
        return self._outbox_update(
            "outcome = 'delivered', finished_at = %(now)s, lease_owner = NULL, "
            "lease_expires_at = NULL WHERE id = %(id)s AND outcome IS NULL",
            {"id": webhook_id, "now": now},
        )

    def webhook_retry(
        self, webhook_id: str, *, owner: str, next_attempt_at: datetime, error: str
    ) -> bool:
        return self._outbox_update(
            "next_attempt_at = %(next)s, last_error = %(error)s, lease_owner = NULL, "
            "lease_expires_at = NULL "
            "WHERE id = %(id)s AND outcome IS NULL AND lease_owner = %(owner)s",
            {"id": webhook_id, "owner": owner, "next": next_attempt_at, "error": error},
        )

    def webhook_given_up(self, webhook_id: str, *, owner: str, reason: str, now: datetime) -> bool:
        query = sql.SQL(
            "UPDATE {s}.webhook_outbox SET outcome = 'given_up', finished_at = %(now)s, "
            "last_error = %(reason)s, lease_owner = NULL, lease_expires_at = NULL "
            "WHERE id = %(id)s AND outcome IS NULL AND lease_owner = %(owner)s "
            "RETURNING image_id, event"
        ).format(s=self._s)
        params = {"id": webhook_id, "owner": owner, "now": now, "reason": reason}
        with self._conn() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            row = cur.fetchone()
            if row is None:
                return False
            cur.execute(
                sql.SQL("SELECT " + _COLUMNS + " FROM {s}.images WHERE id = %s").format(s=self._s),
                (row["image_id"],),
            )
            found = cur.fetchone()
            if found is not None:
                record = _record(found)
                line = outbox.given_up(record, event=row["event"], reason=reason, now=now)
                self._log(cur, [(record.id, line)])
        return True

    def webhooks(self, image_id: str) -> Sequence[WebhookMessage]:
        query = sql.SQL(
            "SELECT " + outbox.COLUMNS + " FROM {s}.webhook_outbox WHERE image_id = %s "
            "ORDER BY created_at, id"
        ).format(s=self._s)
        return [
            outbox.message_of_row(row, timestamp=_utc) for row in self._rows(query, (image_id,))
        ]

    def outbox_depth(self) -> int:
        query = sql.SQL("SELECT count(*) FROM {s}.webhook_outbox WHERE outcome IS NULL").format(
            s=self._s
        )
        with self._conn() as conn:
            row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0

    def sweep_webhooks(self, *, finished_before: datetime) -> int:
        query = sql.SQL(
            "DELETE FROM {s}.webhook_outbox WHERE id IN (SELECT id FROM {s}.webhook_outbox "
            "WHERE outcome IS NOT NULL AND finished_at < %s LIMIT %s)"
        ).format(s=self._s)
        with self._conn() as conn:
            return conn.execute(query, (finished_before, outbox.SWEEP_BATCH)).rowcount

    def take_lease(self, name: str, *, owner: str, ttl_s: float, now: datetime) -> bool:
        # The upsert locks the row and re-checks the WHERE after a concurrent writer
        # commits: of many processes racing for a free lease, exactly one gets a row back.
        query = sql.SQL(
            "INSERT INTO {s}.leases AS l (name, owner, expires_at) "
            "VALUES (%(name)s, %(owner)s, %(expires)s) "
            "ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, "
            "expires_at = EXCLUDED.expires_at "
            "WHERE l.owner = EXCLUDED.owner OR l.expires_at <= %(now)s "
            "RETURNING l.owner"
        ).format(s=self._s)
        params = {
            "name": name,
            "owner": owner,
            "now": now,
            "expires": now + timedelta(seconds=ttl_s),
        }
        with self._conn() as conn:
            return conn.execute(query, params).fetchone() is not None

    def picture_stats(self) -> PictureStats:
        """Open and held statuses counted exactly (partial indexes hold only them), the
        rest estimated once the table is large, and the oldest pending upload from an index:
        cheap on a table of millions, so that a metrics scrape never scans it. Pictures
        only: videos share the table and the finished statuses."""
        with self._conn() as conn:
            rows, statuses, kinds = _planner_stats(conn, self._schema)
            exact = rows < _EXACT_COUNT_ROWS  # -1: never analyzed (a new table)
            every = "SELECT status, count(*) FROM {s}.images WHERE kind = 'picture' GROUP BY status"
            counting = sql.SQL(every if exact else _EXACT_COUNTS).format(s=self._s)
            counted = conn.execute(counting).fetchall()
            # Pending with or without options (statuses of pictures alone): each from an
            # index of its own (LEAST ignores a NULL).
            oldest = conn.execute(
                sql.SQL(
                    "SELECT LEAST("
                    "(SELECT min(created_at) FROM {s}.images WHERE status = 'pending'), "
                    "(SELECT min(created_at) FROM {s}.images WHERE status = 'options_pending'))"
                ).format(s=self._s)
            ).fetchone()
        counts = {str(status): int(n) for status, n in counted}
        if not exact:
            # The planner keeps no joint statistics of kind and status: a finished status
            # is shared between the kinds as the whole table is.
            pictures = rows * kinds.get("picture", 0.0 if kinds else 1.0)
            for value, freq in statuses.items():
                counts.setdefault(value, round(freq * pictures))
        oldest_at = oldest[0] if oldest else None
        return PictureStats(
            counts=counts, oldest_pending_at=_utc(oldest_at) if oldest_at is not None else None
        )

    def check(self) -> None:
        # Reachable, and migrated at least as far as this release needs (a newer schema
        # is fine: migrations only add). Behind, its statements would fail on missing
        # columns and tables, so an API is not ready until `imageblur migrate` has run.
        query = sql.SQL("SELECT coalesce(max(version), 0) FROM {s}.schema_migrations").format(
            s=self._s
        )
        try:
            with self._conn() as conn:
                row = conn.execute(query).fetchone()
        except RepositoryUnavailable as exc:
            raise RepositoryUnavailable(f"{exc}; run `imageblur migrate`") from exc
        version = int(row[0]) if row else 0
        if version < postgres_schema.LATEST:
            raise RepositoryUnavailable(
                f"the schema is at version {version}, this release needs "
                f"{postgres_schema.LATEST}: "
                "run `imageblur migrate`"
            )

    def close(self) -> None:
        with self._open_lock:
            if self._opened:
                self._pool.close(timeout=self._timeout_s)
                self._opened = False


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _params(record: ImageRecord) -> dict[str, Any]:
    return sql_rows.to_row(record, timestamp=_utc)


def _record(row: dict[str, Any]) -> ImageRecord:
    return sql_rows.to_record(row, timestamp=_utc)


def _describe(exc: BaseException) -> str:
    # The first line only: psycopg messages can carry the query text with values.
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _planner_stats(
    conn: psycopg.Connection[Any], schema: str
) -> tuple[float, dict[str, float], dict[str, float]]:
    """The `images` table's estimated rows (-1: never analyzed), and the share of its
    rows of each common status and kind, from the planner's statistics."""
    query = sql.SQL(
        "SELECT c.reltuples, st.attname, st.most_common_vals::text::text[], "
        "st.most_common_freqs "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_stats st ON st.schemaname = n.nspname "
        "AND st.tablename = c.relname AND st.attname IN ('status', 'kind') "
        "WHERE n.nspname = %s AND c.relname = 'images'"
    )
    found = conn.execute(query, (schema,)).fetchall()
    rows = float(found[0][0]) if found else -1.0
    shares: dict[str, dict[str, float]] = {"status": {}, "kind": {}}
    for _, column, values, freqs in found:
        if column is not None:
            shares[column] = {
                str(v): float(f) for v, f in zip(values or [], freqs or [], strict=False)
            }
    return rows, shares["status"], shares["kind"]
