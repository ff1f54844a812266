"""A distributed deployment made of real processes: `imageblur migrate`, one `imageblur
api` and any number of `imageblur worker`s, on PostgreSQL, RabbitMQ and a moto S3
server, plus the checks every end-to-end and fault test ends with.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psycopg
from PIL import Image

import servers
from imageblur.adapters.postgres_repo import PostgresImageRepository
from imageblur.adapters.rabbitmq_queue import RabbitMQJobQueue
from imageblur.adapters.s3_store import S3ObjectStore
from imageblur.domain import Status
from support import free_port, wait_until

BIN = Path(sys.executable).parent
EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "example-pictures"


def generated_jpeg(seed: int, width: int = 320, height: int = 240) -> bytes:
    """A small, unique, face-free JPEG (smooth gradients plus noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=92)
    return out.getvalue()


@dataclass
class Backends:
    """Where a deployment keeps its state; each test gets fresh names."""

    postgres_dsn: str
    schema: str
    rabbitmq_url: str
    s3: servers.MotoServer
    queue: str = field(default_factory=lambda: servers.unique("jobs"))
    input_bucket: str = field(default_factory=lambda: servers.unique("in").replace("_", "-"))
    output_bucket: str = field(default_factory=lambda: servers.unique("out").replace("_", "-"))

    def env(self) -> dict[str, str]:
        return {
            "IMAGEBLUR_REPOSITORY": "postgres",
            "IMAGEBLUR_POSTGRES_DSN": self.postgres_dsn,
            "IMAGEBLUR_POSTGRES_SCHEMA": self.schema,
            "IMAGEBLUR_POSTGRES_TIMEOUT_S": "2",
            "IMAGEBLUR_QUEUE": "rabbitmq",
            "IMAGEBLUR_RABBITMQ_URL": self.rabbitmq_url,
            "IMAGEBLUR_RABBITMQ_QUEUE": self.queue,
            "IMAGEBLUR_RABBITMQ_TIMEOUT_S": "3",
            "IMAGEBLUR_STORE": "s3",
            "IMAGEBLUR_S3_INPUT_BUCKET": self.input_bucket,
            "IMAGEBLUR_S3_OUTPUT_BUCKET": self.output_bucket,
            "IMAGEBLUR_S3_CREATE_BUCKETS": "true",
            "IMAGEBLUR_S3_TIMEOUT_S": "2",
            **self.s3.env(),
        }

    def repository(self) -> PostgresImageRepository:
        return PostgresImageRepository(
            self.postgres_dsn, schema=self.schema, pool_min=0, pool_max=10, timeout_s=5
        )

    def store(self, role: str) -> S3ObjectStore:
        return S3ObjectStore(
            bucket=self.input_bucket if role == "input" else self.output_bucket,
            prefix="",
            endpoint_url=self.s3.endpoint_url,
            region="us-east-1",
            access_key_id="testing",
            secret_access_key="testing",
            addressing_style="path",
            create_bucket=True,
            timeout_s=10,
        )

    def transitions(self, image_id: str) -> list[tuple[str | None, str]]:
        """The (from, to) status changes of one image, oldest first, from the audit
        trail the PostgreSQL adapter keeps."""
        query = (
            f'SELECT from_status, to_status FROM "{self.schema}".image_transitions '
            "WHERE image_id = %s ORDER BY seq"
        )
        with psycopg.connect(self.postgres_dsn, connect_timeout=5) as conn:
            rows = conn.execute(query, (image_id,)).fetchall()
        return [(row[0], row[1]) for row in rows]

    def queue_handle(self) -> RabbitMQJobQueue:
        return RabbitMQJobQueue(
            self.rabbitmq_url, queue=self.queue, queue_type="quorum", prefetch=1, timeout_s=5
        )


