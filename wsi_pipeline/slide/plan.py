"""Which patches of a slide hold cells: the grid at a target resolution, filtered by cell foreground.

``tile``, ``infer`` and ``mine`` plan a slide the same way: a grid of ``patch`` x ``patch`` patches at
``target_mpp`` (neighbours sharing ``overlap`` pixels), each kept when the cell-foreground fraction of its
area on a low-resolution mask reaches ``min_foreground``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_pipeline.config import ForegroundConfig
from wsi_pipeline.slide.foreground import foreground_mask, region_fractions
from wsi_pipeline.slide.grid import Edge, Grid, patch_grid
from wsi_pipeline.slide.reader import SlideReader


@dataclass(frozen=True)
class PatchPlan:
    """``grid``: every patch; ``fractions`` (n,): their foreground fractions; ``keep`` (n,) bool; ``thumb`` and
    ``mask`` at ``mask_mpp`` (for QC images and reports); ``boxes_mask`` (n, 4): patches in mask pixels."""

    grid: Grid
    fractions: np.ndarray
    keep: np.ndarray
    thumb: np.ndarray
    mask: np.ndarray
    mask_mpp: float
    boxes_mask: np.ndarray

    @property
    def kept(self) -> Grid:
        return self.grid.subset(self.keep)

    @property
    def foreground_mm2(self) -> float:
        """Cell-foreground area of the whole slide in mm^2."""
        return float(self.mask.sum()) * (self.mask_mpp / 1000.0) ** 2


def plan_patches(
    reader: SlideReader,
    target_mpp: float,
    patch: int,
    overlap: int,
    edge: Edge,
    foreground: ForegroundConfig,
    min_foreground: float,
) -> PatchPlan:
    """The grid over the slide and which of its patches hold enough cells."""
    info, mpp = reader.info, reader.require_mpp()
    grid = patch_grid(info.width, info.height, mpp, target_mpp, patch, overlap, edge)
    thumb = reader.thumbnail(foreground.mask_mpp)
    mask = foreground_mask(thumb, foreground.mask_mpp, foreground)
    to_mask = mpp / foreground.mask_mpp  # mask pixels per level-0 pixel
    boxes = np.stack([grid.x0, grid.y0, grid.x0 + grid.w0, grid.y0 + grid.h0], axis=1) * to_mask
    fractions = region_fractions(mask, boxes) if len(grid) else np.zeros(0, np.float32)
    return PatchPlan(grid, fractions, fractions >= min_foreground, thumb, mask, foreground.mask_mpp, boxes)
