"""The WHERE conditions of the job state machine's conditional UPDATEs, built from its
table (`imageblur.lifecycle`) for both SQL adapters: which statuses, which lease, which
other guards. Each adapter says how it writes a parameter and a column; what a
transition sets stays in the adapter's statement, checked against the table by the
contract suite (tests/contract/test_lifecycle.py)."""

from __future__ import annotations

from collections.abc import Callable

from imageblur.domain import EventRole, JobKind, Status
from imageblur.lifecycle import TRANSITIONS, Audit, Guard, Lease, Transition

# Conditions on the call, not on the row: the adapter picks the transitions they select.
CALL_GUARDS = frozenset(
    {
        Guard.DETECT,
        Guard.RENDER,
        Guard.VIDEO,
        Guard.VIDEO_OPTIONS,
        Guard.OPTIONS_DETECT,
        Guard.OPTIONS_RENDER,
        Guard.HOLD,
        Guard.NO_HOLD,
    }
)
# The call guard that selects a claim's transitions, by the job's kind.
CLAIM_GUARD = {
    JobKind.DETECT: Guard.DETECT,
    JobKind.RENDER: Guard.RENDER,
    JobKind.VIDEO: Guard.VIDEO,
    JobKind.VIDEO_OPTIONS: Guard.VIDEO_OPTIONS,
    JobKind.OPTIONS: Guard.OPTIONS_DETECT,
    JobKind.OPTIONS_RENDER: Guard.OPTIONS_RENDER,
}

Param = Callable[[str], str]  # a named parameter as the driver writes it
Column = Callable[[str], str]  # a column, qualified as the statement needs


def statuses(values: frozenset[Status] | tuple[Status, ...]) -> str:
    """An SQL list of statuses, in the order of `Status`: ('pending', 'rendering')."""
    return "(" + ", ".join(f"'{s.value}'" for s in Status if s in values) + ")"


def _lease(lease: Lease, p: Param, c: Column) -> str | None:
    return {
        Lease.ANY: None,
        Lease.HELD: f"{c('lease_owner')} = {p('owner')}",
        Lease.EXPIRED: f"{c('lease_expires_at')} <= {p('now')}",
        Lease.FREE: f"({c('lease_expires_at')} IS NULL OR {c('lease_expires_at')} <= {p('now')})",
        Lease.NONE: f"{c('lease_expires_at')} IS NULL",
    }[lease]


def _guard(guard: Guard, p: Param, c: Column) -> str:
    return {
        Guard.REVISION: f"{c('revision')} = {p('expected_revision')}",
        Guard.NO_ERROR_CODE: f"{c('error_code')} IS NULL",
        Guard.HOLD_DUE: f"{c('held_until')} <= {p('now')}",
        Guard.PUBLISH_DUE: f"(({c('published_at')} IS NULL AND {c('updated_at')} <= "
        f"{p('pending_before')}) OR {c('published_at')} <= {p('published_before')})",
        Guard.UNCHANGED: f"{c('updated_at')} = {p('if_updated_at')}",
        Guard.OPTIONS: f"{c('options')} IS NOT NULL",
        Guard.NO_OPTIONS: f"{c('options')} IS NULL",
    }[guard]


def condition(
    t: Transition, *, param: Param, column: Column = lambda name: name, status: Status | None = None
) -> str:
    """The row condition of one transition (its call guards are the caller's choice);
    `status`: for rows of that status only."""
    source = t.source if status is None else frozenset({status})
    parts = [f"{column('status')} IN {statuses(source)}"]
    lease = _lease(t.lease, param, column)
    parts += [lease] if lease else []
    parts += [_guard(g, param, column) for g in sorted(t.guards - CALL_GUARDS)]
    return " AND ".join(parts)


def _chosen(operation: str, given: frozenset[Guard], source: Status | None) -> list[Transition]:
    chosen = [
        t
        for t in TRANSITIONS
        if t.operation == operation
        and t.guards & CALL_GUARDS <= given
        and (source is None or source in t.source)
    ]
    if not chosen:
        raise ValueError(f"no transition of {operation} for {sorted(given)} from {source}")
    return chosen


