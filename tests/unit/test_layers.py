"""Rules of the code's shape, read from the source: the allowed imports between the
package's modules (docs/architecture.md) and the longest function. A new import across
a boundary, or a function grown past a screen, fails here rather than in a review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "imageblur"

# Module -> the project modules it may import (a trailing "." allows a whole package).
CORE = {"domain", "ports"}
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    # The closed sets it validates against live with the code that uses them (leaves).
    "config": {"domain", "metadata", "detection.families", "tokens", "jpeg_scans"}
    | {"webhooks.signing", "webhooks.addresses", "upload_options"},
    # An upload's options as sent, checked: pure parsing, like the domain.
    "upload_options": {"domain", "metadata", "webhooks.addresses"},
    "metadata": set(),
    # Who may call the API, as settings write it: pure parsing, a leaf.
    "tokens": set(),
    "heif": set(),
    "logs": set(),
    "ports": {"domain"},
    # The job state machine as data: pure, like the domain.
    "lifecycle": {"domain"},
    "admission": {"domain", "pixel_budget"},
    "imaging": CORE | {"heif", "metadata", "jpeg_scans", "png_chunks", "sandbox"},
    "sandbox": set(),
    # A worker's work folders: the job's folder, its free space, a dead worker's swept.
    "workdir": {"domain", "logs", "sandbox"},
    "allocator": set(),
    "png_chunks": set(),
    "blurring": CORE,
    # Where a job's long work may stop once its lease is lost (a leaf, like the domain).
    "cancel": {"domain"},
    "detection.families": {"domain"},  # the names the settings read: no runtime
    "detection.": CORE | {"detection.", "cancel"},
    "jpeg_coefficients": set(),
    "jpeg_scans": set(),
    "jpeg_patch": CORE | {"jpeg_coefficients", "jpeg_scans"},
    "pixel_budget": set(),
    "anonymizer": CORE
    | {"imaging", "blurring", "jpeg_patch", "jpeg_coefficients", "jpeg_scans"}
    | {"pixel_budget", "cancel"},
    "backends": CORE | {"logs", "batches.ports"},
    # Bucket batches: their records and rules are pure; their ports name them.
    "batches.model": {"domain"},
    "batches.ports": {"domain", "batches.model"},
    # Which locations a batch may name: pure checks over the model.
    "batches.rules": {"domain", "batches.model"},
    # The batches' use cases (the API's, the pump, the worker's item): their ports, an
    # upload's options and the anonymizer the pictures use.
    "batches.": CORE
    | {"batches.", "logs", "upload_options", "anonymizer", "imaging"}
    | {"cached_collector"},
    # The Prometheus collectors, and the proxies that count back-end errors.
    "metrics": CORE | {"backends", "cached_collector"},
    # Gauges read from the database at a scrape, cached: a leaf both kinds of gauges use.
    "cached_collector": set(),
    "services": CORE | {"backends", "admission", "imaging", "logs", "upload_options"},
    # The API's video use cases: the pictures' name rule, the signed playback URLs.
    "videos": CORE
    | {"backends", "logs", "services", "playback", "ranged_reader", "upload_options"},
    # A stored object read as a seekable file, through the store's port.
    "ranged_reader": CORE,
    # Webhooks: the signature and the address policy are pure; a delivery attempt
    # resolves and connects.
    "webhooks.signing": set(),
    "webhooks.addresses": set(),
    # The sender: the outbox's rows, signed and posted, settled in the repository.
    "webhooks.sender": CORE | {"webhooks.", "logs", "metrics"},
    "webhooks.": {"webhooks."},
    # Signed playback URLs: pure.
    "playback": set(),
    # A correction's shape and the region list it makes: pure, like the domain.
    "corrections": CORE,
    "review": CORE | {"backends", "corrections", "logs"},
    # How long a job holds its lease: renewals that follow its progress, and the watch
    # on its record.
    "leases": CORE | {"cancel", "logs"},
    "jobs": CORE | {"backends", "anonymizer", "logs", "metrics", "cancel", "leases", "workdir"},
    "reconciler": CORE | {"backends", "jobs", "logs"},
    # The readiness of the originals key, over the store's key check objects.
    "keycheck": CORE | {"logs"},
    # Videos. The contract between detection and rendering, and tracking, are pure
    # (these rules come first: the first that matches applies).
    "video.sightings": {"domain"},
    "video.track_plan": {"domain", "video.sightings"},
    "video.tracking": {"domain", "video.sightings", "video.track_plan"},
    # Videos: probing, decoding, tracking and rendering; the core's ports and the same
    # blur and detection code pictures use.
    "video.": CORE | {"video.", "blurring", "imaging", "metadata", "cancel", "logs"},
    # A decorator of the port it implements (encryption around any store), with the
    # streamed envelope and the stream helpers the stores share.
    "adapters.encrypted_store": {"domain", "ports", "adapters."},
    "adapters.": {"domain", "lifecycle", "adapters.", "batches.model"},
    # The one place that reads settings and picks adapters.
    "bootstrap": CORE
    | {"config", "logs", "adapters.", "admission", "anonymizer", "backends", "detection."}
    | {"jobs", "reconciler", "services", "review", "metrics", "metadata", "videos"}
    | {"pixel_budget", "keycheck", "workdir", "video.", "webhooks.", "batches."}
    # The callback check a batch's `callback_url` gets, with this server's terms.
    | {"upload_options"},
    # A middleware sees requests, never the use cases: it may not import the routes,
    # the services or the wiring.
    "entrypoints.middleware.": CORE | {"config", "logs", "metrics", "tokens", "entrypoints.errors"},
    "entrypoints.": {"*"},  # the outer layer: anything
}


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module != "imageblur":
            if node.module.startswith("imageblur."):
                found.add(node.module.removeprefix("imageblur."))
        elif isinstance(node, ast.ImportFrom) and node.module == "imageblur":
            found |= {alias.name for alias in node.names if alias.name != "__version__"}
        elif isinstance(node, ast.Import):
            names = (alias.name for alias in node.names)
            found |= {n.removeprefix("imageblur.") for n in names if n.startswith("imageblur.")}
    return found


def _rule(module: str) -> set[str]:
    for pattern, allowed in ALLOWED.items():
        if module == pattern or (pattern.endswith(".") and module.startswith(pattern)):
            return allowed
    raise AssertionError(f"no import rule for imageblur.{module}: add one")


def _permitted(target: str, allowed: set[str]) -> bool:
    return any(
        a in ("*", target) or (a.endswith(".") and f"{target}.".startswith(a)) for a in allowed
    )


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_each_module_imports_only_what_its_layer_may(path: Path) -> None:
    module, allowed = _name(path), _rule(_name(path))
    wrong = sorted(t for t in _imports(path) if not _permitted(t, allowed))
    assert wrong == [], f"imageblur.{module} imports {wrong}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_function_is_longer_than_60_lines(path: Path) -> None:
    functions = (
        node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )
    long = [(f.name, f.end_lineno - f.lineno + 1) for f in functions if f.end_lineno]
    assert [(name, n) for name, n in long if n > 60] == []


def test_no_module_imports_the_quantizer() -> None:
    # NNCF makes the int8 model at build time (scripts/quantize_model.py); the API and
    # the worker only read the files it wrote, so it is no dependency of the package.
    def third_party(path: Path) -> set[str]:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        return names

    assert [_name(p) for p in MODULES if "nncf" in third_party(p)] == []
