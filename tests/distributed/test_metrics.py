"""Metrics of the distributed set-up: the API's /metrics (HTTP, rejections, the picture
gauges read from PostgreSQL) and each worker's own port (jobs, stages, queue wait)."""

from __future__ import annotations

import httpx
import pytest

from metrics_scrape import Samples, delta, get, scrape, total, wait_for_sample

from .conftest import DeploymentFactory
from .harness import EXAMPLES, Backends


@pytest.mark.slow
def test_api_and_worker_ports_show_real_uploads(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    app = deploy(backends, workers=2, metrics_port="0")
    workers = app.worker_metrics_urls()
    assert len(set(workers)) == 2

    def workers_total() -> Samples:
        summed: Samples = {}
        for url in workers:
            for key, v in scrape(url).items():
                summed[key] = summed.get(key, 0.0) + v
        return summed

    api_before, workers_before = scrape(f"{app.url}/metrics"), workers_total()
    pictures = sorted(EXAMPLES.glob("*.jpg"))
    ids = [app.submit(p.read_bytes(), name=p.name) for p in pictures]
    refused = httpx.post(
        f"{app.url}/picture", content=b"GIF89a not really", headers={"content-type": "image/gif"}
    )
    assert refused.status_code == 415
    app.wait_final(ids)
    app.assert_done_exactly_once(ids)

    n = len(ids)
    after = wait_for_sample(
        workers_total,
        lambda s: (
            delta(workers_before, s, "imageblur_jobs_total", kind="detect", outcome="done") >= n
        ),
        timeout_s=30,
        what=f"{n} jobs counted done on the workers' ports",
    )
    assert delta(workers_before, after, "imageblur_jobs_total", kind="detect", outcome="done") == n
    for stage in ("read", "decode", "detect", "blur", "encode", "store"):
        assert delta(workers_before, after, "imageblur_job_stage_seconds_count", stage=stage) == n
    assert delta(workers_before, after, "imageblur_queue_wait_seconds_count") == n
    assert delta(workers_before, after, "imageblur_image_megapixels_count") == n
    assert delta(workers_before, after, "imageblur_faces_total") >= n
    assert total(after, "imageblur_backend_errors_total") == 0

    api = wait_for_sample(
        lambda: scrape(f"{app.url}/metrics"),
        lambda s: get(s, "imageblur_pictures", status="done") == n,
        timeout_s=40,
        what=f"imageblur_pictures{{status=done}} == {n} on the API",
    )
    post = {"route": "/picture", "method": "POST"}
    assert delta(api_before, api, "imageblur_http_requests_total", status="202", **post) == n
    assert delta(api_before, api, "imageblur_http_requests_total", status="415", **post) == 1
    reason = "unsupported_media_type"
    assert delta(api_before, api, "imageblur_uploads_rejected_total", reason=reason) == 1
    assert get(api, "imageblur_pictures", status="pending") == 0
    assert get(api, "imageblur_oldest_pending_age_seconds") == 0
    # The API runs no jobs: job outcomes are the workers' series only.
    assert total(api, "imageblur_jobs_total") == 0

    # Every worker log line of a job names the upload's request id.
    logs = app.logs()
    assert '"event": "job.done"' in logs
    for line in logs.splitlines():
        if '"event": "job.done"' in line or '"event": "job.claimed"' in line:
            assert '"request_id": "' in line, line
