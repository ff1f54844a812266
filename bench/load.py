#!/usr/bin/env python3
"""The API's own figures, on the embedded default with its worker busy in the same process.

Starts `imageblur serve` (API + worker in one process, SQLite, local folder: what
`make run` serves) in a temporary folder, gives its worker a backlog of 640 x 480
uploads, and times the worker's images/s with the API idle. Then, for each size, posts
N multipart uploads (noise-gradient JPEGs at quality 90: 640 x 480 is about 106 KiB,
320 x 240 about 27 KiB) from one asyncio httpx client over C keep-alive connections,
while the worker keeps working through its backlog. Only 202s count; 503s (and any other
answer) are reported, never retried. Prints uploads/s, upload latency p50/p95/p99, and
the worker's images/s during the burst beside its idle rate; the CPU per upload of the
server, of its event-loop thread and of the client are printed too (the load generator
shares the cores). CPU per upload moves far less than wall figures with the machine's
load. `--api-only` runs `imageblur api` instead, no worker: the server's CPU per upload
is then the API's own. Asserts nothing.

    .venv/bin/python bench/load.py [--json] [-n 500] [-c 16] [--sizes 640x480,320x240]
                                   [--api-only]

Each upload carries an Idempotency-Key, as a careful client's does. The figures are of
the worker's backlog images (640 x 480, the FIFO queue serves them before the burst's);
`worker_ran_dry` says if a burst outlasted that backlog, which makes its rate meaningless.
The distributed set-up has its own benchmark: bench/load_distributed.py.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from provenance import measured_commit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import free_port, wait_until  # noqa: E402

START_TIMEOUT_S = 120.0  # the one bounded wait: the server loads its model first
# Every kind's series (the benchmark's jobs are all `detect`).
DONE = re.compile(r'^imageblur_jobs_total\{[^}]*outcome="done"[^}]*\} (\S+)$', re.MULTILINE)


def noise_jpeg(seed: int, width: int, height: int) -> bytes:
    """A gradient under Gaussian noise (sigma 12), JPEG quality 90: costly to compress,
    like a photo, and every seed a different body."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def percentile_ms(values: list[float], q: int) -> float:
    if len(values) < 2:
        return round(values[0] * 1000, 1) if values else math.nan
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000, 1)


def cpu_s(pid: int, thread: int | None = None) -> float:
    """User + system CPU seconds of a process (or of one of its threads) so far."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@contextmanager
def embedded_server(port: int, data_dir: Path, command: str) -> Iterator[tuple[str, int]]:
    """`imageblur serve` (or `api`) with the defaults but its port and folder; yields
    (url, pid)."""
    env = {**os.environ, "IMAGEBLUR_PORT": str(port), "IMAGEBLUR_DATA_DIR": str(data_dir)}
    log_path = data_dir.parent / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "imageblur"), command],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"imageblur {command} exited ({process.returncode}), see {log_path}")
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200

    try:
        wait_until(
            ready,
            timeout_s=START_TIMEOUT_S,
            interval_s=0.2,
            what=f"imageblur {command} to be ready on {url} (log: {log_path})",
            retry_on=(httpx.TransportError,),
        )
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Burst:
    latencies_s: list[float] = field(default_factory=list)
    answers: dict[str, int] = field(default_factory=dict)  # status code -> count
    wall_s: float = 0.0


async def post_all(http: httpx.AsyncClient, images: list[bytes], clients: int) -> Burst:
    """Every image posted once, `clients` requests in flight (one per connection)."""
    burst = Burst()
    pending = iter(range(len(images)))

    async def client() -> None:
        for i in pending:
            t0 = time.perf_counter()
            try:
                r = await http.post(
                    "/picture",
                    files={"image": (f"load-{i}.jpg", images[i], "image/jpeg")},
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                )
                answer = str(r.status_code)
            except httpx.TransportError as exc:
                answer = type(exc).__name__
            if answer == "202":
                burst.latencies_s.append(time.perf_counter() - t0)
            burst.answers[answer] = burst.answers.get(answer, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    burst.wall_s = time.perf_counter() - t0
    return burst


async def jobs_done(http: httpx.AsyncClient) -> int:
    text = (await http.get("/metrics")).text
    return int(sum(float(value) for value in DONE.findall(text)))


@dataclass
class Backlog:
    """The worker's queue of 640 x 480 images, topped up so that it never runs dry."""

    http: httpx.AsyncClient
    clients: int
    sent: int = 0

    async def top_up(self, count: int) -> None:
        """At least `count` backlog images not yet done (the FIFO queue serves these
        before anything posted after them)."""
        missing = count - (self.sent - await jobs_done(self.http))
        if missing > 0:
            first = 1_000_000 + self.sent  # seeds apart from the measured uploads'
            images = [noise_jpeg(seed, 640, 480) for seed in range(first, first + missing)]
            burst = await post_all(self.http, images, self.clients)
            self.sent += burst.answers.get("202", 0)

    async def rate(self, seconds: float) -> tuple[float, bool]:
        """Images/s the worker finished over `seconds`, the API idle; and whether the
        backlog ran out meanwhile."""
        d0, t0 = await jobs_done(self.http), time.perf_counter()
        await asyncio.sleep(seconds)
        d1, t1 = await jobs_done(self.http), time.perf_counter()
        return (d1 - d0) / (t1 - t0), d1 >= self.sent


