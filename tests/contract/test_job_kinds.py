"""Job kinds that a pod of the previous release never takes (issue 24, item 5).

The rule (docs/operations.md, "Job kinds and rolling upgrades"): every job kind newer
than detect and render has its record's own statuses, queued and leased, and a queue of
its own. The video kind (issue 25) is the first real one; a test-only kind, `probe`,
stands beside it for the next (bucket batches): it is added to `domain.JOB_KINDS` the way
they will be, one row.

Against the previous release's claim conditions and message parser, frozen in
`previous_release.py`: on SQLite, PostgreSQL and the fake's rules, a row of the new kind
is never claimed nor re-published, and on RabbitMQ a message of the new kind never
reaches the previous release's consumer, so it is never dead-lettered by it. Each test
also shows that the same harness does take the old kinds' rows and messages, so that
"never" is not a broken harness.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import psycopg
import pytest

import servers
from contract import previous_release as prev
from imageblur.adapters.rabbitmq_queue import RabbitMQJobQueue
from imageblur.domain import (
    JOB_KINDS,
    LEGACY_KINDS,
    LEGACY_STATUSES,
    Job,
    JobKind,
    KindRoute,
    Status,
    kind_of_status,
    kind_queue,
)

ID = "0123456789abcdef0123456789abcdef"
PROBE = KindRoute(queued="probe_queued", leased="probe_running")
KINDS = {**JOB_KINDS, "probe": PROBE}
NEW_KINDS = {k: r for k, r in KINDS.items() if k not in LEGACY_KINDS}
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
PENDING_BEFORE = PUBLISHED_BEFORE = NOW - timedelta(minutes=10)


def test_every_kind_follows_the_rule() -> None:
    assert set(JOB_KINDS) == {k.value for k in JobKind}
    taken: set[str] = set()
    for kind, route in NEW_KINDS.items():
        assert route.own_queue, kind
        statuses = {route.queued, route.leased}
        assert not statuses & LEGACY_STATUSES, kind
        assert not statuses & taken, f"{kind} shares a status with another kind"
        taken |= statuses
    for kind in JOB_KINDS:  # a real kind's statuses are statuses a record can have
        if kind == "batch":  # its records are batch items, in a table of their own
            continue
        assert {JOB_KINDS[kind].queued, JOB_KINDS[kind].leased} <= {s.value for s in Status}


def test_the_batch_kind_has_its_own_queue_and_no_image_status() -> None:
    """A bucket batch's item (issue 27) is a row of `batch_items`, which no earlier
    release reads; its messages go to `<queue>.batch`, in the long pool (a batch may
    hold every thread but the one kept for pictures)."""
    route = JOB_KINDS["batch"]
    assert route.own_queue and route.long
    assert not {route.queued, route.leased} & {s.value for s in Status}
    assert kind_queue("jobs", "batch") == "jobs.batch"


def test_the_video_kind_is_a_new_long_kind() -> None:
    assert "video" in NEW_KINDS and JOB_KINDS["video"].long
    assert kind_of_status(Status.VIDEO_PENDING.value) == "video"
    assert kind_of_status(Status.VIDEO_PROCESSING.value) == "video"
    assert kind_queue("jobs", "video") == "jobs.video"


def test_the_options_kinds_are_new_picture_kinds() -> None:
    """A picture uploaded with options (issue 26): an older worker would ignore them (a
    `hide` rectangle, the mode), so its detection and re-renders are kinds of their own."""
    assert {"options", "options_render"} <= set(NEW_KINDS)
    assert not JOB_KINDS["options"].long and not JOB_KINDS["options_render"].long
    assert kind_of_status(Status.OPTIONS_PENDING.value) == "options"
    assert kind_of_status(Status.OPTIONS_PROCESSING.value) == "options"
    assert kind_of_status(Status.OPTIONS_RENDERING.value) == "options_render"
    assert kind_queue("jobs", "options") == "jobs.options"
    assert kind_queue("jobs", "options_render") == "jobs.options_render"


def test_the_video_options_kind_is_a_new_long_kind() -> None:
    """A video uploaded with options (issue 26): a worker that runs videos but not their
    options would hide no `hide` rectangle, so it is a kind of its own."""
    assert "video_options" in NEW_KINDS and JOB_KINDS["video_options"].long
    assert kind_of_status(Status.VIDEO_OPTIONS_PENDING.value) == "video_options"
    assert kind_of_status(Status.VIDEO_OPTIONS_PROCESSING.value) == "video_options"
    assert kind_queue("jobs", "video_options") == "jobs.video_options"


def test_the_kind_of_a_status_and_its_queue() -> None:
    assert kind_of_status("pending") == "detect"
    assert kind_of_status("processing") == "detect"
    assert kind_of_status("rendering") == "render"
    assert kind_of_status("done") is None
    assert kind_of_status("probe_running", KINDS) == "probe"
    assert kind_queue("jobs", "detect") == kind_queue("jobs", "render") == "jobs"
    assert kind_queue("jobs", "probe", KINDS) == "jobs.probe"


# --- rows ---------------------------------------------------------------------------


def _rows() -> list[tuple[str, prev.Row]]:
    """Rows of every status of every kind, under every lease and publish state the
    conditions look at: (name, row)."""
    rows = []
    for kind, route in KINDS.items():
        for status in dict.fromkeys((route.queued, route.leased)):
            for lease in (None, NOW - timedelta(minutes=1), NOW + timedelta(minutes=1)):
                for published in (None, NOW - timedelta(hours=1)):
                    old = NOW - timedelta(hours=1)
                    name = f"{kind}:{status}:{lease}:{published}"
                    rows.append((name, prev.Row(status, lease, old, published)))
    return rows


def _taken(claimed: set[str], requeued: set[str]) -> None:
    new_statuses = {s for r in NEW_KINDS.values() for s in (r.queued, r.leased)}
    assert {"video_pending", "video_processing", "probe_queued"} <= new_statuses
    assert {"options_pending", "options_processing", "options_rendering"} <= new_statuses
    assert {"video_options_pending", "video_options_processing"} <= new_statuses
    for name in claimed | requeued:
        assert name.split(":")[1] not in new_statuses, f"the previous release took {name}"
    # The harness works: the old kinds' rows are taken.
    assert any(n.startswith("detect:pending") for n in claimed)
    assert any(n.startswith("render:rendering") for n in claimed)
    assert any(n.startswith("detect:processing") for n in requeued)


def _sqlite_taken() -> tuple[set[str], set[str]]:
    def ts(value: datetime | None) -> str | None:
        return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE images (id TEXT, status TEXT, lease_expires_at TEXT, "
        "updated_at TEXT, published_at TEXT)"
    )
    for name, r in _rows():
        conn.execute(
            "INSERT INTO images VALUES (?, ?, ?, ?, ?)",
            (name, r.status, ts(r.lease_expires_at), ts(r.updated_at), ts(r.published_at)),
        )
    params = {"now": ts(NOW), "pending_before": ts(PENDING_BEFORE)}
    params["published_before"] = ts(PUBLISHED_BEFORE)
    return _taken_by(conn, "sqlite", params)


def _taken_by(conn: Any, style: str, params: dict[str, Any]) -> tuple[set[str], set[str]]:
    claimed: set[str] = set()
    for where in prev.CLAIM_WHERE.values():
        query = f"SELECT id FROM images WHERE {prev.sql(where, style)}"
        claimed |= {row[0] for row in conn.execute(query, params).fetchall()}
    query = f"SELECT id FROM images WHERE {prev.sql(prev.REQUEUE_STALE_WHERE, style)}"
    return claimed, {row[0] for row in conn.execute(query, params).fetchall()}


@pytest.fixture(params=["sqlite", "postgres", "fake"])
def taken(request: pytest.FixtureRequest) -> Iterator[tuple[set[str], set[str]]]:
    """(claimed, re-published): the rows the previous release's conditions take."""
    if request.param == "sqlite":
        yield _sqlite_taken()
    elif request.param == "postgres":
        yield _postgres_taken(request.getfixturevalue("postgres_dsn"))
    else:
        rows = _rows()
        claimed = {n for n, r in rows for k in prev.CLAIM_WHERE if prev.fake_claims(k, r, NOW)}
        requeued = {
            n for n, r in rows if prev.fake_requeues(r, NOW, PENDING_BEFORE, PUBLISHED_BEFORE)
        }
        yield claimed, requeued


