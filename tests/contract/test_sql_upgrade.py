"""A database left at main's schema before the `plates` column (SQLite 4, PostgreSQL 5:
`request_id`) upgrades with `migrate`: the later migrations are appended, never renumbered
under an existing database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

import servers
from imageblur.adapters import postgres_repo, sqlite_repo
from imageblur.domain import RepositoryUnavailable
from imageblur.ports import ImageRepository

from .test_image_repository import record

# The number of migrations a database had before the `plates` column came.
BEFORE_PLATES = {"sqlite": 4, "postgres": 5}


@pytest.fixture(params=["sqlite", "postgres"])
def sql_repo(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, ModuleType, Callable[[], ImageRepository]]]:
    if request.param == "sqlite":
        yield "sqlite", sqlite_repo, lambda: sqlite_repo.SqliteImageRepository(tmp_path / "m.db")
        return
    request.getfixturevalue("postgres_dsn")  # started if down
    with servers.postgres_schema() as schema:
        made: list[postgres_repo.PostgresImageRepository] = []

        def factory() -> ImageRepository:
            made.append(
                postgres_repo.PostgresImageRepository(
                    servers.PG_ADMIN_DSN, schema=schema, pool_min=1, pool_max=2, timeout_s=5
                )
            )
            return made[-1]

        yield "postgres", postgres_repo, factory
        for repo in made:
            repo.close()


def test_a_database_before_plates_upgrades(
    sql_repo: tuple[str, ModuleType, Callable[[], ImageRepository]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, module, factory = sql_repo
    all_migrations = module._MIGRATIONS
    assert "request_id" in all_migrations[BEFORE_PLATES[name] - 1]
    assert "plates" in all_migrations[BEFORE_PLATES[name]]
    with monkeypatch.context() as patch:
        patch.setattr(module, "_MIGRATIONS", all_migrations[: BEFORE_PLATES[name]])
        factory().migrate()

    repo = factory()
    with pytest.raises(RepositoryUnavailable):  # a column this release writes is missing
        repo.add(record())
    repo.migrate()
    rec = record(plates=2, faces=1, request_id="req-1")
    assert repo.add(rec) == rec
    assert repo.get(rec.id) == rec
