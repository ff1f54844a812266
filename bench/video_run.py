"""`bench/video.py run`: the videos benchmark of issue 25 item 6.

Clips (`tracking_real.clip_jobs`: the first photos by path of ../shared/wider-face-dev, ~1024 px, so
upscaled in 1080p and 2160p frames; every third with a cut, every third with the main
face leaving and re-entering) are made with `make-clip` at each size. On each clip,
in turn, each tool runs as a whole process (start-up included, as a user running it
on one clip pays it): wall seconds, CPU seconds (user + sys) and peak RSS of the child
from wait4 (`speed.timed_process`). Each output is read back from its pixels with
`check` (solid mode): exposed face-frames, flashes, background hidden, sound, metadata.
Each clip's figures are appended to `OUT/clips.jsonl` as they come (with the commit
and the load average). With `reuse`, a (size, clip, tool) already there is not run
again: its last line's figures are taken (a run resumed, or one tool measured again
on the same clips while the others' figures are kept; the lines say when and at which
commit each was measured). The tools (`only`: some of them):
- `ours`: `imageblur blur CLIP -o DIR`, solid mode, tracking on at the default stride;
- `per-frame`: the same with tracking off and every frame detected
  (IMAGEBLUR_VIDEO_TRACKING=false, IMAGEBLUR_VIDEO_DETECT_STRIDE=1);
- `deface`: deface 1.5.0's CLI, `--replacewith solid --keep-audio`.
At 2160p (2 clips, for peak memory) only `ours` runs.

Clip-making and checking run in children too: this process stays small (about 100 MB),
since Linux carries a parent's peak RSS over into a child's ru_maxrss.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenance import measured_commit
from speed import Timed, _clean_env, imageblur_command, timed_process
from tracking_real import ClipJob, clip_jobs

BENCH = Path(__file__).resolve().parent
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "2160p": (3840, 2160)}
OURS_ONLY = {"2160p": 2}  # the sizes measured for peak memory: at most this many clips
# Settings a caller's environment may hold that would change what `ours` measures.
MODE_VARIABLES = ("IMAGEBLUR_VIDEO_TRACKING", "IMAGEBLUR_VIDEO_DETECT_STRIDE")


@dataclass(frozen=True)
class Tool:
    name: str
    command: list[str]  # the clip and the output are appended by `argv`
    env: dict[str, str]
    output_is_dir: bool  # ours takes `-o DIR`, deface `-o FILE`

    def argv(self, clip: Path, out: Path) -> list[str]:
        if self.output_is_dir:
            return [*self.command, str(clip), "-o", str(out.parent)]
        return [*self.command, str(clip), "-o", str(out)]


def tools(deface: Path | None) -> list[Tool]:
    base = {k: v for k, v in _clean_env().items() if k not in MODE_VARIABLES}
    solid = {**base, "IMAGEBLUR_BLUR_MODE": "solid"}
    blur = [imageblur_command(), "blur"]
    found = [
        Tool("ours", blur, solid, True),
        Tool(
            "per-frame",
            blur,
            {**solid, "IMAGEBLUR_VIDEO_TRACKING": "false", "IMAGEBLUR_VIDEO_DETECT_STRIDE": "1"},
            True,
        ),
    ]
    if deface is not None:
        args = [str(deface), "--replacewith", "solid", "--keep-audio"]
        found.append(Tool("deface", args, base, False))
    return found


@dataclass
class Tally:
    """One tool at one size, summed over its clips."""

    clips: int = 0
    frames: int = 0
    video_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    face_frames: dict[int, int] = field(default_factory=lambda: {20: 0, 40: 0})
    exposed: dict[int, int] = field(default_factory=lambda: {20: 0, 40: 0})
    flashes: int = 0
    background: int = 0
    background_hidden: float = 0.0
    sound_kept: bool = True
    frames_match: bool = True
    metadata_left: set[str] = field(default_factory=set)
    output_sizes: set[str] = field(default_factory=set)  # other than the input's

    def add(self, timed: Timed, video_s: float, report: dict[str, Any]) -> None:
        self.clips += 1
        self.frames += int(report["output_frames"])
        self.video_s += video_s
        self.wall_s += timed.wall_s
        self.cpu_s += timed.cpu_s
        self.peak_rss_mb = max(self.peak_rss_mb, timed.peak_rss_mb)
        for size in (20, 40):
            pairs = int(report[f"face_frames_{size}"])
            self.face_frames[size] += pairs
            self.exposed[size] += round(report[f"exposed_face_frames_{size}"] * pairs)
        self.flashes += int(report["flashes"])
        self.background += int(report["background_pixels"])
        self.background_hidden += report["background_hidden"] * report["background_pixels"]
        self.sound_kept &= bool(report["sound_kept"])
        self.frames_match &= bool(report["frames_match"])
        self.metadata_left |= {k.split(":", 1)[-1] for k in report["metadata_left"]}
        if report.get("output_size"):
            self.output_sizes.add("x".join(map(str, report["output_size"])))

    def row(self) -> dict[str, Any]:
        return {
            "clips": self.clips,
            "frames": self.frames,
            "video_s": self.video_s,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            **{f"face_frames_{s}": self.face_frames[s] for s in (20, 40)},
            **{
                f"exposed_face_frames_{s}": self.exposed[s] / max(self.face_frames[s], 1)
                for s in (20, 40)
            },
            "flashes": self.flashes,
            "background_hidden": self.background_hidden / max(self.background, 1),
            "frames_per_s": self.frames / max(self.wall_s, 1e-9),
            "cpu_s_per_video_s": self.cpu_s / max(self.video_s, 1e-9),
            "real_time_factor": self.video_s / max(self.wall_s, 1e-9),
            "peak_rss_mb": self.peak_rss_mb,
            "sound_kept": self.sound_kept,
            "frames_match": self.frames_match,
            "metadata_left": sorted(self.metadata_left),
            "output_sizes": sorted(self.output_sizes),
        }


def run_size(
    size: str,
    clips: Sequence[ClipJob],
    contenders: Sequence[Tool],
    work: Path,
    reuse: bool = False,
    used: list[dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every clip of one size through every tool, the tools in turn on each clip
    (each clip's line, measured or reused, appended to `used`)."""
    if size in OURS_ONLY:
        clips = clips[: OURS_ONLY[size]]
        contenders = [t for t in contenders if t.name == "ours"]
    tallies = {tool.name: Tally() for tool in contenders}
    done = _logged(work) if reuse else {}
    for job in clips:
        clip = work / size / job.name
        video_s = make(job, clip)
        for tool in contenders:
            line = done.get((size, clip.name, tool.name)) or _measure(size, clip, tool, work)
            if used is not None:
                used.append({**line, "reused": (size, clip.name, tool.name) in done})
            timed = Timed(line["wall_s"], line["cpu_s"], line["peak_rss_mb"], "")
            tallies[tool.name].add(timed, video_s, line["check"])
    return {name: tally.row() for name, tally in tallies.items()}


