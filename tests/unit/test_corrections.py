"""A correction's shape and how it makes the new region list (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from imageblur.corrections import (
    MAX_MANUAL_REGIONS,
    DuplicateRegion,
    InvalidCorrection,
    InvalidRegions,
    KeptRegion,
    ManualBox,
    ReasonRequired,
    TooManyRegions,
    apply,
    parse,
    reasons,
)
from imageblur.domain import MAX_REGIONS, Region


def region(region_id: str, *, hidden: bool = True, uncertain: bool = False) -> Region:
    return Region(
        id=region_id,
        x=10,
        y=20,
        width=30,
        height=40,
        score=0.9,
        source="detector",
        kind="face",
        uncertain=uncertain,
        hidden=hidden,
    )


def test_parse_reads_kept_regions_and_manual_boxes() -> None:
    wanted = parse(
        {
            "regions": [
                {"id": "r1", "hidden": False},
                {"x": 1, "y": 2, "width": 3, "height": 4, "hidden": True},
            ]
        }
    )
    assert wanted == [KeptRegion("r1", False), ManualBox(1, 2, 3, 4, True)]


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"regions": {}},
        {"regions": [], "extra": 1},
        {"regions": [{"id": "r1"}]},
        {"regions": [{"id": "r1", "hidden": "yes"}]},
        {"regions": [{"id": 1, "hidden": True}]},
        {"regions": [{"x": 1, "y": 2, "width": 3, "hidden": True}]},
        {"regions": [{"x": 1.5, "y": 2, "width": 3, "height": 4, "hidden": True}]},
        {"regions": [{"x": True, "y": 2, "width": 3, "height": 4, "hidden": True}]},
        {"regions": [{"id": "r1", "x": 1, "y": 2, "width": 3, "height": 4, "hidden": True}]},
        {"regions": [{"id": "r1", "hidden": False, "reason": 3}]},
        {"regions": [{"id": "r1", "hidden": False, "reason": "x" * 501}]},
        {"regions": [{"x": 1, "y": 2, "width": 3, "height": 4, "hidden": True, "reason": "a"}]},
    ],
)
def test_parse_refuses_every_other_shape(payload: Any) -> None:
    with pytest.raises(InvalidCorrection):
        parse(payload)


def test_apply_keeps_listed_regions_with_their_new_state_and_drops_the_rest() -> None:
    current = [region("r1"), region("r2", hidden=False, uncertain=True), region("r3")]
    wanted = [KeptRegion("r2", True), KeptRegion("r1", False, "a poster")]
    new = apply(current, wanted, width=100, height=100)
    assert [(r.id, r.hidden, r.uncertain) for r in new] == [
        ("r2", True, True),
        ("r1", False, False),
    ]


def test_manual_boxes_are_clipped_to_the_image_and_numbered_after_existing_ids() -> None:
    new = apply(
        [region("r1"), region("m4")],
        [ManualBox(-10, 90, 30, 30, True), ManualBox(5, 5, 1, 1, True)],
        width=100,
        height=100,
    )
    assert [(r.id, r.x, r.y, r.width, r.height) for r in new] == [
        ("m5", 0, 90, 20, 10),
        ("m6", 5, 5, 1, 1),
    ]
    assert all(r.source == "manual" and r.score is None and not r.uncertain for r in new)


@pytest.mark.parametrize(
    ("wanted", "named"),
    [
        ([KeptRegion("r9", True)], "regions[0]: no region with id 'r9'"),
        ([KeptRegion("r1", True), ManualBox(100, 0, 5, 5, True)], "regions[1]: the box lies"),
        ([ManualBox(0, 0, 0, 5, True)], "regions[0]: width and height"),
        ([ManualBox(-20, 0, 10, 5, True)], "regions[0]: the box lies"),
    ],
)
def test_apply_names_the_first_region_it_cannot_apply(wanted: list[Any], named: str) -> None:
    with pytest.raises(InvalidRegions, match=named.replace("[", r"\[").replace("]", r"\]")):
        apply([region("r1")], wanted, width=100, height=100)


def test_at_most_max_regions() -> None:
    too_many = [ManualBox(0, 0, 1, 1, True)] * (MAX_REGIONS + 1)
    with pytest.raises(InvalidRegions, match=f"at most {MAX_REGIONS}"):
        apply([], too_many, width=10, height=10)


def test_a_reason_of_at_most_500_characters_goes_with_a_kept_region() -> None:
    wanted = parse({"regions": [{"id": "r1", "hidden": False, "reason": "x" * 500}]})
    assert wanted == [KeptRegion("r1", False, "x" * 500)]
    assert reasons(wanted) == {"r1": "x" * 500}
    spaced = parse({"regions": [{"id": "r1", "hidden": False, "reason": " a poster "}]})
    assert spaced == [KeptRegion("r1", False, "a poster")]
    blank = parse({"regions": [{"id": "r1", "hidden": False, "reason": "  "}]})
    assert blank == [KeptRegion("r1", False)]  # no reason at all


def test_showing_what_the_detector_hid_needs_a_reason() -> None:
    current = [region("r1"), region("r2", uncertain=True), region("r3", hidden=False)]
    with pytest.raises(ReasonRequired, match=r"regions\[0\]: region r1 was hidden by the detector"):
        apply(current, [KeptRegion("r1", False)], width=100, height=100)
    # Given one it is shown; an uncertain candidate a reviewer hid, or a detection shown
    # already (by an earlier correction), needs none; keeping a region hidden needs none.
    wanted = [KeptRegion("r1", False, "a poster"), KeptRegion("r2", False), KeptRegion("r3", False)]
    new = apply(current, wanted, width=100, height=100)
    assert [r.hidden for r in new] == [False, False, False]
    assert apply(current, [KeptRegion("r1", True)], width=100, height=100)[0].hidden


def manual(region_id: str, x: int) -> Region:
    return Region(region_id, x, 0, 1, 1, None, "manual", "face", uncertain=False, hidden=True)


def test_at_most_max_manual_regions_counting_those_kept() -> None:
    kept = [manual("m1", 0), manual("m2", 1)]
    new = [ManualBox(x, 5, 1, 1, True) for x in range(MAX_MANUAL_REGIONS - 2)]
    listed = [KeptRegion("m1", True), KeptRegion("m2", False), *new]
    assert len(apply(kept, listed, width=1000, height=10)) == MAX_MANUAL_REGIONS
    one_more = [*listed, ManualBox(999, 5, 1, 1, True)]
    with pytest.raises(TooManyRegions, match=f"at most {MAX_MANUAL_REGIONS}"):
        apply(kept, one_more, width=1000, height=10)


def test_detector_regions_do_not_count_towards_the_manual_limit() -> None:
    detected = [region(f"r{i}") for i in range(MAX_MANUAL_REGIONS + 1)]
    listed = [KeptRegion(r.id, True) for r in detected] + [ManualBox(0, 0, 1, 1, True)]
    assert len(apply(detected, listed, width=100, height=100)) == MAX_MANUAL_REGIONS + 2


SAME = "regions[1]: the same box as regions[0]"


@pytest.mark.parametrize(
    ("wanted", "named"),
    [
        # The same box once clipped: (-5, 0, 20, 5) is (0, 0, 10, 5) in a 10 px wide image.
        ([ManualBox(0, 0, 10, 5, True), ManualBox(-5, 0, 20, 5, False)], SAME),
        ([KeptRegion("m1", True), ManualBox(3, 0, 1, 1, True)], SAME),
        ([KeptRegion("r1", True), KeptRegion("r1", True)], "regions[1]: region 'r1' is listed"),
    ],
)
def test_a_duplicate_is_refused(wanted: list[Any], named: str) -> None:
    with pytest.raises(DuplicateRegion, match=named.replace("[", r"\[").replace("]", r"\]")):
        apply([region("r1"), manual("m1", 3)], wanted, width=10, height=10)


def test_a_manual_box_may_equal_a_detector_box() -> None:
    # A detector region is hidden under its own (grown) mask, a manual one as drawn.
    detected = region("r1")
    box = ManualBox(detected.x, detected.y, detected.width, detected.height, True)
    assert len(apply([detected], [KeptRegion("r1", True), box], width=100, height=100)) == 2
