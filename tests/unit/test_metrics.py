"""The metrics the core moves, read back from the registry as Prometheus would see them;
the picture gauges' cache; back-end errors counted by the proxies; the job message's
request id."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry

from imageblur.backends import Backends
from imageblur.domain import Face, InvalidJob, Job, PictureStats, StoredObject, StoreUnavailable
from imageblur.entrypoints.metrics_server import MetricsServer
from imageblur.entrypoints.middleware.http_metrics import error_code
from imageblur.jobs import JobProcessor, Outcome
from imageblur.metrics import STAGES, Metrics, PictureCollector, count_backend_errors
from support import jpeg_bytes
from unit.fakes import FakeStore
from unit.world import World

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_a_finished_job_moves_stages_faces_plates_megapixels_queue_wait_and_outcome(
    world: World,
) -> None:
    metrics = Metrics()
    world.detector.faces.append(Face(120, 40, 180, 60, 0.8, kind="plate"))
    record = world.images.submit(jpeg_bytes(200, 100))
    world.clock.advance(3)
    processor: JobProcessor = world.processor(metrics=metrics)
    assert processor.handle(world.next_delivery()) is Outcome.DONE
    r = metrics.registry
    for stage in STAGES:
        assert value(r, "imageblur_job_stage_seconds_count", stage=stage) == 1, stage
    assert value(r, "imageblur_faces_total") == 1  # the fake detector's one face
    assert value(r, "imageblur_plates_total") == 1  # and the plate added above
    assert value(r, "imageblur_image_megapixels_count") == 1
    assert value(r, "imageblur_image_megapixels_sum") == pytest.approx(0.02)
    assert value(r, "imageblur_queue_wait_seconds_count") == 1
    assert value(r, "imageblur_queue_wait_seconds_sum") == pytest.approx(3.0)
    assert world.repo.get(record.id) is not None


def test_a_retried_claim_is_not_a_queue_wait(world: World) -> None:
    metrics = Metrics()
    world.images.submit(jpeg_bytes())
    world.originals.down = True
    processor = world.processor(metrics=metrics)
    assert processor.handle(world.next_delivery()) is Outcome.RETRY
    world.originals.down = False
    world.clock.advance(60)
    # The outage gave the attempt back: the next claim is attempt 1 again, and counts once.
    assert processor.handle(world.next_delivery()) is Outcome.DONE
    assert value(metrics.registry, "imageblur_queue_wait_seconds_count") == 2


def test_backend_errors_are_counted_by_backend_and_operation(world: World) -> None:
    metrics = Metrics()
    down = FakeStore("down")
    down.objects["a.jpg"] = (b"x", T0)
    down.down = True
    counted = count_backend_errors(Backends(world.repo, down, world.results, world.queue), metrics)
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            counted.originals.get("a.jpg")
    down.list = broken_listing  # type: ignore[method-assign]
    listing = counted.originals.list()  # a listing fails while it is read, not when made
    with pytest.raises(StoreUnavailable):
        list(listing)
    assert counted.results.exists("nothing") is False  # calls pass through
    r = metrics.registry
    labels = {"backend": "originals"}
    assert value(r, "imageblur_backend_errors_total", operation="get", **labels) == 2
    assert value(r, "imageblur_backend_errors_total", operation="list", **labels) == 1
    assert value(r, "imageblur_backend_errors_total", backend="results", operation="exists") == 0


def test_a_counted_store_streams_as_it_is(world: World) -> None:
    """A stream is an iterator (of lines): the count must not turn it into a listing."""
    counted = count_backend_errors(world.backends, Metrics())
    counted.originals.put_stream("v", iter([b"line 1\n", b"line 2\n"]), content_type="video/mp4")
    with counted.originals.open("v") as stream:
        assert stream.read(4) == b"line"
        assert stream.read() == b" 1\nline 2\n"
    assert counted.originals.get_range("v", 5, 6).data == b"1"


def broken_listing(prefix: str = "") -> Iterator[StoredObject]:
    yield StoredObject("a.jpg", 1, T0)
    raise StoreUnavailable("dropped mid-listing")


class Reads:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def __call__(self) -> PictureStats:
        self.calls += 1
        if self.fail:
            raise StoreUnavailable("down")
        return PictureStats(counts={"pending": 3, "done": 7}, oldest_pending_at=T0)


def test_picture_gauges_read_the_database_at_most_once_per_interval() -> None:
    reads, now = Reads(), [0.0]
    registry = CollectorRegistry()
    registry.register(
        PictureCollector(
            reads,
            statuses=("pending", "processing", "done", "failed"),
            every_s=15,
            clock=lambda: now[0],
            now=lambda: T0 + timedelta(seconds=90 + now[0]),
        )
    )
    assert value(registry, "imageblur_pictures", status="pending") == 3
    assert value(registry, "imageblur_pictures", status="processing") == 0
    assert value(registry, "imageblur_oldest_pending_age_seconds") == 90
    now[0] = 10  # a second scrape within the interval: from the cache, the age still grows
    assert value(registry, "imageblur_pictures", status="done") == 7
    assert value(registry, "imageblur_oldest_pending_age_seconds") == 100
    assert reads.calls == 1
    now[0], reads.fail = 16, True  # the database is down: no gauge rather than a stale one
    assert registry.get_sample_value("imageblur_pictures", {"status": "done"}) is None
    assert reads.calls == 2


def test_the_request_id_is_optional_in_a_job_message_and_checked() -> None:
    i = "0123456789abcdef0123456789abcdef"
    assert Job.from_json(Job(i, 2, request_id="r-1").to_json()) == Job(i, 2, "r-1")
    assert Job.from_json(b'{"image_id": "%s"}' % i.encode()) == Job(i)  # a message from before
    with pytest.raises(InvalidJob, match="request_id"):  # not ours: parked, never logged
        Job.from_json(b'{"image_id": "%s", "request_id": "a b\\n"}' % i.encode())
    assert b"request_id" not in Job(i).to_json()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"error": "too_large", "message": "..."}', 413, "too_large"),
        (b"not json", 500, "http_500"),
        (b'{"error": "<script>"}', 400, "http_400"),
        (b"", 401, "http_401"),
    ],
)
def test_an_upload_is_rejected_with_its_error_code(body: bytes, status: int, code: str) -> None:
    assert error_code(body, status) == code


def test_a_republished_job_carries_the_uploads_request_id(world: World) -> None:
    record = world.images.submit(jpeg_bytes(), request_id="upload-7")
    assert world.next_delivery().job.request_id == "upload-7"  # the message is then lost
    world.clock.advance(1)
    # The safety net for a confirmed message that the broker lost (a grace of 0 here).
    assert world.reconciler(queued_grace_s=0).republish() == 1
    assert world.next_delivery().job == Job(record.id, request_id="upload-7")


def test_a_workers_metrics_port_asks_for_the_token_when_one_is_set() -> None:
    metrics = Metrics()
    metrics.outcomes(Outcome, ["detect"])
    server = MetricsServer(metrics.registry, host="127.0.0.1", port=0, token="t" * 20)
    port = server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 401
        wrong = {"Authorization": "Bearer " + "x" * 20}
        assert httpx.get(f"{url}/metrics", headers=wrong, timeout=5).status_code == 401
        right = {"Authorization": "Bearer " + "t" * 20}
        answer = httpx.get(f"{url}/metrics", headers=right, timeout=5)
        assert answer.status_code == 200
        assert 'imageblur_jobs_total{kind="detect",outcome="done"} 0.0' in answer.text
        assert httpx.get(f"{url}/other", headers=right, timeout=5).status_code == 404
    finally:
        server.stop()