def _postgres_taken(dsn: str) -> tuple[set[str], set[str]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            "CREATE TEMP TABLE images (id text, status text, lease_expires_at timestamptz, "
            "updated_at timestamptz, published_at timestamptz)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO images VALUES (%s, %s, %s, %s, %s)",
                [
                    (n, r.status, r.lease_expires_at, r.updated_at, r.published_at)
                    for n, r in _rows()
                ],
            )
        params = {
            "now": NOW,
            "pending_before": PENDING_BEFORE,
            "published_before": PUBLISHED_BEFORE,
        }
        return _taken_by(conn, "postgres", params)


def test_the_previous_release_never_claims_nor_requeues_a_new_kinds_row(
    taken: tuple[set[str], set[str]],
) -> None:
    _taken(*taken)


# --- messages ------------------------------------------------------------------------


def _previous_consumer_takes(channel: Any, base: str) -> list[dict[str, object]]:
    """Everything on the previous release's queue, as its worker takes it: parsed, or
    dead-lettered with the reason."""
    jobs = []
    while True:
        method, _props, body = channel.basic_get(prev.consumed_queue(base), auto_ack=False)
        if method is None:
            return jobs
        try:
            jobs.append(prev.parse_job(body))
        except prev.InvalidJobError as exc:
            channel.basic_publish(
                "",
                prev.dead_queue(base),
                body,
                pika.BasicProperties(headers={"x-imageblur-reason": str(exc)}),
            )
        channel.basic_ack(method.delivery_tag)


