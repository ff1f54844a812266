"""The job state machine, written once as data: for each repository operation, the
statuses it starts from, the lease condition and other guards, the status it leads to,
the fields it sets, and its side effects (today the line in the audit trail; the room for
the next ones, an outbox row for webhooks or a batch counter, is `effects`).

The unit tests' fake follows this table (`find` picks the transition, the fake applies
it); both SQL adapters keep their conditional UPDATEs, one statement each, and the
contract suite (tests/contract/test_lifecycle.py) checks every transition and every
refusal of the table on each of them and on the fake. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum

from imageblur.domain import EventRole, ImageRecord, JobKind, Review, Status


class Lease(Enum):
    """The condition on a job's lease under which an operation may change the row."""

    ANY = "any"  # none: the status says enough
    HELD = "held by the caller"  # lease_owner = owner (even if expired, until taken)
    EXPIRED = "expired"  # lease_expires_at <= now
    FREE = "none, or expired"  # lease_expires_at IS NULL OR lease_expires_at <= now
    NONE = "none"  # lease_expires_at IS NULL


class Guard(StrEnum):
    """A condition beside the status and the lease, named as the operation's docstring
    says it."""

    DETECT = "the job is a detection"
    RENDER = "the job is a render"
    VIDEO = "the job is a video's"
    VIDEO_OPTIONS = "the job is a video's with options"
    OPTIONS_DETECT = "the job is a detection of a picture with options"
    OPTIONS_RENDER = "the job is a render of a picture with options"
    OPTIONS = "the picture was uploaded with options"
    NO_OPTIONS = "the picture was uploaded without options"
    HOLD = "a review hold is given"
    NO_HOLD = "no review hold is given"
    REVISION = "the revision is the one the caller saw"
    NO_ERROR_CODE = "the last render did not fail"
    HOLD_DUE = "the review hold has ended"
    PUBLISH_DUE = "unpublished past the pending grace, or published past the published grace"
    UNCHANGED = "the row is as the publisher saw it"


@dataclass(frozen=True, slots=True)
class Audit:
    """A line appended to the picture's audit trail, in the transaction of the change;
    `role` None: the caller's (a reviewer, or the API on their behalf)."""

    action: str
    role: EventRole | None = None


@dataclass(frozen=True, slots=True)
class Notify:
    """A webhook outbox row (`<kind>.<status>`: `picture.done`, `video.failed`, ...),
    written in the transaction of the change when the record has somewhere to send it
    (the server's IMAGEBLUR_WEBHOOK_URL). docs/operations.md, "Webhooks"."""


# A side effect of a transition, run in its transaction.
Effect = Audit | Notify

# A change of status into one of these is an event a client is told about (a webhook):
# the end of a job, a hold for review, and every return to review (after a re-render,
# or a render that failed).
NOTIFIED = frozenset({Status.DONE, Status.FAILED, Status.REVIEW})


def webhook_event(kind: str, status: Status) -> str:
    """The event's name: the record's kind and the status it came to."""
    return f"{kind}.{status.public}"


@dataclass(frozen=True, slots=True)
class Transition:
    operation: str  # the repository method
    source: frozenset[Status]
    target: Status | None  # None: the status stays
    lease: Lease = Lease.ANY
    guards: frozenset[Guard] = frozenset()
    review: Review | None = None  # set to this, or left as it is (None)
    sets: frozenset[str] = frozenset()  # fields set from the call (beside status, updated_at)
    clears: frozenset[str] = frozenset()  # fields set to NULL
    effects: tuple[Effect, ...] = ()
    stamps: bool = True  # sets updated_at to now (a lease's renewal and a publish do not)

    @property
    def event(self) -> str | None:
        """The audit trail's action of this transition, if it appends one."""
        return next((e.action for e in self.effects if isinstance(e, Audit)), None)

    @property
    def notifies(self) -> bool:
        """Whether this transition writes a webhook outbox row."""
        return any(isinstance(e, Notify) for e in self.effects)


