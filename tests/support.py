"""Helpers shared by the tests: real pictures, generated images, a real server process."""

from __future__ import annotations

import io
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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


_PORTS = random.SystemRandom()  # not `random`'s state: hypothesis seeds that


def free_port() -> int:
    """A loopback port nobody listens on now, below the kernel's ephemeral range: a port
    the kernel picks (bind to 0) is one it also hands to outgoing connections, and one
    such connection took a worker's metrics port in the seconds before the worker bound
    it (two test processes at once make many)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(1000):
        port = _PORTS.randrange(20000, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port between 20000 and {low}")


# A loaded 2-core machine (another test run beside this one) stalls a process for
# seconds: a bound shorter than this turns a slow pass into a failure.
MIN_TIMEOUT_S = 10.0

_T = TypeVar("_T")


def wait_until(
    predicate: Callable[[], _T],
    *,
    timeout_s: float = 60,
    interval_s: float = 0.05,
    what: str = "",
    retry_on: tuple[type[Exception], ...] = (Exception,),
    details: Callable[[], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> _T:
    """Call `predicate` until it returns something true, and return that: the one bounded
    wait of the tests, instead of sleeping and hoping. An exception of `retry_on` counts
    as "not yet" (a server still starting, an element the page just rebuilt); the last
    one is named in the timeout and chained to it, so a bug in the predicate shows as
    itself, not as a bare timeout. `details` (logs, say) is added to that message; `clock`
    is for the helper's own tests."""
    if timeout_s < MIN_TIMEOUT_S:
        raise ValueError(f"timeout_s={timeout_s}: a bounded wait allows at least {MIN_TIMEOUT_S} s")
    deadline = clock() + timeout_s
    last: object = None
    error: Exception | None = None
    while True:
        try:
            value = predicate()
        except retry_on as exc:
            error = exc
        else:
            if value:
                return value
            last, error = value, None
        if clock() > deadline:
            break
        time.sleep(interval_s)
    message = f"not within {timeout_s:g} s: {what or getattr(predicate, '__name__', predicate)}"
    message += f"\nthe predicate last raised {error!r}" if error else f"\nit last gave {last!r}"
    if details is not None:
        message += f"\n{details()}"
    raise AssertionError(message) from error


def wait_status(
    client: httpx.Client,
    image_id: str,
    wanted: Collection[str],
    *,
    timeout_s: float = 120,
    context: Callable[[], str] = str,
) -> dict[str, Any]:
    """Poll GET /picture/{id} until its status is one of `wanted`; the record.
    `context` adds to the failure message (a deployment's logs, say)."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(client.get(f"/picture/{image_id}").json())
        return seen["status"] in wanted

    wait_until(
        reached,
        timeout_s=timeout_s,
        interval_s=0.1,
        what=f"{image_id} {sorted(wanted)}",
        details=lambda: f"{seen}\n{context()}",
    )
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
        return wait_status(
            client, image_id, {"done", "failed"}, timeout_s=timeout_s, context=self.logs
        )

    def stored_files(self) -> list[Path]:
        """The objects and files the server keeps: not its database, not the worker's
        work folders (`imageblur-work`, its lock file while it runs)."""
        return sorted(
            p
            for p in self.data_dir.rglob("*")
            if p.is_file() and "sqlite" not in p.name and "imageblur-work" not in p.parts
        )


@contextmanager
def run_server(
    data_dir: Path,
    *,
    command: str = "serve",
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[Server]:
    """`port`: a given one, to start a server again where a page knew it (the page's
    origin); by default a free one."""
    port = port or free_port()
    log_path = data_dir.parent / f"{data_dir.name}-{command}.log"
    full_env = {
        **os.environ,
        "IMAGEBLUR_PORT": str(port),
        "IMAGEBLUR_DATA_DIR": str(data_dir),
        "IMAGEBLUR_LOG_FORMAT": "json",
        "IMAGEBLUR_DETECTOR_THREADS": "2",
        **(env or {}),
    }
    argv = [sys.executable, "-m", "imageblur.entrypoints.cli", command]
    url = f"http://127.0.0.1:{port}"
    health = f"{url}/healthz"
    with serving(argv, full_env, log_path, health_url=health, what="the server") as process:
        yield Server(url, data_dir, process, log_path)


@contextmanager
def serving(
    argv: list[str], env: dict[str, str], log_path: Path, *, health_url: str, what: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` in a process of its own, its output in `log_path`, yielded once
    `health_url` answers 200; terminated (killed after 30 s) on the way out."""

    def logs() -> str:
        return log_path.read_text(errors="replace")

    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        if process.poll() is not None:  # not retried: no point waiting for it
            raise AssertionError(f"{what} exited with {process.returncode}:\n{logs()}")
        return httpx.get(health_url, timeout=1).status_code == 200

    try:
        wait_until(
            healthy,
            timeout_s=60,
            interval_s=0.2,
            what=f"{what} to start",
            retry_on=(httpx.TransportError,),
            details=logs,
        )
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
