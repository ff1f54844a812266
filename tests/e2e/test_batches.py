"""Bucket batches (issue 27) through a real server process, the embedded default, on
`file:` folders under IMAGEBLUR_BATCH_ROOTS: a batch posted, listed, run and followed;
posted again (the same one); refused for where it points; stopped with a purge that
deletes only what it wrote; its failures listed and retried. Every source byte is the
same afterwards."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import BILL, Server, jpeg_bytes, png_bytes, run_server, wait_until


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch-root")


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("batches")
    env = {
        # The service's own data folder lies under a root too: only the overlap rule
        # keeps batches out of it.
        "IMAGEBLUR_BATCH_ROOTS": f"{root},{home}",
        "IMAGEBLUR_BATCH_BUCKETS": "allowed-bucket",
        "IMAGEBLUR_BATCH_PUMP_INTERVAL_S": "0.2",
        "IMAGEBLUR_BATCH_WINDOW": "2",
        "IMAGEBLUR_MAX_ATTEMPTS": "2",
    }
    with run_server(home / "data", env=env) as running:
        yield running


JSON = {"Content-Type": "application/json"}


def _sources(folder: Path) -> dict[str, str]:
    """Every file under `folder` by its digest: what "untouched" means."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _post(client: httpx.Client, source: str, target: str, **more: Any) -> httpx.Response:
    body = {
        "source": {"bucket": source, "prefix": "photos/"},
        "target": {"bucket": target, "prefix": "blurred/"},
    }
    return client.post("/batches", json=body | more)


