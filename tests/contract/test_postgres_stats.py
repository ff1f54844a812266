"""The picture gauges on a large PostgreSQL table: open statuses counted exactly, the
finished ones taken from the planner's statistics instead of a count per scrape; videos
left out."""

from __future__ import annotations

import psycopg
from psycopg import sql

import servers
from imageblur.adapters import postgres_repo
from imageblur.adapters.postgres_repo import PostgresImageRepository

DONE_ROWS = 150_000  # past the exact-count limit
VIDEO_ROWS = 30_000


def test_a_large_table_is_estimated_and_the_open_statuses_counted(postgres_dsn: str) -> None:
    with servers.postgres_schema(postgres_dsn) as schema:
        repo = PostgresImageRepository(
            servers.PG_ADMIN_DSN, schema=schema, pool_min=0, pool_max=2, timeout_s=5
        )
        try:
            repo.migrate()
            with psycopg.connect(servers.PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {s}.images (id, name, status, content_type, bytes, width, "
                        "height, input_key, created_at, updated_at) "
                        "SELECT md5(n::text), 'x.jpg', CASE WHEN n <= 7 THEN 'pending' "
                        "ELSE 'done' END, 'image/jpeg', 1, 1, 1, 'k', "
                        "now() - n * interval '1 second', now() FROM generate_series(1, %s) n"
                    ).format(s=sql.Identifier(schema)),
                    (DONE_ROWS + 7,),
                )
                # Videos share the table and its finished statuses: left out.
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {s}.images (id, name, status, content_type, bytes, width, "
                        "height, input_key, created_at, updated_at, kind) "
                        "SELECT md5('v' || n), 'x.mp4', CASE WHEN n <= 3 THEN 'video_pending' "
                        "ELSE 'done' END, 'video/mp4', 1, 1, 1, 'k', now(), now(), 'video' "
                        "FROM generate_series(1, %s) n"
                    ).format(s=sql.Identifier(schema)),
                    (VIDEO_ROWS,),
                )
                conn.execute(sql.SQL("ANALYZE {s}.images").format(s=sql.Identifier(schema)))
                # The exact counts read their partial indexes, never the whole table.
                counting = sql.SQL("EXPLAIN " + postgres_repo._EXACT_COUNTS)
                plan = conn.execute(counting.format(s=sql.Identifier(schema))).fetchall()
            stats = repo.picture_stats()
        finally:
            repo.close()
    assert not [line for (line,) in plan if "Seq Scan" in line], plan
    assert stats.counts["pending"] == 7  # exact: from the partial index of open rows
    assert "video_pending" not in stats.counts
    assert abs(stats.counts["done"] - DONE_ROWS) < DONE_ROWS * 0.05  # the estimate
    assert stats.oldest_pending_at is not None
