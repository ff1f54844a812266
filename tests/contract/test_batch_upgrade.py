"""A batch with its own `callback_url` is kept from the pods of release 557906e, which
would send its `batch.done` to the operator's URL (docs/operations.md, "Upgrading from
the previous release"): on SQLite and PostgreSQL, as this release writes it, 557906e's
statements (frozen in `release_557906e.py`) never list, claim, re-publish, settle, fail
nor cancel it or its items; this release ends it, and its event goes to its own URL.
Each step also shows the same statements taking a batch without one (which 557906e's
pods keep running), so that "never" is not a broken harness. Such a batch, whose items
557906e's workers end without counting them, still fills its window and ends with right
counts. The migration that allows those statuses keeps the batches stored before it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import servers
from contract import previous_release as prev
from contract import release_557906e as old
from imageblur.adapters import postgres_schema, sqlite_schema
from imageblur.adapters.postgres_repo import PostgresImageRepository
from imageblur.adapters.sqlite_repo import SqliteImageRepository
from imageblur.backends import Repository
from imageblur.batches.model import Batch, Location

from .test_batch_records import batch, items
from .test_image_repository import T0

OPERATOR = "https://hooks.example/in"
OWN = "https://client.example/h"
# Runs one of 557906e's statements on the database: the ids it returned.
OldRun = Callable[[str, dict[str, Any]], set[str]]


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Repository, OldRun]]:
    """This release's repository (migrated, the operator's URL set) and a way to run
    557906e's statements on the same database."""
    if request.param == "sqlite":
        path = tmp_path / "meta.sqlite3"
        repo: Repository = SqliteImageRepository(path, webhook_url=OPERATOR)
        repo.migrate()
        conn = sqlite3.connect(path, isolation_level=None)

        def run_sqlite(statement: str, params: dict[str, Any]) -> set[str]:
            values = {k: _sqlite_ts(v) for k, v in params.items()}
            query = statement.replace("{t}", "")
            return {row[0] for row in conn.execute(query, values).fetchall()}

        try:
            yield repo, run_sqlite
        finally:
            conn.close()
            repo.close()
        return
    with servers.postgres_schema(request.getfixturevalue("postgres_dsn")) as schema:
        repo = PostgresImageRepository(
            servers.PG_ADMIN_DSN,
            schema=schema,
            pool_min=1,
            pool_max=2,
            timeout_s=5,
            webhook_url=OPERATOR,
        )
        repo.migrate()
        pg = psycopg.connect(servers.PG_ADMIN_DSN, autocommit=True, connect_timeout=5)

        def run_postgres(statement: str, params: dict[str, Any]) -> set[str]:
            query = prev.sql(statement.replace("{t}", f'"{schema}".'), "postgres")
            return {row[0] for row in pg.execute(query, params).fetchall()}

        try:
            yield repo, run_postgres
        finally:
            pg.close()
            repo.close()


