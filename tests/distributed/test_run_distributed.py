"""`make run-distributed` starts the whole set-up in one command and Ctrl-C stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest

import servers

from .harness import generated_jpeg

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_make_run_distributed_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    servers.ensure_postgres()
    servers.ensure_rabbitmq()
    port, s3_port = servers.free_port(), servers.free_port()
    schema, queue = servers.unique("t"), servers.unique("jobs")
    env = {
        **os.environ,
        "IMAGEBLUR_PORT": str(port),
        "DIST_MOTO_PORT": str(s3_port),
        # Our own corner of the machine's services: nobody else's workers or rows.
        "IMAGEBLUR_POSTGRES_SCHEMA": schema,
        "IMAGEBLUR_RABBITMQ_QUEUE": queue,
        "IMAGEBLUR_LOG_FORMAT": "json",
        "IMAGEBLUR_DETECTOR_THREADS": "1",
    }
    log = (tmp_path / "make.log").open("wb")
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run-distributed"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal would give it
    )
    try:
        url = f"http://127.0.0.1:{port}"
        servers.wait_for(
            lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
            timeout_s=120,
            what="make run-distributed to serve",
        )
        response = httpx.post(
            f"{url}/picture",
            files={"image": ("x.jpg", generated_jpeg(1), "image/jpeg")},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        image = f"{url}/picture/{response.json()['id']}"
        servers.wait_for(
            lambda: httpx.get(image, timeout=5).json()["status"] == "done",
            timeout_s=60,
            what="the image to be done",
        )
        assert httpx.get(image, timeout=5).json()["url"].startswith("s3://output/")

        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C
        assert make.wait(timeout=60) is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            servers.port_open("127.0.0.1", port) or servers.port_open("127.0.0.1", s3_port)
        ):
            time.sleep(0.2)
        assert not servers.port_open("127.0.0.1", port), "the API still runs"
        assert not servers.port_open("127.0.0.1", s3_port), "the S3 server still runs"
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
        log.close()
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/imageblur", autocommit=True
        ) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for name in (queue, f"{queue}.dead"):
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", name], capture_output=True)
