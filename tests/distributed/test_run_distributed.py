"""`make run-distributed` starts the whole set-up in one command and supervises it like a
small Kubernetes: a killed worker is restarted while the API keeps serving, a crash loop
or the death of the API or the S3 server stops everything, Ctrl-C stops it cleanly."""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pika
import psycopg
import pytest
from PIL import Image, UnidentifiedImageError

import metrics_scrape
import servers
from imageblur.adapters.postgres_repo import PostgresImageRepository
from imageblur.adapters.rabbitmq_queue import RabbitMQJobQueue
from imageblur.adapters.s3_store import S3ObjectStore
from imageblur.domain import DeadLetter, Status
from support import free_port, wait_until

from .harness import EXAMPLES, generated_jpeg

REPO = Path(__file__).resolve().parents[2]
DSN = "postgresql://postgres@127.0.0.1:5432/imageblur"  # the set-up's default database

pytestmark = pytest.mark.slow

# Start make as a terminal would, with SIGINT and SIGQUIT at their defaults. A test run
# launched in the background of a non-interactive shell (`cmd &`) inherits both ignored;
# make would then ignore the Ctrl-C below, wait for the supervisor and exit 0. A shell
# cannot reset an ignored signal, so a tiny Python launcher does it and execs make (the
# pid stays make's).
AS_FROM_A_TERMINAL = (
    "import os, signal, sys; "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "signal.signal(signal.SIGQUIT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


@dataclass
class RunDistributed:
    make: subprocess.Popen[bytes]
    log_path: Path
    url: str
    port: int
    s3_port: int
    metrics_port: int  # worker n serves its metrics on metrics_port + n
    schema: str
    queue: str
    auth: dict[str, str] = field(default_factory=dict)  # the token, when one is set

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self, name: str) -> list[int]:
        """Every pid the supervisor said it started `name` with, oldest first."""
        return [int(p) for p in re.findall(rf"{re.escape(name)} started \(pid (\d+)\)", self.log())]

    def wait_ready(self) -> None:
        wait_until(
            lambda: httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200,
            timeout_s=120,
            what="make run-distributed to serve",
            details=lambda: self.log()[-3000:],
        )

    def upload(self, data: bytes, name: str) -> str:
        response = httpx.post(
            f"{self.url}/picture",
            files={"image": (name, data, "image/jpeg")},
            headers=self.auth,
            timeout=30,
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def status(self, image_id: str) -> str:
        answer = httpx.get(f"{self.url}/picture/{image_id}", headers=self.auth, timeout=5)
        return str(answer.json()["status"])

    def repository(self) -> PostgresImageRepository:
        return PostgresImageRepository(DSN, schema=self.schema, pool_min=0, pool_max=2, timeout_s=5)

    def transitions_to(self, image_id: str) -> list[str]:
        """The statuses one image went to, oldest first (the PostgreSQL audit trail)."""
        query = (
            f'SELECT to_status FROM "{self.schema}".image_transitions '
            "WHERE image_id = %s ORDER BY seq"
        )
        with psycopg.connect(DSN, connect_timeout=5) as conn:
            return [str(row[0]) for row in conn.execute(query, (image_id,)).fetchall()]

    def exit_code(self, timeout_s: float = 90) -> int:
        return self.make.wait(timeout=timeout_s)

    def assert_all_stopped(self) -> None:
        wait_until(
            lambda: (
                not servers.port_open("127.0.0.1", self.port)
                and not servers.port_open("127.0.0.1", self.s3_port)
                and not servers.port_open("127.0.0.1", self.metrics_port)
            ),
            timeout_s=30,
            what="the API and the S3 server to stop",
        )


@contextmanager
def run_distributed(
    tmp_path: Path, *, s3_port: int | None = None, **settings: str
) -> Iterator[RunDistributed]:
    """`make run-distributed` in its own corner of the machine's services (schema, queue,
    ports), in its own process group as a terminal would start it; always torn down."""
    servers.ensure_postgres()
    servers.ensure_rabbitmq()
    port, metrics_port = free_port(), two_free_ports()
    s3_port = s3_port or free_port()
    schema, queue = servers.unique("t"), servers.unique("jobs")
    env = {
        **os.environ,
        "IMAGEBLUR_PORT": str(port),
        "DIST_MOTO_PORT": str(s3_port),
        "DIST_METRICS_PORT": str(metrics_port),
        "IMAGEBLUR_POSTGRES_SCHEMA": schema,
        "IMAGEBLUR_RABBITMQ_QUEUE": queue,
        "IMAGEBLUR_LOG_FORMAT": "json",
        "IMAGEBLUR_DETECTOR_THREADS": "1",
        **{f"IMAGEBLUR_{k.upper()}": v for k, v in settings.items()},
    }
    log_path = tmp_path / "make.log"
    with log_path.open("wb") as log:
        make = subprocess.Popen(
            [
                sys.executable,
                "-c",
                AS_FROM_A_TERMINAL,
                "make",
                "--no-print-directory",
                "run-distributed",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        yield RunDistributed(make, log_path, url, port, s3_port, metrics_port, schema, queue)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for name in (queue, f"{queue}.dead"):
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", name], capture_output=True)


def test_make_run_distributed_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    with run_distributed(tmp_path) as run:
        run.wait_ready()
        image_id = run.upload(generated_jpeg(1), "x.jpg")
        wait_until(
            lambda: run.status(image_id) == "done", timeout_s=60, what="the image to be done"
        )
        body = httpx.get(f"{run.url}/picture/{image_id}", timeout=5).json()
        assert body["url"].startswith("s3://output/")
        # Each worker on its own metrics port; one of them did the job. The other may
        # still be loading its model on a busy machine: wait until both answer.
        workers = [f"http://127.0.0.1:{run.metrics_port + n}/metrics" for n in (0, 1)]
        wait_until(
            lambda: all(metrics_scrape.scrape(w) is not None for w in workers),
            timeout_s=120,
            what="both workers' metrics ports to answer",
            details=lambda: run.log()[-4000:],  # the supervisor's and workers' last lines
        )
        wait_until(
            lambda: (
                sum(
                    metrics_scrape.get(
                        metrics_scrape.scrape(w),
                        "imageblur_jobs_total",
                        kind="detect",
                        outcome="done",
                    )
                    for w in workers
                )
                == 1
            ),
            timeout_s=30,
            what="one job done on the workers' metrics ports",
        )

        os.killpg(run.make.pid, signal.SIGINT)  # Ctrl-C
        # make ends by the signal it was sent (as for any interrupted recipe: status 130
        # in a shell); the supervisor under it stopped everything and exited 0.
        assert run.exit_code() == -signal.SIGINT, run.log()[-3000:]
        assert run.log().rstrip().endswith("run-distributed: stopped")
        run.assert_all_stopped()


class Prober(threading.Thread):
    """Asks the API about a picture and its readiness, again and again, until stopped."""

    def __init__(self, url: str, image_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.image_id = url, image_id
        self.done = threading.Event()
        self.statuses: Counter[int] = Counter()  # 0: no answer

    def run(self) -> None:
        while not self.done.wait(0.2):
            for path in (f"/picture/{self.image_id}", "/readyz"):
                try:
                    self.statuses[httpx.get(self.url + path, timeout=10).status_code] += 1
                except httpx.TransportError:
                    self.statuses[0] += 1

    def stop(self) -> Counter[int]:
        self.done.set()
        self.join(timeout=30)
        return self.statuses


def test_a_worker_killed_mid_batch_is_restarted_and_every_picture_ends_done_once(
    tmp_path: Path,
) -> None:
    # Short leases: the killed worker's job is taken over within seconds.
    with run_distributed(
        tmp_path, lease_s="3", reconcile_interval_s="1", receive_timeout_s="0.5"
    ) as run:
        run.wait_ready()
        ids = [run.upload(generated_jpeg(i, 1280, 960), f"img-{i}.jpg") for i in range(10)]
        # The API may answer before the supervisor has logged both workers' start.
        wait_until(
            lambda: len(set(run.pids("worker-1") + run.pids("worker-2"))) == 2,
            timeout_s=60,
            what="both workers to start",
            details=lambda: run.log()[-3000:],
        )
        workers = set(run.pids("worker-1") + run.pids("worker-2"))
        prober = Prober(run.url, ids[0])
        prober.start()

        repo = run.repository()
        try:
            victim: list[int] = []

            def kill_a_worker_holding_a_job() -> bool:
                for record in repo.list(limit=100):
                    owner = record.lease_owner
                    pid = int(owner.split(":")[1]) if owner else -1
                    if record.status is Status.PROCESSING and pid in workers:
                        os.kill(pid, signal.SIGKILL)  # mid-job: claimed, result not stored
                        victim.append(pid)
                        return True
                return False

            wait_until(
                kill_a_worker_holding_a_job, timeout_s=60, interval_s=0.02, what="a job in hand"
            )
            wait_until(
                lambda: all(run.status(i) == "done" for i in ids),
                timeout_s=180,
                what="every picture to be done",
                details=lambda: run.log()[-3000:],
            )
            statuses = prober.stop()

            assert re.search(
                rf"worker-\d \(pid {victim[0]}\) exited \(code -9\); restart", run.log()
            )
            assert len(set(run.pids("worker-1") + run.pids("worker-2"))) == 3  # one restart
            assert set(statuses) == {200}, statuses  # the API answered all along
            results = s3_store(run, "output")
            result_keys = sorted(o.key for o in results.list())
            results.close()
            records = [repo.get(i) for i in ids]
            recorded = {r.output_key for r in records if r and r.output_key}
            assert len(recorded) == len(ids) and recorded <= set(result_keys)
            # The kill may land between the victim's store and its `complete`: that
            # attempt's own key is left for the reconciler's collection (per-attempt keys,
            # docs/operations.md), never a record's. One victim: at most one such key.
            orphans = set(result_keys) - recorded
            assert len(orphans) <= 1, orphans
            assert all(key.rsplit("-a", 1)[0] in ids for key in orphans), orphans
            for image_id in ids:  # exactly one result: one `done` transition each
                assert run.transitions_to(image_id).count("done") == 1
        finally:
            prober.stop()
            repo.close()


@pytest.mark.parametrize(
    ("who", "name"), [("api", "the API"), ("s3", "the S3 server (moto)")], ids=["api", "s3"]
)
def test_the_death_of_the_api_or_the_s3_server_stops_everything(
    tmp_path: Path, who: str, name: str
) -> None:
    with run_distributed(tmp_path) as run:
        run.wait_ready()
        workers = run.pids("worker-1") + run.pids("worker-2")
        os.kill(run.pids(name)[0], signal.SIGKILL)
        assert run.exit_code() != 0
        assert f"run-distributed: {name} exited (code -9); stopping everything" in run.log()
        run.assert_all_stopped()
        for pid in workers:
            wait_until(lambda p=pid: not alive(p), timeout_s=30, what=f"worker {pid} to end")


def test_the_supervisor_killed_takes_every_child_with_it(tmp_path: Path) -> None:
    """However the supervisor dies (here `kill -9`, no handler runs), its process group
    goes with it: no S3 server, API or worker is left holding a port."""
    with run_distributed(tmp_path) as run:
        run.wait_ready()
        wait_until(
            lambda: len(run.pids("worker-1") + run.pids("worker-2")) == 2,
            timeout_s=60,
            what="both workers to start",
        )
        children = [
            pid
            for name in ("the S3 server (moto)", "the API", "worker-1", "worker-2")
            for pid in run.pids(name)
        ]
        (supervisor,) = children_of(run.make.pid)
        os.kill(supervisor, signal.SIGKILL)
        for pid in children:
            wait_until(lambda p=pid: not alive(p), timeout_s=30, what=f"child {pid} to end")
        run.assert_all_stopped()


def test_the_s3_server_is_waited_for_by_its_own_word_not_a_port_probe(tmp_path: Path) -> None:
    """Another program on the S3 port: a port probe would take it for moto and start the
    API against it; moto's own readiness line never comes, and the set-up says why."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    try:
        with run_distributed(tmp_path, s3_port=squatter.getsockname()[1]) as run:
            assert run.exit_code(timeout_s=120) != 0
            log = run.log()
            assert "run-distributed: the S3 server did not start" in log, log[-3000:]
            assert "in use" in log[log.index("did not start") :]  # moto's own words
            assert not run.pids("the API")
    finally:
        squatter.close()


def test_poison_on_the_job_queue_is_parked_and_the_next_upload_is_done(tmp_path: Path) -> None:
    """The issue's check: raw `[` x 100,000 published to the job queue ends in the
    dead-letter queue with its reason; no worker dies; the next upload reaches done."""
    with run_distributed(tmp_path) as run:
        run.wait_ready()
        wait_until(
            lambda: len(run.pids("worker-1") + run.pids("worker-2")) == 2,
            timeout_s=60,
            what="both workers to start",
        )
        poison = b"[" * 100_000
        with pika.BlockingConnection(pika.URLParameters(servers.RABBIT_URL)) as conn:
            conn.channel().basic_publish("", run.queue, poison)
        handle = RabbitMQJobQueue(
            servers.RABBIT_URL, queue=run.queue, queue_type="quorum", prefetch=1, timeout_s=5
        )
        try:
            parked: list[DeadLetter] = []

            def parked_yet() -> bool:
                parked.extend(handle.take_dead_letters())
                return bool(parked)

            wait_until(parked_yet, timeout_s=60, what="the poison in the dead-letter queue")
        finally:
            handle.close()
        assert [p.body for p in parked] == [poison]
        assert parked[0].reason.startswith("malformed job message"), parked[0].reason
        for seed in range(3):  # more than the workers' threads: every thread still serves
            image_id = run.upload(generated_jpeg(seed), f"after-{seed}.jpg")
            wait_until(
                lambda i=image_id: run.status(i) == "done",
                timeout_s=120,
                what="an upload after the poison to be done",
                details=lambda: run.log()[-3000:],
            )
        assert not re.search(r"worker-\d \(pid \d+\) exited", run.log())  # none died
        assert len(run.pids("worker-1") + run.pids("worker-2")) == 2


def test_a_worker_that_crashes_at_start_stops_the_set_up_with_its_error(tmp_path: Path) -> None:
    """A crash loop (here: no face model) ends with the worker's last error, not for ever."""
    missing = tmp_path / "no-such-model.onnx"
    with run_distributed(tmp_path, model_path=str(missing)) as run:
        assert run.exit_code(timeout_s=120) != 0
        log = run.log()
        assert re.search(r"worker-\d exited 3 times within a minute", log), log[-3000:]
        tail = log[log.index("times within a minute") :]
        assert str(missing) in tail  # the worker's own error, shown with the stop
        assert "restarting it in 1 s" in log and "restarting it in 2 s" in log
        run.assert_all_stopped()


def test_review_on_make_run_distributed(tmp_path: Path) -> None:
    """The issue's check on the supervised set-up: held, corrected, stale refused,
    approved; while held the original at rest is not a readable image."""
    key = base64.b64encode(bytes(range(2, 34))).decode()
    desk = "photo-desk-token-0123456789"
    tokens = {"api_token": "api-token-0123456789", "reviewer_tokens": f"photo-desk:{desk}"}
    with run_distributed(tmp_path, review="required", originals_key=key, **tokens) as run:
        run.auth = {"Authorization": f"Bearer {desk}"}  # a reviewer may do everything
        run.wait_ready()
        bill = (EXAMPLES / "bill-gates.jpg").read_bytes()
        image_id = run.upload(bill, "bill.jpg")
        wait_until(lambda: run.status(image_id) == "review", timeout_s=120, what="review")
        originals = s3_store(run, "input")
        try:
            (stored,) = [o.key for o in originals.list() if o.key.startswith(image_id)]
            with pytest.raises(UnidentifiedImageError):
                Image.open(io.BytesIO(originals.get(stored)))
            url = f"{run.url}/picture/{image_id}"
            listed = httpx.get(f"{url}/regions", headers=run.auth, timeout=10)
            assert listed.headers["etag"] == '"0"'
            box = {"x": 400, "y": 300, "width": 200, "height": 200, "hidden": True}
            wanted = [{"id": r["id"], "hidden": r["hidden"]} for r in listed.json()["regions"]]
            body = {"regions": [*wanted, box]}
            put = httpx.put(
                f"{url}/regions", json=body, headers={"If-Match": '"0"', **run.auth}, timeout=10
            )
            assert put.status_code == 202, put.text
            stale = httpx.put(
                f"{url}/regions", json=body, headers={"If-Match": '"0"', **run.auth}, timeout=10
            )
            assert stale.status_code == 412
            wait_until(lambda: run.status(image_id) == "review", timeout_s=120, what="render")
            after = np.asarray(
                Image.open(io.BytesIO(httpx.get(f"{url}/image", headers=run.auth).content))
            )
            before = np.asarray(Image.open(io.BytesIO(bill)))
            inside = (slice(300, 500), slice(400, 600))
            assert np.abs(after[inside].astype(float) - before[inside]).mean() > 2
            assert httpx.post(f"{url}/approve", headers=run.auth, timeout=10).status_code == 200
            assert not [o for o in originals.list() if o.key.startswith(image_id)]
        finally:
            originals.close()


def s3_store(run: RunDistributed, bucket: str) -> S3ObjectStore:
    return S3ObjectStore(
        bucket=bucket,
        prefix="",
        endpoint_url=f"http://127.0.0.1:{run.s3_port}",
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        addressing_style="path",
        create_bucket=False,
        timeout_s=10,
    )


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ")[1][0] != "Z"  # a zombie has ended too


def children_of(pid: int) -> list[int]:
    """The live children of a process (Linux: /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def two_free_ports() -> int:
    """A port that is free, and so is the next one (the workers' metrics ports)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and not servers.port_open("127.0.0.1", port + 1):
            return port
    raise AssertionError("no two consecutive free ports")
