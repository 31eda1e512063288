"""Value types shared by the stages, and the coordinate convention.

Coordinate convention
---------------------
* Every coordinate that crosses a module boundary is in **level-0 pixels** of the slide it belongs
  to, unless the name says otherwise (``patch_box`` is in patch pixels, ``thumb_xy`` in thumbnail pixels).
* Boxes are ``xyxy``: ``(x0, y0, x1, y1)`` with ``x0 <= x1``, ``y0 <= y1``; ``x1``/``y1`` are
  exclusive, so width is ``x1 - x0``. Pixel ``(i, j)`` (row ``i``, column ``j``) covers
  ``[j, j + 1) x [i, i + 1)``.
* A physical size needs the microns-per-pixel (``mpp``) of level 0; whatever stores coordinates on disk
  (GeoJSON, COCO, manifests) stores the mpp next to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``(x0, y0, x1, y1)`` in level-0 pixels (x1, y1 exclusive)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        if not (self.x0 <= self.x1 and self.y0 <= self.y1):
            raise ValueError(f"invalid box {self.xyxy}: need x0 <= x1 and y0 <= y1")

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    def shift(self, dx: float, dy: float) -> Box:
        """The same box in a frame whose origin is at ``(-dx, -dy)`` of this one."""
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)

    def intersect(self, other: Box) -> Box | None:
        """Intersection, or ``None`` when the boxes do not overlap with positive area."""
        x0, y0 = max(self.x0, other.x0), max(self.y0, other.y0)
        x1, y1 = min(self.x1, other.x1), min(self.y1, other.y1)
        if x1 <= x0 or y1 <= y0:
            return None
        return Box(x0, y0, x1, y1)

    def contains(self, other: Box) -> bool:
        return self.x0 <= other.x0 and self.y0 <= other.y0 and other.x1 <= self.x1 and other.y1 <= self.y1

    @staticmethod
    def union(boxes: list[Box]) -> Box:
        """Smallest box containing all ``boxes`` (at least one)."""
        if not boxes:
            raise ValueError("union of no boxes")
        return Box(
            min(b.x0 for b in boxes),
            min(b.y0 for b in boxes),
            max(b.x1 for b in boxes),
            max(b.y1 for b in boxes),
        )


@dataclass(frozen=True)
class Annotation:
    """One labeled lesion: a box (level-0 pixels unless stated) and a taxonomy class code."""

    box: Box
    label: str
    properties: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ImageBoxes:
    """The boxes of one image, patch or slide: detections (with ``scores``) or ground truth (with
    ``ignore``, COCO ``iscrowd``), as numpy arrays.

    ``boxes`` is ``(n, 4)`` xyxy in ``frame`` pixels: ``"patch"`` (the image's own pixels, as in COCO
    files) or ``"level0"`` (the slide's level-0 pixels); ``mpp`` is that frame's resolution when known.
    ``labels`` ``(n,)`` are lesion class ids (:mod:`wsi_pipeline.taxonomy`).
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None
    ignore: np.ndarray | None = None
    frame: Literal["patch", "level0"] = "patch"
    mpp: float | None = None

    @staticmethod
    def empty(frame: Literal["patch", "level0"] = "patch", mpp: float | None = None) -> ImageBoxes:
        return ImageBoxes(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool), frame, mpp)
