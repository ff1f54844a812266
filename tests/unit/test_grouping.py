"""The array grouping (`pyramid.group`) against the straightforward one it replaced, kept
here as the reference: one leader at a time, pure Python around small numpy steps.
Outputs must be equal to the bit (same boxes, same groups, same float32 scores)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from imageblur.detection import pyramid
from imageblur.detection.pyramid import group, grouped

FloatArray = npt.NDArray[np.float32]


def reference_group(dets: FloatArray, iou_threshold: float) -> FloatArray:
    """The grouping as it was before it was vectorized (verbatim)."""
    if len(dets) == 0:
        return np.zeros((0, 5), np.float32)
    x0, y0, x1, y1, score, passes = (dets[:, i] for i in range(6))
    area = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    order = np.argsort(-score, kind="stable")
    out: list[FloatArray] = []
    while order.size:
        i = int(order[0])
        iw = np.maximum(0.0, np.minimum(x1[i], x1[order]) - np.maximum(x0[i], x0[order]))
        ih = np.maximum(0.0, np.minimum(y1[i], y1[order]) - np.maximum(y0[i], y0[order]))
        inter = iw * ih
        iou = inter / np.maximum(area[i] + area[order] - inter, 1e-6)
        inside = inter / np.maximum(area[order], 1e-6)
        member = (iou >= iou_threshold) | (inside >= 0.8)
        member[0] = True  # a degenerate (zero-area) leader still forms its own group
        members = order[member]
        miss = 1.0
        for p in np.unique(passes[members]):
            miss *= 1.0 - float(score[members][passes[members] == p].max())
        out.append(np.array([x0[i], y0[i], x1[i], y1[i], 1.0 - miss], np.float32))
        order = order[~member]
    return np.stack(out)


def candidates(rng: np.random.Generator, count: int, *, grid: bool) -> FloatArray:
    """`count` rows x0 y0 x1 y1 score pass, clustered like a detector's candidates around
    a few faces. `grid`: whole-pixel boxes and scores from a short list, so exact ties of
    score, IoU and position are frequent, and some boxes of zero or negative width."""
    centres = rng.uniform(0, 400, (max(1, count // 8), 2))
    at = centres[rng.integers(0, len(centres), count)] + rng.normal(0, 6, (count, 2))
    size = rng.uniform(4, 60, (count, 1)) * rng.uniform(0.8, 1.25, (count, 2))
    if grid:
        at, size = np.round(at), np.round(size) - rng.integers(0, 2, (count, 2)) * 4
        score = rng.choice([0.05, 0.1, 0.3, 0.3, 0.5, 0.9], count)
    else:
        score = rng.uniform(0.05, 1.0, count)
    passes = rng.integers(0, 4, count)
    return np.column_stack([at - size / 2, at + size / 2, score, passes]).astype(np.float32)


def assert_same(dets: FloatArray, iou: float) -> None:
    expected, got = reference_group(dets, iou), group(dets, iou)
    assert got.dtype == expected.dtype == np.float32
    assert got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


@pytest.fixture(params=["as shipped", "leaders only", "pairs only", "small batches"])
def strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each way through `group`: the shipped mix of leaders one at a time and pairs, each
    alone, and the pairs in batches of a few."""
    if request.param == "leaders only":
        monkeypatch.setattr(pyramid, "LARGE_GROUP", 0)
    elif request.param == "pairs only":
        monkeypatch.setattr(pyramid, "LARGE_GROUP_PATIENCE", 0)
    elif request.param == "small batches":
        monkeypatch.setattr(pyramid, "LARGE_GROUP_PATIENCE", 0)
        monkeypatch.setattr(pyramid, "PAIR_BATCH", 7)


@pytest.mark.usefixtures("strategy")
@pytest.mark.parametrize("grid", [False, True])
@pytest.mark.parametrize("iou", [0.4, 0.0, 0.7, 1.0])
def test_group_equals_the_reference_on_random_candidates(grid: bool, iou: float) -> None:
    rng = np.random.default_rng(23)
    for count in [*range(1, 12), 40, 150, 600]:
        for _ in range(5 if count < 100 else 1):
            assert_same(candidates(rng, count, grid=grid), iou)


def test_group_of_nothing_and_of_one_box() -> None:
    empty = np.zeros((0, 6), np.float32)
    assert group(empty, 0.4).shape == (0, 5)
    assert_same(empty[:0], 0.4)
    one = np.array([[10, 20, 30, 50, 0.25, 1]], np.float32)
    assert_same(one, 0.4)
    assert group(one, 0.4).tolist() == [[10, 20, 30, 50, np.float32(0.25)]]


@pytest.mark.usefixtures("strategy")
def test_group_with_ties_and_degenerate_boxes() -> None:
    same = [[0, 0, 10, 10, 0.3, p] for p in (0, 1, 0, 2)]  # one box, tied scores
    flat = [[5, 5, 5, 9, 0.6, 0], [5, 5, 5, 9, 0.6, 1], [7, 3, 2, 1, 0.7, 0]]  # no area
    inside = [[0, 0, 10, 10, 0.2, 1], [1, 1, 9, 9, 0.2, 0], [0, 0, 10, 10, 0.2, 3]]
    dets = np.array(same + flat + inside + [[-0.0, 0, 10, 10, 0.3, 0]], np.float32)
    for iou in (0.4, 0.0, 1.0):
        assert_same(dets, iou)
        assert_same(dets[::-1].copy(), iou)


@pytest.mark.usefixtures("strategy")
def test_group_when_iou_exactly_meets_the_threshold() -> None:
    # IoU of 2 unit-offset 4 x 5 boxes = 16 / 24; and nested boxes at exactly 80%.
    dets = np.array(
        [[0, 0, 4, 5, 0.5, 0], [0, 1, 4, 6, 0.4, 1], [0, 0, 10, 10, 0.3, 0], [0, 0, 10, 8, 0.2, 1]],
        np.float32,
    )
    for iou in (16 / 24, 0.66, 0.67, 0.8):
        assert_same(dets, iou)


def test_grouped_keeps_kinds_apart() -> None:
    rng = np.random.default_rng(7)
    rows = candidates(rng, 200, grid=True)
    kinds = rng.integers(0, 2, len(rows)).astype(np.float32)
    out = grouped(np.column_stack([rows, kinds]), 0.4)
    for kind in (0, 1):
        expected = reference_group(rows[kinds == kind], 0.4)
        assert out[out[:, 5] == kind][:, :5].tobytes() == expected.tobytes()
