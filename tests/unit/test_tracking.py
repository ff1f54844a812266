"""Tracking: a face hidden between, before and after its sightings, never across a cut."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from imageblur.domain import Face
from imageblur.video.sightings import CameraMotion, FrameSightings, HiddenBox, PerFramePlan
from imageblur.video.tracking import TrackPlan, TrackSettings, build_plan

FPS = 30.0
SIZE = 60.0
Path = Callable[[int], tuple[float, float]]  # frame index -> the face's centre


def box(cx: float, cy: float, size: float = SIZE, score: float = 0.9) -> Face:
    return Face(cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2, score)


def covered(truth: Face, hidden: Sequence[HiddenBox]) -> float:
    """The largest share of `truth` one hidden box covers."""
    best = 0.0
    for h in hidden:
        w = min(truth.x1, h.face.x1) - max(truth.x0, h.face.x0)
        t = min(truth.y1, h.face.y1) - max(truth.y0, h.face.y0)
        if w > 0 and t > 0:
            best = max(best, w * t / (truth.width * truth.height))
    return best


def sightings(
    paths: Sequence[Path],
    frames: int,
    *,
    looked: Callable[[int], bool] = lambda i: True,
    seen: Callable[[int, int], bool] = lambda face, i: True,
    cuts: frozenset[int] = frozenset(),
) -> list[FrameSightings]:
    return [
        FrameSightings(
            i,
            i / FPS,
            tuple(box(*p(i)) for n, p in enumerate(paths) if seen(n, i)),
            cut=i in cuts,
        )
        for i in range(frames)
        if looked(i)
    ]


def linear(x: float, y: float, vx: float, vy: float = 0.0) -> Path:
    return lambda i: (x + vx * i, y + vy * i)


def test_a_face_detected_every_third_frame_is_hidden_in_every_frame_between() -> None:
    path = linear(100, 200, 4.0, 1.5)
    plan = build_plan(sightings([path], 61, looked=lambda i: i % 3 == 0))
    assert plan.tracks == 1
    for i in range(61):
        assert covered(box(*path(i)), plan.boxes_at(i, i / FPS)) >= 0.95, i


def test_a_face_missed_for_a_few_frames_stays_hidden() -> None:
    path = linear(100, 200, 3.0)
    flash = range(20, 26)  # a camera flash: 6 frames (0.2 s) without a detection
    plan = build_plan(sightings([path], 50, seen=lambda _, i: i not in flash))
    assert plan.tracks == 1
    for i in range(50):
        assert covered(box(*path(i)), plan.boxes_at(i, i / FPS)) >= 0.9, i


def test_pre_roll_and_post_roll_follow_the_motion() -> None:
    path = linear(100, 300, 10.0, -2.0)  # 10 px a frame: 150 px in the half second of roll
    plan = build_plan(sightings([path], 91, seen=lambda _, i: 30 <= i <= 60))
    settings = plan.settings
    roll_frames = int(settings.pre_roll_s * FPS)
    for i in [*range(30 - roll_frames, 30), *range(61, 61 + roll_frames)]:
        assert covered(box(*path(i)), plan.boxes_at(i, i / FPS)) >= 0.95, i
    # A box left where the face was first or last seen would no longer cover it.
    assert covered(box(*path(30 - roll_frames)), [HiddenBox(box(*path(30)))]) == 0
    # The roll ends: nothing hidden well before the first or after the last sighting.
    assert plan.boxes_at(30 - roll_frames - 2, (30 - roll_frames - 2) / FPS) == []
    assert plan.boxes_at(61 + roll_frames + 2, (61 + roll_frames + 2) / FPS) == []


def test_the_roll_grows_with_the_distance_in_time() -> None:
    plan = build_plan(sightings([linear(300, 300, 0.0)], 40, seen=lambda _, i: i >= 20))
    sizes = [plan.boxes_at(i, i / FPS)[0].face.width for i in (19, 15, 10)]
    assert SIZE < sizes[0] < sizes[1] < sizes[2]


def test_a_cut_ends_tracks_and_no_roll_crosses_it() -> None:
    still = linear(300, 300, 0.0)  # the same place before and after the cut
    frames = sightings([still], 60, cuts=frozenset({30}), seen=lambda _, i: i not in (29, 30))
    plan = build_plan(frames)
    assert plan.tracks == 2
    before = {h.track for h in plan.boxes_at(28, 28 / FPS)}
    after = {h.track for h in plan.boxes_at(31, 31 / FPS)}
    assert len(before) == len(after) == 1 and before != after
    # Frame 29 (missed) is hidden by the first shot's post-roll only, frame 30 (the cut,
    # missed) by the second shot's pre-roll only.
    assert {h.track for h in plan.boxes_at(29, 29 / FPS)} == before
    assert {h.track for h in plan.boxes_at(30, 30 / FPS)} == after


def test_with_a_stride_the_frames_before_a_detected_cut_are_hidden_by_both_shots() -> None:
    # Looked at every 3rd frame: the cut is seen at 33, so it happened at 31, 32 or 33.
    frames = sightings(
        [linear(300, 300, 0.0)], 60, looked=lambda i: i % 3 == 0, cuts=frozenset({33})
    )
    plan = build_plan(frames)
    assert plan.tracks == 2
    assert len(plan.boxes_at(31, 31 / FPS)) == len(plan.boxes_at(32, 32 / FPS)) == 2
    assert len(plan.boxes_at(30, 30 / FPS)) == len(plan.boxes_at(33, 33 / FPS)) == 1


def test_two_crossing_faces_keep_their_identities_and_both_stay_hidden() -> None:
    left, right = linear(100, 300, 8.0, 0.5), linear(500, 310, -8.0, -0.5)  # cross at ~25
    plan = build_plan(sightings([left, right], 51, looked=lambda i: i % 2 == 0))
    assert plan.tracks == 2
    for i in range(51):
        hidden = plan.boxes_at(i, i / FPS)
        assert covered(box(*left(i)), hidden) >= 0.9, i
        assert covered(box(*right(i)), hidden) >= 0.9, i
    # Identity: the track at the left at the start is at the right at the end.
    start = min(plan.boxes_at(0, 0.0), key=lambda h: h.face.x0).track
    end = max(plan.boxes_at(50, 50 / FPS), key=lambda h: h.face.x0).track
    assert start == end


def test_low_score_sightings_count_in_a_confirmed_track_only() -> None:
    scores = {10: 0.3, 11: 0.3, 12: 0.7, 13: 0.3, 40: 0.3}  # a face, then a lone weak box
    frames = [
        FrameSightings(i, i / FPS, (box(200, 200, score=s) if i < 40 else box(600, 200, score=s),))
        for i, s in scores.items()
    ]
    plan = build_plan(frames, TrackSettings(confirm_score=0.5))
    assert plan.tracks == 1
    assert [len(plan.boxes_at(i, i / FPS)) for i in (10, 11, 12, 13, 40)] == [1, 1, 1, 1, 0]
    assert build_plan(frames).tracks == 2  # confirm_score 0: every sighting counts


def test_at_a_sighting_the_plan_hides_the_sighting_itself() -> None:
    rng = random.Random(7)
    frames = [
        FrameSightings(
            i, i / FPS, tuple(box(rng.uniform(0, 600), 200) for _ in range(rng.randint(0, 3)))
        )
        for i in range(0, 40, 2)
    ]
    plan, per_frame = build_plan(frames), PerFramePlan(frames)
    for f in frames:
        ours = {h.face for h in plan.boxes_at(f.index, f.time_s)}
        assert {h.face for h in per_frame.boxes_at(f.index, f.time_s)} <= ours


def test_the_plan_survives_a_json_round_trip() -> None:
    frames = sightings(
        [linear(100, 200, 4.0), linear(500, 260, -3.0)],
        90,
        looked=lambda i: i % 2 == 0,
        cuts=frozenset({60}),
    )
    plan = build_plan(frames, TrackSettings(pre_roll_s=0.3))
    text = plan.to_json()
    again = TrackPlan.from_json(text)
    assert again.tracks == plan.tracks and again.settings == plan.settings
    for i in range(90):
        a, b = plan.boxes_at(i, i / FPS), again.boxes_at(i, i / FPS)
        assert [h.track for h in a] == [h.track for h in b]
        for ha, hb in zip(a, b, strict=True):
            assert (hb.face.x0, hb.face.y1) == pytest.approx((ha.face.x0, ha.face.y1), abs=0.01)
    # Key boxes only (one per sighting), not a box per frame.
    stored = sum(len(t["keys"]) for t in json.loads(text)["tracks"])
    assert stored == sum(len(f.faces) for f in frames) < 2 * 90


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"format": "other"}',
        '{"format": "imageblur.track-plan/1", "settings": {"nope": 1}, "tracks": []}',
        '{"format": "imageblur.track-plan/1", "settings": {}, "tracks": [{"kind": "face"}]}',
        '{"format": "imageblur.track-plan/1", "settings": {}, "tracks": [{"kind": "face",'
        ' "after": -1, "before": null, "roll": [0, 0], "keys": []}]}',
    ],
)
def test_a_stored_plan_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a valid track plan"):
        TrackPlan.from_json(text)


def test_sightings_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="out of order"):
        build_plan([FrameSightings(5, 0.2, ()), FrameSightings(3, 0.1, ())])


@pytest.mark.parametrize("seed", range(40))
def test_every_frame_between_first_and_last_sighting_is_covered(seed: int) -> None:
    """Random walks (smooth velocity changes, detection jitter, a random stride and
    random misses up to a third of a second): every frame between a face's first and
    last sighting has a box covering most of it."""
    rng = random.Random(seed)
    faces, frames = rng.randint(1, 3), 120
    walks = [_random_walk(rng, frames) for _ in range(faces)]
    stride = rng.randint(1, 4)
    missing = {(n, i) for n in range(faces) for i in _misses(rng, frames)}
    jitter = {
        (n, i): (rng.uniform(-2, 2), rng.uniform(-2, 2))
        for n in range(faces)
        for i in range(frames)
    }
    looked = [
        FrameSightings(
            i,
            i / FPS,
            tuple(
                box(walks[n][i][0] + jitter[n, i][0], walks[n][i][1] + jitter[n, i][1])
                for n in range(faces)
                if (n, i) not in missing
            ),
        )
        for i in range(0, frames, stride)
    ]
    plan = build_plan(looked)
    for n in range(faces):
        seen = [f.index for f in looked if (n, f.index) not in missing]
        for i in range(seen[0], seen[-1] + 1):
            assert covered(box(*walks[n][i]), plan.boxes_at(i, i / FPS)) >= 0.75, (n, i)


def _random_walk(rng: random.Random, frames: int) -> list[tuple[float, float]]:
    x, y = rng.uniform(100, 1100), rng.uniform(100, 600)
    vx, vy = rng.uniform(-6, 6), rng.uniform(-3, 3)
    points = []
    for _ in range(frames):
        points.append((x, y))
        vx = max(-8.0, min(8.0, vx + rng.uniform(-0.5, 0.5)))
        vy = max(-4.0, min(4.0, vy + rng.uniform(-0.3, 0.3)))
        x, y = x + vx, y + vy
    return points


def _misses(rng: random.Random, frames: int) -> set[int]:
    misses: set[int] = set()
    for _ in range(rng.randint(0, 3)):
        start = rng.randint(5, frames - 15)
        misses.update(range(start, start + rng.randint(1, 10)))
    return misses


def test_a_lone_box_is_hidden_as_far_as_the_skipped_frames_around_it_only() -> None:
    # Looked at every 3rd frame; a box seen once at frame 30 (a false one, mostly).
    frames = [
        FrameSightings(i, i / FPS, (box(300, 300),) if i == 30 else ()) for i in range(0, 90, 3)
    ]
    plan = build_plan(frames)
    hidden = [i for i in range(90) if plan.boxes_at(i, i / FPS)]
    assert hidden == [27, 28, 29, 30, 31, 32, 33]  # to the looked-at frames around it
    # A track seen for a long time gets the whole roll.
    long = build_plan(sightings([linear(300, 300, 0.0)], 90, seen=lambda _, i: 30 <= i <= 60))
    roll = round(long.settings.pre_roll_s * FPS)
    assert [i for i in range(90) if long.boxes_at(i, i / FPS)] == list(range(30 - roll, 61 + roll))


# Coasting: a camera zooming out about the frame's centre over 3 s, a face that shrinks
# from 60 px to 33 px with it and is detected only while at least 45 px tall.
CENTRE = (640.0, 360.0)


def _zoom(i: int) -> float:
    return 0.98**i


def _zoomed_face(i: int) -> Face:
    s = _zoom(i)
    cx, cy = CENTRE[0] + 200 * s, CENTRE[1] - 100 * s
    return box(cx, cy, SIZE * s)


def _camera(j: int, i: int) -> CameraMotion:
    """The zoom's motion from frame j to frame i."""
    scale = _zoom(i) / _zoom(j)
    return CameraMotion(scale, CENTRE[0] * (1 - scale), CENTRE[1] * (1 - scale))


