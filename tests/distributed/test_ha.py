"""High availability: a 3-node RabbitMQ cluster (scripts/rabbitmq_cluster.sh) holding a
quorum queue; kill -9 the queue's leader in the middle of a batch; every job still ends
done exactly once."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

import servers
from support import wait_until

from .batches import Uploader, batch, wait_under_way
from .conftest import DeploymentFactory
from .harness import Backends

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[servers.PrivateRabbitMQ]:
    rmq = servers.PrivateRabbitMQ(nodes=3).start()
    yield rmq
    rmq.destroy()


def queue_leader(rmq: servers.PrivateRabbitMQ, queue: str, *, ask: int) -> str | None:
    out = subprocess.run(
        ["rabbitmqctl", "-n", rmq.node(ask), "-q", "list_queues", "-p", "/",
         "name", "type", "leader", "members", "--formatter", "json"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    for row in json.loads(out or "[]"):
        if row["name"] == queue:
            assert row["type"] == "quorum" and len(row["members"]) == 3, row
            return str(row["leader"])
    return None


def test_killing_the_quorum_queue_leader_mid_batch_loses_nothing(
    backends: Backends, cluster: servers.PrivateRabbitMQ, deploy: DeploymentFactory
) -> None:
    # Every process knows all three nodes and fails over to the next one.
    backends.rabbitmq_url = ",".join(cluster.urls)
    app = deploy(backends, workers=2, rabbitmq_queue_type="quorum")
    uploads = Uploader(app, batch(60, size=(640, 480)))
    uploads.start()
    wait_under_way(backends, uploads)

    leader = queue_leader(cluster, backends.queue, ask=1)
    assert leader is not None, "the job queue was not declared"
    victim = next(i for i in range(3) if cluster.node(i) == leader)
    cluster.kill(victim)
    survivor = (victim + 1) % 3
    wait_until(
        lambda: queue_leader(cluster, backends.queue, ask=survivor) not in (None, leader),
        timeout_s=60,
        interval_s=1,
        what="a new quorum queue leader",
    )

    ids = uploads.result()
    app.wait_final(ids)
    app.assert_done_exactly_once(ids)
    assert app.statuses[500] == 0