def _depth(channel: Any, name: str) -> int:
    return int(channel.queue_declare(name, passive=True).method.message_count)


def test_a_new_kinds_message_never_reaches_the_previous_release(rabbitmq_url: str) -> None:
    base = servers.unique("kinds")
    queue = RabbitMQJobQueue(
        rabbitmq_url, queue=base, queue_type="quorum", prefetch=1, timeout_s=5, kinds=KINDS
    )
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        queue.check()  # declares the topology: `base`, `base.probe`, `base.dead`
        probe = Job(image_id=ID).to_json().replace(b'"detect"', b'"probe"')
        queue.publish_body(probe, kind="probe")
        queue.publish(Job(image_id=ID, kind=JobKind.VIDEO))
        queue.publish(Job(image_id=ID, kind=JobKind.OPTIONS))
        queue.publish(Job(image_id=ID, kind=JobKind.OPTIONS_RENDER))
        queue.publish(Job(image_id=ID, kind=JobKind.VIDEO_OPTIONS))
        queue.publish(Job(image_id=ID, kind=JobKind.RENDER))
        channel = connection.channel()
        jobs = _previous_consumer_takes(channel, base)
        assert [j["kind"] for j in jobs] == ["render"]  # the harness takes an old kind
        assert _depth(channel, prev.dead_queue(base)) == 0
        assert _depth(channel, kind_queue(base, "probe", KINDS)) == 1
        assert _depth(channel, kind_queue(base, "video", KINDS)) == 1
        assert _depth(channel, kind_queue(base, "options", KINDS)) == 1
        assert _depth(channel, kind_queue(base, "options_render", KINDS)) == 1
        assert _depth(channel, kind_queue(base, "video_options", KINDS)) == 1
        # This release, knowing the kinds, consumes their queues beside the main one.
        assert queue.job_queues == (
            base,
            f"{base}.video",
            f"{base}.options",
            f"{base}.options_render",
            f"{base}.video_options",
            f"{base}.batch",
            f"{base}.probe",
        )
    finally:
        connection.close()
        queue.delete_topology()
        queue.close()