def _zoom_sightings(
    frames: int, seen: Callable[[int], bool], unknown: frozenset[int] = frozenset()
) -> list[FrameSightings]:
    looked = range(0, frames, 3)
    return [
        FrameSightings(
            i,
            i / FPS,
            (_zoomed_face(i),) if seen(i) else (),
            motion=None if i == 0 or i in unknown else _camera(i - 3, i),
        )
        for i in looked
    ]


def _large(i: int) -> bool:
    return _zoomed_face(i).height >= 45


def test_a_face_lost_as_the_camera_zooms_out_stays_hidden_by_the_camera_motion() -> None:
    frames = _zoom_sightings(90, _large)
    assert max(f.index for f in frames if f.faces) < 15  # lost after half a second
    plan = build_plan(frames, TrackSettings(coast_s=3.0))
    assert plan.tracks == 1
    for i in range(90):
        assert covered(_zoomed_face(i), plan.boxes_at(i, i / FPS)) >= 0.95, i
    # Without coasting, the face is exposed once the roll ends.
    plain = build_plan(frames, TrackSettings(coast_s=0))
    assert covered(_zoomed_face(60), plain.boxes_at(60, 60 / FPS)) == 0


def test_a_face_found_only_once_zoomed_in_is_hidden_before_by_the_camera_motion() -> None:
    # The same zoom played backwards: the camera zooms in, the face is found late.
    def face(i: int) -> Face:
        return _zoomed_face(89 - i)

    looked = range(0, 90, 3)
    frames = [
        FrameSightings(
            i,
            i / FPS,
            (face(i),) if face(i).height >= 45 else (),
            motion=None if i == 0 else _camera(89 - (i - 3), 89 - i),
        )
        for i in looked
    ]
    assert min(f.index for f in frames if f.faces) > 70
    plan = build_plan(frames)
    for i in range(90):
        assert covered(face(i), plan.boxes_at(i, i / FPS)) >= 0.95, i