def _t(
    operation: str,
    source: Status | tuple[Status, ...],
    target: Status | None,
    *,
    lease: Lease = Lease.ANY,
    guards: tuple[Guard, ...] = (),
    review: Review | None = None,
    sets: str = "",
    clears: str = "",
    effects: tuple[Effect, ...] = (),
    stamps: bool = True,
) -> Transition:
    sources = frozenset(source if isinstance(source, tuple) else (source,))
    # The rule of webhooks, written once: a change of status into a notified one.
    if target in NOTIFIED and target not in sources:
        effects = (*effects, Notify())
    return Transition(
        operation=operation,
        source=sources,
        target=target,
        lease=lease,
        guards=frozenset(guards),
        review=review,
        sets=frozenset(sets.split()),
        clears=frozenset(clears.split()),
        effects=effects,
        stamps=stamps,
    )


_P, _W, _D, _F, _R, _N = (
    Status.PENDING,
    Status.PROCESSING,
    Status.DONE,
    Status.FAILED,
    Status.REVIEW,
    Status.RENDERING,
)
_VP, _VW = Status.VIDEO_PENDING, Status.VIDEO_PROCESSING
# A video with options: its job, as _VP/_VW are for others.
_XP, _XW = Status.VIDEO_OPTIONS_PENDING, Status.VIDEO_OPTIONS_PROCESSING
# A picture with options: its detection and re-render, as _P/_W and _N are for others.
_OP, _OW, _ON = Status.OPTIONS_PENDING, Status.OPTIONS_PROCESSING, Status.OPTIONS_RENDERING
LEASED = (_W, _N, _VW, _OW, _ON, _XW)  # the statuses whose job is held under a lease
QUEUED = (_P, _N, _VP, _OP, _ON, _XP)  # the statuses whose job waits in the queue
_CLAIM = "lease_owner lease_expires_at attempts"
_UNLEASE = "lease_owner lease_expires_at"
_RESULT = "output_key url faces plates"
_OK = "error error_code " + _UNLEASE
_PROGRESS = "frames_done frames_total eta_s"
_VIDEO_RESULT = "output_key url faces frames audio tracks_key"

