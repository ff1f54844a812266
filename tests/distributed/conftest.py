"""Fixtures of the distributed tests: fresh back-end namespaces per test, private
PostgreSQL / RabbitMQ instances for the tests that stop them, and deployments of real
`imageblur` processes that are always stopped afterwards."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import servers
from support import wait_until

from .harness import Backends, Deployment


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Every client thread a test started (uploaders, probers) ends with the test."""
    before = set(threading.enumerate())
    yield
    wait_until(
        lambda: set(threading.enumerate()) <= before,
        timeout_s=60,
        what="the test's threads to end",
    )


@pytest.fixture
def moto() -> Iterator[servers.MotoServer]:
    server = servers.MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def backends(moto: servers.MotoServer) -> Iterator[Backends]:
    """The machine's PostgreSQL and RabbitMQ, in a fresh schema and vhost."""
    dsn = servers.ensure_postgres()
    servers.ensure_rabbitmq()
    with servers.postgres_schema(dsn) as schema, servers.rabbitmq_vhost() as url:
        yield Backends(postgres_dsn=dsn, schema=schema, rabbitmq_url=url, s3=moto)


@pytest.fixture
def private_postgres() -> Iterator[servers.PrivatePostgres]:
    pg = servers.PrivatePostgres().init()
    yield pg
    pg.destroy()


@pytest.fixture
def private_rabbitmq() -> Iterator[servers.PrivateRabbitMQ]:
    rmq = servers.PrivateRabbitMQ(nodes=1).start()
    yield rmq
    rmq.destroy()


DeploymentFactory = Callable[..., Deployment]


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[DeploymentFactory]:
    """`deploy(backends, workers=2, **settings)`: migrate, start an API and workers."""
    made: list[Deployment] = []

    def factory(backends: Backends, *, workers: int = 2, **settings: str) -> Deployment:
        deployment = Deployment(backends, tmp_path, **settings)
        made.append(deployment)
        return deployment.start(workers=workers)

    yield factory
    for deployment in made:
        deployment.stop()