def _ended(server: Server, client: httpx.Client, batch_id: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def ended() -> bool:
        seen.update(client.get(f"/batches/{batch_id}").json())
        return seen["status"] in ("done", "failed", "cancelled")

    wait_until(ended, timeout_s=120, interval_s=0.2, what="the batch to end", details=server.logs)
    return seen


def test_a_batch_anonymizes_a_folder_and_leaves_its_sources(server: Server, root: Path) -> None:
    source, target = root / "in", root / "out"
    _write(
        source,
        {
            "photos/people/bill-gates.jpg": BILL.read_bytes(),
            "photos/b.png": png_bytes(),
            "photos/c.jpeg": jpeg_bytes(seed=1),
            "photos/notes.txt": b"not a picture",
            "photos/taken.jpg": jpeg_bytes(seed=2),
            "elsewhere/d.jpg": jpeg_bytes(seed=3),
        },
    )
    _write(target, {"blurred/taken.jpg": b"someone else's"})
    before = _sources(source)
    with server.client() as client:
        posted = _post(client, f"file:{source}", f"file:{target}")
        assert posted.status_code == 202, posted.text
        batch = posted.json()
        assert posted.headers["location"] == f"/batches/{batch['id']}"
        assert batch["status"] == "listing" and batch["total"] is None
        final = _ended(server, client, batch["id"])
        assert final["status"] == "done", final
        assert (final["total"], final["listed"], final["done"], final["failed"]) == (5, 5, 3, 0)
        assert final["skipped"] == {"not_an_image": 1, "target_exists": 1}
        assert final["faces"] >= 1 and final["queued"] == 0
        # Posted again: the same batch, nothing new.
        again = _post(client, f"file:{source}", f"file:{target}")
        assert again.status_code == 200 and again.json()["id"] == batch["id"]
        assert batch["id"] in [b["id"] for b in client.get("/batches").json()["items"]]
        # The page's listing: open batches and those ended in the last N seconds.
        recent = client.get("/batches", params={"ended_within_s": 3600}).json()["items"]
        assert batch["id"] in [b["id"] for b in recent]
        none = client.get("/batches", params={"ended_within_s": 0}).json()["items"]
        assert batch["id"] not in [b["id"] for b in none]
        assert client.get("/batches", params={"ended_within_s": -1}).status_code == 422
        # Items are no pictures.
        assert client.get("/pictures").json()["total"] == 0
    assert _sources(source) == before
    written = _sources(target)
    assert set(written) == {
        "blurred/people/bill-gates.jpg",
        "blurred/b.png",
        "blurred/c.jpg",  # the extension replaced as `imageblur blur` does
        "blurred/taken.jpg",
    }
    assert (target / "blurred/taken.jpg").read_bytes() == b"someone else's"
    assert (target / "blurred/people/bill-gates.jpg").read_bytes() != BILL.read_bytes()


@pytest.mark.parametrize(
    ("source", "target", "status", "code"),
    [
        ("not-allowed", "allowed-bucket", 403, "bucket_not_allowed"),
        ("allowed-bucket", "file:/etc", 403, "bucket_not_allowed"),
        # (sources under photos/, results under blurred/) one inside the other
        ("file:{root}/x", "file:{root}/x/photos", 422, "overlapping_locations"),
        ("file:{root}/x/blurred", "file:{root}/x", 422, "overlapping_locations"),
        ("file:relative", "allowed-bucket", 422, "invalid_location"),
        # No such folder: it would list as empty (a batch done with nothing in it).
        ("file:{root}/no-such-folder", "file:{root}/o2", 422, "source_not_found"),
    ],
)
def test_where_a_batch_may_not_point(
    server: Server, root: Path, source: str, target: str, status: int, code: str
) -> None:
    with server.client() as client:
        answer = _post(client, source.format(root=root), target.format(root=root))
    assert (answer.status_code, answer.json()["error"]) == (status, code), answer.text


def test_a_callback_url_needs_a_server_that_signs_webhooks(server: Server, root: Path) -> None:
    """As an upload's: without IMAGEBLUR_WEBHOOK_SECRET a batch's `callback_url` is
    refused (422 naming the field), and no batch is made."""
    with server.client() as client:
        answer = _post(
            client,
            f"file:{root}/hook-in",
            f"file:{root}/hook-out",
            options={"callback_url": "https://hooks.example/in"},
        )
        assert answer.status_code == 422, answer.text
        error = answer.json()
        assert (error["error"], error["field"]) == ("invalid_option", "callback_url")
        assert "IMAGEBLUR_WEBHOOK_SECRET" in error["message"]
        listed = client.get("/batches", params={"limit": 100}).json()["items"]
        assert not [b for b in listed if b["source"]["bucket"] == f"file:{root}/hook-in"]


def test_a_batch_never_reaches_the_services_own_folder(server: Server, root: Path) -> None:
    with server.client() as client:
        for source, target in (
            (f"file:{server.data_dir}", f"file:{root}/o"),
            (f"file:{root}/o", f"file:{server.data_dir}/results"),
        ):
            answer = _post(client, source, target)
            assert (answer.status_code, answer.json()["error"]) == (
                422,
                "overlapping_locations",
            ), answer.text


def test_purge_deletes_only_what_the_batch_wrote(server: Server, root: Path) -> None:
    source, target = root / "purge-in", root / "purge-out"
    _write(source, {"photos/a.jpg": jpeg_bytes(seed=4), "photos/b.jpg": jpeg_bytes(seed=5)})
    _write(target, {"blurred/b.jpg": b"not ours", "blurred/other.txt": b"not ours either"})
    before = _sources(source)
    with server.client() as client:
        batch = _post(client, f"file:{source}", f"file:{target}").json()
        assert _ended(server, client, batch["id"])["done"] == 1
        stopped = client.delete(f"/batches/{batch['id']}", params={"purge": "true"})
        assert stopped.status_code == 200, stopped.text
    assert _sources(target) == {
        "blurred/b.jpg": _digest(b"not ours"),
        "blurred/other.txt": _digest(b"not ours either"),
    }
    assert _sources(source) == before


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_failures_are_listed_and_retried(server: Server, root: Path) -> None:
    source, target = root / "bad-in", root / "bad-out"
    _write(
        source, {"photos/broken.jpg": b"\xff\xd8\xff" + b"\x00" * 100, "photos/ok.png": png_bytes()}
    )
    with server.client() as client:
        batch = _post(client, f"file:{source}", f"file:{target}").json()
        final = _ended(server, client, batch["id"])
        assert (final["done"], final["failed"]) == (1, 1), final
        failures = client.get(f"/batches/{batch['id']}/failures").json()
        assert [f["key"] for f in failures["items"]] == ["photos/broken.jpg"]
        assert failures["items"][0]["reason"]
        retried = client.post(f"/batches/{batch['id']}/retry")
        assert (retried.status_code, retried.json()) == (202, {"retried": 1})
        assert _ended(server, client, batch["id"])["failed"] == 1


def test_a_running_batch_is_stopped(server: Server, root: Path) -> None:
    source, target = root / "stop-in", root / "stop-out"
    _write(source, {f"photos/{n:02}.jpg": jpeg_bytes(seed=n) for n in range(20)})
    before = _sources(source)
    with server.client() as client:
        batch = _post(client, f"file:{source}", f"file:{target}").json()
        stopped = client.delete(f"/batches/{batch['id']}").json()
        assert stopped["status"] == "cancelled"
        final = _ended(server, client, batch["id"])
        assert final["status"] == "cancelled"
        assert client.get("/batches/bat_" + "0" * 32).status_code == 404
    assert _sources(source) == before


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"hide": "[[1, 2, 3"}, "hide"),  # malformed JSON
        ({"hide": "[[0, 0, 10, 10]]"}, "hide"),  # well formed: still one picture's option
        ({"mode": "sparkle"}, "mode"),
        ({"colour": "red"}, "colour"),
        ("mode=pixelate", "options"),
    ],
)
def test_a_refused_option_is_named(server: Server, root: Path, options: object, field: str) -> None:
    with server.client() as client:
        answer = _post(client, f"file:{root}/opt-in", f"file:{root}/opt-out", options=options)
        assert answer.status_code == 422, answer.text
        assert (answer.json()["error"], answer.json()["field"]) == ("invalid_option", field)


