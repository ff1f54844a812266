"""Tracking: a face hidden between, before and after its sightings, never across a cut."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence

import pytest

from imageblur.domain import Face
from imageblur.video.sightings import FrameSightings, HiddenBox, PerFramePlan
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
