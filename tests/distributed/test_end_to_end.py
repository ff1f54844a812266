"""The whole distributed path with separate processes: one API, two workers, PostgreSQL,
RabbitMQ and an S3 server."""

from __future__ import annotations

import httpx
import pytest

from .conftest import DeploymentFactory
from .harness import EXAMPLES, Backends, generated_jpeg


@pytest.mark.slow
def test_examples_and_fifty_generated_images_end_done(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    app = deploy(backends, workers=2)
    examples = sorted(EXAMPLES.glob("*.jpg"))
    assert examples, f"no example pictures in {EXAMPLES}"
    images = [(p.name, p.read_bytes()) for p in examples]
    images += [(f"generated-{i}.jpg", generated_jpeg(i)) for i in range(50)]

    ids = app.submit_many(images)
    assert len(set(ids)) == len(images)
    app.wait_final(ids)
    app.assert_done_exactly_once(ids)

    with httpx.Client(base_url=app.url, timeout=30) as client:
        for (name, data), image_id in zip(images, ids, strict=True):
            body = client.get(f"/picture/{image_id}").json()
            assert body["status"] == "done"
            assert body["name"] == name
            assert body["content_type"] == "image/jpeg"
            assert body["bytes"] == len(data)
            assert body["url"].startswith(f"s3://{backends.output_bucket}/")
        # Each example picture shows one face, and the result is served by the API.
        for image_id in ids[: len(examples)]:
            assert client.get(f"/picture/{image_id}").json()["faces"] >= 1
            result = client.get(f"/picture/{image_id}/image")
            assert result.status_code == 200
            assert result.headers["content-type"] == "image/jpeg"
            assert result.content[:2] == b"\xff\xd8"
        assert client.get("/readyz").status_code == 200
        listed = client.get("/pictures", params={"limit": 100}).json()
        assert listed["total"] == len(images)
    assert app.statuses[500] == 0


@pytest.mark.slow
def test_results_can_be_served_by_presigned_url(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    app = deploy(backends, workers=1, result_delivery="presigned", presigned_ttl_s="60")
    image_id = app.submit(generated_jpeg(3), name="presigned.jpg")
    app.wait_final([image_id])
    app.assert_done_exactly_once([image_id])
    response = httpx.get(f"{app.url}/picture/{image_id}/image", timeout=30)
    assert response.status_code == 307
    location = response.headers["location"]
    assert location.startswith(backends.s3.endpoint_url)
    assert backends.output_bucket in location and "Signature" in location
    fetched = httpx.get(location, timeout=30)  # straight from S3, not through the API
    assert fetched.status_code == 200
    assert fetched.content[:2] == b"\xff\xd8"
