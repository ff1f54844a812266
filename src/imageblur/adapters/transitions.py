"""What every repository adapter (and the unit tests' fake) does alike around a
transition of the review workflow: the line it appends to the picture's audit trail (who
did what, the status the API shows after it, the revision, a short human text), and the
error that says why a correction or an approval was refused."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from imageblur.domain import (
    DETECTING_STATUSES,
    RENDERING_STATUSES,
    Event,
    EventRole,
    ImageblurError,
    ImageRecord,
    NotFound,
    NotInReview,
    OriginalGone,
    Region,
    RenderFailed,
    Rendering,
    StaleRevision,
    Status,
)

# The longest detail kept (a failure's reason can be long; the trail stays light).
MAX_DETAIL_CHARS = 500


def event(
    record: ImageRecord,
    *,
    role: EventRole,
    action: str,
    detail: str | None = None,
    reviewer: str | None = None,
    reasons: Mapping[str, str] | None = None,
) -> Event:
    """The event of a transition, from the record as it is after it (its `updated_at`
    is the transition's time); a reviewer's names them and their reasons."""
    return Event(
        at=record.updated_at,
        role=role,
        action=action,
        status=record.status.public,
        revision=record.revision,
        detail=detail[:MAX_DETAIL_CHARS] if detail is not None else None,
        reviewer=reviewer,
        reasons=dict(reasons) if reasons else None,
    )


def uploaded(record: ImageRecord) -> str | None:
    """An upload's options, for its "uploaded" event: "options: mode, ignore; ignore asked
    by token 1a2b3c4d" (who asks to leave detections unhidden is on the record)."""
    if record.options is None:
        return None
    text = "options: " + ", ".join(record.options.to_dict())
    if record.options.ignore:
        text += f"; ignore asked by {record.options.asked_by or 'anonymous'}"
    return text


def stored_detail(line: Event) -> str | None:
    """The `detail` column of an event: its text, or for a reviewer's event JSON of the
    text, the reviewer and their reasons. In the column an older release already has,
    so no schema change; older rows and other events stay plain text."""
    if line.reviewer is None and not line.reasons:
        return line.detail
    signed = {"text": line.detail, "reviewer": line.reviewer, "reasons": line.reasons}
    return json.dumps(signed, separators=(",", ":"))


def _signed(stored: str | None) -> dict[str, Any] | None:
    if not stored or not stored.startswith('{"text":'):
        return None  # plain text (a reviewer's event always starts so)
    try:
        data = json.loads(stored)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "reviewer" in data else None


def event_of_row(row: Any, *, timestamp: Callable[[Any], datetime]) -> Event:
    """An event as both SQL adapters read it back (each says how it stores a time)."""
    signed = _signed(row["detail"])
    return Event(
        at=timestamp(row["at"]),
        role=row["role"],
        action=row["action"],
        status=row["status"],
        revision=int(row["revision"]),
        detail=signed["text"] if signed is not None else row["detail"],
        reviewer=signed["reviewer"] if signed is not None else None,
        reasons=signed["reasons"] if signed is not None else None,
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def detected(*, faces: int, plates: int, regions: Sequence[Region]) -> str:
    """A detection's outcome: "3 faces hidden, 2 uncertain candidates"."""
    parts = [f"{_count(faces, 'face')} hidden"]
    if plates:
        parts.append(f"{_count(plates, 'plate')} hidden")
    uncertain = sum(1 for r in regions if r.uncertain and not r.hidden)
    if uncertain:
        parts.append(_count(uncertain, "uncertain candidate"))
    return ", ".join(parts)


def tracked(*, tracks: int) -> str:
    """A video's outcome: "3 face tracks hidden"."""
    return f"{_count(tracks, 'face track')} hidden"


def drawn(regions: Sequence[Region]) -> str:
    """The regions a correction asks for, or a render hid: "2 regions hidden, 1 manual"."""
    hidden = sum(1 for r in regions if r.hidden)
    manual = sum(1 for r in regions if r.hidden and r.source == "manual")
    text = f"{_count(hidden, 'region')} hidden"
    return f"{text}, {manual} manual" if manual else text


# --- refusals ---------------------------------------------------------------------------


def correction_refused(
    image_id: str, status: Status | None, revision: int, *, expected_revision: int
) -> ImageblurError:
    """Why a correction's conditional update changed nothing, from the row as it is."""
    if status is None:
        return NotFound(image_id)
    if status in (Status.DONE, Status.FAILED):
        return OriginalGone(f"picture {image_id} is {status.value}: its original is gone")
    if status in DETECTING_STATUSES:
        return Rendering(f"picture {image_id} is not processed yet: nothing to correct")
    return StaleRevision(f"picture {image_id} is at revision {revision}, not {expected_revision}")


def approval_refused(image_id: str, record: ImageRecord | None) -> ImageblurError:
    """Why an approval's conditional update changed nothing, from the row as it is."""
    if record is None:
        return NotFound(image_id)
    status = record.status
    if status in RENDERING_STATUSES:
        return Rendering(f"picture {image_id} has a correction still rendering")
    if status is Status.REVIEW and record.error_code is not None:
        return RenderFailed(
            f"picture {image_id}: its last correction could not be rendered; the result "
            "shown is an older one: save the regions again to render them"
        )
    return NotInReview(f"picture {image_id} is {status.public}, not in review")
