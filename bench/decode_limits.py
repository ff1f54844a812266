#!/usr/bin/env python3
"""What an upload may cost: CPU and peak memory of the worst shapes we accept.

    python bench/decode_limits.py [--json] [--skip-worker] [--skip-uploads] [--skip-formats]

Every image is generated at run time into a temporary folder (labelled generated: a
resized example picture, so that it compresses like a photo; with noise for the JPEGs,
at the highest quality that fits the 25 MB cap) at 50 MP, the pixel cap.

1. Formats: for each format and shape we accept, the API's strict check
   (`imaging.check`) in a fresh child process: CPU seconds and the peak RSS above the
   child's RSS before the call (the interpreter, Pillow and the upload itself). Shapes:
   JPEG baseline 4:2:0 and progressive 4:4:4; PNG RGB, RGBA and Adam7-interlaced RGB;
   WebP lossy and lossless; AVIF; HEIC (needs the test-only pillow-heif to write it);
   and the hostile structures the checks before decoding refuse (a 1,000-scan JPEG, a
   PNG of 100,001 empty chunks), and a PNG whose zlib stream holds 2 GB past the image.
2. The worker: the whole job (decode, detect, hide, encode) in a child process built as
   bootstrap builds it, on the 50 MP progressive 4:4:4 JPEG, RGBA PNG, lossless WebP,
   HEIC and AVIF: peak RSS, seconds.
3. Uploads in flight: `imageblur api` (SQLite, local store, default limits) with 4 x
   IMAGEBLUR_MAX_CONCURRENT_CHECKS clients posting the 50 MP progressive 4:4:4 JPEG
   (18.6 MB), then the 50 MP lossless WebP, as multipart at once: the API's peak RSS and
   the peak size of the temporary files it holds (where multipart parts spool).
About 8 minutes on 2 cores (half of it writing the images; `--images DIR` keeps them).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile
from provenance import measured_commit

ROOT = Path(__file__).resolve().parents[1]
PICTURES = ROOT.parent / "shared" / "example-pictures"
SIZE = (8660, 5773)  # 50.0 MP, 3:2
MAX_UPLOAD_BYTES = 25_000_000
# The worst of each decoder for the worker's memory (the API check's figures show which).
# The API's worst decodes in memory (JPEG: also the largest upload).
UPLOAD_SHAPES = ("jpeg-progressive-444", "webp-lossless")
WORKER_SHAPES = ("jpeg-progressive-444", "png-rgba", "webp-lossless", "heic", "avif")


# --- generated images -------------------------------------------------------------


def photo(size: tuple[int, int] = SIZE) -> Image.Image:
    """An example picture resized to `size` (generated, compresses like a photo)."""
    sources = sorted(PICTURES.glob("*.jpg"))
    if not sources:
        raise SystemExit(f"no example pictures in {PICTURES}")
    return Image.open(sources[0]).convert("RGB").resize(size, Image.Resampling.BILINEAR)


def noisy(img: Image.Image) -> Image.Image:
    """`img` with sensor-like noise: the JPEG decoder's cost grows with the coded bytes,
    and a resized small picture alone codes to a fifth of what a camera writes."""
    noise = np.random.default_rng(1).integers(-8, 9, (img.height, img.width, 1), np.int16)
    return Image.fromarray(np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8))


def save(img: Image.Image, fmt: str, **options: Any) -> bytes:
    ImageFile.MAXBLOCK = max(ImageFile.MAXBLOCK, 1 << 26)  # progressive 4:4:4 needs it
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def largest_jpeg(img: Image.Image, **options: Any) -> bytes:
    """The highest quality that fits the upload cap: the worst a client may send."""
    for quality in (95, 92, 90, 85, 80, 75, 70):
        data = save(img, "JPEG", quality=quality, **options)
        if len(data) <= MAX_UPLOAD_BYTES - 100_000:
            return data
    raise SystemExit("no JPEG quality fits the upload cap")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png(width: int, height: int, idat: bytes, *, interlaced: bool = False) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1 if interlaced else 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + b"".join(_chunk(b"IDAT", idat[i : i + 65536]) for i in range(0, len(idat), 65536))
        + _chunk(b"IEND", b"")
    )


# Adam7: (x0, y0, dx, dy) of each pass.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
_ADAM7 += ((0, 1, 1, 2),)


def interlaced_png(img: Image.Image) -> bytes:
    """An Adam7-interlaced RGB PNG (Pillow does not write them), rows Sub-filtered."""
    pixels = np.asarray(img)
    packer = zlib.compressobj(9)
    parts = []
    for x0, y0, dx, dy in _ADAM7:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            flat = sub.reshape(sub.shape[0], -1)
            filtered = flat.copy()  # filter 1 (Sub): each byte minus the one 3 before
            filtered[:, 3:] -= flat[:, :-3]
            rows = np.concatenate([np.ones((sub.shape[0], 1), np.uint8), filtered], axis=1)
            parts.append(packer.compress(rows.tobytes()))
    parts.append(packer.flush())
    return _png(img.width, img.height, b"".join(parts), interlaced=True)


def zlib_overflow_png(width: int = 1000, height: int = 1000, extra_gb: int = 2) -> bytes:
    """A small PNG whose zlib stream goes on for `extra_gb` GB of zeros past the image."""
    packer = zlib.compressobj(9)
    parts = [packer.compress(b"\x00" * ((width * 3 + 1) * height))]
    block = b"\x00" * (1 << 24)
    parts += [packer.compress(block) for _ in range(extra_gb * 64)]
    parts.append(packer.flush())
    return _png(width, height, b"".join(parts))


def chunk_flood_png() -> bytes:
    """A 1-pixel PNG after 100,001 empty ancillary chunks (1.2 MB)."""
    small = save(Image.new("RGB", (1, 1)), "PNG")
    return small[:33] + _chunk(b"abCd", b"") * 100_001 + small[33:]


def scan_bomb(width: int = 4096, height: int = 4096, scans: int = 1000) -> bytes:
    """A progressive JPEG with its last scan repeated (tests/jpeg_bombs.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from jpeg_bombs import scan_bomb as bomb

    return bomb(width, height, scans=scans)


def heic(img: Image.Image) -> bytes | None:
    try:
        import pillow_heif
    except ImportError:
        return None
    out = io.BytesIO()
    pillow_heif.from_pillow(img).save(out, format="HEIF", quality=80)
    return out.getvalue()


def write_shapes(
    folder: Path, log: Callable[[str], None], size: tuple[int, int] = SIZE
) -> dict[str, Path]:
    img = photo(size)
    rgba = img.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(size))
    # WebP's widest under the cap: 49.98 MP.
    wide = img.resize((16383, 3051)) if size == SIZE else img
    grainy = noisy(img)
    makers: dict[str, Callable[[], bytes | None]] = {
        "jpeg-baseline-420": lambda: largest_jpeg(grainy),
        "jpeg-progressive-444": lambda: largest_jpeg(grainy, progressive=True, subsampling=0),
        "png-rgb": lambda: save(img, "PNG", compress_level=1),
        "png-rgba": lambda: save(rgba, "PNG", compress_level=1),
        "png-interlaced": lambda: interlaced_png(img),
        "webp-lossy": lambda: save(wide, "WEBP", quality=90, method=0),
        "webp-lossless": lambda: save(wide, "WEBP", lossless=True, quality=0, method=0),
        "avif": lambda: save(img, "AVIF", quality=80, speed=10),
        "heic": lambda: heic(img),
        "jpeg-1000-scans": scan_bomb,
        "png-100001-chunks": chunk_flood_png,
        "png-zlib-2gb-overflow": zlib_overflow_png,
    }
    paths = {}
    for name, make in makers.items():
        path = folder / name
        if path.exists():  # --images: written by an earlier run
            paths[name] = path
            continue
        log(f"writing {name}")
        data = make()
        if data is None:
            log(f"  skipped {name}: pillow-heif (the test extra) is not installed")
            continue
        if len(data) > MAX_UPLOAD_BYTES:
            log(f"  {name} is {len(data)} bytes, over the upload cap: measured anyway")
        path.write_bytes(data)
        paths[name] = path
    return paths


