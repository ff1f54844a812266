#!/usr/bin/env python3
"""Benchmark of a bucket batch (issue 27, item 6) on a private distributed deployment
(`load_distributed.deployed`: a moto S3 server, a fresh PostgreSQL schema, a fresh
RabbitMQ vhost, one `api`, W `worker`s). Not a test: it prints figures, asserts nothing.

    .venv/bin/python bench/batch.py --count 100000 --throughput-items 10000 --resume-count 2000

N small generated JPEGs (every tenth one a downscaled face from the examples) under one
source prefix, put with 8 threads; then it posts the batch and prints: the time to list
and enqueue everything (the batch `running`, its total known) beside the time the S3
server alone takes for one page of the listing (moto's grows with the bucket: at 100,000
objects it bounds the listing), items per second to
`done` with the workers (over the first `--throughput-items` if given: the batch is then
stopped with `DELETE` there), the p99 of concurrent `POST /picture` during the batch,
the peak memory (RSS of the process and its children, sampled every 0.5 s, and the
kernel's own high-water mark) of the API and of each worker, the database's growth (every
table of the schema, indexes included, before and after) and `batch_items` per item, and
exact counts: objects under the target prefix against the items done, keys missing or
extra, sources whose ETag changed, the same batch posted again.

The resume phase (`--resume-count`, 0 to skip) runs another batch over its own prefix
with the API killed (SIGKILL) while the batch is listing and the worker holding the
batch pump's lease killed once a quarter of the items are done, each started again at
once (as a supervisor would), and prints the exact counts: every source anonymized
exactly once (one `done` item that wrote its key for each source, no key missing, none
extra), every source unchanged. The killed worker's item waits out its lease
(`IMAGEBLUR_LEASE_S`, 30 s here unless set) before the pump publishes it again.

`--ports FIRST` takes the S3 and API ports FIRST and FIRST+1 (a shared machine's own
range); `--json` prints one JSON line of the figures last.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_distributed
from provenance import measured_commit

# The example pictures live beside the repository (tests/support.py, EXAMPLES).
FACE = Path(__file__).resolve().parents[2] / "shared" / "example-pictures" / "bill-gates.jpg"
SOURCE, TARGET = "bench-batch-src", "bench-batch-dst"
ENDED = ("done", "failed", "cancelled")


def pictures(count: int) -> list[bytes]:
    face = Image.open(FACE).convert("RGB")
    face.thumbnail((320, 320))
    out = io.BytesIO()
    face.save(out, "JPEG", quality=85)
    with_face = out.getvalue()
    return [with_face if n % 10 == 0 else load_distributed.jpeg(n, 96, 72) for n in range(count)]


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def put_all(s3: Any, prefix: str, images: list[bytes]) -> None:
    def put(n: int) -> None:
        s3.put_object(Bucket=SOURCE, Key=f"{prefix}{n:06}.jpg", Body=images[n])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(len(images))))


def etags(s3: Any, bucket: str, prefix: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    return found


def list_page_s(s3: Any, after: str) -> float:
    """One page of the source as the pump asks for it: what the S3 server itself takes
    (moto's grows with the bucket's size; S3's does not)."""
    t0 = time.perf_counter()
    s3.list_objects_v2(Bucket=SOURCE, Prefix="in/", StartAfter=after, MaxKeys=1000)
    return time.perf_counter() - t0


# --- what the processes hold ---------------------------------------------------------------


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and of all its descendants (a decoder run in a sandbox, say)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(_status_kb(p, "VmRSS") for p in tree) * 1024


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """The largest RSS each named process (with its children) was seen at, and its own
    high-water mark (VmHWM, between samples too); a process started again counts under
    its name."""

    def __init__(self, procs: dict[str, subprocess.Popen[bytes]], names: list[str]) -> None:
        self._procs, self._names = procs, names
        self._peak = dict.fromkeys(names, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for name in self._names:
            pid = self._procs[name].pid
            seen = max(tree_rss_bytes(pid), _status_kb(pid, "VmHWM") * 1024)
            self._peak[name] = max(self._peak[name], seen)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def stop(self) -> dict[str, float]:
        """Peak MB by process name."""
        self._stop.set()
        self._thread.join()
        self._sample()
        return {name: round(peak / 1e6, 1) for name, peak in self._peak.items()}


def schema_bytes(dsn: str, schema: str) -> int:
    """Every table of the schema with its indexes and TOAST."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
    return int(row[0]) if row else 0


def table_bytes(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size(%s)", (f'"{schema}".batch_items',)
        ).fetchone()
    return int(row[0]) if row else 0


def item_counts(dsn: str, schema: str, batch_id: str) -> dict[str, Any]:
    """What the batch's rows say: items, distinct sources, items that wrote their key,
    items by state and reason, items that took more than one attempt."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT source_key), COALESCE(SUM(wrote_target), 0), "
            "COUNT(DISTINCT target_key) FILTER (WHERE wrote_target = 1), "
            "COUNT(*) FILTER (WHERE attempts > 1) "
            f'FROM "{schema}".batch_items WHERE batch_id = %s',
            (batch_id,),
        ).fetchone()
        states = conn.execute(
            "SELECT state || COALESCE(':' || reason, ''), COUNT(*) "
            f'FROM "{schema}".batch_items WHERE batch_id = %s GROUP BY 1',
            (batch_id,),
        ).fetchall()
    assert row is not None
    items, sources, wrote, written_keys, retried = (int(v) for v in row)
    return {
        "items": items,
        "distinct_sources": sources,
        "wrote_target": wrote,
        "distinct_written_keys": written_keys,
        "more_than_one_attempt": retried,
        "by_state": {str(s): int(n) for s, n in states},
    }


def exact(
    s3: Any, src: str, dst: str, before: dict[str, str], counts: dict[str, Any]
) -> dict[str, Any]:
    """Target keys against the items that wrote them, and the sources against `before`."""
    written = etags(s3, TARGET, dst)
    after = etags(s3, SOURCE, src)
    expected = {dst + key.removeprefix(src) for key in before}
    return {
        "target_objects": len(written),
        "target_missing": len(expected - set(written)) if counts["items"] == len(before) else None,
        "target_extra": len(set(written) - expected),
        "sources": len(after),
        "sources_changed": sum(1 for k, v in before.items() if after.get(k) != v),
        "sources_gone": len(set(before) - set(after)),
        **counts,
    }


# --- the batch -----------------------------------------------------------------------------


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


def body(src: str, dst: str) -> dict[str, Any]:
    return {
        "source": {"bucket": SOURCE, "prefix": src},
        "target": {"bucket": TARGET, "prefix": dst},
    }


def get_batch(url: str, batch_id: str) -> dict[str, Any]:
    """The batch, asked until the API answers (it may be starting again)."""
    for _ in range(600):
        try:
            answer = httpx.get(f"{url}/batches/{batch_id}", timeout=10)
            if answer.status_code == 200:
                found: dict[str, Any] = answer.json()
                return found
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"GET /batches/{batch_id}: no answer for a minute")


