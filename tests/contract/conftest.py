"""Fixtures of the contract suites: every port, built on every adapter, against real
services (a moto S3 server subprocess, the machine's PostgreSQL and RabbitMQ, started if
down), each test in its own bucket / schema / queue names; and on the fakes the unit
tests use (`tests/unit/fakes.py`), which must keep the same contract.

Each adapter fixture also has a "broken" twin pointed at nothing, to check that an
unreachable back end surfaces as the project's own error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

import servers
from imageblur.adapters.encrypted_store import EncryptedStore, Keyring
from imageblur.adapters.local_store import LocalObjectStore
from imageblur.adapters.memory_queue import MemoryJobQueue
from imageblur.adapters.postgres_repo import PostgresImageRepository
from imageblur.adapters.rabbitmq_queue import RabbitMQJobQueue
from imageblur.adapters.s3_store import S3ObjectStore
from imageblur.adapters.sqlite_repo import SqliteImageRepository
from imageblur.backends import Repository
from imageblur.domain import Job
from imageblur.ports import JobQueue, ObjectStore
from support import free_port, wait_until
from unit.fakes import FakeDatabase, FakeRepository, FakeStore

# --- session-wide services ------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_server() -> Iterator[servers.MotoServer]:
    server = servers.MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    return servers.ensure_postgres()


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    servers.ensure_rabbitmq()
    with servers.rabbitmq_vhost() as url:
        yield url


# --- ObjectStore -------------------------------------------------------------------------

StoreFactory = Callable[[str], ObjectStore]
# Every store also runs wrapped in the encryption of originals ("<adapter>-encrypted").
STORE_KINDS = ["local", "s3", "fake", "local-encrypted", "s3-encrypted", "fake-encrypted"]
TEST_KEYRING = Keyring(b"k" * 32, [b"o" * 32])


def _maybe_encrypted(kind: str, store: ObjectStore) -> ObjectStore:
    return EncryptedStore(store, TEST_KEYRING) if kind.endswith("-encrypted") else store


def _s3(server: servers.MotoServer, bucket: str, prefix: str) -> S3ObjectStore:
    return S3ObjectStore(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=server.endpoint_url,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        addressing_style="path",
        create_bucket=True,
        timeout_s=5,
    )


@pytest.fixture(params=STORE_KINDS)
def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], ObjectStore]]:
    """Makes stores at distinct locations: `factory("a")`, `factory("b")`."""
    made: list[ObjectStore] = []
    bucket = servers.unique("t").replace("_", "-")

    def factory(location: str) -> ObjectStore:
        store: ObjectStore
        adapter = request.param.removesuffix("-encrypted")
        if adapter == "local":
            store = LocalObjectStore(tmp_path / location)
        elif adapter == "fake":
            store = FakeStore(location)
        else:
            # Same bucket, different prefixes: the tighter isolation to prove.
            store = _s3(request.getfixturevalue("moto_server"), bucket, f"{location}/")
        store = _maybe_encrypted(request.param, store)
        made.append(store)
        return store

    yield factory
    for store in made:
        for obj in list(store.list()):
            store.delete(obj.key)
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> ObjectStore:
    return store_factory("main")


@pytest.fixture(params=STORE_KINDS)
def broken_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    store: ObjectStore
    adapter = request.param.removesuffix("-encrypted")
    if adapter == "fake":
        store = FakeStore("broken")
        store.down = True
    elif adapter == "local":
        blocker = tmp_path / "a-file"
        blocker.write_bytes(b"")
        store = LocalObjectStore(blocker / "store")  # a folder under a file cannot exist
    else:
        store = S3ObjectStore(
            bucket="nowhere",
            prefix="",
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            region="us-east-1",
            access_key_id="testing",
            secret_access_key="testing",
            addressing_style="auto",
            create_bucket=False,
            timeout_s=1,
            max_attempts=1,
        )
    store = _maybe_encrypted(request.param, store)
    yield store
    store.close()


# --- the repository -----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres", "fake"])
def repo_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], Repository]]:
    """Makes repositories sharing one database (as separate processes would);
    `factory(webhook_url=...)`: one whose notifying transitions write outbox rows."""
    made: list[Repository] = []
    with_schema = request.param == "postgres"
    schema_cm = (
        servers.postgres_schema(request.getfixturevalue("postgres_dsn")) if (with_schema) else None
    )
    schema = schema_cm.__enter__() if schema_cm is not None else ""
    database = FakeDatabase()

    def factory(*, webhook_url: str | None = None) -> Repository:
        repo: Repository
        if request.param == "sqlite":
            repo = SqliteImageRepository(tmp_path / "meta.sqlite3", webhook_url=webhook_url)
        elif request.param == "fake":
            repo = FakeRepository(database, webhook_url=webhook_url)
        else:
            repo = PostgresImageRepository(
                servers.PG_ADMIN_DSN,
                schema=schema,
                pool_min=1,
                pool_max=8,
                timeout_s=5,
                webhook_url=webhook_url,
            )
        made.append(repo)
        return repo

    try:
        yield factory
    finally:
        for repo in made:
            repo.close()
        if schema_cm is not None:
            schema_cm.__exit__(None, None, None)


@pytest.fixture
def repo(repo_factory: Callable[[], Repository]) -> Repository:
    repo = repo_factory()
    repo.migrate()
    return repo


@pytest.fixture(params=["sqlite", "postgres", "fake"])
def broken_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repository]:
    repo: Repository
    if request.param == "fake":
        repo = FakeRepository()
        repo.down = True
    elif request.param == "sqlite":
        blocker = tmp_path / "a-file"
        blocker.write_bytes(b"")
        repo = SqliteImageRepository(blocker / "db" / "meta.sqlite3")
    else:
        repo = PostgresImageRepository(
            f"postgresql://postgres@127.0.0.1:{free_port()}/test",
            schema="nowhere",
            pool_min=0,
            pool_max=1,
            timeout_s=1,
        )
    yield repo
    repo.close()


# --- JobQueue -----------------------------------------------------------------------------------


def _queue_factory(request: pytest.FixtureRequest, kind: str) -> Iterator[Callable[[], JobQueue]]:
    made: list[JobQueue] = []
    name = servers.unique("jobs")
    memory = MemoryJobQueue() if kind == "memory" else None

    def factory() -> JobQueue:
        queue: JobQueue
        if memory is not None:
            queue = memory
        else:
            queue = RabbitMQJobQueue(
                request.getfixturevalue("rabbitmq_url"),
                queue=name,
                queue_type="quorum" if kind.endswith("quorum") else "classic",
                prefetch=10,
                timeout_s=5,
            )
        made.append(queue)
        return queue

    yield factory
    for queue in made:
        if isinstance(queue, RabbitMQJobQueue):
            queue.delete_topology()
        queue.close()


@pytest.fixture(params=["memory", "rabbitmq-quorum", "rabbitmq-classic"])
def queue_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[], JobQueue]]:
    """Makes queue handles on one queue (as an API and a worker process would)."""
    yield from _queue_factory(request, request.param)


@pytest.fixture(params=["rabbitmq-quorum", "rabbitmq-classic"])
def rabbit_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[], RabbitMQJobQueue]]:
    """Handles on one RabbitMQ queue, for what only a real broker can show."""
    for factory in _queue_factory(request, request.param):
        yield lambda make=factory: cast(RabbitMQJobQueue, make())


@pytest.fixture
def quorum_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[], RabbitMQJobQueue]]:
    """Handles on one RabbitMQ quorum queue (for quorum-only features)."""
    for factory in _queue_factory(request, "rabbitmq-quorum"):
        yield lambda make=factory: cast(RabbitMQJobQueue, make())


@pytest.fixture
def queue(queue_factory: Callable[[], JobQueue]) -> JobQueue:
    return queue_factory()


@pytest.fixture(params=["memory", "rabbitmq"])
def broken_queue(request: pytest.FixtureRequest) -> Iterator[JobQueue]:
    queue: JobQueue
    if request.param == "memory":
        queue = MemoryJobQueue()
        queue.close()  # the in-process queue's only way to be unavailable
    else:
        queue = RabbitMQJobQueue(
            f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
            queue="nowhere",
            queue_type="quorum",
            prefetch=1,
            timeout_s=1,
        )
    yield queue
    queue.close()


def dead_letters(queue: JobQueue, *, expect: int, timeout_s: float = 30) -> list[tuple[Job, str]]:
    """The parked jobs and their reasons, whatever the adapter keeps them in."""
    found: list[tuple[Job, str]] = []

    def all_found() -> bool:
        found.extend((d.job, d.reason) for d in queue.take_dead_letters() if d.job)
        return len(found) >= expect

    wait_until(all_found, timeout_s=timeout_s, interval_s=0.1, what=f"{expect} dead letters")
    return found