def _measure(size: str, clip: Path, tool: Tool, work: Path) -> dict[str, Any]:
    out = work / size / tool.name / clip.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    load = list(os.getloadavg())
    timed = timed_process(tool.argv(clip, out), out.parent, tool.env)
    if not out.exists():
        raise SystemExit(f"{tool.name} wrote no {out}: {timed.stdout[-2000:]}")
    report = check(clip, out)
    print(f"{size} {clip.name} {tool.name}: {timed.wall_s:.1f} s", file=sys.stderr)
    # Each clip's figures as they come: a long run on a busy machine can be read (or
    # its end estimated) before it finishes, and resumed (`reuse`).
    line = {"size": size, "clip": clip.name, "tool": tool.name, **vars(timed), "stdout": None}
    line |= {"commit": measured_commit(), "load_average": load, "check": report}
    with (work / "clips.jsonl").open("a") as log:
        log.write(json.dumps(line) + "\n")
    out.unlink()  # 2160p outputs are large; the figures are kept
    return line


def _logged(work: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The last line of each (size, clip, tool) in `work`'s clips.jsonl."""
    path = work / "clips.jsonl"
    lines = [json.loads(t) for t in path.read_text().splitlines()] if path.exists() else []
    return {(line["size"], line["clip"], line["tool"]): line for line in lines}


def make(job: ClipJob, clip: Path) -> float:
    """The clip (in a child), made once per work folder; its length in seconds."""
    clip.parent.mkdir(parents=True, exist_ok=True)
    boxes = Path(f"{clip}.boxes.json")
    spec = job.spec
    if not boxes.exists():
        args = ["make-clip", str(job.photo), str(clip), "--size", f"{spec.width}x{spec.height}"]
        args += ["--fps", str(spec.fps), "--seconds", str(spec.seconds)]
        for x0, y0, x1, y1 in job.boxes:
            args += ["--box", f"{x0},{y0},{x1 - x0},{y1 - y0}"]
        args += ["--cut"] * spec.cut + ["--leave-reenter"] * spec.leave_reenter
        _video(args)
    record = json.loads(boxes.read_text())
    return float(record["frames"]) / float(record["fps"])


def check(clip: Path, out: Path) -> dict[str, Any]:
    text = _video(["check", str(clip), str(out), "--boxes", f"{clip}.boxes.json", "--json"])
    report: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return report


def run(
    dataset: Path,
    sizes: Sequence[str],
    count: int,
    work: Path,
    deface: Path | None,
    fps: int = 30,
    seconds: float = 8.0,
    only: Sequence[str] = (),
    reuse: bool = False,
) -> dict[str, Any]:
    started, load_before = time.perf_counter(), list(os.getloadavg())
    contenders = [t for t in tools(deface) if not only or t.name in only]
    results, used = {}, []
    for size in sizes:
        jobs = clip_jobs(dataset, count, SIZES.get(size) or _size(size), fps, seconds)
        results[size] = run_size(size, jobs, contenders, work, reuse, used)
    loads = [line["load_average"][0] for line in used if line.get("load_average")]
    return {
        "sizes": results,
        "clips": [str(j.photo.relative_to(dataset / "images")) for j in jobs],
        "fps": fps,
        "seconds": seconds,
        "duration_s": time.perf_counter() - started,
        "load_average_start": load_before,
        "load_average": list(os.getloadavg()),
        # Per measurement (a reused one was measured earlier): what the figures are of.
        "measurements": len(used),
        "reused": sum(1 for line in used if line["reused"]),
        "measured_commits": sorted({line.get("commit", "unknown") for line in used}),
        "measured_load_1min": [min(loads), max(loads)] if loads else None,
        "cores": os.cpu_count(),
    }


def _video(args: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / "video.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"video.py {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def _size(text: str) -> tuple[int, int]:
    parts = text.split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise SystemExit(f"a size is 720p, 1080p, 2160p or WxH: {text!r}")
    return int(parts[0]), int(parts[1])
