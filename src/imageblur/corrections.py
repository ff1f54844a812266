"""A reviewer's correction of a picture's regions: the request's shape, checked, and the
new region list it makes. Pure: no I/O, so the API and the tests share it.

A correction is the complete list wanted: an existing region by id (with its new
`hidden` state), or a new manual box. Regions left out are dropped from the record.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from imageblur.domain import MAX_REGIONS, ImageblurError, Rect, Region, drawn_region

_BOX = ("x", "y", "width", "height")
_NUMBERED = re.compile(r"^[a-z](\d+)$")
# Manual regions a picture's list may hold. Each is re-rendered on every correction; the
# render merges them into one mask, and this keeps the request, the record and the merge
# small (a 1 MB body could otherwise carry thousands of boxes).
MAX_MANUAL_REGIONS = 500


class InvalidCorrection(ImageblurError):  # noqa: N818 - a domain name
    """The body is not the shape of a correction (400 invalid_json)."""


class InvalidRegions(ImageblurError):  # noqa: N818
    """A region of a well-formed correction cannot be applied (422 invalid_regions)."""


class ReasonRequired(InvalidRegions):
    """A region the detector hid is shown without a reason (422 reason_required)."""


MAX_REASON_CHARS = 500


class RequestedRegion(InvalidRegions):
    """A region the upload asked hidden (`hide`), shown by a correction (422
    invalid_regions): a reviewer can never show it."""


class TooManyRegions(InvalidRegions):
    """More manual regions than MAX_MANUAL_REGIONS (422 too_many_regions)."""


class DuplicateRegion(InvalidRegions):
    """The same region listed twice: an id, or a manual box equal to another once both
    are clipped to the image (422 duplicate_region)."""


@dataclass(frozen=True, slots=True)
class KeptRegion:
    id: str
    hidden: bool
    reason: str | None = None  # why it is shown (required to show what the detector hid)


@dataclass(frozen=True, slots=True)
class ManualBox:
    x: int
    y: int
    width: int
    height: int
    hidden: bool


Wanted = KeptRegion | ManualBox


def parse(payload: Any) -> list[Wanted]:
    """`{"regions": [...]}` as typed items; raises `InvalidCorrection` naming the first
    item that is not `{"id", "hidden"}` (with an optional `"reason"`, at most 500
    characters) nor `{"x", "y", "width", "height", "hidden"}`."""
    if not isinstance(payload, dict) or set(payload) != {"regions"}:
        raise InvalidCorrection('send {"regions": [...]}: the complete list of regions wanted')
    items = payload["regions"]
    if not isinstance(items, list):
        raise InvalidCorrection('"regions" must be a list')
    return [_item(index, item) for index, item in enumerate(items)]


def _item(index: int, item: Any) -> Wanted:
    where = f"regions[{index}]"
    if not isinstance(item, dict) or not isinstance(item.get("hidden"), bool):
        raise InvalidCorrection(f'{where} must be an object with a boolean "hidden"')
    keys = set(item) - {"hidden"}
    if keys in ({"id"}, {"id", "reason"}) and isinstance(item["id"], str):
        return KeptRegion(id=item["id"], hidden=item["hidden"], reason=_reason(where, item))
    if keys == set(_BOX) and all(_is_int(item[k]) for k in _BOX):
        x, y, width, height = (int(item[k]) for k in _BOX)
        return ManualBox(x=x, y=y, width=width, height=height, hidden=item["hidden"])
    raise InvalidCorrection(
        f'{where} must be {{"id", "hidden"}} (and an optional "reason") or '
        '{"x", "y", "width", "height", "hidden"} with integer pixels'
    )


def _reason(where: str, item: dict[str, Any]) -> str | None:
    reason = item.get("reason")
    if reason is None:
        return None
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise InvalidCorrection(
            f'{where}: "reason" must be text of at most {MAX_REASON_CHARS} characters'
        )
    return reason.strip() or None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def apply(
    current: Sequence[Region], wanted: Sequence[Wanted], *, width: int, height: int
) -> list[Region]:
    """The record's new regions. Raises `InvalidRegions` for the first region that cannot
    be applied: an unknown id, a box under 1 px or entirely outside the image, more than
    MAX_REGIONS, more than MAX_MANUAL_REGIONS manual ones and the upload's `hide`
    rectangles (`TooManyRegions`), a duplicate (`DuplicateRegion`), or a `hide`
    rectangle shown (`RequestedRegion`); `ReasonRequired` for a region the detector hid,
    shown without a reason. A box partly outside is clipped to the image. The upload's
    `hide` rectangles stay, hidden, whether the list names them or not."""
    if len(wanted) > MAX_REGIONS:
        raise InvalidRegions(f"{len(wanted)} regions: at most {MAX_REGIONS} per picture")
    by_id = {region.id: region for region in current}
    next_number = 1 + max((_number(r.id) for r in current), default=0)
    out: list[Region] = []
    for index, item in enumerate(wanted):
        if isinstance(item, KeptRegion):
            if item.id not in by_id:
                raise InvalidRegions(f"regions[{index}]: no region with id {item.id!r}")
            if by_id[item.id].source == "request" and not item.hidden:
                raise RequestedRegion(
                    f"regions[{index}]: region {item.id} is hidden at the upload's request "
                    "(its hide option): it cannot be shown"
                )
            if _reveals_detection(by_id[item.id], item) and item.reason is None:
                raise ReasonRequired(
                    f"regions[{index}]: region {item.id} was hidden by the detector; showing "
                    'it needs a "reason" (why it is not a face or plate to hide)'
                )
            out.append(replace(by_id[item.id], hidden=item.hidden))
            continue
        out.append(_manual(index, item, f"m{next_number}", width=width, height=height))
        next_number += 1
    listed = {r.id for r in out}
    out += [r for r in current if r.source == "request" and r.id not in listed]
    _check_unique(out)
    return out


def reasons(wanted: Sequence[Wanted]) -> dict[str, str]:
    """{region id: reason} of the regions a correction gives a reason for."""
    return {w.id: w.reason for w in wanted if isinstance(w, KeptRegion) and w.reason is not None}


def _reveals_detection(current: Region, wanted: KeptRegion) -> bool:
    # An uncertain candidate was never hidden by the detector: showing it again (after a
    # reviewer hid it) needs no reason; a confident detection does.
    return (
        current.hidden
        and not wanted.hidden
        and current.source == "detector"
        and not current.uncertain
    )


def _check_unique(regions: Sequence[Region]) -> None:
    """Refuse a list the render would pay for twice (or more) for nothing."""
    # The upload's `hide` rectangles count as manual ones: each is drawn the same way.
    manual = [r for r in regions if r.source in ("manual", "request")]
    if len(manual) > MAX_MANUAL_REGIONS:
        raise TooManyRegions(
            f"{len(manual)} manual regions (with the upload's hide rectangles): at most "
            f"{MAX_MANUAL_REGIONS} per picture; draw one box over neighbouring faces"
        )
    seen_ids: set[str] = set()
    seen_boxes: dict[tuple[int, int, int, int], int] = {}
    for index, r in enumerate(regions):
        if r.id in seen_ids:
            raise DuplicateRegion(f"regions[{index}]: region {r.id!r} is listed twice")
        seen_ids.add(r.id)
        if r.source != "manual":
            continue
        box = (r.x, r.y, r.width, r.height)
        if box in seen_boxes:
            raise DuplicateRegion(
                f"regions[{index}]: the same box as regions[{seen_boxes[box]}] once clipped "
                f"to the image (x, y, width, height = {box})"
            )
        seen_boxes[box] = index


def _number(region_id: str) -> int:
    match = _NUMBERED.fullmatch(region_id)
    return int(match.group(1)) if match else 0


def _manual(index: int, box: ManualBox, region_id: str, *, width: int, height: int) -> Region:
    where = f"regions[{index}]"
    if box.width < 1 or box.height < 1:
        raise InvalidRegions(f"{where}: width and height must be at least 1 pixel")
    region = drawn_region(
        region_id,
        Rect(box.x, box.y, box.width, box.height),
        source="manual",
        hidden=box.hidden,
        image_width=width,
        image_height=height,
    )
    if region is None:
        raise InvalidRegions(f"{where}: the box lies entirely outside the {width}x{height} image")
    return region
