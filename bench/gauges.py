#!/usr/bin/env python3
"""Cost of the picture gauges on a large PostgreSQL table.

Fills a fresh schema of the machine's PostgreSQL with N rows (1,000 pending, 2% failed,
the rest done), runs ANALYZE, then times `picture_stats` (what a metrics scrape costs
the database, at most once per 15 s per API process) against a plain
`count(*) ... GROUP BY status`, and prints both with the estimated and true counts.
The schema is dropped afterwards. Asserts nothing.

    .venv/bin/python bench/gauges.py [--rows 2000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from provenance import measured_commit

import servers
from imageblur.adapters.postgres_repo import PostgresImageRepository

FILL = (
    "INSERT INTO {s}.images (id, name, status, content_type, bytes, width, height, "
    "input_key, created_at, updated_at) SELECT md5(n::text), 'x.jpg', "
    "CASE WHEN n <= 1000 THEN 'pending' WHEN n %% 50 = 0 THEN 'failed' ELSE 'done' END, "
    "'image/jpeg', 1, 1, 1, 'k', now() - n * interval '1 second', now() "
    "FROM generate_series(1, %s) n"
)


def best_ms(run: object, repeat: int = 5) -> float:
    assert callable(run)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(min(times) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    commit = measured_commit()  # before the run: the code it starts from
    with servers.postgres_schema(servers.ensure_postgres()) as schema:
        ident = sql.Identifier(schema)
        repo = PostgresImageRepository(
            servers.PG_ADMIN_DSN, schema=schema, pool_min=0, pool_max=2, timeout_s=30
        )
        try:
            repo.migrate()
            with psycopg.connect(servers.PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(sql.SQL(FILL).format(s=ident), (args.rows,))
                conn.execute(sql.SQL("ANALYZE {s}.images").format(s=ident))
                count = sql.SQL("SELECT status, count(*) FROM {s}.images GROUP BY status")
                true = dict(conn.execute(count.format(s=ident)).fetchall())
                full_ms = best_ms(lambda: conn.execute(count.format(s=ident)).fetchall())
            stats_ms = best_ms(repo.picture_stats)
            stats = repo.picture_stats()
        finally:
            repo.close()
    print(f"commit {commit}; rows: {args.rows:,}")
    print(f"picture_stats: {stats_ms} ms (best of 5)")
    print(f"count(*) GROUP BY status: {full_ms} ms (best of 5)")
    for status in sorted(true):
        print(f"  {status}: {stats.counts.get(status, 0):,} reported, {true[status]:,} true")


if __name__ == "__main__":
    main()
