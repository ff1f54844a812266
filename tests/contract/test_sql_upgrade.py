"""A database left at an earlier schema upgrades with `migrate`: the later migrations are
appended, never renumbered under an existing database, and the rows it holds stay
readable. Three points of main's history: before the `plates` column (SQLite 4,
PostgreSQL 5: `request_id`), before review and correct (SQLite 5, PostgreSQL 6:
`plates`), and before error codes and body digests (SQLite 6, PostgreSQL 7: review)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg import sql

import servers
from imageblur.adapters import postgres_repo, postgres_schema, sqlite_repo, sqlite_schema
from imageblur.backends import Repository
from imageblur.domain import (
    ErrorCode,
    ImageRecord,
    JobKind,
    RepositoryUnavailable,
    Review,
    Status,
)

from .test_image_repository import CORRECTED, T0, detected, record

# The number of migrations a database had before the `plates` column came.
BEFORE_PLATES = {"sqlite": 4, "postgres": 5}
# ... and before review and correct (statuses review and rendering, regions, events).
BEFORE_REVIEW = {"sqlite": 5, "postgres": 6}
# ... and before `error_code` and `body_sha256`.
BEFORE_ERROR_CODES = {"sqlite": 6, "postgres": 7}
# ... and before a batch's counts were kept (bucket batches' target marks the newest).
BEFORE_BATCH_COUNTS = {"sqlite": 16, "postgres": 17}
# The columns of `images` before review and correct.
OLD_COLUMNS = [
    "id",
    "name",
    "status",
    "content_type",
    "bytes",
    "width",
    "height",
    "input_key",
    "output_key",
    "url",
    "faces",
    "plates",
    "error",
    "attempts",
    "lease_owner",
    "lease_expires_at",
    "idempotency_key",
    "request_id",
    "created_at",
    "updated_at",
]


@dataclass
class SqlDatabase:
    name: str
    schema: ModuleType  # the adapter's migrations
    factory: Callable[[], Repository]
    insert_old: Callable[[ImageRecord], None]  # a row as a release before review wrote it
    execute: Callable[[str], None]  # one statement, `{t}` the tables' prefix

    def migrate_to(self, version: int) -> None:
        self.factory().migrate(to_version=version)


def _as_read(rec: ImageRecord) -> ImageRecord:
    """A record written by an older release, as this one reads it."""
    return rec.with_changes(error_code=ErrorCode.INTERNAL_ERROR if rec.error else None)


def _old_row(rec: ImageRecord, timestamp: Callable[[datetime], Any]) -> dict[str, Any]:
    row = {name: getattr(rec, name) for name in OLD_COLUMNS}
    return {k: timestamp(v) if isinstance(v, datetime) else v for k, v in row.items()}


@pytest.fixture(params=["sqlite", "postgres"])
def sql_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlDatabase]:
    if request.param == "sqlite":
        path = tmp_path / "m.db"

        def insert_sqlite(rec: ImageRecord) -> None:
            marks = ", ".join(f":{name}" for name in OLD_COLUMNS)
            with sqlite3.connect(path) as conn:
                conn.execute(
                    f"INSERT INTO images ({', '.join(OLD_COLUMNS)}) VALUES ({marks})",
                    _old_row(rec, sqlite_repo._ts),
                )
            conn.close()

        def execute_sqlite(text: str) -> None:
            with sqlite3.connect(path) as conn:
                conn.execute(text.replace("{t}", ""))
            conn.close()

        yield SqlDatabase(
            "sqlite",
            sqlite_schema,
            lambda: sqlite_repo.SqliteImageRepository(path),
            insert_sqlite,
            execute_sqlite,
        )
        return
    request.getfixturevalue("postgres_dsn")  # started if down
    with servers.postgres_schema() as schema:
        made: list[postgres_repo.PostgresRepository] = []

        def factory() -> Repository:
            made.append(
                postgres_repo.PostgresImageRepository(
                    servers.PG_ADMIN_DSN, schema=schema, pool_min=1, pool_max=2, timeout_s=5
                )
            )
            return made[-1]

        def insert_postgres(rec: ImageRecord) -> None:
            query = sql.SQL("INSERT INTO {s}.images ({c}) VALUES ({v})").format(
                s=sql.Identifier(schema),
                c=sql.SQL(", ").join(map(sql.Identifier, OLD_COLUMNS)),
                v=sql.SQL(", ").join(map(sql.Placeholder, OLD_COLUMNS)),
            )
            with psycopg.connect(servers.PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(query, _old_row(rec, lambda at: at))

        def execute_postgres(text: str) -> None:
            with psycopg.connect(servers.PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(text.replace("{t}", f'"{schema}".').encode())

        yield SqlDatabase("postgres", postgres_schema, factory, insert_postgres, execute_postgres)
        for repo in made:
            repo.close()


def test_a_database_before_plates_upgrades(sql_db: SqlDatabase) -> None:
    all_migrations = sql_db.schema.MIGRATIONS
    assert "request_id" in all_migrations[BEFORE_PLATES[sql_db.name] - 1]
    assert "plates" in all_migrations[BEFORE_PLATES[sql_db.name]]
    sql_db.migrate_to(BEFORE_PLATES[sql_db.name])

    repo = sql_db.factory()
    with pytest.raises(RepositoryUnavailable):  # a column this release writes is missing
        repo.add(record())
    repo.migrate()
    rec = record(plates=2, faces=1, request_id="req-1")
    assert repo.add(rec) == rec
    assert repo.get(rec.id) == rec


def test_a_database_before_review_upgrades_keeping_its_rows(sql_db: SqlDatabase) -> None:
    all_migrations = sql_db.schema.MIGRATIONS
    assert "plates" in all_migrations[BEFORE_REVIEW[sql_db.name] - 1]
    assert "rendering" in all_migrations[BEFORE_REVIEW[sql_db.name]]
    sql_db.migrate_to(BEFORE_REVIEW[sql_db.name])
    old = [
        record(status=Status.DONE, output_key="o", url="u", faces=2, plates=1, key="idem"),
        record(status=Status.FAILED, error="corrupt", attempts=3, request_id="req-9"),
        record(
            status=Status.PROCESSING,
            lease_owner="w-old",
            lease_expires_at=T0 + timedelta(seconds=30),
            attempts=1,
        ),
        record(),
    ]
    for rec in old:
        sql_db.insert_old(rec)
    repo = sql_db.factory()
    with pytest.raises(RepositoryUnavailable, match="migrate"):
        repo.check()
    repo.migrate()
    repo.check()

    # Every row reads as it was: never held, revision 0, no regions, no history; an error
    # without a code is an internal one.
    old = [_as_read(rec) for rec in old]
    for rec in old:
        assert rec.review is None and rec.revision == 0 and rec.held_until is None
        assert repo.get(rec.id) == rec
        assert repo.regions(rec.id) == (0, [])
        assert repo.history(rec.id) == []
    assert repo.get_many([r.id for r in old]) == {r.id: r for r in old}
    assert repo.add(record(key="idem")).id == old[0].id  # the unique key survived

    # The upgraded table takes the new statuses: detected into review, then corrected.
    pending = old[3]
    detected(repo, rec=pending, hold_until=T0 + timedelta(days=1))
    held = repo.get(pending.id)
    assert held is not None and (held.status, held.review) == (Status.REVIEW, Review.PENDING)
    fixed = repo.correct(pending.id, expected_revision=0, regions=CORRECTED, role="api", now=T0)
    assert fixed.status is Status.RENDERING
    assert repo.claim(pending.id, owner="w", lease_s=30, now=T0, kind=JobKind.RENDER)
    assert [e.action for e in repo.history(pending.id)] == ["processed", "corrected"]


def test_a_database_before_error_codes_upgrades(sql_db: SqlDatabase) -> None:
    all_migrations = sql_db.schema.MIGRATIONS
    assert "image_events" in all_migrations[BEFORE_ERROR_CODES[sql_db.name] - 1]
    assert "error_code" in all_migrations[BEFORE_ERROR_CODES[sql_db.name]]
    sql_db.migrate_to(BEFORE_ERROR_CODES[sql_db.name])
    failed = record(status=Status.FAILED, error="gave up: internal error: KeyError: 'x'")
    retrying = record(error="object store: S3 get_object failed: EndpointConnectionError")
    keyed = record(status=Status.DONE, output_key="o", url="u", faces=0, key="old-key")
    for rec in (failed, retrying, keyed):
        sql_db.insert_old(rec)
    repo = sql_db.factory()
    with pytest.raises(RepositoryUnavailable, match="migrate"):
        repo.check()
    repo.migrate()
    repo.check()

    # An error of an older release reads as internal_error; its text stays as it was.
    for rec in (failed, retrying):
        got = repo.get(rec.id)
        assert got is not None and got.error == rec.error
        assert got.error_code is ErrorCode.INTERNAL_ERROR
    assert repo.get(keyed.id) == keyed  # no error: no code
    # A key stored without a digest: the replay returns it with none (counted as a match).
    again = repo.add(record(key="old-key", body_sha256="c" * 64))
    assert again == keyed and again.body_sha256 is None
    # New rows carry both.
    rec = record(key="new-key", body_sha256="d" * 64)
    assert repo.add(rec) == rec
    assert repo.claim(rec.id, owner="w", lease_s=30, now=T0)
    assert repo.fail(rec.id, owner="w", error="gone", code=ErrorCode.ORIGINAL_MISSING, now=T0)
    got = repo.get(rec.id)
    assert got is not None and got.error_code is ErrorCode.ORIGINAL_MISSING


def test_migrate_stops_at_the_version_asked_for(sql_db: SqlDatabase) -> None:
    repo = sql_db.factory()
    repo.migrate(to_version=BEFORE_ERROR_CODES[sql_db.name])
    with pytest.raises(RepositoryUnavailable, match="this release needs"):
        repo.check()
    repo.migrate(to_version=BEFORE_REVIEW[sql_db.name])  # never backwards: nothing to do
    with pytest.raises(ValueError, match="no schema version"):
        repo.migrate(to_version=sql_db.schema.LATEST + 1)
    repo.migrate()
    repo.check()


def test_a_database_with_batches_upgrades_to_kept_counts(sql_db: SqlDatabase) -> None:
    """A batch's items as the release before kept counts wrote them: its counts are
    filled from them by the migration, and move with its items from there."""
    sql_db.migrate_to(BEFORE_BATCH_COUNTS[sql_db.name])
    at = "2030-01-01T12:00:00.000000Z"
    sql_db.execute(
        "INSERT INTO {t}batches (id, batch_key, source_store, source_bucket, source_prefix, "
        "target_store, target_bucket, target_prefix, options, dry_run, status, listed_all, "
        f"created_at, updated_at) VALUES ('bat_{'0' * 32}', 'k', 's3', 'in', 'p/', 's3', "
        f"'out', 'q/', '{{}}', 0, 'running', 1, '{at}', '{at}')"
    )
    states = [
        ("listed", None, None),
        ("processing", None, None),
        ("done", None, 2),
        ("done", None, 3),
        ("failed", "x", None),
        ("skipped", "target_exists", None),
    ]
    for n, (state, reason, faces) in enumerate(states):
        sql_db.execute(
            "INSERT INTO {t}batch_items (id, batch_id, item_key, source_store, source_bucket, "
            "source_key, source_tag, source_size, state, reason, faces, created_at, updated_at) "
            f"VALUES ('img_{n:032}', 'bat_{'0' * 32}', 'i{n}', 's3', 'in', 'p/{n}', 'e', 1, "
            f"'{state}', {_literal(reason)}, {_literal(faces)}, '{at}', '{at}')"
        )
    repo = sql_db.factory()
    repo.migrate()
    got = repo.get_batch("bat_" + "0" * 32)
    assert got is not None
    c = got.counts
    assert (c.listed, c.queued, c.done, c.failed, c.faces) == (6, 1, 2, 1, 5)
    assert dict(c.skipped) == {"target_exists": 1}
    assert repo.retry_failed(got.id, now=T0) == 1
    assert repo.get_batch(got.id).counts.failed == 0  # type: ignore[union-attr]


def _literal(value: object) -> str:
    return "NULL" if value is None else f"'{value}'" if isinstance(value, str) else str(value)