def follow(
    url: str,
    batch_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout_s: float,
    tick_s: float,
) -> tuple[dict[str, Any], float | None]:
    """Polls the batch until `until` holds: the batch, and the seconds it took (None on
    timeout)."""
    t0, deadline = time.perf_counter(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = get_batch(url, batch_id)
        if until(batch):
            return batch, time.perf_counter() - t0
        time.sleep(tick_s)
    return get_batch(url, batch_id), None


def throughput_phase(run: load_distributed.Deployment, args: argparse.Namespace) -> dict[str, Any]:
    s3 = s3_client(run.s3_url)
    t0 = time.perf_counter()
    put_all(s3, "in/", pictures(args.count))
    put_s = time.perf_counter() - t0
    before = etags(s3, SOURCE, "in/")
    page_s = list_page_s(s3, f"in/{args.count // 2:06}.jpg")
    db_before = schema_bytes(run.dsn, run.schema)
    memory = PeakMemory(run.procs, [n for n in run.procs if n != "s3"])
    stop, latencies = threading.Event(), list[float]()
    uploader = threading.Thread(target=uploads_during, args=(run.url, stop, latencies))
    goal = min(args.throughput_items or args.count, args.count)
    t_post = time.perf_counter()
    batch = httpx.post(f"{run.url}/batches", json=body("in/", "out/"), timeout=60).json()
    uploader.start()
    batch, listed_s = follow(
        run.url,
        batch["id"],
        lambda b: b["total"] is not None or b["status"] in ENDED,
        args.timeout,
        0.5,
    )
    done_at_listed = batch["done"]
    batch, _ = follow(
        run.url,
        batch["id"],
        lambda b: b["done"] >= goal or b["status"] in ENDED,
        args.timeout,
        0.5,
    )
    t_goal, done_seen = time.perf_counter(), batch["done"]
    stop.set()
    uploader.join()
    again = httpx.post(f"{run.url}/batches", json=body("in/", "out/"), timeout=60)
    if batch["status"] not in ENDED:  # stopped at --throughput-items: what ran, ends
        httpx.delete(f"{run.url}/batches/{batch['id']}", timeout=60)
        batch, _ = follow(
            run.url, batch["id"], lambda b: b["status"] in ENDED and b["queued"] == 0, 600, 1
        )
    peaks = memory.stop()
    to_goal_s = t_goal - t_post
    after_listing_s = to_goal_s - (listed_s or 0)
    return {
        "count": args.count,
        "put_s": round(put_s, 1),
        "s3_list_page_s": round(page_s, 2),
        "listed_and_enqueued_s": round(listed_s, 1) if listed_s is not None else None,
        "items_measured": done_seen,
        "to_measured_s": round(to_goal_s, 1),
        "items_per_s": round(done_seen / to_goal_s, 2),
        "items_per_s_after_listing": (
            round((done_seen - done_at_listed) / after_listing_s, 2)
            if after_listing_s > 0
            else None
        ),
        "status": batch["status"],
        "faces": batch["faces"],
        "uploads_during": len(latencies),
        "upload_latency": load_distributed.percentiles(sorted(latencies)),
        "peak_rss_mb": peaks,
        "db_bytes_before": db_before,
        "db_bytes_after": schema_bytes(run.dsn, run.schema),
        "batch_items_bytes": table_bytes(run.dsn, run.schema),
        "posted_again": again.status_code,
        "posted_again_same_id": again.json().get("id") == batch["id"],
        **exact(s3, "in/", "out/", before, item_counts(run.dsn, run.schema, batch["id"])),
    }


def busy_worker(run: load_distributed.Deployment, timeout_s: float = 60) -> str:
    """A worker that holds an item (its lease's owner names its pid), else the first."""
    workers = {run.procs[n].pid: n for n in run.procs if n.startswith("worker-")}
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(run.dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            owners = conn.execute(
                f'SELECT lease_owner FROM "{run.schema}".batch_items '
                "WHERE state = 'processing' AND lease_owner IS NOT NULL"
            ).fetchall()
            pids = {int(str(o[0]).split(":")[1]) for o in owners}
            busy = [name for pid, name in workers.items() if pid in pids]
            if busy:
                return busy[0]
            time.sleep(0.05)
    return next(iter(workers.values()))


def resume_phase(run: load_distributed.Deployment, args: argparse.Namespace) -> dict[str, Any]:
    s3 = s3_client(run.s3_url)
    put_all(s3, "resume/", pictures(args.resume_count))
    before = etags(s3, SOURCE, "resume/")
    memory = PeakMemory(run.procs, [n for n in run.procs if n != "s3"])
    t0 = time.perf_counter()
    batch = httpx.post(f"{run.url}/batches", json=body("resume/", "resume-out/"), timeout=60).json()
    batch, _ = follow(
        run.url,
        batch["id"],
        lambda b: (b["listed"] > 0 and b["total"] is None) or b["status"] != "listing",
        args.timeout,
        0.05,
    )
    api_killed = {"status": batch["status"], "listed": batch["listed"], "total": batch["total"]}
    run.kill("api")
    run.spawn("api")
    run.wait_ready()
    quarter = max(args.resume_count // 4, 1)
    batch, _ = follow(
        run.url,
        batch["id"],
        lambda b: b["done"] >= quarter or b["status"] in ENDED,
        args.timeout,
        0.2,
    )
    victim = busy_worker(run)
    worker_killed = {
        "worker": victim,
        "status": batch["status"],
        "done": batch["done"],
        "listed": batch["listed"],
        "queued": batch["queued"],
    }
    run.kill(victim)
    run.spawn(victim)
    batch, done_s = follow(run.url, batch["id"], lambda b: b["status"] in ENDED, args.timeout, 1)
    return {
        "count": args.resume_count,
        "api_killed_at": api_killed,
        "worker_killed_at": worker_killed,
        "status": batch["status"],
        "to_done_s": round(time.perf_counter() - t0, 1) if done_s is not None else None,
        "peak_rss_mb": memory.stop(),
        **exact(
            s3, "resume/", "resume-out/", before, item_counts(run.dsn, run.schema, batch["id"])
        ),
    }


def machine() -> dict[str, Any]:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return {
        "cores": os.cpu_count(),
        "load": [round(v, 2) for v in os.getloadavg()],
        "uptime": uptime.strip(),
    }


def show(report: dict[str, Any]) -> None:
    m, t = report["machine_start"], report["throughput"]
    print(f"commit {report['commit']}; {m['cores']} cores; at the start: {m['uptime']}")
    print(f"at the end: {report['machine_end']['uptime']}")
    print(
        f"batch of {t['count']} pictures, {report['workers']} workers x 1 thread "
        f"(put in {t['put_s']}s); status {t['status']}, faces {t['faces']}"
    )
    print(
        f"one ListObjectsV2 page of 1000 from the middle, before the batch: {t['s3_list_page_s']}s"
    )
    print(f"listed and enqueued (total known): {t['listed_and_enqueued_s']}s")
    print(
        f"{t['items_measured']} items done in {t['to_measured_s']}s from the post: "
        f"{t['items_per_s']} items/s ({t['items_per_s_after_listing']} after the listing)"
    )
    print(f"POST /picture during the batch ({t['uploads_during']}): {t['upload_latency']}")
    print(f"peak RSS (MB, with children): {t['peak_rss_mb']}")
    grew = t["db_bytes_after"] - t["db_bytes_before"]
    print(
        f"database: {t['db_bytes_before'] / 1e6:.1f} MB -> {t['db_bytes_after'] / 1e6:.1f} MB "
        f"(+{grew / 1e6:.1f} MB); batch_items {t['batch_items_bytes'] / 1e6:.1f} MB, "
        f"{t['batch_items_bytes'] / max(t['items'], 1):.0f} B/item"
    )
    show_exact(t)
    print(f"posted again: {t['posted_again']}, same id: {t['posted_again_same_id']}")
    r = report.get("resume")
    if r:
        print(
            f"resume: {r['count']} pictures; API killed at {r['api_killed_at']}, "
            f"{r['worker_killed_at']['worker']} killed at {r['worker_killed_at']}"
        )
        print(f"resume: status {r['status']} in {r['to_done_s']}s; peak RSS {r['peak_rss_mb']}")
        show_exact(r)


def show_exact(f: dict[str, Any]) -> None:
    print(
        f"  items {f['items']} ({f['distinct_sources']} sources) by state {f['by_state']}; "
        f"{f['more_than_one_attempt']} took more than one attempt"
    )
    print(
        f"  target objects {f['target_objects']}, written by items {f['wrote_target']} "
        f"({f['distinct_written_keys']} keys), missing {f['target_missing']}, "
        f"extra {f['target_extra']}; sources {f['sources']}, changed "
        f"{f['sources_changed']}, gone {f['sources_gone']}"
    )


@contextlib.contextmanager
def deployed(
    args: argparse.Namespace, first_port: int | None, settings: dict[str, str]
) -> Iterator[load_distributed.Deployment]:
    with load_distributed.deployed(
        args.workers, 1, first_port=first_port, settings=settings
    ) as run:
        s3 = s3_client(run.s3_url)
        for bucket in (SOURCE, TARGET):
            s3.create_bucket(Bucket=bucket)
        yield run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument(
        "--throughput-items",
        type=int,
        default=None,
        help="stop the batch (DELETE) once this many are done",
    )
    parser.add_argument("--resume-count", type=int, default=1000, help="0: no resume phase")
    parser.add_argument("--resume-page-size", type=int, default=100)
    parser.add_argument("-w", "--workers", type=int, default=2)
    parser.add_argument("--ports", type=int, help="first of the 4 ports to use (else any free)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["IMAGEBLUR_BATCH_BUCKETS"] = f"{SOURCE},{TARGET}"
    os.environ.setdefault("IMAGEBLUR_BATCH_PUMP_INTERVAL_S", "0.5")
    os.environ.setdefault("IMAGEBLUR_LEASE_S", "30")
    report: dict[str, Any] = {
        "commit": measured_commit(),
        "machine_start": machine(),
        "workers": args.workers,
        "lease_s": float(os.environ["IMAGEBLUR_LEASE_S"]),
    }
    with deployed(args, args.ports, {}) as run:
        report["throughput"] = throughput_phase(run, args)
    if args.resume_count:
        # Its own deployment (figures of its own), listing small pages: a kill lands
        # mid-listing even on a few thousand objects.
        page = {"IMAGEBLUR_BATCH_PAGE_SIZE": str(args.resume_page_size)}
        with deployed(args, args.ports + 2 if args.ports else None, page) as run:
            report["resume"] = resume_phase(run, args)
    report["machine_end"] = machine()
    show(report)
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
