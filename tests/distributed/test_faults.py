"""Fault tests: a crash or an outage in the middle of a batch, and still every job ends
`done` exactly once (one `done` transition, one result object, no original left).

The tests that stop PostgreSQL or RabbitMQ use private instances, so that nothing else
on the machine notices.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

import servers
from imageblur.domain import (
    ErrorCode,
    ImageRecord,
    Status,
    new_image_id,
    object_key,
    utcnow,
)
from support import wait_until

from .batches import Uploader, batch, wait_under_way
from .conftest import DeploymentFactory
from .harness import Backends, Deployment, generated_jpeg

pytestmark = pytest.mark.slow


def probe_statuses(
    app: Deployment, image_id: str, *, until: Callable[[Counter[int]], bool]
) -> Counter[int]:
    """Hit the API until the statuses seen so far pass `until` (the outage noticed),
    and count them (transport errors as 0)."""
    seen: Counter[int] = Counter()

    def probe() -> bool:
        for path in (f"/picture/{image_id}", "/readyz", "/pictures"):
            try:
                seen[httpx.get(app.url + path, timeout=10).status_code] += 1
            except httpx.TransportError:
                seen[0] += 1
        return until(seen)

    wait_until(probe, timeout_s=90, interval_s=0.2, what="the outage noticed", details=seen.copy)
    return seen


def unavailable(seen: Counter[int]) -> bool:
    return seen[503] > 0


def test_worker_killed_mid_job(backends: Backends, deploy: DeploymentFactory) -> None:
    app = deploy(backends, workers=2)
    ids = app.submit_many(batch(8, size=(1600, 1200)))
    worker_pids = {p.pid for p in app.workers}

    repo = backends.repository()

    def kill_a_worker_mid_job() -> ImageRecord | None:
        for record in repo.list(limit=100):
            owner_pid = int(record.lease_owner.split(":")[1]) if record.lease_owner else -1
            if record.status is Status.PROCESSING and owner_pid in worker_pids:
                os.kill(owner_pid, signal.SIGKILL)  # mid-job: claimed, result not stored
                return record
        return None

    victim = wait_until(kill_a_worker_mid_job, timeout_s=60, interval_s=0.02, what="a job in hand")

    app.wait_final(ids)
    app.assert_done_exactly_once(ids)
    recovered = repo.get(victim.id)
    assert recovered is not None and recovered.attempts >= 2  # taken over after the lease
    repo.close()


def test_rabbitmq_restart_during_batch(
    backends: Backends, private_rabbitmq: servers.PrivateRabbitMQ, deploy: DeploymentFactory
) -> None:
    backends.rabbitmq_url = private_rabbitmq.urls[0]
    app = deploy(backends, workers=2)
    first = app.submit(generated_jpeg(999), name="before.jpg")
    uploads = Uploader(app, batch(60, size=(640, 480)))
    uploads.start()
    wait_under_way(backends, uploads)
    private_rabbitmq.kill(0)  # a crash, the harshest restart
    during = probe_statuses(app, first, until=unavailable)
    private_rabbitmq.restart(0)
    ids = [first, *uploads.result()]
    app.wait_final(ids)
    app.assert_done_exactly_once(ids)
    assert during[503] > 0, during  # readiness said "unavailable" while the broker was down
    assert during[500] == 0 and app.statuses[500] == 0, (during, app.statuses)
    # The API recovered without a restart: ready again, and it accepts uploads.
    wait_until(
        lambda: httpx.get(app.url + "/readyz", timeout=10).status_code == 200,
        timeout_s=30,
        what="the API to be ready again",
    )
    assert app.upload(generated_jpeg(12345), name="after.jpg").status_code == 202


def test_postgres_restart_during_batch(
    backends: Backends, private_postgres: servers.PrivatePostgres, deploy: DeploymentFactory
) -> None:
    backends.postgres_dsn = private_postgres.dsn
    app = deploy(backends, workers=2)
    first = app.submit(generated_jpeg(999), name="before.jpg")
    uploads = Uploader(app, batch(60, size=(640, 480)))
    uploads.start()
    wait_under_way(backends, uploads)
    private_postgres.stop()
    during = probe_statuses(app, first, until=unavailable)
    private_postgres.start()
    ids = [first, *uploads.result()]
    app.wait_final(ids)
    app.assert_done_exactly_once(ids)
    assert during[503] > 0, during  # the API said "unavailable" while the database was down
    assert during[500] == 0 and app.statuses[500] == 0, (during, app.statuses)
    assert httpx.get(app.url + "/readyz", timeout=10).status_code == 200  # recovered


def test_s3_unreachable_for_a_while(backends: Backends, deploy: DeploymentFactory) -> None:
    app = deploy(backends, workers=2)
    first = app.submit(generated_jpeg(999), name="before.jpg")
    uploads = Uploader(app, batch(60, size=(640, 480)))
    uploads.start()
    wait_under_way(backends, uploads)
    backends.s3.pause()  # requests hang: timeouts, not refusals
    # Readiness answers 503, or no answer in time (every S3 call waits out its timeout).
    during = probe_statuses(app, first, until=lambda seen: seen[503] + seen[0] > 0)
    backends.s3.resume()
    ids = [first, *uploads.result()]
    app.wait_final(ids)
    app.assert_done_exactly_once(ids)
    assert during[500] == 0 and app.statuses[500] == 0, (during, app.statuses)


def test_an_s3_outage_longer_than_every_retry_loses_no_image(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    """An outage is not the image's fault: however long it lasts, the job waits for the
    store instead of using up its attempts and being parked (its original would then be
    collected: the image lost)."""
    app = deploy(
        backends,
        workers=1,
        max_attempts="2",
        s3_timeout_s="1",
        retry_base_delay_s="0.2",
        retry_max_delay_s="0.5",
    )
    image_id = app.submit(generated_jpeg(1), name="patient.jpg")
    backends.s3.pause()
    repo = backends.repository()
    try:
        wait_until(
            lambda: (
                (r := repo.get(image_id)) is not None
                and r.error_code is ErrorCode.BACKEND_UNAVAILABLE
            ),
            timeout_s=60,
            what="the outage to be noticed",
        )
        wait_until(  # many retries: far more than max_attempts
            lambda: app.events("job.backend_unavailable", image_id=image_id) >= 5,
            timeout_s=120,
            what="five retries in the outage",
        )
        record = repo.get(image_id)
        assert record is not None and record.status in (Status.PENDING, Status.PROCESSING)
        assert record.attempts <= 2
    finally:
        backends.s3.resume()
    app.wait_final([image_id], timeout_s=120)
    app.assert_done_exactly_once([image_id])
    repo.close()
    queue = backends.queue_handle()
    assert queue.take_dead_letters() == []
    queue.close()


def test_api_crash_between_storing_the_original_and_publishing(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    """The two states a crash there can leave: an original without a record, and a
    pending record whose job was never published. Both are made exactly as the API
    makes them, then the running system must clean up and finish."""
    app = deploy(backends, workers=2, pending_grace_s="2", orphan_grace_s="2")
    originals, repo = backends.store("input"), backends.repository()
    data = generated_jpeg(7)

    orphan_key = object_key(new_image_id(), ".jpg")  # crashed before the record
    originals.put(orphan_key, data, content_type="image/jpeg")

    unpublished_id = new_image_id()  # crashed after the record, before publishing
    key = object_key(unpublished_id, ".jpg")
    originals.put(key, data, content_type="image/jpeg")
    now = utcnow() - timedelta(seconds=1)
    repo.add(
        ImageRecord(
            id=unpublished_id,
            name="unpublished.jpg",
            status=Status.PENDING,
            content_type="image/jpeg",
            bytes=len(data),
            width=320,
            height=240,
            input_key=key,
            created_at=now,
            updated_at=now,
        )
    )
    app.wait_final([unpublished_id], timeout_s=60)
    wait_until(
        lambda: not originals.exists(orphan_key), timeout_s=30, what="the orphan to be collected"
    )
    app.assert_done_exactly_once([unpublished_id])
    originals.close()
    repo.close()


def test_api_killed_during_uploads(backends: Backends, deploy: DeploymentFactory) -> None:
    """kill -9 the API while clients upload, at whatever step it happens to be; restart
    it. Every record that exists ends done once and no original is left behind."""
    app = deploy(backends, workers=2, pending_grace_s="2", orphan_grace_s="2")
    uploads = Uploader(app, batch(150))
    uploads.start()
    wait_under_way(backends, uploads, accepted=10)
    assert uploads.is_alive(), "the uploads were over before the API was killed"
    app.kill_api()
    app.start_api()
    client_ids = uploads.result()

    repo = backends.repository()
    all_ids = [r.id for r in repo.list(limit=1000)]
    repo.close()
    assert set(client_ids) <= set(all_ids)
    app.wait_final(all_ids)
    originals = backends.store("input")
    wait_until(lambda: not list(originals.list()), timeout_s=30, what="orphaned originals to go")
    originals.close()
    app.assert_done_exactly_once(all_ids)
