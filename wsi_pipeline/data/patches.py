"""Where to cut labeled patches around lesions, and what each patch's labels are (pure functions).

Frames: lesion boxes and windows are in level-0 pixels; :func:`crop_annotations` returns boxes in
patch pixels (window origin subtracted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_pipeline.types import Annotation, Box


@dataclass(frozen=True)
class PatchLabel:
    """A box in patch pixels; ``ignore`` marks a lesion cut by the patch edge (COCO ``iscrowd=1``)."""

    box: Box
    label: str
    ignore: bool


def clamp_window(x0: float, y0: float, size: int, width: int, height: int) -> Box:
    """A ``size`` x ``size`` window at ``(x0, y0)`` shifted to lie inside the slide (clipped if larger)."""
    x = min(max(x0, 0.0), max(width - size, 0))
    y = min(max(y0, 0.0), max(height - size, 0))
    x, y = round(x), round(y)
    return Box(x, y, min(x + size, width), min(y + size, height))


def plan_lesion_windows(
    boxes: list[Box], width: int, height: int, size: int, rng: np.random.Generator, jitter: float
) -> list[Box]:
    """Windows covering every lesion box at least once.

    Lesions are visited top-left first; one not yet fully inside a planned window gets a new window
    with the lesion placed at a random offset (``jitter`` in [0, 1] of the free room around it), so
    lesions do not always sit at the patch centre.
    """
    windows: list[Box] = []
    for box in sorted(boxes, key=lambda b: (b.y0, b.x0)):
        if any(w.contains(box) for w in windows):
            continue
        free_x, free_y = max(size - box.width, 0.0), max(size - box.height, 0.0)
        off_x = free_x / 2 * (1 + jitter * rng.uniform(-1, 1))
        off_y = free_y / 2 * (1 + jitter * rng.uniform(-1, 1))
        x0 = box.x0 - off_x if box.width <= size else box.center[0] - size / 2
        y0 = box.y0 - off_y if box.height <= size else box.center[1] - size / 2
        windows.append(clamp_window(x0, y0, size, width, height))
    return windows


def crop_annotations(annotations: list[Annotation], window: Box, min_visible: float) -> list[PatchLabel]:
    """Annotations overlapping ``window``, clipped and shifted into patch pixels.

    A box keeps its label when at least ``min_visible`` of its area is inside; less visible boxes are
    returned with ``ignore=True`` so that training and evaluation neither reward nor punish them.
    """
    out: list[PatchLabel] = []
    for ann in annotations:
        inter = ann.box.intersect(window)
        if inter is None:
            continue
        visible = inter.area / ann.box.area if ann.box.area > 0 else 1.0
        out.append(PatchLabel(inter.shift(-window.x0, -window.y0), ann.label, visible < min_visible))
    return out


def sample_negative_window(
    boxes: list[Box],
    width: int,
    height: int,
    size: int,
    rng: np.random.Generator,
    taken: list[Box] = (),  # type: ignore[assignment]
    max_shared: float = 0.25,
    tries: int = 50,
) -> Box | None:
    """A random window that touches no lesion box and shares at most ``max_shared`` of its area with
    any window in ``taken``; ``None`` after ``tries`` attempts."""
    for _ in range(tries):
        win = clamp_window(
            rng.uniform(0, max(width - size, 0)), rng.uniform(0, max(height - size, 0)), size, width, height
        )
        if any(b.intersect(win) is not None for b in boxes):
            continue
        if all((o := t.intersect(win)) is None or o.area <= max_shared * win.area for t in taken):
            return win
    return None