# --- measurements -----------------------------------------------------------------


def rss_mb(field: str = "VmRSS", pid: str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def check_child(path: Path) -> None:
    """In a fresh process: the API's strict check of one upload."""
    from imageblur import imaging
    from imageblur.config import load_settings
    from imageblur.domain import InvalidImage

    settings = load_settings()
    data = path.read_bytes()
    before = rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    try:
        imaging.check(data, max_pixels=settings.max_pixels, max_scans=settings.max_jpeg_scans)
        answer = "accepted"
    except InvalidImage as exc:
        answer = f"{exc.http_status} {exc.code}"
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures = {
        "bytes": len(data),
        "answer": answer,
        "seconds": seconds,
        "cpu_s": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime,
        # The sandbox's child, for HEIC and AVIF (its peak includes its interpreter).
        "child_cpu_s": children.ru_utime + children.ru_stime,
        "child_peak_mb": children.ru_maxrss / 1024,
        "peak_above_mb": rss_mb("VmHWM") - before,
        "base_mb": before,
    }
    fmt = imaging.sniff_format(data)
    if fmt in imaging.ISOLATED:  # the same decode in this process: what the child adds
        start = time.perf_counter()
        imaging.decode_check(data, fmt.pil_name)
        figures["in_process_seconds"] = time.perf_counter() - start
        figures["in_process_peak_above_mb"] = rss_mb("VmHWM") - before
    print(json.dumps(figures))


def worker_child(path: Path) -> None:
    """In a fresh process: one whole job, as the worker runs it."""
    from imageblur.allocator import limit_arenas
    from imageblur.bootstrap import build_detector, worker_anonymizer
    from imageblur.config import load_settings

    limit_arenas()  # as `imageblur worker` does
    settings = load_settings()
    anonymizer = worker_anonymizer(settings, build_detector(settings))
    data = path.read_bytes()
    before = rss_mb()
    start = time.perf_counter()
    result = anonymizer(data)
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "faces": result.faces,
                "peak_rss_mb": rss_mb("VmHWM"),
                "base_mb": before,
                "jpeg_fallback": result.jpeg_fallback,
            }
        )
    )


