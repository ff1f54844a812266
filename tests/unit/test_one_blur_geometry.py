"""The blur geometry is written once, `blurring.mask_outlines`, and every path that hides
faces takes it from there: the worker's `Anonymizer` (first render and re-render),
`imageblur blur` (which runs an `Anonymizer`) and both benchmarks, so that the
benchmarks measure what ships. Read from the source, as tests/unit/test_layers.py does."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "imageblur"
GEOMETRY = "mask_outlines"
# What only `blurring` itself may use: drawing a mask's pixels from a shape, and the
# rule that a plate is hidden whole. Anyone else goes through `mask_outlines`/`masks_of`.
PRIMITIVES = {"region_mask", "_shape_of"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported(node: ast.AST, module: str) -> set[str]:
    """Names imported from `module` anywhere under `node` (function-local imports too)."""
    return {
        alias.name
        for item in ast.walk(node)
        if isinstance(item, ast.ImportFrom) and item.module == module
        for alias in item.names
    }


def _called(node: ast.AST) -> set[str]:
    return {
        item.func.id if isinstance(item.func, ast.Name) else item.func.attr
        for item in ast.walk(node)
        if isinstance(item, ast.Call) and isinstance(item.func, ast.Name | ast.Attribute)
    }


def _function(path: Path, name: str) -> ast.FunctionDef:
    found = [
        node
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.FunctionDef) and node.name == name
    ]
    assert len(found) == 1, f"{path.name}: expected one function {name}"
    return found[0]


@pytest.mark.parametrize(
    "path",
    [PACKAGE / "anonymizer.py", ROOT / "bench" / "detection.py"],
    ids=["worker", "bench-detection"],
)
def test_the_worker_and_the_detection_benchmark_take_the_one_geometry(path: Path) -> None:
    tree = _tree(path)
    assert GEOMETRY in _imported(tree, "imageblur.blurring"), path.name
    assert GEOMETRY in _called(tree), path.name


@pytest.mark.parametrize("name", ["speed.py", "stages.py"])
def test_the_speed_benchmarks_hide_through_the_worker_anonymizer(name: str) -> None:
    """They time what ships: the worker's own anonymizer (and `imageblur blur`), never
    masks of their own."""
    tree = _tree(ROOT / "bench" / name)
    assert "worker_anonymizer" in _imported(tree, "imageblur.bootstrap"), name
    assert "worker_anonymizer" in _called(tree), name
    assert not _imported(tree, "imageblur.blurring"), name


def test_both_anonymizer_paths_call_the_one_geometry() -> None:
    anonymizer = PACKAGE / "anonymizer.py"
    assert "mask_outlines" in _called(_function(anonymizer, "_anonymize"))  # first render
    assert "mask_outlines" in _called(_function(anonymizer, "_shaped"))  # a re-render


def test_the_cli_and_the_worker_hide_through_the_anonymizer() -> None:
    """`imageblur blur` takes the worker's anonymizer, which builds an `Anonymizer`;
    neither masks on its own."""
    blur = _function(PACKAGE / "entrypoints" / "cli.py", "_blur")
    assert "worker_anonymizer" in _imported(blur, "imageblur.bootstrap")
    assert "worker_anonymizer" in _called(blur)
    worker = _function(PACKAGE / "bootstrap.py", "worker_anonymizer")
    assert "Anonymizer" in _called(worker)
    processor = _tree(PACKAGE / "jobs.py")  # what the worker's job threads run
    assert "Anonymizer" in _imported(processor, "imageblur.anonymizer")


def test_no_module_but_blurring_draws_masks_itself() -> None:
    paths = [*PACKAGE.rglob("*.py"), *(ROOT / "bench").glob("*.py")]
    drawing = {
        str(path.relative_to(ROOT)): sorted(used)
        for path in paths
        if path.name != "blurring.py"
        and (used := PRIMITIVES & _imported(_tree(path), "imageblur.blurring"))
    }
    assert drawing == {}
