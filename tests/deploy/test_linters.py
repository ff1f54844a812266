"""hadolint on the Dockerfile, checkov on every rendered overlay."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.deploy.conftest import K8S, ROOT, tool


def test_hadolint_dockerfile() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_manifests(rendered_dir: Path, checkov: str) -> None:
    result = subprocess.run(
        [checkov, "--config-file", str(K8S / ".checkov.yaml"), "-d", str(rendered_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        # offline: no download of the Bridgecrew policy mapping
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": ""},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "Failed checks: 0" in result.stdout
