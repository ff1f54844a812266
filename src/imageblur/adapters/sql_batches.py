"""Batches and their items (issue 27) on both SQL adapters: one implementation over a
small dialect (how a parameter, a table and a time stamp are written), mixed into
`SqliteImageRepository` and `PostgresImageRepository`, which give it a transaction.

Every change of an item is one conditional statement, as the pictures' transitions are:
a claim takes a queued item (or one whose lease expired) of an open batch, and only the
lease holder ends it. A batch's counts are kept as its items change, in the same
transaction (`batch_counts`: items by state and reason; the batch row: its pace), so a
read costs the same at any size."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from imageblur.batches.model import (
    ALREADY_DONE,
    BATCH_DONE,
    CANCELLED,
    Batch,
    BatchCounts,
    BatchItem,
    BatchRefused,
    BatchStatus,
    ItemState,
    Location,
    StoreKind,
    destination,
    ended_recently,
    pace_minute,
)
from imageblur.domain import utcnow

Row = Mapping[str, Any]
# Runs one statement in the caller's transaction: its rows (none for a plain write).
Run = Callable[[str, Mapping[str, Any]], list[Row]]

# A batch with its own `callback_url` is open under statuses of its own, which no pod
# of an earlier release knows (the rule for new job kinds, docs/operations.md): an older
# worker's pump never lists, tops up, settles nor fails it, and an older API never
# cancels it, so none of them writes its `batch.done` to the operator's URL. Read back
# as `listing` and `running`; ended, it is `done`, `cancelled` or `failed` as any batch.
_OWN_STATUS = {"listing": "callback_listing", "running": "callback_running"}
_SHOWN_STATUS = {own: shown for shown, own in _OWN_STATUS.items()}
_OPEN = "('listing', 'running', 'callback_listing', 'callback_running')"
_LISTING = "('listing', 'callback_listing')"
_RUNNING_AS = "CASE WHEN callback_url IS NULL THEN 'running' ELSE 'callback_running' END"
_LISTING_AS = "CASE WHEN callback_url IS NULL THEN 'listing' ELSE 'callback_listing' END"
_BATCH_COLUMNS = (
    "id, batch_key, source_store, source_bucket, source_prefix, target_store, target_bucket, "
    "target_prefix, options, dry_run, status, listing_after, listed_all, error, created_at, "
    "updated_at, finished_at, callback_url"
)
_ITEM_COLUMNS = (
    "id, batch_id, item_key, source_store, source_bucket, source_key, source_tag, "
    "source_size, borrowed, state, target_key, wrote_target, reason, faces, attempts, "
    "created_at, updated_at, target_marks"
)
_IDS_PER_QUERY = 500


@dataclass(frozen=True, slots=True)
class Dialect:
    """`tables`: the schema's prefix of a table name ('' or '"schema".'); `named`: whether
    parameters are written `%(name)s` (psycopg) rather than `:name` (sqlite3);
    `serialize_posts`: a statement that makes the rest of its transaction the only one
    posting a batch ('' where every write transaction is alone already: SQLite's
    `BEGIN IMMEDIATE`)."""

    tables: str
    named: bool
    ts_in: Callable[[datetime], Any]
    ts_out: Callable[[Any], datetime]
    serialize_posts: str = ""
    for_update: str = ""  # ' FOR UPDATE' where a read row must stay as read

    def sql(self, text: str) -> str:
        text = text.replace("{t}", self.tables)
        return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", text) if self.named else text


class SqlBatches:
    """`BatchRecords` and `BatchItems` for a SQL adapter that gives `_batch_tx` (one
    transaction, its `Run`) and `_batch_dialect`."""

    # The server's IMAGEBLUR_WEBHOOK_URL, as the adapter was built with (None: no rows).
    _webhook_url: str | None

    def _batch_tx(self) -> AbstractContextManager[Run]:
        raise NotImplementedError

    def _notify_ended(self, run: Run, d: Dialect, batch_id: str, now: datetime) -> None:
        """The one `batch.done` outbox row of a batch that has just ended (done,
        cancelled or failed), in the transaction that ended it; to its own
        `callback_url`, else the operator's URL."""
        rows = run(d.sql("SELECT callback_url FROM {t}batches WHERE id = :id"), {"id": batch_id})
        where = destination(rows[0]["callback_url"] if rows else None, self._webhook_url)
        if where is None:
            return
        url, to_operator = where
        run(
            d.sql(
                "INSERT INTO {t}webhook_outbox (id, image_id, event, url, created_at, attempts, "
                "next_attempt_at, to_operator) VALUES (:mid, :id, :event, :url, :now, 0, :now, "
                ":operator)"
            ),
            {
                "mid": f"msg_{uuid.uuid4().hex}",
                "id": batch_id,
                "event": BATCH_DONE,
                "url": url,
                "now": d.ts_in(now),
                "operator": to_operator,
            },
        )

    def _batch_dialect(self) -> Dialect:
        raise NotImplementedError

    def _run(self, text: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        with self._batch_tx() as run:
            return run(self._batch_dialect().sql(text), params or {})

    # --- BatchRecords ---------------------------------------------------------------

    def add_batch(self, batch: Batch, *, max_running: int) -> tuple[Batch, bool]:
        d = self._batch_dialect()
        with self._batch_tx() as run:
            # Counting the open batches and adding one are one step: two posts racing
            # could otherwise both see room for the last one.
            if d.serialize_posts:
                run(d.serialize_posts, {})
            found = _with_key(run, d, batch.key)
            if found is not None:
                return _with_counts(run, d, found), False
            running = run(
                d.sql(f"SELECT COUNT(*) AS n FROM {{t}}batches WHERE status IN {_OPEN}"), {}
            )
            if int(running[0]["n"]) >= max_running:
                raise BatchRefused(
                    f"{max_running} batches are running: at most that many at once",
                    http_status=429,
                    code="too_many_batches",
                )
            added = run(d.sql(_INSERT_BATCH), _batch_params(batch, d))
            if not added:  # another post of the same batch won the unique index
                again = _with_key(run, d, batch.key)
                assert again is not None, "the unique index named a batch that is gone"
                return _with_counts(run, d, again), False
            return batch, True

    def get_batch(self, batch_id: str) -> Batch | None:
        d = self._batch_dialect()
        with self._batch_tx() as run:
            rows = run(
                d.sql(f"SELECT {_BATCH_COLUMNS} FROM {{t}}batches WHERE id = :id"), {"id": batch_id}
            )
            return _with_counts(run, d, _batch(rows[0], d)) if rows else None

    def list_batches(
        self, *, limit: int, offset: int = 0, ended_since: datetime | None = None
    ) -> Sequence[Batch]:
        d = self._batch_dialect()
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        where = ""
        if ended_since is not None:
            where = f"WHERE status IN {_OPEN} OR finished_at >= :since "
            params["since"] = d.ts_in(ended_since)
        with self._batch_tx() as run:
            rows = run(
                d.sql(
                    f"SELECT {_BATCH_COLUMNS} FROM {{t}}batches {where}"
                    "ORDER BY created_at DESC, id DESC LIMIT :limit OFFSET :offset"
                ),
                params,
            )
            return [_with_counts(run, d, _batch(row, d)) for row in rows]

    def cancel_batch(self, batch_id: str, *, now: datetime) -> Batch | None:
        d = self._batch_dialect()
        params = {"id": batch_id, "now": d.ts_in(now), "reason": CANCELLED}
        with self._batch_tx() as run:
            if run(
                d.sql(
                    "UPDATE {t}batches SET status = 'cancelled', finished_at = :now, "
                    f"updated_at = :now WHERE id = :id AND status IN {_OPEN} RETURNING id"
                ),
                params,
            ):
                self._notify_ended(run, d, batch_id, now)
            _drop_open_items(run, d, params)
            rows = run(d.sql(f"SELECT {_BATCH_COLUMNS} FROM {{t}}batches WHERE id = :id"), params)
            return _with_counts(run, d, _batch(rows[0], d)) if rows else None

    def item_failures(self, batch_id: str, *, limit: int, after: str | None) -> Sequence[BatchItem]:
        d = self._batch_dialect()
        rows = self._run(
            f"SELECT {_ITEM_COLUMNS} FROM {{t}}batch_items WHERE batch_id = :id "
            "AND state = 'failed' AND source_key > :after ORDER BY source_key LIMIT :limit",
            {"id": batch_id, "after": after or "", "limit": limit},
        )
        return [_item(row, d) for row in rows]

    def retry_failed(self, batch_id: str, *, now: datetime) -> int:
        d = self._batch_dialect()
        params = {"id": batch_id, "now": d.ts_in(now)}
        with self._batch_tx() as run:
            _lock_batch(run, d, batch_id)
            retried = run(
                d.sql(
                    "UPDATE {t}batch_items SET state = 'listed', reason = NULL, attempts = 0, "
                    "updated_at = :now WHERE batch_id = :id AND state = 'failed' AND "
                    "batch_id IN (SELECT id FROM {t}batches WHERE status <> 'cancelled') "
                    "RETURNING id"
                ),
                params,
            )
            if retried:
                _count(
                    run, d, batch_id, {("failed", ""): -len(retried), ("listed", ""): len(retried)}
                )
                run(
                    d.sql(
                        "UPDATE {t}batches SET finished_at = NULL, error = NULL, "
                        "updated_at = :now, "
                        f"status = CASE WHEN listed_all = 1 THEN {_RUNNING_AS} "
                        f"ELSE {_LISTING_AS} END "
                        "WHERE id = :id AND status IN ('done', 'failed')"
                    ),
                    params,
                )
            return len(retried)

    def written_keys(self, batch_id: str, *, limit: int, after: str | None) -> Sequence[str]:
        rows = self._run(
            "SELECT target_key FROM {t}batch_items WHERE batch_id = :id AND wrote_target = 1 "
            "AND target_key > :after ORDER BY target_key LIMIT :limit",
            {"id": batch_id, "after": after or "", "limit": limit},
        )
        return [str(row["target_key"]) for row in rows]

    # --- BatchItems -------------------------------------------------------------------

    def open_batches(self) -> Sequence[Batch]:
        d = self._batch_dialect()
        rows = self._run(
            f"SELECT {_BATCH_COLUMNS} FROM {{t}}batches WHERE status IN {_OPEN} "
            "ORDER BY created_at, id"
        )
        return [_batch(row, d) for row in rows]

    def add_items(
        self,
        batch_id: str,
        items: Sequence[BatchItem],
        *,
        after: str | None,
        listed_all: bool,
        now: datetime,
    ) -> int:
        d = self._batch_dialect()
        with self._batch_tx() as run:
            listing = run(
                d.sql(
                    f"SELECT id FROM {{t}}batches WHERE id = :id AND status IN {_LISTING}"
                    + d.for_update
                ),
                {"id": batch_id},
            )
            if not listing:
                return 0
            added: Counter[tuple[str, str]] = Counter()
            for start in range(0, len(items), _ROWS_PER_INSERT):
                for row in run(*_insert_items(d, items[start : start + _ROWS_PER_INSERT])):
                    added[(str(row["state"]), _reason(str(row["state"]), row["reason"]))] += 1
            _count(run, d, batch_id, added)
            # Those skipped as they were added (done before, a dry run) ended now.
            _pace(run, d, batch_id, sum(n for (s, _), n in added.items() if s == "skipped"), now)
            run(
                d.sql(
                    "UPDATE {t}batches SET listing_after = :after, listed_all = :all, "
                    f"status = CASE WHEN :all = 1 THEN {_RUNNING_AS} ELSE status END, "
                    "updated_at = :now WHERE id = :id"
                ),
                {"id": batch_id, "after": after, "all": int(listed_all), "now": d.ts_in(now)},
            )
            return sum(added.values())

    def to_publish(self, batch_id: str, *, window: int) -> Sequence[BatchItem]:
        d = self._batch_dialect()
        with self._batch_tx() as run:
            # From the items (at most about a window of them, by `batch_items_state`),
            # not the kept counts: a worker of 557906e ends items without counting them,
            # and a count left too high would shrink the window for good (a stalled
            # batch) while such workers run beside this release's.
            busy = run(
                d.sql(
                    "SELECT COUNT(*) AS n FROM {t}batch_items WHERE batch_id = :id "
                    "AND state IN ('queued', 'processing')"
                ),
                {"id": batch_id},
            )
            room = window - int(busy[0]["n"])
            if room <= 0:
                return []
            rows = run(
                d.sql(
                    f"SELECT {_ITEM_COLUMNS} FROM {{t}}batch_items WHERE batch_id = :id "
                    "AND state = 'listed' AND batch_id IN "
                    f"(SELECT id FROM {{t}}batches WHERE status IN {_OPEN}) "
                    "ORDER BY source_key LIMIT :room"
                ),
                {"id": batch_id, "room": room},
            )
            return [_item(row, d) for row in rows]

    def mark_queued(self, item_ids: Sequence[str], *, now: datetime) -> None:
        d = self._batch_dialect()
        with self._batch_tx() as run:
            for start in range(0, len(item_ids), _IDS_PER_QUERY):
                chunk = item_ids[start : start + _IDS_PER_QUERY]
                names = {f"i{n}": item_id for n, item_id in enumerate(chunk)}
                marks = ", ".join(f":{name}" for name in names)
                marked = run(
                    d.sql(
                        "UPDATE {t}batch_items SET state = 'queued', updated_at = :now "
                        f"WHERE state = 'listed' AND id IN ({marks}) RETURNING batch_id"
                    ),
                    {**names, "now": d.ts_in(now)},
                )
                for batch_id, n in Counter(str(r["batch_id"]) for r in marked).items():
                    _count(run, d, batch_id, {("listed", ""): -n, ("queued", ""): n})

    def claim_item(
        self, item_id: str, *, owner: str, lease_s: float, now: datetime
    ) -> BatchItem | None:
        d = self._batch_dialect()
        with self._batch_tx() as run:
            # Which state it leaves says which count changes: one still `listed` (its
            # message went out before it was marked queued) joins the queued ones.
            was = run(
                d.sql("SELECT state FROM {t}batch_items WHERE id = :id" + d.for_update),
                {"id": item_id},
            )
            rows = run(
                d.sql(
                    "UPDATE {t}batch_items SET state = 'processing', lease_owner = :owner, "
                    "lease_expires_at = :until, attempts = attempts + 1, updated_at = :now "
                    "WHERE id = :id AND (state IN ('listed', 'queued') OR (state = 'processing' "
                    "AND lease_expires_at <= :now)) AND batch_id IN "
                    f"(SELECT id FROM {{t}}batches WHERE status IN {_OPEN}) "
                    f"RETURNING {_ITEM_COLUMNS}"
                ),
                {
                    "id": item_id,
                    "owner": owner,
                    "now": d.ts_in(now),
                    "until": d.ts_in(now + timedelta(seconds=lease_s)),
                },
            )
            if not rows:
                return None
            claimed = _item(rows[0], d)
            if was and was[0]["state"] == "listed":
                _count(run, d, claimed.batch_id, {("listed", ""): -1, ("queued", ""): 1})
            return claimed

    def record_mark(
        self, item_id: str, *, owner: str, target_key: str, mark: str, now: datetime
    ) -> bool:
        d = self._batch_dialect()
        rows = self._run(
            "UPDATE {t}batch_items SET target_key = :key, target_marks = "
            "CASE WHEN target_marks IS NULL THEN :mark ELSE target_marks || ' ' || :mark END, "
            "updated_at = :now WHERE id = :id AND state = 'processing' AND lease_owner = :owner "
            "RETURNING id",
            {"id": item_id, "owner": owner, "key": target_key, "mark": mark, "now": d.ts_in(now)},
        )
        return bool(rows)

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
        if state not in ("done", "failed", "skipped", "queued"):
            raise ValueError(f"an item cannot end {state!r}")
        d = self._batch_dialect()
        with self._batch_tx() as run:
            rows = run(
                d.sql(
                    "UPDATE {t}batch_items SET state = :state, reason = :reason, "
                    "faces = :faces, target_key = COALESCE(:target_key, target_key), "
                    "wrote_target = CASE WHEN :wrote = 1 THEN 1 ELSE wrote_target END, "
                    "lease_owner = NULL, lease_expires_at = NULL, updated_at = :now "
                    "WHERE id = :id AND state = 'processing' AND lease_owner = :owner "
                    "RETURNING batch_id"
                ),
                {
                    "id": item_id,
                    "owner": owner,
                    "state": state,
                    "reason": reason,
                    "faces": faces,
                    "target_key": target_key,
                    "wrote": int(wrote_target),
                    "now": d.ts_in(now),
                },
            )
            if rows and state != "queued":  # a retry stays among the queued
                batch_id = str(rows[0]["batch_id"])
                if state != "skipped" or reason != CANCELLED:
                    _pace(run, d, batch_id, 1, now)  # the batch's row before its counts
                ended = (state, _reason(state, reason))
                _count(run, d, batch_id, {("queued", ""): -1, ended: 1}, faces=faces or 0)
            return bool(rows)

    def requeue_stale_items(
        self, *, now: datetime, queued_before: datetime, limit: int
    ) -> Sequence[BatchItem]:
        d = self._batch_dialect()
        rows = self._run(
            "UPDATE {t}batch_items SET state = 'queued', lease_owner = NULL, "
            "lease_expires_at = NULL, updated_at = :now WHERE id IN (SELECT id FROM "
            "{t}batch_items WHERE (state = 'processing' AND lease_expires_at <= :now) OR "
            "(state = 'queued' AND updated_at <= :before) LIMIT :limit) AND batch_id IN "
            f"(SELECT id FROM {{t}}batches WHERE status IN {_OPEN}) RETURNING {_ITEM_COLUMNS}",
            {"now": d.ts_in(now), "before": d.ts_in(queued_before), "limit": limit},
        )
        return [_item(row, d) for row in rows]

    def fail_batch(self, batch_id: str, *, error: str, now: datetime) -> bool:
        d = self._batch_dialect()
        params = {"id": batch_id, "error": error, "now": d.ts_in(now), "reason": CANCELLED}
        with self._batch_tx() as run:
            failed = run(
                d.sql(
                    "UPDATE {t}batches SET status = 'failed', error = :error, finished_at = :now, "
                    f"updated_at = :now WHERE id = :id AND status IN {_OPEN} RETURNING id"
                ),
                params,
            )
            if failed:
                self._notify_ended(run, d, batch_id, now)
                _drop_open_items(run, d, params)
            return bool(failed)

    def settle_batches(self, *, now: datetime) -> Sequence[Batch]:
        d = self._batch_dialect()
        with self._batch_tx() as run:
            rows = run(
                d.sql(
                    "UPDATE {t}batches SET status = 'done', finished_at = :now, "
                    f"updated_at = :now WHERE status IN {_OPEN} AND listed_all = 1 AND NOT "
                    "EXISTS (SELECT 1 FROM {t}batch_items i WHERE i.batch_id = {t}batches.id "
                    f"AND i.state IN ('listed', 'queued', 'processing')) RETURNING {_BATCH_COLUMNS}"
                ),
                {"now": d.ts_in(now)},
            )
            for row in rows:
                _recount(run, d, str(row["id"]))
                self._notify_ended(run, d, str(row["id"]), now)
            return [_batch(row, d) for row in rows]


_INSERT_BATCH = (
    f"INSERT INTO {{t}}batches ({_BATCH_COLUMNS}) VALUES (:id, :batch_key, :source_store, "
    ":source_bucket, :source_prefix, :target_store, :target_bucket, :target_prefix, :options, "
    ":dry_run, :status, :listing_after, :listed_all, :error, :created_at, :updated_at, "
    ":finished_at, :callback_url) ON CONFLICT (batch_key) WHERE status <> 'cancelled' "
    "DO NOTHING RETURNING id"
)
# One statement per listed page (a page is at most 1000 objects: 11,000 parameters, within
# SQLite's 32,766 and PostgreSQL's 65,535). A source key the batch has is not added
# twice; an item an earlier batch finished (same item key, the partial index
# `batch_items_done_key`) is added as skipped. A VALUES list's columns are `column1`,
# `column2`, ... on both databases.
_ROWS_PER_INSERT = 1000
_ITEM_VALUES = [
    "id",
    "batch_id",
    "item_key",
    "source_store",
    "source_bucket",
    "source_key",
    "source_tag",
    "source_size",
    "state",
    "reason",
    "now",
]
_DONE_BEFORE = (
    "EXISTS (SELECT 1 FROM {t}batch_items d WHERE d.item_key = v.column3 AND d.state = 'done')"
)
_INSERT_ITEMS = (
    f"INSERT INTO {{t}}batch_items ({_ITEM_COLUMNS}) SELECT v.column1, v.column2, v.column3, "
    "v.column4, v.column5, v.column6, v.column7, CAST(v.column8 AS BIGINT), 1, "
    f"CASE WHEN {_DONE_BEFORE} THEN 'skipped' ELSE v.column9 END, NULL, 0, "
    f"CASE WHEN {_DONE_BEFORE} THEN '{ALREADY_DONE}' ELSE v.column10 END, NULL, 0, "
    "v.column11, v.column11, NULL FROM (VALUES {rows}) AS v "
    # WHERE true: without it SQLite would read ON CONFLICT as part of the FROM clause.
    "WHERE true ON CONFLICT (batch_id, source_key) DO NOTHING RETURNING state, reason"
)


def _insert_items(d: Dialect, items: Sequence[BatchItem]) -> tuple[str, dict[str, Any]]:
    """The one statement that adds `items`, and its parameters."""
    params: dict[str, Any] = {}
    rows = []
    for n, item in enumerate(items):
        values = _item_params(item, d)
        params.update({f"{name}_{n}": values[name] for name in _ITEM_VALUES})
        rows.append("(" + ", ".join(f":{name}_{n}" for name in _ITEM_VALUES) + ")")
    return d.sql(_INSERT_ITEMS.replace("{rows}", ", ".join(rows))), params


def _with_key(run: Run, d: Dialect, key: str) -> Batch | None:
    """The batch of this key that is not cancelled: one at most (a unique index)."""
    rows = run(
        d.sql(
            f"SELECT {_BATCH_COLUMNS} FROM {{t}}batches "
            "WHERE batch_key = :key AND status <> 'cancelled'"
        ),
        {"key": key},
    )
    return _batch(rows[0], d) if rows else None


# Which counts an item's change moves: `batch_counts` rows by (state, reason), the
# reason kept for skipped items only; `queued` counts the running ones too. The rows are
# changed in one order (sorted), and after the batch's row where a transaction takes that
# too, so two transactions never wait for each other in a circle.
def _reason(state: str, reason: Any) -> str:
    return str(reason or "") if state == "skipped" else ""


def _count(
    run: Run, d: Dialect, batch_id: str, deltas: Mapping[tuple[str, str], int], *, faces: int = 0
) -> None:
    for (state, reason), n in sorted(deltas.items()):
        more_faces = faces if state == "done" else 0
        if n == 0 and more_faces == 0:
            continue
        run(
            d.sql(
                "INSERT INTO {t}batch_counts AS c (batch_id, state, reason, n, faces) "
                "VALUES (:id, :state, :reason, :n, :faces) ON CONFLICT (batch_id, state, reason) "
                "DO UPDATE SET n = c.n + excluded.n, faces = c.faces + excluded.faces"
            ),
            {"id": batch_id, "state": state, "reason": reason, "n": n, "faces": more_faces},
        )


def _recount(run: Run, d: Dialect, batch_id: str) -> None:
    """A batch's counts counted again from its items, once, as it ends done (none of
    them is open, so none changes meanwhile): a pod of 557906e changes items without
    counting them, and its `batch.done` and final counts are then right all the same.
    One grouped pass over the batch's items, as the migration that brought the counts."""
    run(d.sql("DELETE FROM {t}batch_counts WHERE batch_id = :id"), {"id": batch_id})
    run(
        d.sql(
            "INSERT INTO {t}batch_counts (batch_id, state, reason, n, faces) "
            "SELECT batch_id, CASE WHEN state = 'processing' THEN 'queued' ELSE state END, "
            "CASE WHEN state = 'skipped' THEN COALESCE(reason, '') ELSE '' END, COUNT(*), "
            "COALESCE(SUM(CASE WHEN state = 'done' THEN faces ELSE 0 END), 0) "
            "FROM {t}batch_items WHERE batch_id = :id GROUP BY 1, 2, 3"
        ),
        {"id": batch_id},
    )


def _pace(run: Run, d: Dialect, batch_id: str, ended: int, now: datetime) -> None:
    """`ended` items ended at `now`: counted in the batch's current minute (the one
    before kept, an older one forgotten)."""
    if ended <= 0:
        return
    run(
        d.sql(
            "UPDATE {t}batches SET "
            "pace_prev = CASE WHEN pace_minute = :minute THEN pace_prev "
            "WHEN pace_minute = :minute - 1 THEN pace_n ELSE 0 END, "
            "pace_n = CASE WHEN pace_minute = :minute THEN pace_n + :n ELSE :n END, "
            "pace_minute = :minute WHERE id = :id"
        ),
        {"id": batch_id, "minute": pace_minute(now), "n": ended},
    )


def _lock_batch(run: Run, d: Dialect, batch_id: str) -> None:
    run(d.sql("SELECT id FROM {t}batches WHERE id = :id" + d.for_update), {"id": batch_id})


def _drop_open_items(run: Run, d: Dialect, params: Mapping[str, Any]) -> None:
    """A stopped batch's items not yet running: `skipped: cancelled` (one statement per
    state they leave, so each count moves by what left it)."""
    deltas: dict[tuple[str, str], int] = {}
    for state in ("listed", "queued"):
        dropped = run(
            d.sql(
                "UPDATE {t}batch_items SET state = 'skipped', reason = :reason, "
                f"updated_at = :now WHERE batch_id = :id AND state = '{state}' RETURNING id"
            ),
            params,
        )
        deltas[(state, "")] = -len(dropped)
        deltas[("skipped", CANCELLED)] = deltas.get(("skipped", CANCELLED), 0) + len(dropped)
    _count(run, d, str(params["id"]), deltas)


def _with_counts(run: Run, d: Dialect, batch: Batch) -> Batch:
    """The batch with its counts: a few rows of `batch_counts` and its pace, whatever
    the number of its items."""
    rows = run(
        d.sql("SELECT state, reason, n, faces FROM {t}batch_counts WHERE batch_id = :id"),
        {"id": batch.id},
    )
    by_state: dict[str, int] = {}
    skipped: dict[str, int] = {}
    faces = 0
    for row in rows:
        state, n = str(row["state"]), int(row["n"])
        by_state[state] = by_state.get(state, 0) + n
        if state == "skipped" and n:
            skipped[str(row["reason"]) or "unknown"] = n
        faces += int(row["faces"])
    pace = run(
        d.sql("SELECT pace_minute, pace_n, pace_prev FROM {t}batches WHERE id = :id"),
        {"id": batch.id},
    )
    counts = BatchCounts(
        listed=sum(by_state.values()),
        queued=by_state.get("queued", 0),
        done=by_state.get("done", 0),
        failed=by_state.get("failed", 0),
        skipped=skipped,
        faces=faces,
        ended_recently=_recent(pace[0]) if pace else 0,
    )
    return _replace_counts(batch, counts)


def _recent(row: Row) -> int:
    minute, current, before = int(row["pace_minute"]), int(row["pace_n"]), int(row["pace_prev"])
    return ended_recently(minute, current, before, utcnow())


def _replace_counts(batch: Batch, counts: BatchCounts) -> Batch:
    return replace(batch, counts=counts)


def _batch_params(batch: Batch, d: Dialect) -> dict[str, Any]:
    return {
        "id": batch.id,
        "batch_key": batch.key,
        "source_store": batch.source.store,
        "source_bucket": batch.source.bucket,
        "source_prefix": batch.source.prefix,
        "target_store": batch.target.store,
        "target_bucket": batch.target.bucket,
        "target_prefix": batch.target.prefix,
        "options": json.dumps(dict(batch.options), sort_keys=True),
        "dry_run": int(batch.dry_run),
        "status": _stored_status(batch),
        "listing_after": batch.listing_after,
        "listed_all": int(batch.listed_all),
        "error": batch.error,
        "created_at": d.ts_in(batch.created_at),
        "updated_at": d.ts_in(batch.updated_at),
        "finished_at": d.ts_in(batch.finished_at) if batch.finished_at else None,
        "callback_url": batch.callback_url,
    }


def _stored_status(batch: Batch) -> str:
    if batch.callback_url is None:
        return batch.status
    return _OWN_STATUS.get(batch.status, batch.status)


def _batch(row: Row, d: Dialect) -> Batch:
    return Batch(
        id=str(row["id"]),
        key=str(row["batch_key"]),
        source=Location(
            cast(StoreKind, row["source_store"]), row["source_bucket"], row["source_prefix"]
        ),
        target=Location(
            cast(StoreKind, row["target_store"]), row["target_bucket"], row["target_prefix"]
        ),
        options=json.loads(row["options"]),
        dry_run=bool(row["dry_run"]),
        status=cast(BatchStatus, _SHOWN_STATUS.get(row["status"], row["status"])),
        listing_after=row["listing_after"],
        listed_all=bool(row["listed_all"]),
        error=row["error"],
        created_at=d.ts_out(row["created_at"]),
        updated_at=d.ts_out(row["updated_at"]),
        finished_at=d.ts_out(row["finished_at"]) if row["finished_at"] is not None else None,
        callback_url=row["callback_url"],
    )


def _item_params(item: BatchItem, d: Dialect) -> dict[str, Any]:
    return {
        "id": item.id,
        "batch_id": item.batch_id,
        "item_key": item.item_key,
        "source_store": item.source_store,
        "source_bucket": item.source_bucket,
        "source_key": item.source_key,
        "source_tag": item.source_tag,
        "source_size": item.source_size,
        "state": item.state,
        "reason": item.reason,
        "now": d.ts_in(item.created_at),
    }


def _item(row: Row, d: Dialect) -> BatchItem:
    return BatchItem(
        id=str(row["id"]),
        batch_id=str(row["batch_id"]),
        item_key=str(row["item_key"]),
        source_store=cast(StoreKind, row["source_store"]),
        source_bucket=str(row["source_bucket"]),
        source_key=str(row["source_key"]),
        source_tag=str(row["source_tag"]),
        source_size=int(row["source_size"]),
        borrowed=bool(row["borrowed"]),
        state=cast(ItemState, row["state"]),
        target_key=row["target_key"],
        wrote_target=bool(row["wrote_target"]),
        reason=row["reason"],
        faces=row["faces"],
        attempts=int(row["attempts"]),
        created_at=d.ts_out(row["created_at"]),
        updated_at=d.ts_out(row["updated_at"]),
        target_marks=tuple((row["target_marks"] or "").split()),
    )