TRANSITIONS: tuple[Transition, ...] = (
    # "*": every field, from the new record.
    _t("add", (), _P, sets="*", effects=(Audit("uploaded", "api"),)),
    # A worker takes a job by the kind its message names.
    _t("claim", _P, _W, guards=(Guard.DETECT,), sets=_CLAIM),
    _t("claim", _W, _W, lease=Lease.EXPIRED, guards=(Guard.DETECT,), sets=_CLAIM),
    _t("claim", _N, _N, lease=Lease.FREE, guards=(Guard.RENDER,), sets=_CLAIM),
    # A video is added as video_pending (its record says so: `add` stores the record's
    # status), and claimed by its own kind only.
    _t("claim", _VP, _VW, guards=(Guard.VIDEO,), sets=_CLAIM),
    _t("claim", _VW, _VW, lease=Lease.EXPIRED, guards=(Guard.VIDEO,), sets=_CLAIM),
    # A video with options is added as video_options_pending, claimed by its own kind.
    _t("claim", _XP, _XW, guards=(Guard.VIDEO_OPTIONS,), sets=_CLAIM),
    _t("claim", _XW, _XW, lease=Lease.EXPIRED, guards=(Guard.VIDEO_OPTIONS,), sets=_CLAIM),
    # A picture with options is added as options_pending, and claimed by its own kinds.
    _t("claim", _OP, _OW, guards=(Guard.OPTIONS_DETECT,), sets=_CLAIM),
    _t("claim", _OW, _OW, lease=Lease.EXPIRED, guards=(Guard.OPTIONS_DETECT,), sets=_CLAIM),
    _t("claim", _ON, _ON, lease=Lease.FREE, guards=(Guard.OPTIONS_RENDER,), sets=_CLAIM),
    _t("extend_lease", LEASED, None, lease=Lease.HELD, sets="lease_expires_at", stamps=False),
    # A video job's progress, by its lease keeper: also its check that the lease is
    # still its own (refused: deleted, or taken over).
    _t("note_progress", (_VW, _XW), None, lease=Lease.HELD, sets=_PROGRESS, stamps=False),
    # The end of a job: a detection to done, or to review when held; a render (back) to
    # review, its regions the record's already.
    _t(
        "complete",
        (_W, _OW),
        _D,
        lease=Lease.HELD,
        guards=(Guard.NO_HOLD,),
        sets=_RESULT + " regions",
        clears=_OK,
        effects=(Audit("processed", "worker"),),
    ),
    _t(
        "complete",
        (_W, _OW),
        _R,
        lease=Lease.HELD,
        guards=(Guard.HOLD,),
        review=Review.PENDING,
        sets=_RESULT + " regions held_until",
        clears=_OK,
        effects=(Audit("processed", "worker"),),
    ),
    _t(
        "complete",
        (_N, _ON),
        _R,
        lease=Lease.HELD,
        review=Review.PENDING,
        sets=_RESULT + " held_until",
        clears=_OK,
        effects=(Audit("rendered", "worker"),),
    ),
    # A video's end: done, or held for review as a picture is (no correction yet).
    _t(
        "complete_video",
        (_VW, _XW),
        _D,
        lease=Lease.HELD,
        guards=(Guard.NO_HOLD,),
        sets=_VIDEO_RESULT,
        clears=_OK + " " + _PROGRESS,
        effects=(Audit("processed", "worker"),),
    ),
    _t(
        "complete_video",
        (_VW, _XW),
        _R,
        lease=Lease.HELD,
        guards=(Guard.HOLD,),
        review=Review.PENDING,
        sets=_VIDEO_RESULT + " held_until",
        clears=_OK + " " + _PROGRESS,
        effects=(Audit("processed", "worker"),),
    ),
    _t(
        "fail",
        (_W, _VW, _OW, _XW),
        _F,
        lease=Lease.HELD,
        sets="error error_code",
        clears=_UNLEASE,
        effects=(Audit("failed", "worker"),),
    ),
    # A render never fails a picture, whose original a reviewer still needs: it goes back
    # to review with the result it had before, and the reason (approval is refused until
    # a correction renders).
    _t(
        "fail",
        (_N, _ON),
        _R,
        lease=Lease.HELD,
        review=Review.PENDING,
        sets="error error_code",
        clears=_UNLEASE,
        effects=(Audit("render_failed", "worker"),),
    ),
    # For a retry: unpublished, since its message may be lost on the way back from a delay
    # queue; `count_attempt` False gives the claim's attempt back.
    _t(
        "release",
        _W,
        _P,
        lease=Lease.HELD,
        sets="error error_code attempts",
        clears=_UNLEASE + " published_at",
    ),
    _t(
        "release",
        _N,
        _N,
        lease=Lease.HELD,
        sets="error error_code attempts",
        clears=_UNLEASE + " published_at",
    ),
    _t(
        "release",
        _VW,
        _VP,
        lease=Lease.HELD,
        sets="error error_code attempts",
        clears=_UNLEASE + " published_at",
    ),
    _t(
        "release",
        _XW,
        _XP,
        lease=Lease.HELD,
        sets="error error_code attempts",
        clears=_UNLEASE + " published_at",
    ),
    _t(
        "release",
        _OW,
        _OP,
        lease=Lease.HELD,
        sets="error error_code attempts",
        clears=_UNLEASE + " published_at",
    ),
    _t(
        "release",
        _ON,
        _ON,
        lease=Lease.HELD,
        sets="error error_code attempts",
        clears=_UNLEASE + " published_at",
    ),
    _t(
        "mark_published",
        QUEUED,
        None,
        guards=(Guard.UNCHANGED,),
        sets="published_at",
        stamps=False,
    ),
    # The reconciler takes back what crashes and lost messages left behind.
    _t(
        "requeue_stale",
        QUEUED,
        None,
        lease=Lease.NONE,
        guards=(Guard.PUBLISH_DUE,),
        clears="published_at",
    ),
    _t("requeue_stale", _W, _P, lease=Lease.EXPIRED, clears=_UNLEASE + " published_at"),
    _t("requeue_stale", _N, _N, lease=Lease.EXPIRED, clears=_UNLEASE + " published_at"),
    _t("requeue_stale", _VW, _VP, lease=Lease.EXPIRED, clears=_UNLEASE + " published_at"),
    _t("requeue_stale", _XW, _XP, lease=Lease.EXPIRED, clears=_UNLEASE + " published_at"),
    _t("requeue_stale", _OW, _OP, lease=Lease.EXPIRED, clears=_UNLEASE + " published_at"),
    _t("requeue_stale", _ON, _ON, lease=Lease.EXPIRED, clears=_UNLEASE + " published_at"),
    # A reviewer's side.
    _t(
        "correct",
        (_R, _N),
        _N,
        guards=(Guard.REVISION, Guard.NO_OPTIONS),
        sets="revision regions attempts",
        clears=_OK + " published_at",
        effects=(Audit("corrected"),),
    ),
    # A picture with options is re-rendered by its own kind (an older worker would
    # render it without them).
    _t(
        "correct",
        (_R, _ON),
        _ON,
        guards=(Guard.REVISION, Guard.OPTIONS),
        sets="revision regions attempts",
        clears=_OK + " published_at",
        effects=(Audit("corrected"),),
    ),
    _t(
        "approve",
        _R,
        _D,
        guards=(Guard.NO_ERROR_CODE,),
        review=Review.APPROVED,
        clears="held_until",
        effects=(Audit("approved"),),
    ),
    _t(
        "expire_holds",
        _R,
        _D,
        guards=(Guard.HOLD_DUE,),
        review=Review.EXPIRED,
        clears="held_until",
        effects=(Audit("expired", "system"),),
    ),
)
OPERATIONS: tuple[str, ...] = tuple(dict.fromkeys(t.operation for t in TRANSITIONS))


