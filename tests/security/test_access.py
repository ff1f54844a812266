"""Who may do what, through real server processes: review never runs without named
reviewers, the API never listens beyond loopback without a token, an anonymous caller is
never a reviewer, the API token is not one, each correction and approval names its
reviewer, showing what the detector hid needs a reason, a DNS-rebound Host is refused,
and a placeholder secret stops the process."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import BILL, Server, jpeg_bytes, run_server, wait_status

KEY = base64.b64encode(bytes(range(40, 72))).decode()
API_OLD, API_NEW = "api-token-old-0123456789", "api-token-new-0123456789"
PHOTO_DESK, NIGHT_DESK = "photo-desk-token-0123456789", "night-desk-token-0123456789"
REVIEW = {
    "IMAGEBLUR_REVIEW": "required",
    "IMAGEBLUR_ORIGINALS_KEY": KEY,
    "IMAGEBLUR_API_TOKEN": f"{API_OLD},{API_NEW}",
    "IMAGEBLUR_REVIEWER_TOKENS": f"photo-desk:{PHOTO_DESK},night-desk:{NIGHT_DESK}",
}
SECRETS = (KEY, API_OLD, API_NEW, PHOTO_DESK, NIGHT_DESK)


def start(tmp_path: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`imageblur <command>` with only `env` as settings; it is expected to stop at once
    (a bound: a process that started serving instead fails the test by timing out)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBLUR_")}
    return subprocess.run(
        [sys.executable, "-m", "imageblur.entrypoints.cli", command],
        env={**clean, "IMAGEBLUR_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def refused(done: subprocess.CompletedProcess[str], *named: str) -> str:
    """The refusal's message, after checking it is one: exit 2, every setting named, no
    traceback, no secret repeated."""
    said = done.stderr + done.stdout
    assert done.returncode == 2, said
    assert "Traceback" not in said
    for name in named:
        assert name in said, (name, said)
    assert not any(secret in said for secret in SECRETS)
    return said


# --- start-up refusals --------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "api"])
@pytest.mark.parametrize(
    "missing", ["both", "reviewers", "api-token"], ids=lambda m: f"without-{m}"
)
def test_review_without_named_reviewers_does_not_start(
    tmp_path: Path, command: str, missing: str
) -> None:
    env = dict(REVIEW)
    if missing in ("both", "reviewers"):
        del env["IMAGEBLUR_REVIEWER_TOKENS"]
    if missing in ("both", "api-token"):
        del env["IMAGEBLUR_API_TOKEN"]
        env.pop("IMAGEBLUR_REVIEWER_TOKENS", None)  # reviewers alone are refused anyway
    # Whatever the host, and the anonymous switch does not open review.
    env["IMAGEBLUR_ALLOW_ANONYMOUS"] = "true"
    said = refused(start(tmp_path, command, env), "IMAGEBLUR_REVIEW=required")
    assert "IMAGEBLUR_API_TOKEN" in said and "IMAGEBLUR_REVIEWER_TOKENS" in said


@pytest.mark.parametrize("command", ["serve", "api"])
def test_an_api_on_every_address_without_a_token_does_not_start(
    tmp_path: Path, command: str
) -> None:
    done = start(tmp_path, command, {"IMAGEBLUR_HOST": "0.0.0.0"})
    refused(done, "IMAGEBLUR_HOST=0.0.0.0", "IMAGEBLUR_API_TOKEN", "IMAGEBLUR_ALLOW_ANONYMOUS")


def test_a_worker_metrics_port_on_every_address_needs_its_token(tmp_path: Path) -> None:
    env = {"IMAGEBLUR_HOST": "0.0.0.0", "IMAGEBLUR_METRICS_PORT": "0"}
    done = start(tmp_path, "worker", env)
    refused(done, "IMAGEBLUR_METRICS_TOKEN", "IMAGEBLUR_ALLOW_ANONYMOUS")


def test_the_commands_that_serve_nobody_run_whatever_the_address_and_review(
    tmp_path: Path,
) -> None:
    env = {"IMAGEBLUR_HOST": "0.0.0.0", "IMAGEBLUR_REVIEW": "required"}
    env["IMAGEBLUR_ORIGINALS_KEY"] = KEY
    for command in ("migrate", "config"):
        done = start(tmp_path, command, env)
        assert done.returncode == 0, done.stderr
    picture = tmp_path / "in" / "p.jpg"
    picture.parent.mkdir()
    picture.write_bytes(jpeg_bytes())
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBLUR_")}
    out = tmp_path / "out"
    blurred = subprocess.run(
        [sys.executable, "-m", "imageblur.entrypoints.cli", "blur", str(picture), "-o", str(out)],
        env={**clean, **env, "IMAGEBLUR_DETECTOR_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert blurred.returncode == 0, blurred.stderr
    assert (out / "p.jpg").is_file()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("IMAGEBLUR_API_TOKEN", "CHANGE_ME-to-a-random-token"),
        ("IMAGEBLUR_REVIEWER_TOKENS", "photo-desk:CHANGE_ME-to-a-random-token"),
        ("IMAGEBLUR_METRICS_TOKEN", "CHANGE_ME-to-a-random-token"),
        ("IMAGEBLUR_ORIGINALS_KEY", "CHANGE_ME-openssl-rand-base64-32"),
    ],
)
def test_a_placeholder_secret_stops_the_process(tmp_path: Path, setting: str, value: str) -> None:
    said = refused(start(tmp_path, "serve", {setting: value}), setting, "CHANGE_ME")
    assert value not in said


# --- a review server with named reviewers -------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("access") / "data", env=REVIEW) as srv:
        yield srv


def client(server: Server, token: str | None = None, **headers: str) -> httpx.Client:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=server.url, timeout=30, headers=headers)


@pytest.fixture(scope="module")
def held(server: Server) -> str:
    """A picture of a face, in review."""
    with client(server, API_NEW) as api:
        created = api.post("/picture", files={"image": (BILL.name, BILL.read_bytes())})
        assert created.status_code == 202, created.text
        image_id = str(created.json()["id"])
        assert wait_status(api, image_id, {"review", "failed"})["status"] == "review"
    return image_id


def regions(server: Server, image_id: str) -> tuple[str, list[dict[str, Any]]]:
    with client(server, API_OLD) as api:
        listed = api.get(f"/picture/{image_id}/regions")
    assert listed.status_code == 200, listed.text
    return listed.headers["etag"], listed.json()["regions"]


def history(server: Server, image_id: str) -> list[dict[str, Any]]:
    with client(server, API_NEW) as api:
        events: list[dict[str, Any]] = api.get(f"/picture/{image_id}/history").json()["events"]
    return events


def test_each_api_token_of_the_list_is_accepted_and_no_other(server: Server) -> None:
    for token in (API_OLD, API_NEW, PHOTO_DESK, NIGHT_DESK):
        with client(server, token) as c:
            assert c.get("/pictures").status_code == 200, token
    for token in (None, f"{API_OLD},{API_NEW}", API_OLD[:-1], "photo-desk"):
        with client(server, token) as c:
            answer = c.get("/pictures")
        assert answer.status_code == 401 and answer.json()["error"] == "unauthorized", token


def test_an_anonymous_caller_may_not_correct_approve_or_see(server: Server, held: str) -> None:
    etag, listed = regions(server, held)
    with client(server) as anonymous:
        put = anonymous.put(
            f"/picture/{held}/regions", json={"regions": []}, headers={"If-Match": etag}
        )
        approve = anonymous.post(f"/picture/{held}/approve")
        image = anonymous.get(f"/picture/{held}/image")
    for answer in (put, approve, image):
        assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
    assert regions(server, held) == (etag, listed)  # nothing changed


def test_the_api_token_is_not_a_reviewer(server: Server, held: str) -> None:
    etag, listed = regions(server, held)
    keep = [{"id": r["id"], "hidden": r["hidden"]} for r in listed]
    for token in (API_OLD, API_NEW):
        with client(server, token) as api:
            put = api.put(
                f"/picture/{held}/regions", json={"regions": keep}, headers={"If-Match": etag}
            )
            approve = api.post(f"/picture/{held}/approve")
        for answer in (put, approve):
            assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
            assert "IMAGEBLUR_REVIEWER_TOKENS" in answer.json()["message"]
    assert regions(server, held)[0] == etag


def test_corrections_and_approval_name_their_reviewer_and_keep_the_reason(
    server: Server, held: str
) -> None:
    etag, listed = regions(server, held)
    face = next(r for r in listed if r["hidden"] and not r["uncertain"])
    assert face["source"] == "detector"
    shown = [{"id": r["id"], "hidden": r["id"] != face["id"] and r["hidden"]} for r in listed]
    with client(server, PHOTO_DESK) as desk:
        url = f"/picture/{held}/regions"
        no_reason = desk.put(url, json={"regions": shown}, headers={"If-Match": etag})
        assert no_reason.status_code == 422, no_reason.text
        assert no_reason.json()["error"] == "reason_required"
        assert face["id"] in no_reason.json()["message"]
        too_long = [{**item, "reason": "x" * 501} for item in shown]
        long_answer = desk.put(url, json={"regions": too_long}, headers={"If-Match": etag})
        assert long_answer.status_code == 400, long_answer.text
        assert regions(server, held)[0] == etag  # neither changed anything
        why = "a face on a poster, not a person"
        given = [{**item, "reason": why} if item["id"] == face["id"] else item for item in shown]
        accepted = desk.put(url, json={"regions": given}, headers={"If-Match": etag})
        assert accepted.status_code == 202, accepted.text
        assert wait_status(desk, held, {"review"})["faces"] == 0
    with client(server, NIGHT_DESK) as night:
        approved = night.post(f"/picture/{held}/approve")
        assert approved.status_code == 200, approved.text
    events = history(server, held)
    signed = [(e["action"], e["role"], e["reviewer"]) for e in events if e["reviewer"]]
    assert signed == [
        ("corrected", "reviewer", "photo-desk"),
        ("approved", "reviewer", "night-desk"),
    ]
    [corrected] = [e for e in events if e["action"] == "corrected"]
    assert corrected["reasons"] == {face["id"]: why}
    assert all(e["reviewer"] is None for e in events if e["role"] != "reviewer")


# --- the Host check of a loopback API -----------------------------------------------


def test_a_rebound_host_name_is_refused_on_loopback(server: Server) -> None:
    port = server.url.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "10.0.0.1"):
        with client(server, API_NEW, Host=host) as c:
            for path in ("/pictures", "/healthz", "/"):
                answer = c.get(path)
                assert answer.status_code == 400, (host, path, answer.text)
                assert answer.json()["error"] == "untrusted_host"
    for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        with client(server, API_NEW, Host=host) as c:
            assert c.get("/pictures").status_code == 200, host


def test_a_request_without_a_host_is_refused_on_loopback(server: Server) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"untrusted_host"' in answer


def test_a_proxy_name_is_answered_once_trusted(tmp_path: Path) -> None:
    env = {"IMAGEBLUR_TRUSTED_HOSTS": "127.0.0.1,photos.example.org,*.lan.example"}
    with run_server(tmp_path / "data", command="api", env=env) as srv:
        for host, status in [
            ("photos.example.org", 200),
            ("PHOTOS.example.org:443", 200),
            ("desk.lan.example", 200),
            ("lan.example", 400),
            ("localhost", 400),  # not in this list
            ("photos.example.org.evil.example", 400),
        ]:
            with client(srv, Host=host) as c:
                assert c.get("/pictures").status_code == status, host


def test_an_anonymous_caller_is_never_a_reviewer_even_without_tokens(tmp_path: Path) -> None:
    """A loopback server with no token at all: everything is open but the reviewer's
    actions, which answer 401 (they used to count an anonymous caller as a reviewer)."""
    with run_server(tmp_path / "data", command="api") as srv, client(srv) as c:
        image_id = "0" * 32
        put = c.put(
            f"/picture/{image_id}/regions", json={"regions": []}, headers={"If-Match": '"0"'}
        )
        approve = c.post(f"/picture/{image_id}/approve")
        for answer in (put, approve):
            assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
        assert c.get("/pictures").status_code == 200


def test_off_loopback_with_a_token_any_host_is_answered(tmp_path: Path) -> None:
    """Probes and proxies name the pod or service: off loopback the token is the guard,
    and the Host is not checked."""
    env = {"IMAGEBLUR_HOST": "0.0.0.0", "IMAGEBLUR_API_TOKEN": API_NEW}
    with run_server(tmp_path / "data", command="api", env=env) as srv:
        with client(srv, API_NEW, Host="imageblur-api.photos.svc") as c:
            assert c.get("/pictures").status_code == 200
        with client(srv, Host="imageblur-api.photos.svc") as c:
            assert c.get("/pictures").status_code == 401


def test_the_anonymous_switch_opens_an_address_on_purpose_and_says_so(tmp_path: Path) -> None:
    env = {"IMAGEBLUR_HOST": "0.0.0.0", "IMAGEBLUR_ALLOW_ANONYMOUS": "true"}
    with run_server(tmp_path / "data", command="api", env=env) as srv, client(srv) as c:
        assert c.get("/pictures").status_code == 200
        assert '"api.open_to_anyone"' in srv.logs()


@pytest.mark.parametrize("path", ["/batches", "/batches/bat_" + "0" * 32])
def test_batches_take_the_api_token_only(server: Server, path: str) -> None:
    """Bucket batches (issue 27) read and write whole buckets: the API token's, never a
    reviewer's nor an anonymous caller's."""
    with client(server, PHOTO_DESK) as reviewer, client(server) as anonymous:
        assert reviewer.get(path).status_code == 403
        assert anonymous.get(path).status_code == 401
        assert reviewer.post("/batches", json={}).status_code == 403
    with client(server, API_NEW) as api:
        assert api.get(path).status_code in (200, 404)
        assert api.post("/batches", json={}).json()["error"] == "invalid_location"
