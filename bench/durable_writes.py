#!/usr/bin/env python3
"""The durable part of an upload alone, on the embedded default's adapters.

C threads each store an original (random bytes, 106 KB by default) in a local folder
store and add its record to SQLite, then mark it published, as `ImageService.submit`
does, N times in all; in a temporary folder (TMPDIR: put it on the disk to measure).
Prints uploads/s, p50/p99 latency and the fsyncs per upload that Python asks for
(`os.fsync`: the original's, the folder's, the WAL's; SQLite's own checkpoint syncs are
not counted). No HTTP, no decode: what the syncs cost, apart from the API's CPU.

    .venv/bin/python bench/durable_writes.py [--json] [-n 500] [-c 16] [--kib 106]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from load import percentile_ms
from provenance import measured_commit

from imageblur.adapters.local_store import LocalObjectStore
from imageblur.adapters.sqlite_repo import SqliteImageRepository
from records import pending_picture


def counting_fsync() -> tuple[list[int], Callable[[], None]]:
    """Counts `os.fsync` calls from here on; returns the count and the undo."""
    calls, real = [0], os.fsync

    def counted(fd: int) -> None:
        calls[0] += 1
        real(fd)

    os.fsync = counted
    return calls, lambda: setattr(os, "fsync", real)


def run(folder: Path, uploads: int, clients: int, body: bytes) -> dict[str, Any]:
    store = LocalObjectStore(folder / "store")
    repo = SqliteImageRepository(folder / "imageblur.sqlite")
    store.check()
    repo.migrate()
    left, lock, latencies_s = iter(range(uploads)), threading.Lock(), list[float]()

    def client() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            t0, image_id = time.perf_counter(), uuid.uuid4().hex
            store.put(f"{image_id}.jpg", body, content_type="image/jpeg")
            stored = repo.add(pending_picture(at=datetime.now(UTC), image_id=image_id))
            repo.mark_published(image_id, now=datetime.now(UTC), if_updated_at=stored.updated_at)
            with lock:
                latencies_s.append(time.perf_counter() - t0)

    calls, undo = counting_fsync()
    try:
        threads = [threading.Thread(target=client) for _ in range(clients)]
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall_s = time.perf_counter() - t0
    finally:
        undo()
        repo.close()
    return {
        "uploads": uploads,
        "clients": clients,
        "uploads_per_s": round(uploads / wall_s, 1),
        "p50_ms": percentile_ms(latencies_s, 50),
        "p99_ms": percentile_ms(latencies_s, 99),
        "fsyncs_per_upload": round(calls[0] / uploads, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--uploads", type=int, default=500)
    parser.add_argument("-c", "--clients", type=int, default=16, help="threads")
    parser.add_argument("--kib", type=int, default=106, help="size of an original")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imageblur-durable-") as tmp:
        figures = run(Path(tmp), args.uploads, args.clients, os.urandom(args.kib * 1024))
    report = {
        "commit": measured_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        **figures,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"commit {report['commit']}  {report['date']}  {report['machine']}\n"
            f"{figures['uploads_per_s']} uploads/s, p50 {figures['p50_ms']} ms, "
            f"p99 {figures['p99_ms']} ms, {figures['fsyncs_per_upload']} fsyncs per upload "
            f"({args.clients} threads, {args.kib} KiB originals)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
