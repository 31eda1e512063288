"""Seam merging: one detection per lesion across overlapping or touching patches (pure numpy).

Whole slides are predicted patch by patch, so a lesion on a seam is seen twice (in the overlap) or in
pieces (cut by the patch border, possibly into four at a corner, and groups such as AGC sheets or HSIL
syncytia may be larger than the overlap). Detections are in level-0 pixels and carry *cut flags*: which
sides of their box lie on a border of their patch that is not the slide's edge (``[left, top, right,
bottom]``). Two detections of the same class belong to one lesion when

1. they overlap by intersection over the smaller box >= ``ios`` (a duplicate in the overlap, or a fragment
   inside a whole view), or
2. they are the two sides of one cut: the first is cut on its right (bottom) side, the second on its left
   (top) side, the gap between them along that axis is at most ``gap`` pixels, and across the seam their
   extents overlap by at least ``ios`` of the shorter one.

Groups are connected components of these pairs, so fragments chain across seams and corners. A group
becomes the union of its members' boxes, the best member's score and class probabilities, and the union
of the cut flags that remain on its outside (those are what a later merge across block borders uses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEFT, TOP, RIGHT, BOTTOM = range(4)


@dataclass
class Detections:
    """Columnar detections: ``boxes`` (n, 4) xyxy level-0 pixels, ``labels`` (n,) lesion class ids,
    ``scores`` (n,), ``probs`` (n, K) class probabilities (column 0: background), ``cuts`` (n, 4) bool."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    probs: np.ndarray
    cuts: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    @staticmethod
    def empty(num_probs: int) -> Detections:
        return Detections(
            np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, num_probs), np.float32),
            np.zeros((0, 4), bool),
        )  # fmt: skip

    def take(self, index: np.ndarray) -> Detections:
        return Detections(
            self.boxes[index], self.labels[index], self.scores[index], self.probs[index], self.cuts[index]
        )

    @staticmethod
    def concat(parts: list[Detections], num_probs: int) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections.empty(num_probs)
        return Detections(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.probs for p in parts]),
            np.concatenate([p.cuts for p in parts]),
        )


def cut_flags(
    boxes: np.ndarray, patch: tuple[float, float, float, float], slide: tuple[float, float], touch: float
) -> np.ndarray:
    """``(n, 4)`` flags: box sides within ``touch`` pixels of a side of ``patch`` (level-0 xyxy) that is not
    on the slide's edge (``slide`` = level-0 width, height)."""
    x0, y0, x1, y1 = patch
    width, height = slide
    inner = np.array([x0 > 0, y0 > 0, x1 < width, y1 < height])
    near = np.stack(
        [boxes[:, 0] <= x0 + touch, boxes[:, 1] <= y0 + touch, boxes[:, 2] >= x1 - touch, boxes[:, 3] >= y1 - touch],
        axis=1,
    )
    return near & inner


def candidate_pairs(boxes: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i != j`` once each, of boxes whose x-extents come within ``reach`` pixels
    (a sweep over boxes sorted by x0: no n x n matrix)."""
    order = np.argsort(boxes[:, 0], kind="stable")
    x0 = boxes[order, 0]
    ends = np.searchsorted(x0, boxes[order, 2] + reach, side="right")
    starts = np.arange(len(order)) + 1
    counts = np.maximum(ends - starts, 0)
    first = np.repeat(np.arange(len(order)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    second = np.repeat(starts, counts) + offsets
    return order[first], order[second]


def _overlap_1d(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """Overlap of intervals over the shorter one's length (0 where one is empty)."""
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)
    shorter = np.minimum(a1 - a0, b1 - b0)
    return np.where(shorter > 0, inter / np.where(shorter > 0, shorter, 1), 0.0)


def same_lesion(d: Detections, i: np.ndarray, j: np.ndarray, ios: float, gap: float) -> np.ndarray:
    """Which candidate pairs ``(i, j)`` belong to one lesion (module docstring)."""
    a, b = d.boxes[i], d.boxes[j]
    same = d.labels[i] == d.labels[j]
    ox = _overlap_1d(a[:, 0], a[:, 2], b[:, 0], b[:, 2])
    oy = _overlap_1d(a[:, 1], a[:, 3], b[:, 1], b[:, 3])
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    smaller = np.minimum(area_a, area_b)
    overlap = np.where(smaller > 0, iw * ih / np.where(smaller > 0, smaller, 1), 0.0) >= ios
    ca, cb = d.cuts[i], d.cuts[j]

    def seam(first: np.ndarray, second: np.ndarray, cut_a: np.ndarray, cut_b: np.ndarray, axis: int) -> np.ndarray:
        # first's far side (x1 or y1) meets second's near side (x0 or y0) within gap, both cut there
        meet = np.abs(second[:, axis] - first[:, axis + 2]) <= gap
        meet |= (second[:, axis] < first[:, axis + 2]) & (second[:, axis + 2] > first[:, axis + 2])  # overlapping cut
        across = oy if axis == 0 else ox
        return cut_a & cut_b & meet & (across >= ios)

    far, near = (RIGHT, LEFT), (BOTTOM, TOP)
    cut_pair = np.zeros(len(i), bool)
    for axis, (f, n) in zip((0, 1), (far, near), strict=True):
        cut_pair |= seam(a, b, ca[:, f], cb[:, n], axis) | seam(b, a, cb[:, f], ca[:, n], axis)
    return same & (overlap | cut_pair)


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes given edges ``(i, j)`` (union-find)."""
    parent = np.arange(n)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(x) for x in range(n)], np.int64)


def merge_detections(d: Detections, ios: float = 0.5, gap: float = 4.0) -> Detections:
    """One detection per group of detections of one lesion (module docstring), sorted by falling score."""
    if len(d) < 2:
        return d
    i, j = candidate_pairs(d.boxes, gap)
    keep = same_lesion(d, i, j, ios, gap)
    groups = _components(len(d), i[keep], j[keep])
    order = np.lexsort((-d.scores, groups))  # by group, best first
    groups_sorted = groups[order]
    first = np.flatnonzero(np.r_[True, groups_sorted[1:] != groups_sorted[:-1]])
    best = order[first]
    starts = first
    boxes = np.stack(
        [
            np.minimum.reduceat(d.boxes[order, 0], starts),
            np.minimum.reduceat(d.boxes[order, 1], starts),
            np.maximum.reduceat(d.boxes[order, 2], starts),
            np.maximum.reduceat(d.boxes[order, 3], starts),
        ],
        axis=1,
    )
    # a side of the union stays cut when a member that reaches that side was cut there
    cuts = np.zeros((len(best), 4), bool)
    member_group = np.repeat(np.arange(len(best)), np.diff(np.r_[starts, len(order)]))
    members = order
    for side in (LEFT, TOP, RIGHT, BOTTOM):  # box column == side index (x0, y0, x1, y1)
        at_side = np.isclose(d.boxes[members, side], boxes[member_group, side])
        np.logical_or.at(cuts[:, side], member_group, at_side & d.cuts[members, side])
    merged = Detections(boxes, d.labels[best], d.scores[best], d.probs[best], cuts)
    return merged.take(np.argsort(-merged.scores, kind="stable"))