def test_coasting_is_bounded_in_time_and_stops_where_the_motion_is_unknown() -> None:
    frames = _zoom_sightings(240, _large)
    settings = TrackSettings(coast_s=2.0)
    plan = build_plan(frames, settings)
    last_seen = max(f.index for f in frames if f.faces)
    end = last_seen + round((settings.coast_s + settings.post_roll_s) * FPS)
    assert plan.boxes_at(end - 3, (end - 3) / FPS)
    assert not plan.boxes_at(end + 4, (end + 4) / FPS)
    # The motion unknown at frame 30 (a blurred frame): coasting stops at 27, then the roll.
    stopped = build_plan(_zoom_sightings(240, _large, unknown=frozenset({30})))
    roll = round(settings.post_roll_s * FPS)
    assert stopped.boxes_at(27 + roll, (27 + roll) / FPS)
    assert not stopped.boxes_at(27 + roll + 2, (27 + roll + 2) / FPS)


def test_coasting_adds_a_box_beside_the_rolls_never_instead() -> None:
    # The roll follows the track's velocity, the coast the camera: in the roll, both.
    frames = _zoom_sightings(90, _large)
    coasted, plain = build_plan(frames), build_plan(frames, TrackSettings(coast_s=0))
    for i in range(90):
        boxes = {h.face for h in coasted.boxes_at(i, i / FPS)}
        assert {h.face for h in plain.boxes_at(i, i / FPS)} <= boxes, i


