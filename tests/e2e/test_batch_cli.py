"""`imageblur batch SRC DST` (issue 27) against a real embedded server on `file:` folders:
it posts the batch with the API token (never printed), follows it to its end and prints
the counts; a refused batch exits 2; Ctrl-C leaves the batch running and says how to stop
it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from metrics_scrape import get, scrape, total
from support import BILL, Server, jpeg_bytes, png_bytes, run_server, wait_until

TOKEN = "batch-cli-token-0123456789abcdef"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch-cli-root")


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("batch-cli")
    env = {
        "IMAGEBLUR_BATCH_ROOTS": str(root),
        "IMAGEBLUR_BATCH_PUMP_INTERVAL_S": "0.2",
        "IMAGEBLUR_BATCH_WINDOW": "2",
        "IMAGEBLUR_API_TOKEN": TOKEN,
    }
    with run_server(home / "data", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def stalled(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose batch pump ran once at start and waits an hour for its next pass:
    a batch posted there stays `listing`, so the CLI is still following it when
    interrupted, however loaded the machine."""
    home = tmp_path_factory.mktemp("batch-cli-stalled")
    env = {
        "IMAGEBLUR_BATCH_ROOTS": str(root),
        "IMAGEBLUR_API_TOKEN": TOKEN,
        "IMAGEBLUR_BATCH_PUMP_INTERVAL_S": "3600",
    }
    with run_server(home / "data", env=env) as running:
        yield running


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "imageblur.entrypoints.cli", "batch", *args]


def _env(server: Server) -> dict[str, str]:
    return {
        **os.environ,
        "IMAGEBLUR_URL": server.url,
        "IMAGEBLUR_API_TOKEN": TOKEN,
        "IMAGEBLUR_LOG_FORMAT": "json",
    }


def _batch(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _argv(*args), capture_output=True, text=True, env=_env(server), timeout=300
    )


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def _client(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )


def test_batch_runs_a_folder_to_its_end_and_prints_the_counts(server: Server, root: Path) -> None:
    source, target = root / "in", root / "out"
    _write(
        source,
        {"people/bill.jpg": BILL.read_bytes(), "b.png": png_bytes(), "notes.txt": b"text"},
    )
    ran = _batch(server, f"file:{source}", f"file:{target}", "--option", "mode=pixelate")
    assert ran.returncode == 0, ran.stderr
    assert "posted" in ran.stderr
    assert " done: 2 done, 0 failed, 1 skipped (1 not_an_image)" in ran.stdout
    assert TOKEN not in ran.stdout + ran.stderr
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*.*")) == [
        "b.png",
        "people/bill.jpg",
    ]
    with _client(server) as client:
        (batch,) = client.get("/batches").json()["items"][:1]
    assert batch["options"] == {"mode": "pixelate"}
    assert (batch["throughput_per_s"], batch["eta_s"]) == (0.0, 0)  # ended: nothing left
    samples = scrape(f"{server.url}/metrics", token=TOKEN)
    assert get(samples, "imageblur_batch_items_total", outcome="done") == 2
    assert get(samples, "imageblur_batch_items_total", outcome="skipped") == 1
    # Ended: not open, so no series of its own (the label is bounded by the open ones).
    assert ("imageblur_batches_open", frozenset()) in samples
    assert total(samples, "imageblur_open_batch_items", batch_id=batch["id"]) == 0
    again = _batch(server, f"file:{source}", f"file:{target}", "--option", "mode=pixelate")
    assert again.returncode == 0, again.stderr
    assert "already there" in again.stderr and batch["id"] in again.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("file:/etc", "file:{root}/x"), "403 bucket_not_allowed"),
        (("file:{root}/y", "file:{root}/y/z"), "422 overlapping_locations"),
        (("file:{root}/y", "file:{root}/z", "--option", "colour=red"), "422 invalid_option"),
        (("ftp://host/x", "file:{root}/z"), "a location is s3://bucket/prefix or file:/folder"),
    ],
)
def test_a_refused_batch_exits_2_saying_why(
    server: Server, root: Path, args: tuple[str, ...], said: str
) -> None:
    ran = _batch(server, *(a.format(root=root) for a in args))
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert said in ran.stderr


def test_ctrl_c_leaves_the_batch_running_and_says_how_to_stop_it(
    stalled: Server, root: Path
) -> None:
    server = stalled
    source, target = root / "long-in", root / "long-out"
    _write(source, {f"{n:02}.jpg": jpeg_bytes(seed=n) for n in range(30)})
    process = subprocess.Popen(
        _argv(f"file:{source}", f"file:{target}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(server),
        # As a terminal starts it: a runner started in the background (CI's shell) has
        # SIGINT ignored, and a child inherits that, so Ctrl-C would never reach it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stderr is not None
        # The bar is off (stderr is no terminal): the first line names the batch.
        posted = process.stderr.readline()
        assert posted.startswith("batch ") and "posted" in posted, posted
        batch_id = posted.split()[1]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, out + err
    assert f"batch {batch_id} keeps running" in err
    assert "curl -X DELETE" in err and f"{server.url}/batches/{batch_id}" in err
    assert TOKEN not in out + err
    with _client(server) as client:
        assert client.get(f"/batches/{batch_id}").json()["status"] in ("listing", "running")
        client.delete(f"/batches/{batch_id}")

        def cancelled() -> bool:
            return client.get(f"/batches/{batch_id}").json()["status"] == "cancelled"

        wait_until(cancelled, timeout_s=30, interval_s=0.2, what="the batch to be stopped")
