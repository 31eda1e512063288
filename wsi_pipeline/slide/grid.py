"""Tiling grids (pure functions): patch positions at a target resolution, mapped to level-0 pixels.

A grid is laid out in *target pixels* (pixels at the target mpp): patch ``i`` covers
``[x_t, x_t + patch) x [y_t, y_t + patch)``. One target pixel spans ``scale = target_mpp / slide_mpp``
level-0 pixels, so the patch's level-0 box is ``round(x_t * scale)`` ... ``round((x_t + patch) * scale)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Edge = Literal["flush", "pad", "drop"]


def axis_positions(length: float, patch: int, stride: int, edge: Edge = "flush") -> list[int]:
    """Start positions (target px) along one axis of ``length`` target px.

    Regular steps of ``stride`` while a whole patch fits; then, if the end is not covered:
    ``flush`` adds a last patch ending exactly at the edge, ``pad`` adds one that runs past the edge
    (read as white glass), ``drop`` adds nothing. A slide shorter than one patch always gets one patch at
    0 (padded), except with ``drop``.
    """
    if patch <= 0 or stride <= 0:
        raise ValueError("patch and stride must be positive")
    limit = math.floor(length)
    if limit < patch:
        return [] if edge == "drop" else [0]
    positions = list(range(0, limit - patch + 1, stride))
    covered = positions[-1] + patch
    if covered < limit:
        if edge == "flush":
            positions.append(limit - patch)
        elif edge == "pad":
            positions.append(positions[-1] + stride)
    return positions


@dataclass(frozen=True)
class Grid:
    """Patch positions of one slide. ``x_t``/``y_t``: target px; ``x0``/``y0``/``w0``/``h0``: level-0 px."""

    patch: int
    scale: float  # level-0 pixels per target pixel
    x_t: np.ndarray
    y_t: np.ndarray
    rows: np.ndarray  # grid row / column index of each patch
    cols: np.ndarray

    def __len__(self) -> int:
        return len(self.x_t)

    @property
    def x0(self) -> np.ndarray:
        return np.rint(self.x_t * self.scale).astype(np.int64)

    @property
    def y0(self) -> np.ndarray:
        return np.rint(self.y_t * self.scale).astype(np.int64)

    @property
    def w0(self) -> np.ndarray:
        return np.rint((self.x_t + self.patch) * self.scale).astype(np.int64) - self.x0

    @property
    def h0(self) -> np.ndarray:
        return np.rint((self.y_t + self.patch) * self.scale).astype(np.int64) - self.y0

    def subset(self, keep: np.ndarray) -> Grid:
        return Grid(self.patch, self.scale, self.x_t[keep], self.y_t[keep], self.rows[keep], self.cols[keep])


def patch_grid(
    width: int,
    height: int,
    slide_mpp: float,
    target_mpp: float,
    patch: int,
    overlap: int = 0,
    edge: Edge = "flush",
) -> Grid:
    """Row-major grid of ``patch`` x ``patch`` patches at ``target_mpp`` over a ``width`` x ``height``
    (level-0) slide scanned at ``slide_mpp``; neighbours share ``overlap`` target pixels."""
    if not 0 <= overlap < patch:
        raise ValueError(f"overlap must be in [0, patch), got {overlap}")
    scale = target_mpp / slide_mpp
    xs = axis_positions(width / scale, patch, patch - overlap, edge)
    ys = axis_positions(height / scale, patch, patch - overlap, edge)
    rr, cc = np.meshgrid(np.arange(len(ys)), np.arange(len(xs)), indexing="ij")
    rows, cols = rr.ravel(), cc.ravel()
    return Grid(
        patch,
        scale,
        np.asarray(xs, np.int64)[cols] if xs else np.zeros(0, np.int64),
        np.asarray(ys, np.int64)[rows] if ys else np.zeros(0, np.int64),
        rows.astype(np.int64),
        cols.astype(np.int64),
    )