def test_this_release_consumes_only_the_queues_of_the_kinds_it_knows() -> None:
    """What makes this release the safe "previous release" of the next kind: its
    handle consumes `<queue>` and the queues of the kinds it knows (`<queue>.video`),
    never another kind's."""
    queue = RabbitMQJobQueue(
        "amqp://guest:guest@127.0.0.1:1/%2F",
        queue="jobs",
        queue_type="quorum",
        prefetch=1,
        timeout_s=1,
    )
    assert queue.job_queues[0] == "jobs"
    assert set(queue.job_queues) == {
        "jobs",
        "jobs.video",
        "jobs.options",
        "jobs.options_render",
        "jobs.video_options",
        "jobs.batch",
    }


# --- queues per kind (item 6): a worker consumes only its kinds' queues --------------------


def test_a_worker_given_kinds_consumes_only_their_queues(rabbitmq_url: str) -> None:
    """`imageblur worker --kinds pictures` beside `--kinds probe`: each takes its own
    queue's messages only, whatever waits on the other's."""
    base = servers.unique("pools")

    def handle(consume: set[str]) -> RabbitMQJobQueue:
        return RabbitMQJobQueue(
            rabbitmq_url,
            queue=base,
            queue_type="quorum",
            prefetch=1,
            timeout_s=5,
            kinds=KINDS,
            consume=consume,
        )

    pictures, probes = handle({"detect", "render"}), handle({"probe"})
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        assert pictures.consumed_queues == (base,) and probes.consumed_queues == (f"{base}.probe",)
        pictures.check()  # declares every kind's queue, consumed or not
        probe = Job(image_id=ID).to_json().replace(b'"detect"', b'"probe"')
        pictures.publish_body(probe, kind="probe")
        pictures.publish(Job(image_id=ID))
        delivery = pictures.receive(timeout_s=10)
        assert delivery is not None and delivery.job.kind is JobKind.DETECT
        pictures.ack(delivery)
        assert pictures.receive(timeout_s=1) is None  # the probe is not its to take
        pictures.publish(Job(image_id=ID, kind=JobKind.RENDER))
        # This release cannot run the test-only kind: taking it parks it, which shows
        # that it came off `<base>.probe`, while the render job stays for the pictures.
        assert probes.receive(timeout_s=3) is None
        assert _depth(connection.channel(), f"{base}.probe") == 0
        assert [d.reason for d in probes.take_dead_letters()] == [
            "malformed job message: unknown kind"
        ]
        delivery = pictures.receive(timeout_s=10)
        assert delivery is not None and delivery.job.kind is JobKind.RENDER
        pictures.ack(delivery)
    finally:
        connection.close()
        pictures.delete_topology()
        for queue in (pictures, probes):
            queue.close()


def test_a_thread_kept_for_pictures_leaves_a_long_job_to_the_others(rabbitmq_url: str) -> None:
    """One handle, one consumer channel, two threads: `receive(kinds=pictures)` never
    hands out the long kind's message, which stays buffered for a thread that takes it."""
    base = servers.unique("kept")
    queue = RabbitMQJobQueue(
        rabbitmq_url, queue=base, queue_type="quorum", prefetch=2, timeout_s=5, kinds=KINDS
    )
    try:
        queue.check()
        probe = Job(image_id=ID).to_json().replace(b'"detect"', b'"probe"')
        queue.publish_body(probe, kind="probe")
        assert queue.receive(timeout_s=2, kinds={"detect", "render"}) is None
        queue.publish(Job(image_id=ID, kind=JobKind.RENDER))
        delivery = queue.receive(timeout_s=10, kinds={"detect", "render"})
        assert delivery is not None and delivery.job.kind is JobKind.RENDER
        queue.ack(delivery)
        assert queue.receive(timeout_s=3, kinds={"probe"}) is None  # taken, and parked
        assert [d.reason for d in queue.take_dead_letters()] == [
            "malformed job message: unknown kind"
        ]
    finally:
        queue.delete_topology()
        queue.close()
