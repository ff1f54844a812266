#!/usr/bin/env python3
"""Benchmark of a bucket batch (issue 27, item 6) on a private distributed deployment
(`load_distributed.deployment`: a moto S3 server, a fresh PostgreSQL schema, a fresh
RabbitMQ vhost, one `api`, W `worker`s). Not a test: it prints figures, asserts nothing.

    .venv/bin/python bench/batch.py --count 1000

N small generated JPEGs (every tenth one a downscaled face from the examples) under
one source prefix; it posts the batch and prints: the time to list and enqueue everything
(the batch `running`, its total known), items per second to `done` with the workers, the
p99 of concurrent `POST /picture` during the batch, the database's growth (batch_items),
and the exact counts: objects written under the target prefix, and sources whose ETag
changed (both must be as expected). `--ports FIRST` takes the S3 and API ports from
FIRST on (a shared machine's own range). Not measured here yet: peak memory, a resume
after killing the API mid-listing and a worker mid-run.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import sys
import threading
import time
from pathlib import Path

import boto3
import httpx
import psycopg
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_distributed

# The example pictures live beside the repository (tests/support.py, EXAMPLES).
FACE = Path(__file__).resolve().parents[2] / "shared" / "example-pictures" / "bill-gates.jpg"
SOURCE, TARGET = "bench-batch-src", "bench-batch-dst"


def pictures(count: int) -> list[bytes]:
    face = Image.open(FACE).convert("RGB")
    face.thumbnail((320, 320))
    out = io.BytesIO()
    face.save(out, "JPEG", quality=85)
    with_face = out.getvalue()
    return [with_face if n % 10 == 0 else load_distributed.jpeg(n, 96, 72) for n in range(count)]


def s3_client(endpoint: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def etags(s3: object, bucket: str, prefix: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):  # type: ignore[attr-defined]
        found.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    return found


def uploads_during(url: str, stop: threading.Event, latencies: list[float]) -> None:
    """`POST /picture` one after another while the batch runs: the API's answer times."""
    image = load_distributed.jpeg(7, 640, 480)
    with httpx.Client(base_url=url, timeout=60) as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            answer = http.post("/picture", files={"image": ("u.jpg", image, "image/jpeg")})
            if answer.status_code == 202:
                latencies.append(time.perf_counter() - t0)
            time.sleep(0.2)


def table_bytes(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size(%s)", (f'"{schema}".batch_items',)
        ).fetchone()
    return int(row[0]) if row else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("-w", "--workers", type=int, default=2)
    parser.add_argument("--ports", type=int, help="first of the ports to use (else any free)")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    # The deployment takes its S3 port first, then the API's: remember them.
    given: list[int] = []
    ports = itertools.count(args.ports) if args.ports else None
    pick = load_distributed.free_port

    def port() -> int:
        given.append(next(ports) if ports is not None else pick())
        return given[-1]

    load_distributed.free_port = port
    os.environ["IMAGEBLUR_BATCH_BUCKETS"] = f"{SOURCE},{TARGET}"
    os.environ.setdefault("IMAGEBLUR_BATCH_PUMP_INTERVAL_S", "0.5")
    images = pictures(args.count)
    with load_distributed.deployment(args.workers, 1) as (url, dsn, schema):
        s3 = s3_client(f"http://127.0.0.1:{given[0]}")
        for bucket in (SOURCE, TARGET):
            s3.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        for n, data in enumerate(images):
            s3.put_object(Bucket=SOURCE, Key=f"in/{n:06}.jpg", Body=data)  # type: ignore[attr-defined]
        before = etags(s3, SOURCE, "in/")
        body = {
            "source": {"bucket": SOURCE, "prefix": "in/"},
            "target": {"bucket": TARGET, "prefix": "out/"},
        }
        stop, latencies = threading.Event(), []
        uploader = threading.Thread(target=uploads_during, args=(url, stop, latencies))
        with httpx.Client(base_url=url, timeout=60) as http:
            t0 = time.perf_counter()
            batch = http.post("/batches", json=body).json()
            uploader.start()
            listed_s = done_s = None
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                batch = http.get(f"/batches/{batch['id']}").json()
                if listed_s is None and batch["total"] is not None:
                    listed_s = time.perf_counter() - t0
                if batch["status"] in ("done", "failed", "cancelled"):
                    done_s = time.perf_counter() - t0
                    break
                time.sleep(0.5)
            stop.set()
            uploader.join()
            again = http.post("/batches", json=body)
        written = etags(s3, TARGET, "out/")
        changed = sum(1 for k, v in etags(s3, SOURCE, "in/").items() if before.get(k) != v)
        growth = table_bytes(dsn, schema)
    print(
        f"batch of {args.count} pictures, {args.workers} workers x 1 thread, "
        f"{os.cpu_count()} cores, load {os.getloadavg()}"
    )
    print(
        f"status {batch['status']}: done {batch['done']}, failed {batch['failed']}, "
        f"skipped {batch['skipped']}, faces {batch['faces']}"
    )
    print(f"listed and enqueued (total known): {listed_s:.1f}s" if listed_s else "never listed")
    if done_s:
        print(f"to done: {done_s:.1f}s, {args.count / done_s:.1f} items/s")
    print(
        f"POST /picture during the batch ({len(latencies)}): "
        f"{load_distributed.percentiles(sorted(latencies))}"
    )
    print(f"batch_items on disk: {growth / 1e6:.1f} MB ({growth / max(args.count, 1):.0f} B/item)")
    print(f"target objects: {len(written)} (expected {args.count}); sources changed: {changed}")
    print(f"posted again: {again.status_code}, same id: {again.json().get('id') == batch['id']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