def _sqlite_ts(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def _status(repo: Repository, of: Batch) -> str:
    got = repo.get_batch(of.id)
    assert got is not None
    return got.status


def _pair(repo: Repository, name: str) -> tuple[Batch, Batch]:
    """A batch with its own callback_url and one without, from sources named `name`."""
    own = replace(batch(source=Location("s3", "in", f"{name}-own/")), callback_url=OWN)
    plain = batch(source=Location("s3", "in", f"{name}-plain/"))
    return repo.add_batch(own, max_running=10)[0], repo.add_batch(plain, max_running=10)[0]


def test_a_batch_with_its_own_callback_is_never_listed_by_a_557906e_pump(
    database: tuple[Repository, OldRun],
) -> None:
    repo, run = database
    own, plain = _pair(repo, "listing")
    assert _status(repo, own) == "listing"
    assert run(old.OPEN_BATCHES, {}) == {plain.id}
    assert run(old.LISTING, {"id": own.id}) == set()
    assert run(old.LISTING, {"id": plain.id}) == {plain.id}


def test_a_557906e_pod_never_takes_nor_ends_a_batch_with_its_own_callback(
    database: tuple[Repository, OldRun],
) -> None:
    repo, run = database
    own, plain = _pair(repo, "run")
    ids = {}
    for b in (own, plain):  # one item queued (its message published), one listed
        listed = items(b, ["a.jpg", "b.jpg"])
        repo.add_items(b.id, listed, after="b.jpg", listed_all=True, now=T0)
        repo.mark_queued([listed[0].id], now=T0)
        ids[b.id] = [i.id for i in listed]
    own_items, plain_items = ids[own.id], ids[plain.id]
    assert _status(repo, own) == "running"
    assert run(old.OPEN_BATCHES, {}) == {plain.id}
    # Its workers: the message of an item is acked and dropped, the item left as it was.
    later = T0 + timedelta(hours=1)
    claim = {"owner": "old", "now": later, "until": later + timedelta(minutes=5)}
    assert all(run(old.CLAIM_ITEM, {**claim, "id": i}) == set() for i in own_items)
    assert all(run(old.CLAIM_ITEM, {**claim, "id": i}) == {i} for i in plain_items)
    # Its pump re-publishes none of them, however long they wait.
    stale = {"now": later + timedelta(hours=1), "before": later, "limit": 100}
    assert run(old.REQUEUE_STALE_ITEMS, stale) == set(plain_items)
    # Every item of it ended (by this release's workers): still 557906e's pump does not
    # settle it, nor its pump fail it, nor its API cancel it.
    for item_id in own_items:
        assert repo.claim_item(item_id, owner="new", lease_s=60, now=later) is not None
        assert repo.finish_item(item_id, owner="new", state="done", now=later)
    ended_plain = repo.add_batch(batch(source=Location("s3", "in", "empty/")), max_running=10)[0]
    repo.add_items(ended_plain.id, [], after=None, listed_all=True, now=T0)
    assert run(old.SETTLE_BATCHES, {"now": later}) == {ended_plain.id}
    ending = {"now": later, "error": "access denied"}
    assert run(old.FAIL_BATCH, {**ending, "id": own.id}) == set()
    assert run(old.CANCEL_BATCH, {**ending, "id": own.id}) == set()
    assert run(old.CANCEL_BATCH, {**ending, "id": plain.id}) == {plain.id}
    assert repo.webhooks(own.id) == []
    # This release settles it, and its batch.done goes to its own URL.
    assert [b.id for b in repo.settle_batches(now=later)] == [own.id]
    got = repo.get_batch(own.id)
    assert got is not None and (got.status, got.callback_url) == ("done", OWN)
    (row,) = repo.webhooks(own.id)
    assert (row.event, row.url, row.to_operator) == ("batch.done", OWN, False)


def test_this_release_keeps_a_retried_batch_with_its_own_callback_from_557906e(
    database: tuple[Repository, OldRun],
) -> None:
    """A retry reopens it under its own statuses again."""
    repo, run = database
    own, _ = _pair(repo, "retry")
    (item,) = items(own, ["a.jpg"])
    repo.add_items(own.id, [item], after="a.jpg", listed_all=True, now=T0)
    assert repo.claim_item(item.id, owner="new", lease_s=60, now=T0) is not None
    assert repo.finish_item(item.id, owner="new", state="failed", now=T0)
    assert [b.id for b in repo.settle_batches(now=T0)] == [own.id]
    assert repo.retry_failed(own.id, now=T0) == 1
    assert _status(repo, own) == "running"
    assert own.id not in run(old.OPEN_BATCHES, {})


@pytest.mark.parametrize("repo_factory", ["sqlite", "postgres"], indirect=True)  # a schema each
def test_the_migration_keeps_the_batches_a_557906e_schema_holds(
    repo_factory: Callable[[], Repository],
) -> None:
    """SQLite 16 rebuilds `batches` (PostgreSQL 17 widens its check in place): a batch
    stored before it is read back as it was, and still answers a post of the same batch."""
    repo = repo_factory()
    if isinstance(repo, SqliteImageRepository):
        before = len(sqlite_schema.MIGRATIONS) - 1
    elif isinstance(repo, PostgresImageRepository):
        before = len(postgres_schema.MIGRATIONS) - 1
    else:
        raise AssertionError(f"{type(repo).__name__} has no schema")
    repo.migrate(to_version=before)
    stored, _ = repo.add_batch(batch(source=Location("s3", "in", "kept/")), max_running=10)
    repo.add_items(stored.id, items(stored, ["a.jpg"]), after="a.jpg", listed_all=True, now=T0)
    repo.migrate()
    got = repo.get_batch(stored.id)
    assert got is not None
    assert (got.status, got.key, got.total, got.callback_url) == ("running", stored.key, 1, None)
    again, created = repo.add_batch(batch(source=Location("s3", "in", "kept/")), max_running=10)
    assert (again.id, created) == (stored.id, False)


def test_items_a_557906e_worker_ends_leave_room_and_are_counted_at_the_end(
    database: tuple[Repository, OldRun],
) -> None:
    """A batch without a callback_url runs on both releases' workers: those of 557906e
    end items without counting them; this release's pump still tops the window up, and
    the batch's counts are right once it ends."""
    repo, run = database
    _, plain = _pair(repo, "window")
    keys = ["a.jpg", "b.jpg", "c.jpg"]
    repo.add_items(plain.id, items(plain, keys), after="c.jpg", listed_all=True, now=T0)
    first = repo.to_publish(plain.id, window=2)
    repo.mark_queued([i.id for i in first], now=T0)
    claim = {"owner": "old", "now": T0, "until": T0 + timedelta(minutes=5)}
    end = {"owner": "old", "now": T0, "state": "done", "reason": None, "faces": 0}
    for item in first:
        assert run(old.CLAIM_ITEM, {**claim, "id": item.id}) == {item.id}
        ended = {**end, "id": item.id, "target_key": f"out/{item.source_key}", "wrote": 1}
        assert run(old.FINISH_ITEM, ended) == {item.id}
    (last,) = repo.to_publish(plain.id, window=2)
    assert last.source_key == "c.jpg"
    # This release ends the last one and settles the batch: its counts are right,
    # those two included.
    assert repo.claim_item(last.id, owner="new", lease_s=60, now=T0) is not None
    assert repo.finish_item(last.id, owner="new", state="done", now=T0, faces=2)
    assert [b.id for b in repo.settle_batches(now=T0)] == [plain.id]
    got = repo.get_batch(plain.id)
    assert got is not None
    c = got.counts
    assert (got.total, c.done, c.queued, c.failed, c.faces) == (3, 3, 0, 0, 2)
