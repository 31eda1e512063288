"""Seam merging by hand: lesions on a seam, on a corner, in an overlap, on no seam, and groups larger
than the overlap; one detection each."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.inference.merge import Detections, candidate_pairs, cut_flags, merge_detections

SLIDE = (4000.0, 4000.0)


def patch_view(lesion: tuple[float, float, float, float], patch: tuple[float, float, float, float]):
    """What a perfect detector sees of ``lesion`` in ``patch``: the clipped box, or None."""
    x0, y0 = max(lesion[0], patch[0]), max(lesion[1], patch[1])
    x1, y1 = min(lesion[2], patch[2]), min(lesion[3], patch[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def detections_of(lesions: list[tuple], patch: int, overlap: int, label: int = 3) -> Detections:
    stride = patch - overlap
    boxes, cuts = [], []
    for px in range(0, int(SLIDE[0]) - overlap, stride):
        for py in range(0, int(SLIDE[1]) - overlap, stride):
            p = (px, py, min(px + patch, SLIDE[0]), min(py + patch, SLIDE[1]))
            for lesion in lesions:
                seen = patch_view(lesion, p)
                if seen is not None:
                    boxes.append(seen)
                    cuts.append(cut_flags(np.array([seen], float), p, SLIDE, touch=1.0)[0])
    n = len(boxes)
    scores = np.linspace(0.9, 0.6, n)
    probs = np.tile(np.array([0.1, 0.0, 0.0, 0.9, 0.0], np.float32), (n, 1))
    return Detections(np.array(boxes, float), np.full(n, label), scores, probs, np.array(cuts, bool).reshape(-1, 4))


@pytest.mark.parametrize("overlap", [0, 100])
@pytest.mark.parametrize(
    "lesion",
    [
        (300, 300, 360, 350),  # on no seam
        (1170, 500, 1230, 560),  # on a vertical seam: 2 patches
        (500, 1180, 560, 1240),  # on a horizontal seam
        (1180, 1170, 1240, 1230),  # on a corner: 4 patches
        (950, 900, 1450, 1400),  # a group larger than the overlap, over a corner
    ],
)
def test_one_lesion_gives_one_detection_wherever_it_lies(lesion: tuple, overlap: int):
    dets = detections_of([lesion], patch=1200, overlap=overlap)
    merged = merge_detections(dets)
    assert len(merged) == 1, (dets.boxes, merged.boxes)
    assert merged.boxes[0].tolist() == list(lesion)  # fragments fuse back into the whole lesion
    assert merged.scores[0] == pytest.approx(dets.scores.max())
    assert not merged.cuts.any()  # a whole lesion has no cut side left


def test_neighbours_stay_apart():
    # two lesions of one class side by side across a seam, each wholly in its own patch: not merged
    apart = detections_of([(1100, 500, 1190, 560), (1210, 500, 1300, 560)], patch=1200, overlap=0)
    assert len(merge_detections(apart)) == 2
    # the same lesion seen by the seam but of different classes: two detections
    dets = detections_of([(1170, 500, 1230, 560)], patch=1200, overlap=0)
    dets.labels[1] = 2
    assert len(merge_detections(dets)) == 2
    # fragments cut by the seam that do not face each other across it (offset vertically): not merged
    frag = Detections(
        np.array([[1150.0, 100, 1200, 150], [1200, 400, 1260, 450]]), np.array([1, 1]), np.array([0.9, 0.8]),
        np.zeros((2, 5), np.float32), np.array([[0, 0, 1, 0], [1, 0, 0, 0]], bool),
    )  # fmt: skip
    assert len(merge_detections(frag)) == 2


def test_cut_flags_mark_inner_patch_borders_only():
    boxes = np.array([[0.0, 10, 50, 60], [1190, 10, 1200, 60], [10, 1150, 60, 1200]])
    flags = cut_flags(boxes, (0, 0, 1200, 1200), (4000, 1200), touch=1.0)
    # the slide's left and bottom edges are not seams; the patch's right edge is
    assert flags.tolist() == [[False, False, False, False], [False, False, True, False], [False, False, False, False]]


def test_candidate_pairs_sweep_finds_every_close_pair_once():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (200, 2))], axis=1)
    i, j = candidate_pairs(boxes, reach=4.0)
    found = {tuple(sorted(p)) for p in zip(i.tolist(), j.tolist(), strict=True)}
    assert len(found) == len(i)
    brute = {
        (a, b)
        for a in range(200)
        for b in range(a + 1, 200)
        if boxes[b, 0] <= boxes[a, 2] + 4 and boxes[a, 0] <= boxes[b, 2] + 4
    }
    assert found == brute