@dataclass(frozen=True, slots=True)
class Call:
    """What an operation is called with, as far as its guards look at it."""

    now: datetime
    owner: str | None = None
    kind: JobKind = JobKind.DETECT
    hold_until: datetime | None = None
    expected_revision: int | None = None
    if_updated_at: datetime | None = None
    published_at: datetime | None = None  # the row's, kept beside the record
    pending_before: datetime | None = None
    published_before: datetime | None = None


def _publish_due(r: ImageRecord, c: Call) -> bool:
    if c.published_at is None:
        return c.pending_before is not None and r.updated_at <= c.pending_before
    return c.published_before is not None and c.published_at <= c.published_before


_GUARDS: dict[Guard, Callable[[ImageRecord, Call], bool]] = {
    Guard.DETECT: lambda r, c: c.kind is JobKind.DETECT,
    Guard.RENDER: lambda r, c: c.kind is JobKind.RENDER,
    Guard.VIDEO: lambda r, c: c.kind is JobKind.VIDEO,
    Guard.VIDEO_OPTIONS: lambda r, c: c.kind is JobKind.VIDEO_OPTIONS,
    Guard.OPTIONS_DETECT: lambda r, c: c.kind is JobKind.OPTIONS,
    Guard.OPTIONS_RENDER: lambda r, c: c.kind is JobKind.OPTIONS_RENDER,
    Guard.OPTIONS: lambda r, c: r.options is not None,
    Guard.NO_OPTIONS: lambda r, c: r.options is None,
    Guard.HOLD: lambda r, c: c.hold_until is not None,
    Guard.NO_HOLD: lambda r, c: c.hold_until is None,
    Guard.REVISION: lambda r, c: r.revision == c.expected_revision,
    Guard.NO_ERROR_CODE: lambda r, c: r.error_code is None,
    Guard.HOLD_DUE: lambda r, c: r.held_until is not None and r.held_until <= c.now,
    Guard.PUBLISH_DUE: _publish_due,
    Guard.UNCHANGED: lambda r, c: r.updated_at == c.if_updated_at,
}


def lease_holds(lease: Lease, record: ImageRecord, call: Call) -> bool:
    expires = record.lease_expires_at
    if lease is Lease.HELD:
        return call.owner is not None and record.lease_owner == call.owner
    if lease is Lease.EXPIRED:
        return expires is not None and expires <= call.now
    if lease is Lease.FREE:
        return expires is None or expires <= call.now
    if lease is Lease.NONE:
        return expires is None
    return True


def fits(t: Transition, record: ImageRecord, call: Call) -> bool:
    """Whether `t` may change `record` as it is, called so."""
    return (
        record.status in t.source
        and lease_holds(t.lease, record, call)
        and all(_GUARDS[g](record, call) for g in t.guards)
    )


def find(operation: str, record: ImageRecord, call: Call) -> Transition | None:
    """The transition `operation` makes from `record` as it is, or None if it refuses
    (at most one of an operation's transitions fits a row: tests/unit/test_lifecycle.py)."""
    return next(
        (t for t in TRANSITIONS if t.operation == operation and fits(t, record, call)), None
    )


def statuses(operation: str) -> tuple[Status, ...]:
    """Every status `operation` starts from, in the order of `Status`."""
    found = {s for t in TRANSITIONS if t.operation == operation for s in t.source}
    return tuple(s for s in Status if s in found)
