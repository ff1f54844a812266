"""Link a video's sightings into face tracks, and plan to hide each track over its life.

Detection hands one `FrameSightings` per looked-at frame (every frame, or every n-th).
`build_plan` links the sightings of one face across frames (greedy one-to-one matching
on the box predicted from the track's motion: its centre distance, scaled by the box
size, plus one minus the IoU), and returns a `TrackPlan` that hides each track:

- at each sighting, the sighting's own box, so a tracked plan never hides less than the
  per-frame plan of the same sightings;
- between two sightings (a frame detection skipped, a missed detection, a short
  occlusion up to `max_gap_s`), the box interpolated linearly in time;
- for `pre_roll_s` before the first sighting and `post_roll_s` after the last, the box
  moved with the track's velocity and grown with the distance in time;
- beyond its first and last sightings, for a track seen at least twice, the box moved
  with the camera (`FrameSightings.motion`) for up to `coast_s` ("coasting"): a face
  found only while the camera is zoomed in stays hidden as it zooms out;
- never across a cut: a cut closes every open track, and no roll crosses it;
- a faint track (every sighting under `faint_score`) whose second looks
  (`FrameSightings.closer`, `video.second_look`) all score under `closer_score`: at and
  between its sightings only, no rolls, no coasting (a faint false box, mostly).

The linker is an online pass over the sightings, so a plan is built while pass 1 still
decodes; the plan is kept as key boxes only, so memory grows with the number of
sightings, never with the number of frames.

Low-score sightings: a track is kept when at least one of its sightings reaches
`confirm_score`; its other sightings count however low their score. A detection pass
may therefore hand sightings down to a lower score than the detector's threshold and set
`confirm_score` to that threshold: a face whose score dips for a few frames stays
hidden by its own boxes, while a lone low-score box (a false one, mostly) is dropped.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from imageblur.domain import Face, RegionKind
from imageblur.video.sightings import CameraMotion, FrameSightings, box_iou
from imageblur.video.track_plan import Key, PlanTrack, TrackPlan, TrackSettings

__all__ = ["TrackPlan", "TrackSettings", "build_plan"]


def build_plan(
    frames: Iterable[FrameSightings], settings: TrackSettings | None = None
) -> TrackPlan:
    """The tracking plan of a video's sightings, given in presentation order."""
    settings = settings or TrackSettings()
    linker = _Linker(settings)
    for frame in frames:
        linker.add(frame)
    return TrackPlan(linker.finish(), settings)


@dataclass(slots=True)
class _OpenTrack:
    kind: RegionKind
    keys: list[Key]
    after_index: int  # frames at or before this belong to an earlier shot
    before_index: int | None = None  # the first frame of the next shot, once known
    velocity: tuple[float, float] = (0.0, 0.0)  # of the box centre, px/s
    best_score: float = field(default=0.0)
    previous_looked_s: float = 0.0  # the looked-at frame before its first sighting
    next_looked_s: float | None = None  # ... and after its last one, once known
    coast_before: list[Key] = field(default_factory=list)  # moved back with the camera
    coast_after: list[Key] = field(default_factory=list)  # ... and on, since the last sighting
    closer_best: float | None = None  # the best second look at its sightings, if any