def where(
    operation: str,
    *,
    param: Param,
    column: Column = lambda name: name,
    given: frozenset[Guard] = frozenset(),
    source: Status | None = None,
) -> str:
    """The condition under which `operation` changes a row: any of its transitions whose
    call guards are all `given` (and which start from `source`, if named)."""
    # Two transitions told apart by a call guard only (a held or unheld detection) share
    # one row condition: written once.
    conditions = dict.fromkeys(
        condition(t, param=param, column=column) for t in _chosen(operation, given, source)
    )
    return " OR ".join(f"({c})" for c in conditions)


def _to(
    field: str,
    value: Callable[[Transition, Status], str],
    operation: str,
    column: Column,
    given: frozenset[Guard],
    source: Status | None,
    param: Param | None,
) -> str:
    """`field = <expression>`: the value the table gives each source status, or, where
    transitions from one status are told apart by a row guard (a correction of a
    picture with options or without), the value of the transition whose condition holds
    (then `param` is needed)."""
    by_source: dict[Status, str] = {}
    pairs = [
        (t, status)
        for t in _chosen(operation, given, source)
        for status in sorted(t.source if source is None else t.source & {source})
    ]
    split = False
    for t, status in pairs:
        split |= by_source.setdefault(status, value(t, status)) != value(t, status)
    if split:
        if param is None:
            raise ValueError(f"{operation}: {field} by row guards needs the driver's param")
        whens = " ".join(
            f"WHEN {condition(t, param=param, column=column, status=s)} THEN {value(t, s)}"
            for t, s in pairs
        )
        return f"{field} = CASE {whens} ELSE {column(field)} END"
    values = set(by_source.values())
    if len(values) == 1:
        return f"{field} = {values.pop()}"
    whens = " ".join(f"WHEN '{s.value}' THEN {v}" for s, v in sorted(by_source.items()))
    return f"{field} = CASE {column('status')} {whens} ELSE {column(field)} END"


def status_to(
    operation: str,
    *,
    column: Column = lambda name: name,
    given: frozenset[Guard] = frozenset(),
    source: Status | None = None,
    param: Param | None = None,
) -> str:
    """The SET of the status `operation` leads to, from each status it starts from."""

    def target(t: Transition, status: Status) -> str:
        return f"'{(t.target or status).value}'"

    return _to("status", target, operation, column, given, source, param)


def review_to(
    operation: str,
    *,
    column: Column = lambda name: name,
    given: frozenset[Guard] = frozenset(),
    source: Status | None = None,
    param: Param | None = None,
) -> str:
    """The SET of the review state `operation` leaves, from each status it starts from
    (the column itself where the table leaves it as it is)."""

    def review(t: Transition, status: Status) -> str:
        return f"'{t.review.value}'" if t.review is not None else column("review")

    return _to("review", review, operation, column, given, source, param)


def event(
    operation: str,
    *,
    role: EventRole | None = None,
    given: frozenset[Guard] = frozenset(),
    source: Status | None = None,
) -> tuple[EventRole, str]:
    """The (role, action) of the audit line `operation` appends from `source`; `role`
    is the caller's, for the transitions the table leaves to it (a reviewer's)."""
    lines = {
        (effect.role or role, effect.action)
        for t in _chosen(operation, given, source)
        for effect in t.effects
        if isinstance(effect, Audit)
    }
    if len(lines) != 1:
        raise ValueError(f"{operation} from {source}: audit lines {sorted(map(str, lines))}")
    ((who, action),) = lines
    if who is None:
        raise ValueError(f"{operation}: the table leaves the role to the caller; give it")
    return who, action


def notifies(
    operation: str, *, given: frozenset[Guard] = frozenset(), source: Status | None = None
) -> bool:
    """Whether `operation` from `source` writes a webhook outbox row (`lifecycle.Notify`):
    the same for every transition the choice selects, else the caller must name more."""
    found = {t.notifies for t in _chosen(operation, given, source)}
    if len(found) != 1:
        raise ValueError(f"{operation} from {source}: notifies from some sources only")
    return found.pop()