# Settings that make recovery happen within a test's patience.
FAST_RECOVERY = {
    "IMAGEBLUR_LOG_FORMAT": "json",
    "IMAGEBLUR_DETECTOR_THREADS": "1",
    "IMAGEBLUR_LEASE_S": "8",
    "IMAGEBLUR_RECONCILE_INTERVAL_S": "1",
    "IMAGEBLUR_PENDING_GRACE_S": "10",
    "IMAGEBLUR_ORPHAN_GRACE_S": "5",
    "IMAGEBLUR_GC_INTERVAL_S": "1",
    "IMAGEBLUR_MAX_ATTEMPTS": "10",
    "IMAGEBLUR_RETRY_BASE_DELAY_S": "0.5",
    "IMAGEBLUR_RETRY_MAX_DELAY_S": "3",
    "IMAGEBLUR_RECEIVE_TIMEOUT_S": "0.5",
    "IMAGEBLUR_SHUTDOWN_GRACE_S": "10",
}


class Deployment:
    """One API and several workers as separate processes."""

    def __init__(self, backends: Backends, workdir: Path, **settings: str) -> None:
        self.backends = backends
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            **FAST_RECOVERY,
            **backends.env(),
            **{f"IMAGEBLUR_{k.upper()}": v for k, v in settings.items()},
            "IMAGEBLUR_PORT": str(self.port),
        }
        # A deployment with API tokens uploads with the first (the others are rotated in).
        token = settings.get("api_token", "").split(",")[0]
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[Path] = []
        self.statuses: Counter[int] = Counter()  # every HTTP status the API answered
        self._stopped = threading.Event()  # ends the clients' retries once torn down
        self._status_lock = threading.Lock()

    # --- processes -------------------------------------------------------------------

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}.log"
        self._logs.append(log)
        with log.open("ab") as fh:
            return subprocess.Popen(
                [str(BIN / "imageblur"), *args], env=self.env, stdout=fh, stderr=subprocess.STDOUT
            )

    def migrate(self) -> None:
        subprocess.run([str(BIN / "imageblur"), "migrate"], env=self.env, check=True, timeout=60)

    def start_api(self) -> None:
        api = self.api = self._spawn(f"api-{uuid.uuid4().hex[:4]}", "api")

        def healthy() -> bool:
            if api.poll() is not None:  # not retried: no point waiting for it
                raise AssertionError(f"the API exited with {api.returncode}:\n{self.logs()}")
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

        wait_until(
            healthy,
            timeout_s=60,
            what="the API to start",
            retry_on=(httpx.TransportError,),
            details=self.logs,
        )

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = self._spawn(f"worker-{len(self.workers)}", "worker")
        self.workers.append(proc)
        return proc

    def start(self, *, workers: int = 2) -> Deployment:
        self.migrate()
        self.start_api()
        for _ in range(workers):
            self.start_worker()
        return self

    def worker_metrics_urls(self, *, timeout_s: float = 60) -> list[str]:
        """Each worker's metrics URL, from the port it logged (IMAGEBLUR_METRICS_PORT=0)."""
        urls: list[str] = []
        for n in range(len(self.workers)):
            log = self.workdir / f"worker-{n}.log"

            def port(log: Path = log) -> int | None:
                for line in log.read_text(errors="replace").splitlines():
                    if '"metrics.listening"' in line:
                        return int(json.loads(line)["port"])
                return None

            number = wait_until(port, timeout_s=timeout_s, what=f"the metrics port in {log}")
            urls.append(f"http://127.0.0.1:{number}/metrics")
        return urls

    def kill_api(self) -> None:
        assert self.api is not None
        self.api.kill()
        self.api.wait()

    def stop(self) -> None:
        self._stopped.set()
        procs = [p for p in (self.api, *self.workers) if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_paths(self) -> list[Path]:
        """Each process's log file (its stdout and stderr), in the order they started."""
        return list(self._logs)

    def logs(self) -> str:
        return "\n".join(
            f"===== {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self._logs
        )

    def events(self, event: str, **fields: str) -> int:
        """How many JSON log lines of every process so far are `event` with `fields`."""
        count = 0
        for path in self._logs:
            for line in path.read_text(errors="replace").splitlines():
                if f'"{event}"' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("event") == event and all(
                        entry.get(k) == v for k, v in fields.items()
                    ):
                        count += 1
        return count

    # --- client ------------------------------------------------------------------------

    def upload(self, data: bytes, *, name: str, key: str | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": key, **self.auth} if key else dict(self.auth)
        response = httpx.post(
            f"{self.url}/picture",
            files={"image": (name, data, "image/jpeg")},
            headers=headers,
            timeout=30,
        )
        with self._status_lock:
            self.statuses[response.status_code] += 1
        return response

    def submit(self, data: bytes, *, name: str, deadline_s: float = 120) -> str:
        """Upload until accepted, retrying 503s and dropped connections with the same
        Idempotency-Key, as a well-behaved client would. Returns the image id."""
        key = uuid.uuid4().hex

        def accepted() -> str | None:
            if self._stopped.is_set():
                raise RuntimeError("the deployment was stopped")  # not retried
            response = self.upload(data, name=name, key=key)
            if response.status_code == 202:
                return str(response.json()["id"])
            assert response.status_code == 503, (response.status_code, response.text)
            return None

        return wait_until(
            accepted,
            timeout_s=deadline_s,
            interval_s=0.3,
            what=f"the upload of {name} accepted",
            retry_on=(httpx.TransportError,),  # the API is down or restarting
        )

    def submit_many(self, images: Iterable[tuple[str, bytes]], *, clients: int = 4) -> list[str]:
        items = list(images)
        ids: list[str | None] = [None] * len(items)
        errors: list[BaseException] = []

        def run(start: int) -> None:
            try:
                for i in range(start, len(items), clients):
                    ids[i] = self.submit(items[i][1], name=items[i][0])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return [i for i in ids if i is not None]

    # --- checks ---------------------------------------------------------------------------

    def wait_final(self, ids: Iterable[str], *, timeout_s: float = 180) -> None:
        """Wait until every image is done or failed, reading the database directly."""
        pending = set(ids)
        repo = self.backends.repository()

        def all_final() -> bool:
            for image_id in list(pending):
                record = repo.get(image_id)  # an outage (a fault test's) is retried
                if record is not None and record.status in (Status.DONE, Status.FAILED):
                    pending.discard(image_id)
            return not pending

        try:
            wait_until(
                all_final,
                timeout_s=timeout_s,
                interval_s=0.5,
                what="every job done or failed",
                details=lambda: f"{len(pending)} jobs not finished:\n{self.logs()}",
            )
        finally:
            repo.close()

    def assert_done_exactly_once(self, ids: Iterable[str]) -> None:
        """Every image is done with one `done` transition and one result object, and no
        original is left behind."""
        ids = list(ids)
        repo = self.backends.repository()
        outputs = self.backends.store("output")
        originals = self.backends.store("input")
        try:
            for image_id in ids:
                record = repo.get(image_id)
                assert record is not None, image_id
                assert record.status is Status.DONE, (image_id, record.status, record.error)
                assert record.output_key is not None and record.faces is not None
                assert record.url == outputs.url(record.output_key)
                changes = self.backends.transitions(image_id)
                dones = [t for t in changes if t[1] == "done"]
                assert len(dones) == 1, (image_id, changes)
                assert outputs.exists(record.output_key)
            # A worker killed between storing its result and `done` leaves its attempt's
            # result; the reconciler collects it once the picture is done.
            expected = sorted(r.output_key for r in map(repo.get, ids) if r and r.output_key)
            wait_until(
                lambda: sorted(o.key for o in outputs.list()) == expected,
                timeout_s=30,
                what="exactly the recorded results in the output bucket",
            )
            leftover = [o.key for o in originals.list()]
            assert leftover == [], f"originals left behind: {leftover}"
        finally:
            repo.close()
            outputs.close()
            originals.close()
