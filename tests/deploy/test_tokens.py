"""scripts/tokens.sh: the tokens of compose's .env (`make compose-env`) and the Kubernetes
Secret imageblur-tokens (`make deploy`), run as the Makefile runs it."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from tests.deploy.conftest import ROOT, env_without_imageblur, kubectl

from imageblur.config import load_settings

SCRIPT = ROOT / "scripts" / "tokens.sh"
KEYS = ("IMAGEBLUR_API_TOKEN", "IMAGEBLUR_METRICS_TOKEN")
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or env_without_imageblur(),
    )


def _values(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_env_file_gets_two_fresh_tokens_readable_by_its_owner_only(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    result = _run("env", str(env_file))
    assert result.returncode == 0, result.stderr
    values = _values(env_file)
    assert set(values) == set(KEYS)
    assert all(re.fullmatch(r"[0-9a-f]{64}", values[k]) for k in KEYS)
    assert values[KEYS[0]] != values[KEYS[1]]
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # the tokens go to the file only, never to the terminal
    assert not any(values[k] in result.stdout + result.stderr for k in KEYS)


def test_env_file_tokens_are_what_the_application_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    assert _run("env", str(env_file)).returncode == 0
    for key in [k for k in os.environ if k.startswith("IMAGEBLUR_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("IMAGEBLUR_HOST", "0.0.0.0")
    for key, value in _values(env_file).items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.api_token is not None and settings.metrics_token is not None


def test_env_file_keeps_what_it_holds(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    # the user's own variables, the API token chosen by hand, no newline at the end
    mine = "POSTGRES_PASSWORD=mine\nIMAGEBLUR_API_TOKEN=chosen-by-hand-0123456789"
    env_file.write_text(mine)
    assert _run("env", str(env_file)).returncode == 0
    first = env_file.read_text()
    assert first.startswith(mine + "\n")
    assert re.search(r"(?m)^IMAGEBLUR_METRICS_TOKEN=[0-9a-f]{64}$", first)
    # a second run changes nothing: tokens are made once, not rotated behind one's back
    assert _run("env", str(env_file)).returncode == 0
    assert env_file.read_text() == first


def test_env_file_with_a_placeholder_is_refused(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("IMAGEBLUR_API_TOKEN=CHANGE_ME_to_a_long_random_string\n")
    result = _run("env", str(env_file))
    assert result.returncode != 0
    assert "IMAGEBLUR_API_TOKEN" in result.stderr and "CHANGE_ME" in result.stderr


@pytest.mark.parametrize("generate", [False, True])
def test_k8s_makes_nothing_when_the_cluster_cannot_answer(tmp_path: Path, generate: bool) -> None:
    """Only a Secret the cluster says is missing is made (dev); any other error stops the
    deploy before the API and workers roll out."""
    kubeconfig = tmp_path / "kubeconfig"
    # a cluster on port 1 of this host, where nothing listens: the connection is refused
    kubeconfig.write_text(KUBECONFIG)
    env = {**env_without_imageblur(), "KUBECONFIG": str(kubeconfig), "KUBECTL": kubectl()}
    result = _run("k8s", "imageblur", *(["--generate"] if generate else []), env=env)
    assert result.returncode != 0
    assert "cannot read the Secret imageblur-tokens" in result.stderr
    assert "made the Secret" not in result.stderr
