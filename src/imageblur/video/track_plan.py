"""The tracking plan: each face track's key boxes, and the rule that turns them into the
box to hide in any frame. Built by `video.tracking.build_plan`; stored as one compact
JSON object (key boxes plus the rule's settings) for a later review screen.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

from imageblur.domain import Face, RegionKind
from imageblur.video.sightings import HiddenBox

FORMAT = "imageblur.track-plan/2"
FORMATS = ("imageblur.track-plan/1", FORMAT)  # /1: without `coast` (no coasted keys)
RULE = (
    "at a key frame its box; between two keys the box interpolated linearly in time; "
    "up to roll[0] s before the first key and roll[1] s after the last the end box "
    "moved with the track's velocity; the first coast[0] and the last coast[1] keys are "
    "not sightings but the end box moved with the camera, hidden besides (before the "
    "first sighting, after the last; rolled on up to settings pre_roll_s / post_roll_s "
    "beyond the outermost); every box not at a sighting grown "
    "(width and height times 1 + growth_per_s x the seconds to the nearest sighting, at "
    "most max_growth_s; coast_growth_per_s on a coasted end) about its centre; "
    "never at or before frame `after` nor at or after frame `before` (shot limits)"
)
_BUCKET_S = 1.0  # the time index's bucket: a lookup checks the tracks of one bucket


@dataclass(frozen=True, slots=True)
class TrackSettings:
    """How sightings are linked into tracks and how long a track is hidden.

    Defaults are chosen for faces in phone, dashcam and bodycam clips at 24-60 frames/s
    with detection on every frame up to every 5th or so (tests/unit/test_tracking.py).
    """

    # Linking.
    max_gap_s: float = 1.0  # longest gap (missed detections, occlusion) a track bridges
    max_shift: float = 1.0  # farthest a face may land from its predicted centre, in box sizes
    max_shift_per_s: float = 2.0  # ... plus this many box sizes per second since last seen
    max_size_ratio: float = 1.6  # a face's size may change at most this much between sightings
    velocity_window_s: float = 0.5  # the track's velocity: over its sightings of this span
    # Scores: sightings below `min_score` are ignored; a track is kept when one of its
    # sightings reaches `confirm_score` (0: every sighting counts; see video.tracking).
    min_score: float = 0.0
    confirm_score: float = 0.0
    # Hiding beyond the sightings.
    pre_roll_s: float = 0.5  # hidden this long before the first sighting
    post_roll_s: float = 0.5  # and this long after the last
    # ... but at most this many times the track's span (first to last sighting), never
    # less than to the looked-at frames around it (video.tracking._Linker._rolls).
    roll_per_span: float = 1.0
    growth_per_s: float = 0.6  # a box away from a sighting grows 60% per second about its centre
    max_growth_s: float = 0.5  # ... for at most this long (a box coasting for seconds)
    # Coasting: a track seen at least `coast_min_sightings` times is followed beyond its
    # sightings (before the first, after the last) by the camera's motion, for up to
    # `coast_s`, stopping at a cut or where the motion is unknown (0: no coasting).
    coast_s: float = 2.0
    coast_min_sightings: int = 2
    # A coasted box follows the camera's measured motion, not a guess from the track's
    # own velocity: it grows at this rate instead (bench/tracking_real.py: growing it
    # hid 0.8 points more background for no face hidden; docs/video.md).
    coast_growth_per_s: float = 0.0
    # A second look (`FrameSightings.closer`, video.second_look): a track whose
    # sightings all score under `faint_score` and whose second looks all score under
    # `closer_score` (a faint false box, mostly) is hidden at and between its sightings
    # only: no rolls, no coasting. A track without a second look is hidden as any other.
    faint_score: float = 0.4
    closer_score: float = 0.4

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"tracking setting {f.name} must be >= 0")
        if self.max_size_ratio < 1:
            raise ValueError("tracking setting max_size_ratio must be >= 1")


@dataclass(frozen=True, slots=True)
class Key:
    """One sighting of a track: frame index, presentation time, box and score."""

    index: int
    time_s: float
    box: tuple[float, float, float, float]
    score: float

    @classmethod
    def of(cls, index: int, time_s: float, face: Face) -> Key:
        return cls(index, time_s, (face.x0, face.y0, face.x1, face.y1), face.score)

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass(frozen=True, slots=True)
class PlanTrack:
    """A face track: its key boxes in frame order, the shot it lives in (frames
    `after_index` < i < `before_index`; `before_index` None: to the end) and how long
    it is hidden before its first and after its last key. The first `coast[0]` and the
    last `coast[1]` keys are coasted (the box moved with the camera), not sightings."""

    number: int
    kind: RegionKind
    keys: tuple[Key, ...]
    after_index: int = -1
    before_index: int | None = None
    pre_roll_s: float = 0.0
    post_roll_s: float = 0.0
    coast: tuple[int, int] = (0, 0)

    @property
    def sighted(self) -> tuple[float, float]:
        """The times of the first and the last sighting (coasted keys aside)."""
        return self.keys[self.coast[0]].time_s, self.keys[-1 - self.coast[1]].time_s


@dataclass(frozen=True, slots=True)
class _Segment:
    """Keys hidden by one rule: a track's sightings with its rolls, or a coasted end
    (the coasted keys and the sighting they start from, rolled on by the settings'
    rolls), shown only outside the sightings' span."""

    keys: tuple[Key, ...]
    indexes: tuple[int, ...]
    velocities: tuple[tuple[float, float], tuple[float, float]]
    pre_roll_s: float
    post_roll_s: float
    side: int = 0  # 0: the sightings; -1: coasted before them; 1: after them

    @classmethod
    def of(
        cls, keys: Sequence[Key], pre: float, post: float, settings: TrackSettings, side: int = 0
    ) -> _Segment:
        velocities = _end_velocities(keys, settings)
        return cls(tuple(keys), tuple(k.index for k in keys), velocities, pre, post, side)