def test_a_lone_box_does_not_coast_and_a_cut_stops_coasting() -> None:
    lone = build_plan(_zoom_sightings(90, lambda i: i == 6))
    assert [i for i in range(90) if lone.boxes_at(i, i / FPS)] == list(range(3, 10))
    cut_at = 42
    frames = [
        replace(f, cut=True, motion=None) if f.index == cut_at else f
        for f in _zoom_sightings(90, _large)
    ]
    plan = build_plan(frames)
    assert plan.boxes_at(cut_at - 3, (cut_at - 3) / FPS)
    assert [i for i in range(cut_at, 90) if plan.boxes_at(i, i / FPS)] == []


def test_a_coasted_plan_survives_a_json_round_trip_and_a_first_format_plan_reads() -> None:
    plan = build_plan(_zoom_sightings(90, _large))
    data = json.loads(plan.to_json())
    assert data["format"] == "imageblur.track-plan/2"
    (track,) = data["tracks"]
    sighted = sum(1 for f in _zoom_sightings(90, _large) if f.faces)
    assert track["coast"][1] > 0 and len(track["keys"]) == sighted + sum(track["coast"])
    again = TrackPlan.from_json(plan.to_json())
    for i in range(90):
        a, b = plan.boxes_at(i, i / FPS), again.boxes_at(i, i / FPS)
        assert len(a) == len(b) >= (i < 60)
        for ha, hb in zip(a, b, strict=True):
            assert (hb.face.x0, hb.face.y1) == pytest.approx((ha.face.x0, ha.face.y1), abs=0.02)
    # A plan stored before coasting (format /1, no `coast`): every key a sighting.
    data["format"] = "imageblur.track-plan/1"
    del track["coast"]
    old = TrackPlan.from_json(json.dumps(data))
    assert old.track_list[0].coast == (0, 0)


def test_a_coasted_box_follows_the_camera_ungrown_and_a_roll_still_grows() -> None:
    frames = _zoom_sightings(90, _large)
    last_seen = max(f.index for f in frames if f.faces)
    plan, grown = build_plan(frames), build_plan(frames, TrackSettings(coast_growth_per_s=0.6))
    at = last_seen + 30  # a second on: coasted, past the sightings' roll
    (box,) = plan.boxes_at(at, at / FPS)
    (bigger,) = grown.boxes_at(at, at / FPS)
    # The camera zooms out: the coasted box shrinks with the face, grown by nothing.
    assert box.face.height == pytest.approx(_zoomed_face(at).height, rel=0.05)
    assert bigger.face.height > 1.2 * box.face.height
    assert covered(_zoomed_face(at), [box]) >= 0.95
    # In the roll after the last sighting both rules show: the rolled box is grown.
    rolled = last_seen + 9
    heights = sorted(h.face.height for h in plan.boxes_at(rolled, rolled / FPS))
    assert len(heights) == 2 and heights[1] > 1.1 * heights[0]
