"""`bench/video.py run`'s table and its targets (issue 25 item 6), printed, never
asserted: timings on a shared machine are figures to read, not pass/fail."""

from __future__ import annotations

from typing import Any

# (size or None for every size, target name, row key, tool compared, limit, "<=" or ">=").
# A ratio is ours / the other tool's; `peak` and `realtime` compare with the limit itself.
RATIO_TARGETS = (
    (None, "exposed >= 20 px vs per-frame", "exposed_face_frames_20", "per-frame", 0.7, "<="),
    (None, "exposed >= 40 px vs per-frame", "exposed_face_frames_40", "per-frame", 0.7, "<="),
    (None, "flashes vs per-frame", "flashes", "per-frame", 0.5, "<="),
    (None, "exposed >= 20 px vs deface", "exposed_face_frames_20", "deface", 1.0, "<"),
    (None, "exposed >= 40 px vs deface", "exposed_face_frames_40", "deface", 1.0, "<"),
    (None, "background hidden vs deface", "background_hidden", "deface", 0.5, "<="),
    ("1080p", "frames/s vs deface", "frames_per_s", "deface", 3.0, ">="),
)
PEAK_MB = {"1080p": 900.0, "2160p": 1400.0}


def targets(sizes: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every target the run has the tools for: its value, limit and whether it is met.
    A ratio over a zero (the other tool exposed nothing) is None, met when ours is 0."""
    found: list[dict[str, Any]] = []
    for size, rows in sizes.items():
        ours = rows.get("ours")
        if ours is None:
            continue
        for only, name, key, other, limit, op in RATIO_TARGETS:
            if (only is not None and only != size) or other not in rows:
                continue
            theirs = rows[other][key]
            value = ours[key] / theirs if theirs else None
            met = _holds(value, op, limit) if value is not None else ours[key] == 0
            found.append(_target(size, name, value, op, limit, met))
        if size in PEAK_MB:
            peak = ours["peak_rss_mb"]
            found.append(
                _target(size, "peak RSS MB", peak, "<=", PEAK_MB[size], peak <= PEAK_MB[size])
            )
    return found


def _holds(value: float, op: str, limit: float) -> bool:
    return value <= limit if op == "<=" else value >= limit if op == ">=" else value < limit


def _target(
    size: str, name: str, value: float | None, op: str, limit: float, met: bool
) -> dict[str, Any]:
    return {"size": size, "target": name, "value": value, "op": op, "limit": limit, "met": met}


def table(report: dict[str, Any]) -> str:
    lines = [
        f"commit {report['commit']}; {report['cores']} cores; load average (1, 5, 15 min) "
        + ", ".join(f"{v:.1f}" for v in report["load_average_start"])
        + " at the start, "
        + ", ".join(f"{v:.1f}" for v in report["load_average"])
        + f" at the end; {report['duration_s'] / 60:.1f} min",
        f"{report['measurements']} measurements ({report['reused']} reused from clips.jsonl) "
        f"of commits {', '.join(c[:7] for c in report['measured_commits'])}"
        + (
            f"; 1-min load while measuring {report['measured_load_1min'][0]:.1f} to "
            f"{report['measured_load_1min'][1]:.1f}"
            if report["measured_load_1min"]
            else ""
        ),
        f"clips: {report['seconds']:g} s at {report['fps']} fps from "
        + ", ".join(report["clips"])
        + " (~1024 px photos, upscaled where the crop is smaller than the frame)",
    ]
    header = (
        f"{'tool':<10} {'clips':>5} {'exp>=20':>8} {'exp>=40':>8} {'flashes':>7} "
        f"{'bg hid':>7} {'fps':>6} {'rt x':>5} {'cpu s/s':>7} {'peak MB':>7}  sound, metadata"
    )
    for size, rows in report["sizes"].items():
        lines += ["", f"{size}:", header]
        for name, r in rows.items():
            lines.append(
                f"{name:<10} {r['clips']:>5} {r['exposed_face_frames_20']:>8.2%} "
                f"{r['exposed_face_frames_40']:>8.2%} {r['flashes']:>7} "
                f"{r['background_hidden']:>7.2%} {r['frames_per_s']:>6.2f} "
                f"{r['real_time_factor']:>5.2f} {r['cpu_s_per_video_s']:>7.2f} "
                f"{r['peak_rss_mb']:>7.0f}  {'kept' if r['sound_kept'] else 'LOST'}, "
                + (", ".join(r["metadata_left"]) or "none left")
                + ("" if r["frames_match"] else " (FRAME COUNT DIFFERS)")
                + "".join(f" (written {s}, scaled back)" for s in r["output_sizes"])
            )
    lines += ["", "targets (ours; ratios are ours / the other tool's):"]
    for t in report["targets"]:
        value = "n/a (theirs 0)" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(
            f"  {t['size']:<6} {t['target']:<30} {value:>14} {t['op']} {t['limit']:g}"
            f"  {'met' if t['met'] else 'NOT met'}"
        )
    return "\n".join(lines)
