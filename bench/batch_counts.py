#!/usr/bin/env python3
"""What reading a big bucket batch costs on PostgreSQL, and what its items' changes cost.

Fills a fresh schema of the machine's PostgreSQL with one batch of N items through the
repository (`add_items`, pages of 1,000, as the pump lists), ends 500 of them (claim
and finish: done, failed, skipped), runs ANALYZE, then times `get_batch` and
`list_batches` (what `GET /batches/{id}` and `GET /batches` cost the database) and the
claim + finish of an item. It only calls the repository's interface, so the same script
measures another checkout: run it with `PYTHONPATH=<that checkout>/src` (the figure for
main before counts were kept). The schema is dropped afterwards. Asserts nothing.

    .venv/bin/python bench/batch_counts.py [--count 200000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from provenance import measured_commit

import imageblur
import servers
from imageblur.adapters.postgres_repo import PostgresImageRepository
from imageblur.batches.model import Batch, BatchItem, Location, SourceObject
from records import listed_items, listing_batch

PAGE = 1000
ENDED = 500
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _page(batch: Batch, start: int, count: int) -> list[BatchItem]:
    objects = (
        SourceObject(key=f"p/{n:09}.jpg", size=1000, tag=f"e{n}")
        for n in range(start, min(start + PAGE, count))
    )
    return listed_items(batch, objects, at=T0)


def _timed(step: object, runs: int) -> list[float]:
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        step()  # type: ignore[operator]
        took.append(time.perf_counter() - start)
    return took


def _ms(took: list[float]) -> str:
    return f"median {statistics.median(took) * 1000:.2f} ms, max {max(took) * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(f"code: {Path(imageblur.__file__).parent} ; {measured_commit()}")
    print(f"load: {os.getloadavg()}")
    schema = servers.unique("bench_counts")
    repo = PostgresImageRepository(
        servers.PG_ADMIN_DSN, schema=schema, pool_min=1, pool_max=2, timeout_s=30
    )
    try:
        repo.migrate()
        source, target = Location("s3", "in", "p/"), Location("s3", "out", "q/")
        batch, _ = repo.add_batch(listing_batch(source, target, at=T0), max_running=10)
        start = time.perf_counter()
        for first in range(0, args.count, PAGE):
            end = first + PAGE >= args.count
            page = _page(batch, first, args.count)
            repo.add_items(batch.id, page, after=page[-1].source_key, listed_all=end, now=T0)
        print(f"{args.count} items added in {time.perf_counter() - start:.1f} s")
        ends = ["done", "failed", "skipped"]
        items = list(repo.to_publish(batch.id, window=ENDED))
        start = time.perf_counter()
        for n, item in enumerate(items):
            at = T0 + timedelta(seconds=n)
            repo.claim_item(item.id, owner="b", lease_s=60, now=at)
            state = ends[n % 3]
            reason = None if state == "done" else "target_exists"
            repo.finish_item(item.id, owner="b", state=state, reason=reason, faces=1, now=at)
        per_item = (time.perf_counter() - start) / len(items)
        print(f"claim + finish of an item: {per_item * 1000:.2f} ms ({len(items)} items)")
        with psycopg.connect(servers.PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'ANALYZE "{schema}".batch_items')
        got = repo.get_batch(batch.id)
        assert got is not None
        print(
            f"counts: listed {got.counts.listed}, done {got.counts.done}, "
            f"failed {got.counts.failed}, skipped {dict(got.counts.skipped)}"
        )
        print(f"get_batch: {_ms(_timed(lambda: repo.get_batch(batch.id), args.runs))}")
        listing = _timed(lambda: repo.list_batches(limit=20), args.runs)
        print(f"list_batches (1 batch): {_ms(listing)}")
    finally:
        repo.close()
        with psycopg.connect(servers.PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
