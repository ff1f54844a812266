"""Helpers shared by the tests: real pictures, generated images, a real server process."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO.parent / "shared" / "example-pictures"
BILL = EXAMPLES / "bill-gates.jpg"
LINUS = EXAMPLES / "linus-trovalds.jpg"
# Face boxes (x0, y0, x1, y1) in the example pictures, measured once by eye and detector.
BILL_FACE = (698, 279, 1449, 1220)
LINUS_FACE = (163, 14, 200, 63)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.01
) -> bool:
    """Poll `predicate` until it holds (True) or `timeout_s` passed (False): the bounded
    wait a test uses instead of sleeping and hoping."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True


def wait_status(
    client: httpx.Client,
    image_id: str,
    wanted: Collection[str],
    *,
    timeout_s: float = 120,
    context: Callable[[], str] = str,
) -> dict[str, Any]:
    """Poll GET /picture/{id} (bounded) until its status is one of `wanted`; the record.
    `context` adds to the failure message (a deployment's logs, say)."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(client.get(f"/picture/{image_id}").json())
        return seen["status"] in wanted

    if not wait_until(reached, timeout_s=timeout_s, interval_s=0.1):
        raise AssertionError(f"{image_id} never {sorted(wanted)}: {seen}\n{context()}")
    return seen


def jpeg_bytes(
    width: int = 64, height: int = 48, *, seed: int = 0, exif: Image.Exif | None = None
) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    kwargs: dict[str, Any] = {"quality": 95}
    if exif is not None:
        kwargs["exif"] = exif
    Image.fromarray(pixels).save(out, "JPEG", **kwargs)
    return out.getvalue()


def png_bytes(width: int = 64, height: int = 48, *, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), (10, 20, 30, 128)[: len(mode)]).save(out, "PNG")
    return out.getvalue()


def detail(pixels: np.ndarray) -> float:
    """Mean absolute Laplacian: high for sharp detail, near zero once blurred."""
    gray = pixels.astype(np.float32).mean(axis=2)
    lap = (
        -4 * gray[1:-1, 1:-1] + gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:]
    )
    return float(np.abs(lap).mean())


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_done(
        self, client: httpx.Client, image_id: str, timeout_s: float = 120
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body: dict[str, Any] = client.get(f"/picture/{image_id}").json()
            if body["status"] in ("done", "failed"):
                return body
            time.sleep(0.2)
        raise AssertionError(f"image {image_id} not finished in {timeout_s}s:\n{self.logs()}")

    def stored_files(self) -> list[Path]:
        return sorted(p for p in self.data_dir.rglob("*") if p.is_file() and "sqlite" not in p.name)


@contextmanager
def run_server(
    data_dir: Path, *, command: str = "serve", env: dict[str, str] | None = None
) -> Iterator[Server]:
    port = free_port()
    log_path = data_dir.parent / f"{data_dir.name}-{command}.log"
    full_env = {
        **os.environ,
        "IMAGEBLUR_PORT": str(port),
        "IMAGEBLUR_DATA_DIR": str(data_dir),
        "IMAGEBLUR_LOG_FORMAT": "json",
        "IMAGEBLUR_DETECTOR_THREADS": "2",
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "imageblur.entrypoints.cli", command],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", data_dir, process, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}:\n{server.logs()}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{server.logs()}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