def child(mode: str, path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, mode, str(path)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} {path.name} failed:\n{proc.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


def spooled_bytes(pid: int, folder: Path) -> int:
    """Bytes of the files `pid` holds open in `folder`: multipart parts spool to unnamed
    temporary files (O_TMPFILE), which no directory listing shows."""
    total = 0
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).startswith(str(folder)):
                    total += fd.stat().st_size
    return total


def uploads_in_flight(jpeg: Path, tmp: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """`imageblur api`, 4 x MAX_CONCURRENT_CHECKS clients posting `jpeg` at once."""
    import httpx

    from imageblur.config import load_settings

    checks = load_settings().max_concurrent_checks
    spool = tmp / "api-tmp"
    spool.mkdir(parents=True)
    port = _free_port()
    env = {
        **os.environ,
        "IMAGEBLUR_PORT": str(port),
        "IMAGEBLUR_DATA_DIR": str(tmp / "api-data"),
        "TMPDIR": str(spool),
        "IMAGEBLUR_LOG_FORMAT": "json",
    }
    cmd = [sys.executable, "-m", "imageblur.entrypoints.cli", "api"]
    with (tmp / "api.log").open("wb") as out:
        server = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, server)
        base = rss_mb(pid=str(server.pid))
        data = jpeg.read_bytes()
        peak_spool = 0
        done = threading.Event()

        def watch() -> None:
            nonlocal peak_spool
            while not done.is_set():
                peak_spool = max(peak_spool, spooled_bytes(server.pid, spool))
                time.sleep(0.02)

        def post(_: int) -> int:
            with httpx.Client(base_url=url, timeout=600) as client:
                files = {"image": ("big.jpg", data, "image/jpeg")}
                return client.post("/picture", files=files).status_code

        watcher = threading.Thread(target=watch)
        watcher.start()
        start = time.perf_counter()
        with ThreadPoolExecutor(4 * checks) as pool:
            statuses = list(pool.map(post, range(4 * checks)))
        seconds = time.perf_counter() - start
        done.set()
        watcher.join()
        peak = rss_mb("VmHWM", str(server.pid))
    finally:
        server.terminate()
        server.wait(timeout=60)
    log(f"  answers: {sorted(statuses)}")
    return {
        "uploads": len(statuses),
        "upload_bytes": len(data),
        "accepted": statuses.count(202),
        "overloaded": statuses.count(503),
        "seconds": seconds,
        "base_rss_mb": base,
        "peak_rss_mb": peak,
        "peak_tmp_mb": peak_spool / 1e6,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, server: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"imageblur api exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("imageblur api did not start")


# --- main -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--skip-formats", action="store_true")
    parser.add_argument("--skip-worker", action="store_true")
    parser.add_argument("--skip-uploads", action="store_true")
    parser.add_argument("--only", nargs="*", help="shapes to check (default: all)")
    parser.add_argument(
        "--size",
        type=lambda text: tuple(int(v) for v in text.split("x")),
        default=SIZE,
        help="WxH of the generated images (default: 8660x5773, 50 MP); smaller for a smoke test",
    )
    parser.add_argument(
        "--images", type=Path, help="keep the generated images here, and reuse them next time"
    )
    parser.add_argument("--_check", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._check:
        check_child(args._check)
        return 0
    if args._worker:
        worker_child(args._worker)
        return 0
    log: Callable[[str], None] = (
        (lambda _m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    )
    report: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "commit": measured_commit(),
    }
    with tempfile.TemporaryDirectory(prefix="decode-limits-") as name:
        tmp = Path(name)
        images = args.images or tmp / "images"
        images.mkdir(parents=True, exist_ok=True)
        shapes = write_shapes(images, log, args.size)
        if args.only:
            shapes = {k: v for k, v in shapes.items() if k in args.only}
        if not args.skip_formats:
            report["check"] = {}
            for shape, path in shapes.items():
                report["check"][shape] = child("--_check", path)
                log(f"checked {shape}: {report['check'][shape]}")
        if not args.skip_worker:
            report["worker"] = {}
            for shape in WORKER_SHAPES:
                if shape in shapes:
                    report["worker"][shape] = child("--_worker", shapes[shape])
                    log(f"worker on {shape}: {report['worker'][shape]}")
        if not args.skip_uploads:
            report["uploads"] = {}
            for shape in UPLOAD_SHAPES:
                if shape in shapes:
                    log(f"uploads in flight: {shape}")
                    report["uploads"][shape] = uploads_in_flight(shapes[shape], tmp / shape, log)
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)
    return 0


def _print(report: dict[str, Any]) -> None:
    print(f"{report['machine']}, {report['date']}, commit {report['commit']}")
    if "check" in report:
        print(
            f"{'API strict check':24} {'MB':>5} {'answer':>16} {'s':>6} {'CPU s':>6} "
            f"{'+RSS MB':>7} {'child CPU s':>11} {'child MB':>8}"
        )
        for shape, f in report["check"].items():
            print(
                f"{shape:24} {f['bytes'] / 1e6:5.1f} {f['answer']:>16} {f['seconds']:6.2f} "
                f"{f['cpu_s']:6.2f} {f['peak_above_mb']:7.0f} {f['child_cpu_s']:11.2f} "
                f"{f['child_peak_mb']:8.0f}"
            )
    for shape, f in report.get("worker", {}).items():
        print(
            f"worker, {shape}: {f['seconds']:.1f} s, peak RSS {f['peak_rss_mb']:.0f} MB "
            f"(before the job {f['base_mb']:.0f} MB)"
        )
    for shape, u in report.get("uploads", {}).items():
        print(
            f"{u['uploads']} uploads of {shape}, {u['upload_bytes'] / 1e6:.1f} MB, at once: "
            f"{u['accepted']} accepted, {u['overloaded']} answered 503 in {u['seconds']:.0f} s; "
            f"API peak RSS {u['peak_rss_mb']:.0f} MB (idle {u['base_rss_mb']:.0f} MB), "
            f"peak temporary files {u['peak_tmp_mb']:.0f} MB"
        )


if __name__ == "__main__":
    sys.exit(main())