def test_links_in_the_target_folder_are_never_followed(server: Server, root: Path) -> None:
    """Links planted in the target folder (as if while the batch ran: nothing looks
    before the first write): one for a key's folder, one at a key's name. No byte lands
    outside the folder; those items fail or are skipped."""
    source, target, outside = root / "link-in", root / "link-out", root / "elsewhere"
    _write(source, {"photos/people/a.jpg": jpeg_bytes(seed=6), "photos/b.jpg": jpeg_bytes(seed=7)})
    _write(outside, {"b.jpg": b"outside"})
    (target / "blurred").mkdir(parents=True)
    (target / "blurred/people").symlink_to(outside)
    (target / "blurred/b.jpg").symlink_to(outside / "b.jpg")
    with server.client() as client:
        batch = _post(client, f"file:{source}", f"file:{target}").json()
        final = _ended(server, client, batch["id"])
        assert (final["done"], final["failed"], final["skipped"]) == (
            0,
            1,
            {"target_exists": 1},
        ), final
        failures = client.get(f"/batches/{batch['id']}/failures").json()["items"]
        assert [(f["key"], f["reason"]) for f in failures] == [
            ("photos/people/a.jpg", "location_refused")
        ]
    assert _sources(outside) == {"b.jpg": _digest(b"outside")}


def _padded(source: str, target: str, size: int) -> bytes:
    """A batch's body that would be accepted but for its size (a long unknown key)."""
    body = {
        "source": {"bucket": source, "prefix": "photos/"},
        "target": {"bucket": target, "prefix": "blurred/"},
    }
    text = json.dumps(body | {"padding": ""})
    return text.replace('""', '"' + "x" * (size - len(text)) + '"').encode()


def test_a_batch_body_over_64_kib_is_refused_unread(server: Server, root: Path) -> None:
    """Declared (Content-Length) or streamed (chunked, no length), a body past 64 KiB
    answers 413 too_large and makes no batch; one just under the cap is read."""
    source, target = root / "big-in", root / "big-out"
    _write(source, {"photos/a.png": png_bytes()})
    over = _padded(f"file:{source}", f"file:{target}", 64 * 1024 + 1)

    def chunked() -> Iterator[bytes]:
        yield from (over[i : i + 4096] for i in range(0, len(over), 4096))

    with server.client() as client:
        declared = client.post("/batches", content=over, headers=JSON)
        streamed = client.post("/batches", content=chunked(), headers=JSON)
        assert "content-length" not in streamed.request.headers
        for answer in (declared, streamed):
            assert answer.status_code == 413, answer.text
            assert answer.json()["error"] == "too_large"
            assert "64 KiB" in answer.json()["message"]
        listed = client.get("/batches", params={"limit": 100}).json()["items"]
        assert not [b for b in listed if b["source"]["bucket"] == f"file:{source}"]
        # Just under the cap: an unknown key is no refusal, so the batch is made.
        under = _padded(f"file:{source}", f"file:{target}", 64 * 1024)
        accepted = client.post("/batches", content=under, headers=JSON)
        assert accepted.status_code == 202, accepted.text


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 422, "invalid_batch"),
        (b"", 400, "invalid_json"),
    ],
)
def test_a_batch_body_that_is_no_json_object(
    server: Server, body: bytes, status: int, code: str
) -> None:
    with server.client() as client:
        answer = client.post("/batches", content=body, headers=JSON)
    assert (answer.status_code, answer.json()["error"]) == (status, code), answer.text
