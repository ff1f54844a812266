#!/usr/bin/env python3
"""Load benchmark of the distributed set-up: N uploads from C concurrent clients.

Prints uploads/s, upload latency p50/p95/p99, upload-to-done p50/p95/p99, and the jobs
lost and duplicated (both must be 0). Asserts nothing.

By default it starts its own deployment: a moto S3 server, a fresh schema in the
machine's PostgreSQL, a fresh vhost in its RabbitMQ, `imageblur migrate`, one `api` and
W `worker`s, and removes it all afterwards:

    .venv/bin/python bench/load_distributed.py -n 500 -c 16 -w 2

Against a running deployment, give its URL and the database it writes to (the
`done` times and the duplicate count are read from the transition audit table):

    .venv/bin/python bench/load_distributed.py --url http://127.0.0.1:8080 \
        --postgres-dsn postgresql://postgres@127.0.0.1/imageblur --postgres-schema public
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import psycopg
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def jpeg(seed: int, width: int, height: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=92)
    return out.getvalue()


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"p50 {values[0]:.3f}s"
    q = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {q[49]:.3f}s  p95 {q[94]:.3f}s  p99 {q[98]:.3f}s"


@dataclass
class Upload:
    image_id: str
    started: float  # wall clock (time.time), comparable with the database timestamps
    latency_s: float


# --- a private deployment ------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: object, timeout_s: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


@dataclass
class Deployment:
    """A running private deployment: its addresses and its processes by name (`api`,
    `worker-0`, ...), which a benchmark may kill and start again."""

    url: str
    dsn: str
    schema: str
    s3_url: str
    procs: dict[str, subprocess.Popen[bytes]]
    commands: dict[str, list[str]]
    env: dict[str, str]
    logdir: Path

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        """Start (again) the process of that name; its output is appended to its log."""
        with (self.logdir / f"{name}.log").open("ab") as fh:
            proc = subprocess.Popen(
                self.commands[name], env=self.env, stdout=fh, stderr=subprocess.STDOUT
            )
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL, as an OOM kill or a lost node would: nothing runs its clean-up."""
        self.procs[name].kill()
        self.procs[name].wait()

    def wait_ready(self, timeout_s: float = 60) -> None:
        wait_until(
            lambda: httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200,
            timeout_s,
            "API",
        )


@contextlib.contextmanager
def deployment(workers: int, worker_threads: int) -> Iterator[tuple[str, str, str]]:
    """Yields (api url, postgres dsn, schema); everything is torn down afterwards."""
    with deployed(workers, worker_threads) as running:
        yield running.url, running.dsn, running.schema


@contextlib.contextmanager
def deployed(
    workers: int,
    worker_threads: int,
    *,
    first_port: int | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Deployment]:
    """Starts the deployment (its S3 and API ports from `first_port` on, else any free
    ones; `settings` on top of the environment's) and tears it all down afterwards."""
    tag = uuid.uuid4().hex[:10]
    schema, vhost, dsn = f"bench_{tag}", f"bench_{tag}", "postgresql://postgres@127.0.0.1/test"
    s3_port, api_port = (first_port, first_port + 1) if first_port else (free_port(), free_port())
    logdir = Path(tempfile.mkdtemp(prefix="imageblur-bench-"))
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"])
    env = {
        **os.environ,
        "IMAGEBLUR_REPOSITORY": "postgres",
        "IMAGEBLUR_POSTGRES_DSN": dsn,
        "IMAGEBLUR_POSTGRES_SCHEMA": schema,
        "IMAGEBLUR_POSTGRES_POOL_MAX": "20",
        "IMAGEBLUR_QUEUE": "rabbitmq",
        "IMAGEBLUR_RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        "IMAGEBLUR_RABBITMQ_PREFETCH": str(worker_threads),
        "IMAGEBLUR_STORE": "s3",
        "IMAGEBLUR_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "IMAGEBLUR_S3_ACCESS_KEY_ID": "testing",
        "IMAGEBLUR_S3_SECRET_ACCESS_KEY": "testing",
        "IMAGEBLUR_S3_ADDRESSING_STYLE": "path",
        "IMAGEBLUR_S3_CREATE_BUCKETS": "true",
        "IMAGEBLUR_PORT": str(api_port),
        "IMAGEBLUR_LOG_FORMAT": "json",
        "IMAGEBLUR_LOG_LEVEL": "warning",
        "IMAGEBLUR_WORKER_THREADS": str(worker_threads),
        "IMAGEBLUR_DETECTOR_THREADS": "1",
        **(settings or {}),
    }
    imageblur = str(BIN / "imageblur")
    commands = {
        "s3": [str(BIN / "python"), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
        "api": [imageblur, "api"],
        **{f"worker-{i}": [imageblur, "worker"] for i in range(workers)},
    }
    running = Deployment(
        url=f"http://127.0.0.1:{api_port}",
        dsn=dsn,
        schema=schema,
        s3_url=f"http://127.0.0.1:{s3_port}",
        procs={},
        commands=commands,
        env=env,
        logdir=logdir,
    )
    try:
        running.spawn("s3")
        wait_until(lambda: httpx.get(running.s3_url, timeout=1), 30, "moto")
        subprocess.run([imageblur, "migrate"], env=env, check=True)
        for name in commands:
            if name != "s3":
                running.spawn(name)
        running.wait_ready()
        yield running
    finally:
        for proc in running.procs.values():
            proc.terminate()
        for proc in running.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)
        print(f"(process logs in {logdir})", file=sys.stderr)


