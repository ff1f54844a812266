"""Shared fixtures of the deployment checks: rendered overlays, the compose file, lint tools.

kubectl (for `kubectl kustomize`) is expected on the machine; checkov, whose dependencies
clash with the project's, is installed on first use into its own venv, `.venv-tools/`.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(
    p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file()
)
TOOLS_VENV = ROOT / ".venv-tools"
CHECKOV_REQUIREMENT = "checkov>=3.2,<4"

Doc = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl not installed: cannot render the kustomize overlays")
    return path


def render(overlay: str) -> list[Doc]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


_rendered: dict[str, list[Doc]] = {}

LONG_JOBS = K8S / "components" / "long-jobs"


def render_with(overlay: str, component: Path, root: Path) -> list[Doc]:
    """The overlay with an opt-in component, as an operator lists it in the overlay's
    own kustomization (a copy of deploy/k8s under `root`, so that the overlay's image
    pins, labels and generators apply to the component's objects too)."""
    tree = root / "k8s"
    shutil.copytree(K8S, tree)
    kustomization = tree / "overlays" / overlay / "kustomization.yaml"
    spec = yaml.safe_load(kustomization.read_text())
    spec.setdefault("components", []).append(
        os.path.relpath(tree / component.relative_to(K8S), kustomization.parent)
    )
    kustomization.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = subprocess.run(
        [kubectl(), "kustomize", str(kustomization.parent)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def rendered(overlay: str) -> list[Doc]:
    """The overlay's objects, rendered once per test session."""
    if overlay not in _rendered:
        _rendered[overlay] = render(overlay)
    return _rendered[overlay]


@pytest.fixture
def docs(overlay: str) -> list[Doc]:
    return rendered(overlay)


@pytest.fixture(scope="session")
def rendered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every overlay rendered to <dir>/<overlay>.yaml, for the file-based linters, and
    with the opt-in long-jobs component to <dir>/<overlay>-long-jobs.yaml."""
    out = tmp_path_factory.mktemp("rendered")
    for name in OVERLAYS:
        docs = rendered(name)
        (out / f"{name}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        long_docs = render_with(name, LONG_JOBS, tmp_path_factory.mktemp(f"long-{name}"))
        (out / f"{name}-long-jobs.yaml").write_text(yaml.safe_dump_all(long_docs, sort_keys=False))
    return out


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def by_prefix(docs: list[Doc], kind: str, name: str) -> Doc | None:
    """A generated object (ConfigMap, Secret) whose name kustomize suffixed with a hash."""
    for d in docs:
        if d["kind"] == kind and (
            d["metadata"]["name"] == name or d["metadata"]["name"].rsplit("-", 1)[0] == name
        ):
            return d
    return None


def pod_spec(doc: Doc) -> Doc | None:
    if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return None


def secret_data(secret: Doc) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def tool(name: str) -> str:
    """A console script installed beside the running interpreter (the project's .venv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not installed: `pip install -e '.[dev]'` provides it")
    return found


@pytest.fixture(scope="session")
def checkov() -> Iterator[str]:
    """checkov in its own venv (.venv-tools/), created on first use."""
    exe = TOOLS_VENV / "bin" / "checkov"
    stamp = TOOLS_VENV / ".checkov-installed"
    if not (exe.is_file() and stamp.is_file()):
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
        subprocess.run(
            [
                str(TOOLS_VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                CHECKOV_REQUIREMENT,
            ],
            check=True,
            timeout=900,
        )
        stamp.touch()
    yield str(exe)


def env_without_imageblur() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBLUR_")}
