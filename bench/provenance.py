"""Which code a benchmark measured, recorded in its JSON so that a figure quoted later
names the commit it came from."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measured_commit() -> str:
    """`git rev-parse HEAD`, with "-dirty" appended when the tree differs from it
    (tracked changes or untracked files: the figures are then of code no commit holds);
    "unknown" outside a git checkout."""
    try:
        head = _git("rev-parse", "HEAD")
        changes = _git("status", "--porcelain")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if changes else head


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()