# --- the load ----------------------------------------------------------------------------------


def run_uploads(url: str, images: list[bytes], clients: int) -> tuple[list[Upload], int, float]:
    uploads: list[Upload] = []
    errors = 0
    lock = threading.Lock()
    next_index = iter(range(len(images)))

    def client() -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=60) as http:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                key = uuid.uuid4().hex
                for _ in range(20):  # retry 503 / transport errors, same Idempotency-Key
                    started, t0 = time.time(), time.perf_counter()
                    try:
                        r = http.post(
                            "/picture",
                            files={"image": (f"load-{i}.jpg", images[i], "image/jpeg")},
                            headers={"Idempotency-Key": key},
                        )
                    except httpx.TransportError:
                        r = None
                    if r is not None and r.status_code == 202:
                        with lock:
                            uploads.append(
                                Upload(r.json()["id"], started, time.perf_counter() - t0)
                            )
                        break
                    with lock:
                        errors += 1
                    time.sleep(0.2)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return uploads, errors, time.perf_counter() - t0


def wait_done(
    dsn: str, schema: str, uploads: list[Upload], timeout_s: float
) -> tuple[dict[str, datetime], dict[str, int]]:
    """First `done` time and number of `done` transitions of each uploaded image."""
    ids = [u.image_id for u in uploads]
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                f'SELECT image_id, min(at), count(*) FROM "{schema}".image_transitions '
                "WHERE to_status = 'done' AND image_id = ANY(%s) GROUP BY image_id",
                (ids,),
            ).fetchall()
            if len(rows) == len(ids) or time.monotonic() > deadline:
                return {r[0]: r[1] for r in rows}, {r[0]: int(r[2]) for r in rows}
            time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--uploads", type=int, default=300)
    parser.add_argument("-c", "--clients", type=int, default=8)
    parser.add_argument("-w", "--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--worker-threads", type=int, default=1)
    parser.add_argument("--size", default="640x480", help="WxH of the generated JPEGs")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for done")
    parser.add_argument("--url", help="a running API instead of a private deployment")
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1/imageblur")
    parser.add_argument("--postgres-schema", default="public")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    images = [jpeg(i, width, height) for i in range(args.uploads)]

    with contextlib.ExitStack() as stack:
        if args.url:
            url, dsn, schema = args.url, args.postgres_dsn, args.postgres_schema
        else:
            url, dsn, schema = stack.enter_context(deployment(args.workers, args.worker_threads))
        uploads, errors, upload_s = run_uploads(url, images, args.clients)
        done_at, done_count = wait_done(dsn, schema, uploads, args.timeout)

    to_done = [
        done_at[u.image_id].timestamp() - u.started for u in uploads if u.image_id in done_at
    ]
    lost = args.uploads - len(done_at)
    duplicated = sum(1 for n in done_count.values() if n > 1)
    print(
        f"uploads: {args.uploads} from {args.clients} clients, {width}x{height} JPEG, "
        f"{args.workers} workers x {args.worker_threads} threads, {os.cpu_count()} cores"
    )
    print(f"accepted: {len(uploads)}  retried (503/transport): {errors}")
    print(f"uploads/s: {len(uploads) / upload_s:.1f}  ({upload_s:.1f}s)")
    print(f"upload latency: {percentiles(sorted(u.latency_s for u in uploads))}")
    print(f"upload to done: {percentiles(sorted(to_done))}")
    if to_done:
        span = max(done_at.values()).timestamp() - min(u.started for u in uploads)
        print(f"throughput to done: {len(to_done) / span:.1f} images/s")
    print(f"jobs lost: {lost}  jobs duplicated: {duplicated}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
