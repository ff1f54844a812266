"""Bucket batches (issue 27) on the distributed set-up (an API and two workers as
processes, PostgreSQL, RabbitMQ, S3 on the moto server): a batch between two buckets
runs on the workers from its own queue, each object anonymized once under the target
prefix, every source as it was, and a repost creates nothing new."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import support

from .conftest import DeploymentFactory
from .harness import Backends, generated_jpeg

pytestmark = pytest.mark.slow
COUNT = 30


def test_a_batch_between_buckets_runs_on_the_workers(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    s3 = backends.s3.client()
    source, target = f"{backends.input_bucket}-src", f"{backends.input_bucket}-dst"
    for bucket in (source, target):
        s3.create_bucket(Bucket=bucket)
    for n in range(COUNT):
        s3.put_object(Bucket=source, Key=f"set/{n:03}.jpg", Body=generated_jpeg(n, 160, 120))
    before = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=source)["Contents"]}
    app = deploy(
        backends,
        workers=2,
        batch_buckets=f"{source},{target}",
        batch_window="7",
        batch_page_size="10",
        batch_pump_interval_s="0.2",
    )
    body = {
        "source": {"bucket": source, "prefix": "set/"},
        "target": {"bucket": target, "prefix": "out/"},
    }
    with httpx.Client(base_url=app.url, timeout=30) as client:
        posted = client.post("/batches", json=body)
        assert posted.status_code == 202, posted.text
        batch_id = posted.json()["id"]
        seen: dict[str, Any] = {}

        def ended() -> bool:
            seen.update(client.get(f"/batches/{batch_id}").json())
            assert seen["queued"] <= 7  # the window
            return seen["status"] == "done"

        support.wait_until(ended, timeout_s=300, interval_s=0.2, what="the batch", details=app.logs)
        assert (seen["total"], seen["done"], seen["failed"], seen["skipped"]) == (
            COUNT,
            COUNT,
            0,
            {},
        )
        again = client.post("/batches", json=body)
        assert (again.status_code, again.json()["id"]) == (200, batch_id)
        assert client.get("/pictures").json()["total"] == 0
    written = s3.list_objects_v2(Bucket=target)["Contents"]
    assert sorted(o["Key"] for o in written) == [f"out/{n:03}.jpg" for n in range(COUNT)]
    assert {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=source)["Contents"]} == before