def _segments(track: PlanTrack, settings: TrackSettings) -> list[_Segment]:
    first, last = track.coast[0], len(track.keys) - 1 - track.coast[1]
    sighted = track.keys[first : last + 1]
    segments = [_Segment.of(sighted, track.pre_roll_s, track.post_roll_s, settings)]
    if track.coast[0]:
        before = track.keys[: first + 1]
        segments.append(_Segment.of(before, settings.pre_roll_s, 0.0, settings, -1))
    if track.coast[1]:
        after = track.keys[last:]
        segments.append(_Segment.of(after, 0.0, settings.post_roll_s, settings, 1))
    return segments


class TrackPlan:
    """A `MaskPlan` hiding each track over its life and the rolls around it.

    A coasted end adds a second box beside the rolls (never instead of them): where the
    camera's motion and the track's own velocity disagree, both are hidden."""

    def __init__(self, tracks: Sequence[PlanTrack], settings: TrackSettings) -> None:
        self._tracks = tuple(tracks)
        self._settings = settings
        self._segments = [_segments(t, settings) for t in self._tracks]
        # Time buckets -> tracks alive in them: a track spans at most its sightings times
        # max_gap_s plus the rolls and its coasting, so the index grows with sightings,
        # never frames.
        self._buckets: dict[int, list[int]] = {}
        for number, segments in enumerate(self._segments):
            start = min(g.keys[0].time_s - g.pre_roll_s for g in segments)
            end = max(g.keys[-1].time_s + g.post_roll_s for g in segments)
            for bucket in range(_bucket(start), _bucket(end) + 1):
                self._buckets.setdefault(bucket, []).append(number)

    @property
    def tracks(self) -> int:
        return len(self._tracks)

    @property
    def settings(self) -> TrackSettings:
        return self._settings

    @property
    def track_list(self) -> tuple[PlanTrack, ...]:
        return self._tracks

    def boxes_at(self, index: int, time_s: float) -> Sequence[HiddenBox]:
        hidden: list[HiddenBox] = []
        for number in self._buckets.get(_bucket(time_s), ()):
            track = self._tracks[number]
            if index <= track.after_index or (
                track.before_index is not None and index >= track.before_index
            ):
                continue
            first, last = track.sighted
            for segment in self._segments[number]:
                if (segment.side < 0 and time_s >= first) or (segment.side > 0 and time_s <= last):
                    continue
                face = self._box_of(track, segment, index, time_s)
                if face is not None:
                    hidden.append(HiddenBox(face, track.number))
        return hidden

    def _box_of(
        self, track: PlanTrack, segment: _Segment, index: int, time_s: float
    ) -> Face | None:
        keys, indexes = segment.keys, segment.indexes
        at = bisect.bisect_left(indexes, index)
        if at < len(keys) and indexes[at] == index:
            key = keys[at]
            away = _away(track.sighted, time_s)
            return self._grown(track, segment, key.box, key.score, away)
        if at == 0:
            dt = time_s - keys[0].time_s
            if dt < -segment.pre_roll_s - 1e-9:
                return None
            return self._rolled(track, keys[0], segment.velocities[0], dt, time_s)
        if at == len(keys):
            dt = time_s - keys[-1].time_s
            if dt > segment.post_roll_s + 1e-9:
                return None
            return self._rolled(track, keys[-1], segment.velocities[1], dt, time_s)
        a, b = keys[at - 1], keys[at]
        span = b.time_s - a.time_s
        w = (time_s - a.time_s) / span if span > 0 else (index - a.index) / (b.index - a.index)
        w = min(max(w, 0.0), 1.0)
        box = tuple(pa + (pb - pa) * w for pa, pb in zip(a.box, b.box, strict=True))
        away = _away(track.sighted, time_s) or min(time_s - a.time_s, b.time_s - time_s)
        score = min(a.score, b.score)
        box_ = cast(tuple[float, float, float, float], box)
        return self._grown(track, segment, box_, score, away)

    def _rolled(
        self,
        track: PlanTrack,
        key: Key,
        velocity: tuple[float, float],
        dt: float,
        time_s: float,
    ) -> Face:
        x0, y0, x1, y1 = key.box
        dx, dy = velocity[0] * dt, velocity[1] * dt
        box = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
        # A roll is a guess from the track's velocity, a coasted end's roll too.
        return self._grown(track, None, box, key.score, _away(track.sighted, time_s))

    def _grown(
        self,
        track: PlanTrack,
        segment: _Segment | None,
        box: tuple[float, float, float, float],
        score: float,
        away: float,
    ) -> Face:
        """`box` grown for being `away` seconds from the nearest sighting (at the
        coasting rate at and between a coasted end's keys; `segment` None: a roll)."""
        s = self._settings
        rate = s.coast_growth_per_s if segment is not None and segment.side else s.growth_per_s
        return _face(_grow(box, rate * min(away, s.max_growth_s)), score, track.kind)

    def to_json(self) -> str:
        """The plan as one compact JSON object: key boxes per track, the rule, settings."""
        return json.dumps(
            {
                "format": FORMAT,
                "rule": RULE,
                "settings": asdict(self._settings),
                "tracks": [
                    {
                        "kind": t.kind,
                        "after": t.after_index,
                        "before": t.before_index,
                        "roll": [round(t.pre_roll_s, 6), round(t.post_roll_s, 6)],
                        "coast": list(t.coast),
                        "keys": [
                            [
                                k.index,
                                round(k.time_s, 6),
                                *(round(v, 2) for v in k.box),
                                round(k.score, 4),
                            ]
                            for k in t.keys
                        ],
                    }
                    for t in self._tracks
                ],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> TrackPlan:
        """The plan `to_json` wrote; ValueError for anything else."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") not in FORMATS:
                raise ValueError(f"not a {FORMAT} object")
            settings = TrackSettings(**data["settings"])
            tracks = [_track_of(number, t) for number, t in enumerate(data["tracks"])]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a valid track plan: {exc}") from exc
        return cls(tracks, settings)


def _track_of(number: int, data: dict[str, Any]) -> PlanTrack:
    keys = tuple(
        Key(int(i), float(t), (float(x0), float(y0), float(x1), float(y1)), float(score))
        for i, t, x0, y0, x1, y1, score in data["keys"]
    )
    if not keys:
        raise ValueError("a track without keys")
    before = data["before"]
    kind = cast(RegionKind, data["kind"])
    pre, post = (float(v) for v in data["roll"])
    after = int(data["after"])
    coast_before, coast_after = (int(v) for v in data.get("coast", (0, 0)))
    if coast_before < 0 or coast_after < 0 or coast_before + coast_after >= len(keys):
        raise ValueError("a track without a sighting")
    before_index = None if before is None else int(before)
    return PlanTrack(
        number, kind, keys, after, before_index, pre, post, (coast_before, coast_after)
    )


def _end_velocities(
    keys: Sequence[Key], settings: TrackSettings
) -> tuple[tuple[float, float], tuple[float, float]]:
    """The centre's velocity over the first and over the last `velocity_window_s` of
    sightings (0 for a track seen once): what the pre- and post-roll follow."""
    window = settings.velocity_window_s
    first_end = next((k for k in reversed(keys) if k.time_s - keys[0].time_s <= window), keys[0])
    last_start = next((k for k in keys if keys[-1].time_s - k.time_s <= window), keys[-1])
    return _velocity(keys[0], first_end), _velocity(last_start, keys[-1])


def _velocity(a: Key, b: Key) -> tuple[float, float]:
    dt = b.time_s - a.time_s
    if dt <= 0:
        return 0.0, 0.0
    (ax, ay), (bx, by) = a.centre, b.centre
    return (bx - ax) / dt, (by - ay) / dt


def _away(sighted: tuple[float, float], time_s: float) -> float:
    """Seconds from `time_s` to the sightings' span, 0 within it."""
    return max(sighted[0] - time_s, time_s - sighted[1], 0.0)


def _grow(box: tuple[float, float, float, float], by: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    half_w, half_h = (x1 - x0) * by / 2, (y1 - y0) * by / 2
    return x0 - half_w, y0 - half_h, x1 + half_w, y1 + half_h


def _face(box: tuple[float, float, float, float], score: float, kind: RegionKind) -> Face:
    return Face(box[0], box[1], box[2], box[3], score, kind)


def _bucket(time_s: float) -> int:
    return math.floor(time_s / _BUCKET_S)