async def measure_size(
    http: httpx.AsyncClient,
    backlog: Backlog | None,
    pid: int,
    size: tuple[int, int],
    args: Any,
    keep: int,
) -> dict[str, Any]:
    images = [noise_jpeg(seed, *size) for seed in range(args.uploads)]
    if backlog is not None:
        await backlog.top_up(keep)
    await asyncio.sleep(1.0)  # let the top-up's requests settle before the clock starts
    # The main thread runs uvicorn's event loop: the HTTP parsing, the middlewares, the
    # routes; an upload's checks and writes run in the thread pool, the worker in others.
    done0, own0 = await jobs_done(http), own_cpu_s()
    server0, loop0 = cpu_s(pid), cpu_s(pid, pid)
    burst = await post_all(http, images, args.clients)
    server1, loop1, own1 = cpu_s(pid), cpu_s(pid, pid), own_cpu_s()
    done1 = await jobs_done(http)
    accepted = burst.answers.get("202", 0)
    return {
        "size": f"{size[0]}x{size[1]}",
        "body_kib": round(statistics.mean(len(i) for i in images) / 1024, 1),
        "uploads": len(images),
        "accepted": accepted,
        "rejected_503": burst.answers.get("503", 0),
        "answers": burst.answers,
        "seconds": round(burst.wall_s, 3),
        "uploads_per_s": round(accepted / burst.wall_s, 1),
        "p50_ms": percentile_ms(burst.latencies_s, 50),
        "p95_ms": percentile_ms(burst.latencies_s, 95),
        "p99_ms": percentile_ms(burst.latencies_s, 99),
        "worker_images_per_s": round((done1 - done0) / burst.wall_s, 2),
        "worker_ran_dry": backlog is not None and done1 >= backlog.sent,
        "server_cpu_ms_per_upload": round((server1 - server0) * 1000 / max(accepted, 1), 2),
        "loop_cpu_ms_per_upload": round((loop1 - loop0) * 1000 / max(accepted, 1), 2),
        "client_cpu_ms_per_upload": round((own1 - own0) * 1000 / max(accepted, 1), 2),
    }


async def run(url: str, pid: int, args: Any) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        if args.api_only:
            return {
                "worker_idle_images_per_s": None,
                "worker_idle_ran_dry": False,
                "sizes": [await measure_size(http, None, pid, s, args, 0) for s in sizes(args)],
            }
        backlog = Backlog(http, args.clients)
        await backlog.top_up(args.backlog)
        probe, _ = await backlog.rate(2.0)  # enough backlog for the window that follows
        await backlog.top_up(args.backlog + math.ceil(probe * args.idle_s * 1.5))
        idle_rate, idle_dry = await backlog.rate(args.idle_s)
        keep = args.backlog + math.ceil(idle_rate * args.idle_s)  # > a burst's share
        return {
            "worker_idle_images_per_s": round(idle_rate, 2),
            "worker_idle_ran_dry": idle_dry,
            "sizes": [await measure_size(http, backlog, pid, s, args, keep) for s in sizes(args)],
        }


def sizes(args: Any) -> list[tuple[int, int]]:
    pairs = (text.split("x") for text in args.sizes.split(","))
    return [(int(width), int(height)) for width, height in pairs]


def report_text(report: dict[str, Any]) -> str:
    lines = [
        f"commit {report['commit']}  {report['date']}  {report['machine']}",
        f"imageblur {report['server']}, {report['clients']} connections, one asyncio httpx "
        f"client; worker idle {report['worker_idle_images_per_s']} images/s (640x480 backlog)",
        f"{'size':>8} {'KiB':>6} {'202':>5} {'503':>4} {'up/s':>7} {'p50':>7} {'p95':>7} "
        f"{'p99 ms':>7} {'worker/s':>8} {'srv ms':>7} {'loop ms':>7} {'cli ms':>7}",
    ]
    for s in report["sizes"]:
        dry = " (ran dry)" if s["worker_ran_dry"] else ""
        lines.append(
            f"{s['size']:>8} {s['body_kib']:>6} {s['accepted']:>5} {s['rejected_503']:>4} "
            f"{s['uploads_per_s']:>7} {s['p50_ms']:>7} {s['p95_ms']:>7} {s['p99_ms']:>7} "
            f"{s['worker_images_per_s']:>8} {s['server_cpu_ms_per_upload']:>7} "
            f"{s['loop_cpu_ms_per_upload']:>7} {s['client_cpu_ms_per_upload']:>7}{dry}"
        )
    lines.append(
        "CPU ms per accepted upload: srv the server's (API + worker, or the API alone with "
        "--api-only), loop its event-loop thread's, cli the load client's"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--uploads", type=int, default=500, help="uploads per size")
    parser.add_argument("-c", "--clients", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--sizes", default="640x480,320x240", help="WxH,WxH of the uploads")
    parser.add_argument("--backlog", type=int, default=150, help="worker backlog kept")
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle-rate window")
    parser.add_argument("--port", type=int, help="the server's port (default: a free one)")
    parser.add_argument(
        "--api-only",
        action="store_true",
        help="`imageblur api` alone, no worker: the server's CPU is then the API's own",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imageblur-load-") as tmp:
        data_dir = Path(tmp) / "data"
        command = "api" if args.api_only else "serve"
        with embedded_server(args.port or free_port(), data_dir, command) as (url, pid):
            figures = asyncio.run(run(url, pid, args))
    report = {
        "commit": measured_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "clients": args.clients,
        "server": command,
        **figures,
    }
    print(json.dumps(report) if args.json else report_text(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
