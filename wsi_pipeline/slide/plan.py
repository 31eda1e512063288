"""Which patches of a slide hold cells: the grid at a target resolution, filtered by cell foreground.

``tile``, ``infer`` and ``mine`` plan a slide the same way: a grid of ``patch`` x ``patch`` patches at
``target_mpp`` (neighbours sharing ``overlap`` pixels), each kept when the cell-foreground fraction of its
area on a low-resolution mask reaches ``min_foreground``.

The mask is computed and counted band by band (:func:`~wsi_pipeline.slide.foreground.foreground_bands`)
and never held whole: what the plan keeps of it is a preview at most :data:`PREVIEW_PX` pixels per side
(for QC images and reports), so planning a 10-gigapixel slide needs about the memory of a small one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsi_pipeline.config import ForegroundConfig
from wsi_pipeline.slide.foreground import POOL, block_mean, box_areas, foreground_bands, region_counts
from wsi_pipeline.slide.grid import Edge, Grid, patch_grid
from wsi_pipeline.slide.reader import SlideReader

PREVIEW_PX = 4096  # longest side of the plan's preview; the mask resolution is shrunk by a whole factor to fit


@dataclass(frozen=True)
class PatchPlan:
    """``grid``: every patch; ``fractions`` (n,): their foreground fractions; ``keep`` (n,) bool;
    ``preview`` (h, w, 3) uint8 and ``preview_mask`` (h, w) bool: the slide and its foreground at
    ``preview_mpp`` (for QC images and reports); ``foreground_mm2``: the cell-foreground area of the slide."""

    grid: Grid
    fractions: np.ndarray
    keep: np.ndarray
    preview: np.ndarray
    preview_mask: np.ndarray
    preview_mpp: float
    foreground_mm2: float
    slide_mpp: float

    @property
    def kept(self) -> Grid:
        return self.grid.subset(self.keep)

    @property
    def boxes_preview(self) -> np.ndarray:
        """``(n, 4)`` xyxy: every patch in preview pixels."""
        return _boxes(self.grid) * (self.slide_mpp / self.preview_mpp)


def plan_patches(
    reader: SlideReader,
    target_mpp: float,
    patch: int,
    overlap: int,
    edge: Edge,
    foreground: ForegroundConfig,
    min_foreground: float,
    band_rows: int = 0,
) -> PatchPlan:
    """The grid over the slide and which of its patches hold enough cells (``band_rows``: mask rows per
    band, 0 for about a megapixel; the result does not depend on it)."""
    info, mpp = reader.info, reader.require_mpp()
    grid = patch_grid(info.width, info.height, mpp, target_mpp, patch, overlap, edge)
    mask_mpp = foreground.mask_mpp
    scale = mask_mpp / mpp  # level-0 pixels per mask pixel
    width, height = max(1, math.ceil(info.width / scale)), max(1, math.ceil(info.height / scale))
    shrink = max(1, math.ceil(max(width, height) / PREVIEW_PX))
    unit = POOL * shrink  # bands hold whole blocks of the glass field and of the preview
    band_rows = -(-(band_rows or max(64, 1_000_000 // width)) // unit) * unit

    def read(y0: int, y1: int) -> np.ndarray:
        return reader.read_region(0, y0 * scale, width, y1 - y0, mask_mpp)

    boxes = _boxes(grid) / scale
    inside = np.zeros(len(grid), np.int64)
    cells = 0
    previews, preview_masks = [], []
    for y0, rgb, mask in foreground_bands(read, width, height, mask_mpp, foreground, band_rows):
        inside += region_counts(mask, boxes, y0)
        cells += int(np.count_nonzero(mask))
        previews.append(block_mean(rgb, shrink))
        preview_masks.append(block_mean(mask.view(np.uint8) * np.uint8(255), shrink) >= 128)
    fractions = (inside / box_areas(boxes)).astype(np.float32)
    return PatchPlan(
        grid, fractions, fractions >= min_foreground, np.concatenate(previews), np.concatenate(preview_masks),
        mask_mpp * shrink, cells * (mask_mpp / 1000.0) ** 2, mpp,
    )  # fmt: skip


def _boxes(grid: Grid) -> np.ndarray:
    return np.stack([grid.x0, grid.y0, grid.x0 + grid.w0, grid.y0 + grid.h0], axis=1).astype(np.float64)
