"""Which faint sightings get a second, finer look in the detection pass.

Tracking hides a faint track (every sighting under `TrackSettings.faint_score`) beyond
its sightings only when a second look at one of them (`FrameSightings.closer`) scores at
least `closer_score`: most faint tracks are false boxes on texture, which the rolls and
coasting would otherwise keep hidden for seconds (docs/video.md, "A second look at a
faint track"). The look needs the frame's pixels, so it is taken in pass 1, at the
sighting, never later: nothing but a few numbers per faint box is kept between frames.

A look costs a network pass over a small square, so not every faint sighting gets one:
each faint box is chained to the faint box of the previous looked-at frame it overlaps
most (that box moved with the camera), and a chain is looked at on its first
`looks_per_chain` sightings, then on every `look_every`-th; once a look confirms it, its
later sightings carry that score without a look. A track made of such a chain then
carries at least one look (a faint track none was taken for is hidden as any other).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imageblur.domain import CloserLook, Face
from imageblur.video.sightings import Box, CameraMotion, box_iou

Look = Callable[[Face], float]


@dataclass(frozen=True, slots=True)
class SecondLookPolicy:
    """`below`: sightings scoring under this get looked at (the tracking's
    `faint_score`); `confirm`: a look scoring this confirms the chain (its
    `closer_score`); `looks_per_chain`, `look_every`: the budget (see the module);
    `min_iou`: how much a box must overlap the previous frame's to chain to it; `look`:
    how the detector looks. The defaults: bench/second_look.py (docs/video.md)."""

    below: float = 0.4
    confirm: float = 0.4
    looks_per_chain: int = 1
    look_every: int = 10
    min_iou: float = 0.2
    look: CloserLook = field(default_factory=CloserLook)


@dataclass(slots=True)
class _Chain:
    box: Box
    looks: int = 0
    since_look: int = 0
    best: float = 0.0


class SecondLooks:
    """Per looked-at frame, the second-look score of each sighting (None: no look)."""

    def __init__(self, policy: SecondLookPolicy) -> None:
        self.policy = policy
        self._chains: list[_Chain] = []
        self.taken = 0  # looks taken so far (the benchmark counts them)

    def reset(self) -> None:
        """A cut: no chain crosses it."""
        self._chains = []

    def scores(
        self, faces: Sequence[Face], motion: CameraMotion | None, look: Look
    ) -> tuple[float | None, ...]:
        """The score of each face's second look (None: not faint, or not its turn);
        `look` takes one. `motion`: the camera's since the previous looked-at frame."""
        p = self.policy
        previous = self._chains
        moved = [c.box if motion is None else motion.box(c.box) for c in previous]
        used: set[int] = set()
        chains: list[_Chain] = []
        out: list[float | None] = []
        for face in faces:
            if face.score >= p.below:
                out.append(None)
                continue
            box = (face.x0, face.y0, face.x1, face.y1)
            chain = _Chain(box)
            match = _best_overlap(box, moved, used, p.min_iou)
            if match is not None:
                used.add(match)
                old = previous[match]
                chain = _Chain(box, old.looks, old.since_look + 1, old.best)
            out.append(self._score(chain, face, look))
            chains.append(chain)
        self._chains = chains
        return tuple(out)

    def _score(self, chain: _Chain, face: Face, look: Look) -> float | None:
        p = self.policy
        if chain.best >= p.confirm:
            return chain.best  # confirmed before: no need to look again
        due = chain.looks < p.looks_per_chain or (
            p.look_every > 0 and chain.since_look >= p.look_every
        )
        if not due:
            return None
        score = look(face)
        self.taken += 1
        chain.looks += 1
        chain.since_look = 0
        chain.best = max(chain.best, score)
        return score


def _best_overlap(box: Box, others: Sequence[Box], used: set[int], min_iou: float) -> int | None:
    best, found = min_iou, None
    for number, other in enumerate(others):
        if number in used:
            continue
        overlap = box_iou(box, other)
        if overlap >= best:
            best, found = overlap, number
    return found
