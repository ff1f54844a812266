#!/usr/bin/env python3
"""Should pictures take the streamed upload path? Today's `POST /picture` reads the
multipart body with Starlette's parser (file parts spooled to memory, then to TMPDIR
past 1 MiB), holds the bytes, checks them and `put`s them. Streamed, the body would go
to the store as it arrives (`entrypoints/streamed_upload.py`), and the check would then
read the object back (`get`): it needs the bytes, and it decides the key's extension.

Both paths are served by one uvicorn process (this file's `create_app`, wired from the
settings as the API is: the originals' store, encrypted if IMAGEBLUR_ORIGINALS_KEY is
set), on a local store in a temporary folder (or, with --s3, on a moto S3 server: its CPU,
another process, is not counted):

    today     read_multipart (the route's own) + originals.put
    streamed  stream_upload + originals.get
    parsed    stream_upload into memory (a sink, not the store) + originals.put: the
              streaming parser on today's path, bytes in hand before the check

The check, the database and the queue are the same in both and left out. One client
posts uploads one at a time; rounds alternate the paths (A B, then B A, ...) so that the
shared machine's load falls on both. Per upload: client wall time and the server's CPU
(user + sys, from /proc). Prints the median over rounds per path and size, and the
ratio streamed / today; asserts nothing.

    .venv/bin/python bench/streamed_upload.py [--json] [--rounds 9] [-n 20] [--encrypted] [--s3]

Inputs: the two real photos of ../shared/example-pictures (236 KiB, 8 KiB), and
generated bodies (random bytes: neither path decodes them) of 4 MiB and 20 MiB, the
size of phone photos and the default cap's neighbourhood.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from provenance import measured_commit
from starlette.concurrency import run_in_threadpool

from imageblur.admission import StreamSlots
from imageblur.bootstrap import build_gate, build_originals
from imageblur.config import Settings
from imageblur.entrypoints.errors import install_error_handlers
from imageblur.entrypoints.streamed_upload import stream_upload
from imageblur.entrypoints.uploads import read_multipart
from imageblur.ports import ObjectStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import servers  # noqa: E402
from support import EXAMPLES, free_port, wait_until  # noqa: E402

MIB = 1 << 20
BOUNDARY = "benchboundary5b1c"
PATHS = ("today", "streamed", "parsed")


class _MemorySink:
    """Takes `put_stream` into memory: the streaming parser without the store."""

    def __init__(self) -> None:
        self.data = b""

    def put_stream(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> None:
        self.data = b"".join(chunks)


def create_app() -> FastAPI:
    """The server side: both paths on the same store."""
    settings = Settings()
    originals = build_originals(settings)
    gate = build_gate(settings)
    slots = StreamSlots(settings.max_streamed_uploads)
    app = FastAPI()

    @app.post("/today")
    async def today(request: Request) -> JSONResponse:
        with gate.admit():
            data, _ = await read_multipart(request, max_bytes=settings.max_upload_bytes)
            key = f"{uuid.uuid4().hex}.jpg"
            await run_in_threadpool(originals.put, key, data, content_type="image/jpeg")
        return JSONResponse({"key": key, "size": len(data)}, status_code=201)

    @app.post("/streamed")
    async def streamed(request: Request) -> JSONResponse:
        got = await stream_upload(
            request,
            store=originals,
            key=f"{uuid.uuid4().hex}.jpg",
            max_bytes=settings.max_upload_bytes,
            slots=slots,
        )
        data = await run_in_threadpool(originals.get, got.key)  # what the check reads
        return JSONResponse({"key": got.key, "size": len(data)}, status_code=201)

    @app.post("/parsed")
    async def parsed(request: Request) -> JSONResponse:
        sink = _MemorySink()
        got = await stream_upload(
            request,
            store=cast(ObjectStore, sink),
            key=f"{uuid.uuid4().hex}.jpg",
            max_bytes=settings.max_upload_bytes,
            slots=slots,
        )
        await run_in_threadpool(originals.put, got.key, sink.data, content_type="image/jpeg")
        return JSONResponse({"key": got.key, "size": len(sink.data)}, status_code=201)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    install_error_handlers(app)
    return app


def _body(data: bytes) -> bytes:
    return (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _inputs() -> dict[str, bytes]:
    return {
        "bill-gates.jpg (real, 236 KiB)": (EXAMPLES / "bill-gates.jpg").read_bytes(),
        "linus-trovalds.jpg (real, 8 KiB)": (EXAMPLES / "linus-trovalds.jpg").read_bytes(),
        "generated 4 MiB": os.urandom(4 * MIB),
        "generated 20 MiB": os.urandom(20 * MIB),
    }


def _run(client: httpx.Client, pid: int, path: str, body: bytes, n: int) -> tuple[float, float]:
    """Wall and server CPU seconds per upload, over `n` uploads."""
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    cpu, wall = _cpu_s(pid), time.perf_counter()
    for _ in range(n):
        answer = client.post(f"/{path}", content=body, headers=headers)
        if answer.status_code != 201:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text}")
    return (time.perf_counter() - wall) / n, (_cpu_s(pid) - cpu) / n


def measure(rounds: int, n: int, *, encrypted: bool, s3: bool) -> dict[str, Any]:
    moto = servers.MotoServer().start() if s3 else None
    try:
        return _measure(rounds, n, encrypted=encrypted, moto=moto)
    finally:
        if moto is not None:
            moto.stop()


def _measure(
    rounds: int, n: int, *, encrypted: bool, moto: servers.MotoServer | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-streamed-") as folder:
        port = free_port()
        env = {
            **os.environ,
            "IMAGEBLUR_DATA_DIR": str(Path(folder) / "data"),
            "TMPDIR": folder,
            "PYTHONPATH": str(ROOT / "bench"),
        }
        if encrypted:
            env["IMAGEBLUR_ORIGINALS_KEY"] = "A" * 43 + "="  # 32 bytes, base64
        if moto is not None:
            env |= moto.env() | {"IMAGEBLUR_STORE": "s3", "IMAGEBLUR_S3_CREATE_BUCKETS": "true"}
        command = ["-m", "uvicorn", "streamed_upload:create_app", "--factory", "--no-access-log"]
        server = subprocess.Popen(
            [sys.executable, *command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(
                lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
                timeout_s=60,
                what="the bench server",
                retry_on=(httpx.TransportError,),
            )
            with httpx.Client(base_url=url, timeout=120) as client:
                return _rounds(client, server.pid, rounds, n)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _rounds(client: httpx.Client, pid: int, rounds: int, n: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, data in _inputs().items():
        body = _body(data)
        for path in PATHS:  # warm both (imports, first connection) out of the figures
            _run(client, pid, path, body, 2)
        runs: dict[str, list[tuple[float, float]]] = {path: [] for path in PATHS}
        for i in range(rounds):
            order = PATHS if i % 2 == 0 else PATHS[::-1]
            for path in order:
                runs[path].append(_run(client, pid, path, body, n))
        medians = {
            path: {
                "wall_ms": 1000 * statistics.median(w for w, _ in runs[path]),
                "cpu_ms": 1000 * statistics.median(c for _, c in runs[path]),
            }
            for path in PATHS
        }
        for path in PATHS[1:]:
            today = medians["today"]
            for what in ("wall", "cpu"):
                base = today[f"{what}_ms"]  # CPU is counted in 10 ms ticks: 0 if n is small
                ratio = medians[path][f"{what}_ms"] / base if base else float("nan")
                medians[path][f"{what}_ratio"] = ratio
        results[label] = {**medians, "runs": runs}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("-n", type=int, default=20, help="uploads per path per round")
    parser.add_argument("--encrypted", action="store_true", help="set an originals key")
    parser.add_argument("--s3", action="store_true", help="on a moto S3 server, not a folder")
    args = parser.parse_args()
    report = {
        "commit": measured_commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_before": os.getloadavg()[0],
        "encrypted": args.encrypted,
        "store": "s3 (moto)" if args.s3 else "local",
        "results": measure(args.rounds, args.n, encrypted=args.encrypted, s3=args.s3),
        "load_after": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    originals = "encrypted" if args.encrypted else "plain"
    print(
        f"commit {report['commit']}, {report['machine']}, load {report['load_before']:.1f}"
        f" -> {report['load_after']:.1f}, {report['store']} store, originals {originals}"
    )
    print(
        f"{'input':34} {'path':9} {'wall ms':>9} {'cpu ms':>9} {'wall/today':>10} {'cpu/today':>10}"
    )
    for label, result in report["results"].items():
        for path in PATHS:
            row = result[path]
            ratios = (
                f"{row['wall_ratio']:10.2f} {row['cpu_ratio']:10.2f}" if path != "today" else ""
            )
            print(f"{label:34} {path:9} {row['wall_ms']:9.2f} {row['cpu_ms']:9.2f} {ratios}")


if __name__ == "__main__":
    main()
