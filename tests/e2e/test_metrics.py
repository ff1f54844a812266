"""Metrics and request ids through a real embedded server: real uploads, good and bad,
then GET /metrics read as Prometheus reads it, and the JSON log lines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from metrics_scrape import Samples, delta, get, scrape, total, wait_for_sample
from support import BILL, LINUS, Server, run_server, wait_until

TEMPLATES = {"/picture", "/picture/{image_id}", "/picture/{image_id}/image", "/metrics", "/healthz"}
METRICS_TOKEN = "metrics-token-0123456789"
API_TOKEN = "api-token-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("metrics") / "data") as srv:
        yield srv


def log_lines(server: Server) -> list[dict[str, Any]]:
    lines = []
    for line in server.logs().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_uploads_good_and_bad_move_the_series_by_the_right_amounts(server: Server) -> None:
    url = f"{server.url}/metrics"
    before = scrape(url)
    with server.client() as client:
        ids = []
        for picture in (BILL, LINUS):
            answer = client.post(
                "/picture", files={"image": (picture.name, picture.read_bytes(), "image/jpeg")}
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        bad = client.post("/picture", files={"image": ("notes.jpg", b"just text", "image/jpeg")})
        assert bad.status_code == 415
        assert client.get("/no/such/path").status_code == 404
        done = [server.wait_done(client, image_id) for image_id in ids]
    assert [d["status"] for d in done] == ["done", "done"]

    # The worker counts a job once it is settled, just after the record says done.
    after = wait_for_sample(
        lambda: scrape(url),
        lambda s: delta(before, s, "imageblur_jobs_total", kind="detect", outcome="done") >= 2,
        timeout_s=30,
        what="two jobs counted done",
    )
    post = {"route": "/picture", "method": "POST"}
    assert delta(before, after, "imageblur_http_requests_total", status="202", **post) == 2
    assert delta(before, after, "imageblur_http_requests_total", status="415", **post) == 1
    assert delta(before, after, "imageblur_http_request_duration_seconds_count", **post) == 3
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert delta(before, after, "imageblur_http_requests_total", **unmatched) == 1
    read = {"route": "/picture/{image_id}", "method": "GET", "status": "200"}
    assert get(after, "imageblur_http_requests_total", **read) >= 2
    assert {
        dict(labels)["route"] for name, labels in after if name == "imageblur_http_requests_total"
    } <= {*TEMPLATES, "unmatched"}, "a raw path became a label"
    reason = "unsupported_media_type"
    assert delta(before, after, "imageblur_uploads_rejected_total", reason=reason) == 1
    assert total(after, "imageblur_uploads_rejected_total") == 1

    assert delta(before, after, "imageblur_jobs_total", kind="detect", outcome="done") == 2
    for outcome in ("retry", "failed", "dead_lettered", "skipped"):
        assert get(after, "imageblur_jobs_total", kind="detect", outcome=outcome) == 0, outcome
    for stage in ("read", "decode", "detect", "blur", "encode", "store"):
        assert delta(before, after, "imageblur_job_stage_seconds_count", stage=stage) == 2
        assert delta(before, after, "imageblur_job_stage_seconds_sum", stage=stage) > 0
    assert delta(before, after, "imageblur_queue_wait_seconds_count") == 2
    faces = sum(d["faces"] for d in done)
    assert faces >= 2
    assert delta(before, after, "imageblur_faces_total") == faces
    assert delta(before, after, "imageblur_image_megapixels_count") == 2
    megapixels = sum(d["width"] * d["height"] for d in done) / 1e6
    assert delta(before, after, "imageblur_image_megapixels_sum") == pytest.approx(megapixels)
    assert total(after, "imageblur_backend_errors_total") == 0

    # The gauges are read at most every 15 s: wait for a read after the jobs finished.
    gauges = wait_for_sample(
        lambda: scrape(url),
        lambda s: get(s, "imageblur_pictures", status="done") == 2,
        timeout_s=40,
        what="imageblur_pictures{status=done} == 2",
    )
    assert get(gauges, "imageblur_pictures", status="pending") == 0
    assert get(gauges, "imageblur_pictures", status="failed") == 0
    assert get(gauges, "imageblur_oldest_pending_age_seconds") == 0


def test_one_picture_can_be_followed_by_its_request_id(server: Server) -> None:
    with server.client() as client:
        answer = client.post(
            "/picture",
            files={"image": (LINUS.name, LINUS.read_bytes(), "image/jpeg")},
            headers={"X-Request-ID": "trace-Linus_1.0"},
        )
        assert answer.headers["x-request-id"] == "trace-Linus_1.0"
        image_id = answer.json()["id"]
        assert answer.json()["request_id"] == "trace-Linus_1.0"
        assert server.wait_done(client, image_id)["request_id"] == "trace-Linus_1.0"
        # Anything else is replaced, on every answer, errors included.
        given: str | bytes
        for given in ("x" * 129, "two words", b'forged"{\xc3\xbc}'):
            missing = client.get("/picture/" + "0" * 32, headers={"X-Request-ID": given})
            assert missing.status_code == 404
            assert re.fullmatch(r"[0-9a-f]{32}", missing.headers["x-request-id"]), given
        assert re.fullmatch(r"[0-9a-f]{32}", client.get("/healthz").headers["x-request-id"])

    def events() -> set[str]:
        return {
            line["event"]
            for line in log_lines(server)
            if line.get("request_id") == "trace-Linus_1.0"
        }

    # API and worker, from the upload to the acknowledgement.
    wait_until(
        lambda: {"http.request", "image.accepted", "job.claimed", "job.done"} <= events(),
        timeout_s=30,
        what="the request id in the log lines of the upload and of the job",
    )
    for line in log_lines(server):
        if line.get("image_id") == image_id:
            assert line.get("request_id") == "trace-Linus_1.0", line
    assert "forged" not in server.logs() and "two words" not in server.logs()
    assert "x" * 129 not in server.logs()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"IMAGEBLUR_API_TOKEN": API_TOKEN, "IMAGEBLUR_METRICS_TOKEN": METRICS_TOKEN}
    with run_server(tmp_path_factory.mktemp("guarded") / "data", env=env) as srv:
        yield srv


def test_the_metrics_token_guards_metrics_alone(guarded: Server) -> None:
    url = f"{guarded.url}/metrics"
    for header in ({}, {"Authorization": f"Bearer {API_TOKEN}"}):
        refused = httpx.get(url, headers=header, timeout=10)
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"
    before: Samples = scrape(url, token=METRICS_TOKEN)
    # The API token still guards the API, and a refused upload counts as one.
    answer = httpx.post(
        f"{guarded.url}/picture",
        files={"image": ("a.jpg", LINUS.read_bytes(), "image/jpeg")},
        timeout=10,
    )
    assert answer.status_code == 401
    after = scrape(url, token=METRICS_TOKEN)
    assert delta(before, after, "imageblur_uploads_rejected_total", reason="unauthorized") == 1
    assert httpx.get(f"{guarded.url}/healthz", timeout=10).status_code == 200
