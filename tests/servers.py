"""Real back ends for the tests: make sure PostgreSQL and RabbitMQ run (start them if
they are down; never skip), run a moto S3 server as a subprocess, and hand out isolated
namespaces (a PostgreSQL schema, a RabbitMQ vhost, unique queue names) that are removed
afterwards.

Fault tests that stop a back end use private instances (`PrivatePostgres`,
`PrivateRabbitMQ`) on their own ports and data directories, so stopping one never
disturbs other tests or other people using the machine's shared services.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pika
import pika.exceptions
import psycopg

from support import free_port, wait_until

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_DSN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"
RABBIT_HOST = "127.0.0.1"
RABBIT_PORT = 5672
RABBIT_URL = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/%2F"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


# --- PostgreSQL -----------------------------------------------------------------------


def _pg_ready(dsn: str = PG_ADMIN_DSN) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def ensure_postgres() -> str:
    """The admin DSN of the machine's PostgreSQL, started if it was down."""
    if _pg_ready():
        return PG_ADMIN_DSN
    versions = sorted(os.listdir("/etc/postgresql"))
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
        check=False,
        capture_output=True,
    )
    wait_until(_pg_ready, timeout_s=60, what="PostgreSQL to start")
    return PG_ADMIN_DSN


@contextlib.contextmanager
def postgres_schema(dsn: str = PG_ADMIN_DSN) -> Iterator[str]:
    """A fresh schema name (created by `migrate`), dropped with everything in it after."""
    name = unique("t")
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (initdb in a temp dir, own port) that a fault
    test may stop and start at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="imageblur-pg-"))
        self.data = self.dir / "data"
        shutil.chown(self.dir, "postgres", "postgres")
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            capture_output=True,
            text=True,
            cwd=self.dir,
        )

    def init(self) -> PrivatePostgres:
        try:
            self._init()
        except BaseException:
            self.destroy()  # leave no half-started server behind
            raise
        return self

    def _init(self) -> None:
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync",
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip
        wait_until(lambda: _pg_ready(self.dsn), timeout_s=30, what="private PostgreSQL")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# --- RabbitMQ --------------------------------------------------------------------------


def _rabbit_ready(url: str = RABBIT_URL) -> bool:
    params = pika.URLParameters(url)
    params.socket_timeout = 2
    params.connection_attempts = 1
    try:
        pika.BlockingConnection(params).close()
        return True
    except pika.exceptions.AMQPError:
        return False


def ensure_rabbitmq() -> str:
    """The URL of the machine's RabbitMQ, started if it was down."""
    if _rabbit_ready():
        return RABBIT_URL
    subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True)
    wait_until(_rabbit_ready, timeout_s=120, interval_s=1, what="RabbitMQ to start")
    return RABBIT_URL


def _rabbitmqctl(*args: str, node: str | None = None) -> None:
    cmd = ["rabbitmqctl", *(["-n", node] if node else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def rabbitmq_connections(vhost: str, node: str | None = None) -> int:
    """How many client connections the broker holds open in `vhost`."""
    cmd = ["rabbitmqctl", *(["-n", node] if node else []), "-q", "list_connections"]
    out = subprocess.run(
        [*cmd, "-p", vhost, "state"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return sum(1 for line in out.splitlines() if line.strip() == "running")


@contextlib.contextmanager
def rabbitmq_vhost(node: str | None = None, port: int = RABBIT_PORT) -> Iterator[str]:
    """A fresh vhost for guest on the broker; yields its AMQP URL; deleted after."""
    name = unique("imageblur_test")
    _rabbitmqctl("add_vhost", name, node=node)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*", node=node)
    try:
        yield f"amqp://guest:guest@{RABBIT_HOST}:{port}/{name}"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            _rabbitmqctl("delete_vhost", name, node=node)


class PrivateRabbitMQ:
    """A single throw-away RabbitMQ node with its own name, ports and data dir, for fault
    tests that restart the broker. Started with `scripts/rabbitmq_cluster.sh`."""

    def __init__(self, nodes: int = 1) -> None:
        self.nodes = nodes
        self.dir = Path(tempfile.mkdtemp(prefix="imageblur-rmq-"))
        self.base_port = _free_port_block(nodes)
        self.name = unique("ib")

    @property
    def ports(self) -> list[int]:
        return [self.base_port + i for i in range(self.nodes)]

    @property
    def urls(self) -> list[str]:
        return [f"amqp://guest:guest@127.0.0.1:{p}/%2F" for p in self.ports]

    def node(self, i: int) -> str:
        return f"{self.name}-{i}@localhost"

    def _script(self, *args: str) -> None:
        script = Path(__file__).resolve().parent.parent / "scripts" / "rabbitmq_cluster.sh"
        env = {
            **os.environ,
            "RMQ_NAME": self.name,
            "RMQ_BASE_PORT": str(self.base_port),
            "RMQ_DIR": str(self.dir),
        }
        done = subprocess.run(
            ["bash", str(script), *args], env=env, timeout=300, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"rabbitmq_cluster.sh {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )

    def start(self, *, tries: int = 3) -> PrivateRabbitMQ:
        # A loaded machine can make a node's boot or join time out: fresh tries, each in
        # a new directory on new ports, and no half-started node left behind.
        for attempt in range(1, tries + 1):
            try:
                self._script("start", str(self.nodes))
                return self
            except RuntimeError:
                self.destroy()
                if attempt == tries:
                    raise
                self.dir = Path(tempfile.mkdtemp(prefix="imageblur-rmq-"))
                self.base_port = _free_port_block(self.nodes)
                self.name = unique("ib")
        raise AssertionError("unreachable")

    def kill(self, i: int) -> None:
        """kill -9 one node's Erlang VM."""
        self._script("kill", str(i))

    def restart(self, i: int) -> None:
        self._script("restart", str(i))

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, RuntimeError):
            self._script("stop", str(self.nodes))
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port_block(n: int) -> int:
    # RabbitMQ node i uses base+i for AMQP and base+1000+i for distribution
    for _ in range(100):
        base = free_port()
        if base + 1000 + n >= 65000:
            continue
        if all(not port_open("127.0.0.1", p) for p in range(base, base + n)) and all(
            not port_open("127.0.0.1", base + 1000 + i) for i in range(n)
        ):
            return base
    raise RuntimeError("no free port block")


# --- S3 (moto server) --------------------------------------------------------------------


class MotoServer:
    """A real S3-compatible HTTP server (moto) on a free loopback port, as a subprocess.

    `pause()`/`resume()` SIGSTOP/SIGCONT it: S3 that is unreachable (timeouts) for a
    while, without losing its in-memory state.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: port_open("127.0.0.1", self.port), timeout_s=30, what="moto server")
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def env(self) -> dict[str, str]:
        """Settings for a process that talks to this server with dummy credentials."""
        return {
            "IMAGEBLUR_S3_ENDPOINT_URL": self.endpoint_url,
            "IMAGEBLUR_S3_ACCESS_KEY_ID": "testing",
            "IMAGEBLUR_S3_SECRET_ACCESS_KEY": "testing",
            "IMAGEBLUR_S3_ADDRESSING_STYLE": "path",
            "IMAGEBLUR_S3_REGION": "us-east-1",
        }

    def client(self) -> S3Client:
        """A boto3 S3 client of this server, with the dummy credentials of `env`."""
        import boto3  # here: most users of this module never call S3 themselves

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