class _Linker:
    """The online part: one frame at a time, tracks open within the current shot."""

    def __init__(self, settings: TrackSettings) -> None:
        self._settings = settings
        self._open: list[_OpenTrack] = []
        self._shot: list[_OpenTrack] = []  # every track of the current shot
        self._done: list[_OpenTrack] = []
        self._last_index, self._last_s = -1, 0.0
        self._shot_after = -1  # the last looked-at frame before the current shot
        # The looked-at frames of the last `coast_s` of the shot, with the camera's
        # motion into each (for coasting a new track back), and the tracks coasting on.
        self._history: deque[tuple[int, float, CameraMotion | None]] = deque()
        self._coasting: list[_OpenTrack] = []

    def add(self, frame: FrameSightings) -> None:
        if frame.index <= self._last_index:
            raise ValueError(
                f"sightings out of order: frame {frame.index} after {self._last_index}"
            )
        for waiting in self._open:  # not seen in the frame before: this one is next
            if waiting.next_looked_s is None:
                waiting.next_looked_s = frame.time_s
        if frame.cut:
            self._cut(frame.index)
        self._remember(frame)
        self._expire(frame.time_s)
        kept = [n for n, f in enumerate(frame.faces) if f.score >= self._settings.min_score]
        faces = [frame.faces[n] for n in kept]
        matched = self._match(faces, frame.time_s)
        seen: list[_OpenTrack] = []
        for face_no, face in enumerate(faces):
            key = Key.of(frame.index, frame.time_s, face)
            track = matched.get(face_no)
            if track is None:
                track = _OpenTrack(
                    face.kind, [], after_index=self._shot_after, previous_looked_s=self._last_s
                )
                track.coast_before = self._coasted_back(key)
                self._open.append(track)
                self._shot.append(track)
            self._extend(track, key, frame.closer_of(kept[face_no]))
            seen.append(track)
        self._coast_on(frame, seen)
        self._last_index, self._last_s = frame.index, frame.time_s

    def finish(self) -> list[PlanTrack]:
        confirm = self._settings.confirm_score
        kept = [t for t in self._done + self._shot if t.best_score >= confirm]
        kept.sort(key=lambda t: (t.keys[0].index, t.keys[0].box))
        return [self._planned(no, t) for no, t in enumerate(kept)]

    def _unconfirmed(self, track: _OpenTrack) -> bool:
        """A faint track a second look did not confirm (a faint false box, mostly)."""
        s = self._settings
        return (
            track.best_score < s.faint_score
            and track.closer_best is not None
            and track.closer_best < s.closer_score
        )

    def _planned(self, number: int, track: _OpenTrack) -> PlanTrack:
        if self._unconfirmed(track):
            return self._faint(number, track)
        pre, post = self._rolls(track)
        before, after = track.coast_before, track.coast_after
        if len(track.keys) < self._settings.coast_min_sightings:
            before, after = [], []  # a lone box (a false one, mostly) does not coast
        keys = (*before, *track.keys, *after)
        return PlanTrack(
            number,
            track.kind,
            keys,
            track.after_index,
            track.before_index,
            pre,
            post,
            (len(before), len(after)),
        )

    def _faint(self, number: int, track: _OpenTrack) -> PlanTrack:
        """An unconfirmed faint track: hidden at its sightings and between them (the
        box interpolated), no rolls, no coasting. Between, not at its sightings only:
        a true face a second look missed then stays hidden while it is seen (at its
        sightings only, flashes rose from 2 to 34 on the benchmark's clips)."""
        keys = tuple(track.keys)
        return PlanTrack(number, track.kind, keys, track.after_index, track.before_index)

    def _remember(self, frame: FrameSightings) -> None:
        oldest = frame.time_s - self._settings.coast_s
        while self._history and self._history[0][1] < oldest:
            self._history.popleft()
        self._history.append((frame.index, frame.time_s, frame.motion))

    def _coasted_back(self, key: Key) -> list[Key]:
        """`key`'s box moved back with the camera over the looked-at frames before it
        (the last one is `key`'s own frame), as far as the motion is known."""
        keys: list[Key] = []
        box = key.box
        history = list(self._history)
        for (_, _, motion), (index, time_s, _) in zip(
            reversed(history[1:]), reversed(history[:-1]), strict=True
        ):
            if motion is None:
                break
            box = motion.inverse().box(box)
            keys.append(Key(index, time_s, box, key.score))
        keys.reverse()
        return keys

    def _coast_on(self, frame: FrameSightings, seen: list[_OpenTrack]) -> None:
        """Moves the box of each track not seen in this frame on with the camera, for
        up to `coast_s` after its last sighting; a track seen again stops coasting (its
        gap is interpolated instead) until it is lost again."""
        for track in seen:
            track.coast_after = []
        still = list(seen)
        seen_ids = {id(t) for t in seen}
        for track in self._coasting:
            last = track.keys[-1]
            if id(track) in seen_ids or frame.motion is None:
                continue
            if frame.time_s - last.time_s > self._settings.coast_s:
                continue
            base = track.coast_after[-1].box if track.coast_after else last.box
            moved = Key(frame.index, frame.time_s, frame.motion.box(base), last.score)
            track.coast_after.append(moved)
            still.append(track)
        self._coasting = still

    def _rolls(self, track: _OpenTrack) -> tuple[float, float]:
        """How long before and after its sightings a track is hidden: up to the rolls
        of the settings, at most `roll_per_span` times its own span (a lone box, a false
        one mostly, is not worth a second of hidden background), but always as far as
        the looked-at frames around it: no frame detection skipped next to a sighting
        is left open."""
        s = self._settings
        first, last = track.keys[0].time_s, track.keys[-1].time_s
        earned = s.roll_per_span * (last - first)
        to_previous = first - track.previous_looked_s
        to_next = s.post_roll_s if track.next_looked_s is None else track.next_looked_s - last
        return (
            min(s.pre_roll_s, max(earned, to_previous)),
            min(s.post_roll_s, max(earned, to_next)),
        )

    def _cut(self, index: int) -> None:
        # The cut lies somewhere after the last looked-at frame: its tracks may roll up
        # to just before this frame, the new shot's back to just after that one, so the
        # frames in between are covered by both (hiding more, never less).
        for track in self._shot:
            track.before_index = index
        self._done.extend(self._shot)
        self._shot, self._open, self._coasting = [], [], []
        self._history.clear()
        self._shot_after = self._last_index

    def _expire(self, time_s: float) -> None:
        limit = self._settings.max_gap_s
        self._open = [t for t in self._open if time_s - t.keys[-1].time_s <= limit]

    def _match(self, faces: list[Face], time_s: float) -> dict[int, _OpenTrack]:
        """Greedy one-to-one matching, cheapest pair first, within the gates."""
        pairs: list[tuple[float, int, int]] = []
        for track_no, track in enumerate(self._open):
            for face_no, face in enumerate(faces):
                if face.kind == track.kind:
                    cost = self._cost(track, face, time_s)
                    if cost is not None:
                        pairs.append((cost, track_no, face_no))
        pairs.sort()
        matched: dict[int, _OpenTrack] = {}
        used: set[int] = set()
        for _, track_no, face_no in pairs:
            if track_no not in used and face_no not in matched:
                used.add(track_no)
                matched[face_no] = self._open[track_no]
        return matched

    def _cost(self, track: _OpenTrack, face: Face, time_s: float) -> float | None:
        s = self._settings
        last = track.keys[-1]
        dt = time_s - last.time_s
        x0, y0, x1, y1 = last.box
        dx, dy = track.velocity[0] * dt, track.velocity[1] * dt
        predicted = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
        size = math.sqrt(max(x1 - x0, 1.0) * max(y1 - y0, 1.0))
        face_size = math.sqrt(max(face.width, 1.0) * max(face.height, 1.0))
        if max(size, face_size) > s.max_size_ratio * min(size, face_size):
            return None
        pcx, pcy = (predicted[0] + predicted[2]) / 2, (predicted[1] + predicted[3]) / 2
        fcx, fcy = (face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2
        distance = math.hypot(fcx - pcx, fcy - pcy) / ((size + face_size) / 2)
        if distance > s.max_shift + s.max_shift_per_s * dt:
            return None
        return distance + 1.0 - box_iou(predicted, (face.x0, face.y0, face.x1, face.y1))

    def _extend(self, track: _OpenTrack, key: Key, closer: float | None) -> None:
        track.keys.append(key)
        track.next_looked_s = None
        track.best_score = max(track.best_score, key.score)
        if closer is not None:
            track.closer_best = max(track.closer_best or 0.0, closer)
        # Velocity over the sightings of the last `velocity_window_s`: one noisy box
        # should not fling the prediction.
        window = self._settings.velocity_window_s
        first = key
        for earlier in reversed(track.keys[:-1]):
            if key.time_s - earlier.time_s > window:
                break
            first = earlier
        if first is not key and key.time_s > first.time_s:
            track.velocity = _velocity(first, key)


def _velocity(a: Key, b: Key) -> tuple[float, float]:
    dt = b.time_s - a.time_s
    (ax, ay), (bx, by) = a.centre, b.centre
    return (bx - ax) / dt, (by - ay) / dt
