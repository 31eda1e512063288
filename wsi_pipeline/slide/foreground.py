"""Cell foreground for liquid-based cytology: sparse cells on bright glass, not H&E tissue.

Computed on a low-resolution thumbnail (``mask_mpp`` microns per pixel), **band by band**, so memory is
bounded by a band of rows and a 4x coarser glass field, never by the slide's area:

1. the glass level is estimated locally at 1/4 of the thumbnail (4 x 4 block means, a 3x3 median
   against JPEG ringing, a max filter over ``glass_window_um``, wider than any cell, then smoothed),
   which flattens illumination drift and vignetting; it never drops below 85% of the slide's brightest
   glass, so large dense clusters are not mistaken for glass. This coarse field is the one whole-slide
   array (a first pass over the bands builds it);
2. a pixel is stained when its optical density above glass (max over channels) exceeds
   ``od_threshold`` or its HSV saturation exceeds ``saturation_threshold``;
3. morphology: an opening removes dust-sized specks, a dilation by ``dilate_um`` joins a cell's parts
   and adds a margin, components smaller than ``min_object_um2`` are dropped.

Each band is computed with a margin of rows above and below wide enough for the morphology and for the
component-size test (a component cut by the margin's edge spans more rows than the smallest kept
object has pixels), so the mask is the same whatever the band height (a tested invariant).
Patch foreground fractions come from summed-area tables, so any number of patches costs O(1) each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from wsi_pipeline.config import ForegroundConfig

POOL = 4  # the glass field is this much coarser than the thumbnail, per side
ReadRows = Callable[[int, int], np.ndarray]  # (y0, y1) -> RGB uint8 rows (y1 - y0, width, 3) of the thumbnail


def foreground_mask(thumb: np.ndarray, mpp: float, params: ForegroundConfig | None = None) -> np.ndarray:
    """Boolean ``(h, w)`` mask of cellular material in an RGB thumbnail at ``mpp`` microns per pixel
    (``params``: ``tile.foreground``, its defaults when ``None``)."""
    h, w = thumb.shape[:2]
    bands = foreground_bands(lambda y0, y1: thumb[y0:y1], w, h, mpp, params, band_rows=h)
    return np.concatenate([mask for _, _, mask in bands], axis=0)


def foreground_bands(
    read: ReadRows, width: int, height: int, mpp: float, params: ForegroundConfig | None = None, band_rows: int = 0
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The foreground of a ``width`` x ``height`` thumbnail that ``read`` serves by rows, as
    ``(y0, rgb, mask)`` bands from top to bottom: ``rgb`` (rows, width, 3) uint8 and ``mask`` (rows, width)
    bool. ``band_rows``: rows per band, rounded up to a multiple of :data:`POOL` (0: about a megapixel)."""
    params = params or ForegroundConfig()
    pool = POOL if min(height, width) >= 16 * POOL else 1
    band_rows = _round_up(band_rows or max(64, 1_000_000 // max(width, 1)), pool)
    field = GlassField.measure(read, width, height, mpp, pool, params.glass_window_um, band_rows)
    radius = max(1, round(params.dilate_um / mpp))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    min_px = params.min_object_um2 / (mpp * mpp)
    settle = 3 + radius  # rows at a cut edge that the opening and dilation get wrong
    margin = settle + math.ceil(min_px) + 1
    for y0 in range(0, height, band_rows):
        y1 = min(y0 + band_rows, height)
        e0, e1 = max(0, y0 - margin), min(height, y1 + margin)
        rgb = read(e0, e1)
        mask = stained(rgb, field.rows(e0, e1), params)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
        mask = cv2.dilate(mask, disk)
        v0 = e0 if e0 == 0 else e0 + settle  # the rows computed exactly; components judged within them
        v1 = e1 if e1 == height else e1 - settle
        kept = drop_small_objects(mask[v0 - e0 : v1 - e0], min_px)
        yield y0, rgb[y0 - e0 : y1 - e0], kept[y0 - v0 : y1 - v0]


def stained(rgb: np.ndarray, glass: Iterator[np.ndarray], params: ForegroundConfig) -> np.ndarray:
    """``(h, w)`` uint8: 1 where the optical density above ``glass`` (per channel ``(h, w)`` float32
    planes) exceeds ``od_threshold`` or the HSV saturation exceeds ``saturation_threshold``."""
    darkest = None  # min over channels of (pixel + 1) / (glass + 1): one (h, w) plane at a time, not (h, w, 3)
    for c, plane in enumerate(glass):
        plane += 1.0
        ratio = rgb[..., c].astype(np.float32)
        ratio += 1.0
        ratio /= plane
        del plane
        darkest = ratio if darkest is None else np.minimum(darkest, ratio, out=darkest)
    np.clip(darkest, 1e-3, 1.0, out=darkest)
    od = np.log(darkest, out=darkest)
    od *= -1.0  # max over channels of the optical density above glass
    mask = (od > params.od_threshold).astype(np.uint8)
    del od, darkest
    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    mask |= (sat > params.saturation_threshold * 255.0).astype(np.uint8)
    return mask


def drop_small_objects(mask: np.ndarray, min_px: float) -> np.ndarray:
    """Boolean copy of the uint8 ``mask`` without 8-connected components of fewer than ``min_px`` pixels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    return keep[labels]


@dataclass(frozen=True)
class GlassField:
    """Brightness of empty glass: ``local`` ``(ceil(h / pool), ceil(w / pool), 3)`` float32 at ``pool``
    thumbnail pixels per pixel, and ``floor`` (3,): 85% of the slide's brightest glass, per channel."""

    local: np.ndarray
    floor: np.ndarray
    pool: int
    width: int

    @classmethod
    def measure(
        cls, read: ReadRows, width: int, height: int, mpp: float, pool: int, window_um: float, band_rows: int
    ) -> GlassField:
        """One pass over the thumbnail's bands (``band_rows`` a multiple of ``pool``)."""
        pooled = np.concatenate([block_mean(read(y, min(y + band_rows, height)), pool)
                                 for y in range(0, height, band_rows)], axis=0)  # fmt: skip
        pooled = cv2.medianBlur(pooled, 3)  # isolated bright outliers (ringing, hot pixels) cannot pose as glass
        k = max(3, round(window_um / (mpp * pool)) | 1)
        local = cv2.dilate(pooled, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(np.float32)
        local = cv2.GaussianBlur(local, (0, 0), k / 2)
        brightest = [max(float(np.percentile(pooled[..., c], 99)), 180.0) for c in range(3)]
        return cls(local, 0.85 * np.asarray(brightest, np.float32), pool, width)

    def rows(self, y0: int, y1: int) -> Iterator[np.ndarray]:
        """The glass level of thumbnail rows ``[y0, y1)``: one ``(y1 - y0, width)`` float32 plane per channel.
        Bilinear upsampling by exactly ``pool`` from a slice one coarse row wider on each side, so a band
        gets the values the whole upsampled field would have."""
        p = self.pool
        s0, s1 = max(0, y0 // p - 1), min(self.local.shape[0], -(-y1 // p) + 1)
        for c in range(3):
            coarse = np.ascontiguousarray(self.local[s0:s1, :, c])
            fine = cv2.resize(coarse, (coarse.shape[1] * p, coarse.shape[0] * p), interpolation=cv2.INTER_LINEAR)
            plane = np.ascontiguousarray(fine[y0 - s0 * p : y1 - s0 * p, : self.width])
            yield np.maximum(plane, self.floor[c], out=plane)


def block_mean(rgb: np.ndarray, f: int) -> np.ndarray:
    """``(ceil(h / f), ceil(w / f), ...)``: means of ``f`` x ``f`` blocks of a uint8 image (edges padded by
    replication to a multiple of ``f``, so a block at the border averages what it has)."""
    if f == 1:
        return rgb
    h, w = rgb.shape[:2]
    pad = ((0, -h % f), (0, -w % f)) + ((0, 0),) * (rgb.ndim - 2)
    padded = np.pad(rgb, pad, mode="edge") if (h % f or w % f) else rgb
    return cv2.resize(padded, (padded.shape[1] // f, padded.shape[0] // f), interpolation=cv2.INTER_AREA)


def _round_up(n: int, f: int) -> int:
    return max(f, -(-n // f) * f)


def region_fractions(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Fraction of ``True`` pixels of ``mask`` inside each box ``(n, 4)`` xyxy in mask pixels.

    Boxes are clipped to the mask; the fraction is over the whole box area (outside counts as empty).
    """
    return (region_counts(mask, boxes) / box_areas(boxes)).astype(np.float32)


def region_counts(band: np.ndarray, boxes: np.ndarray, row0: int = 0) -> np.ndarray:
    """``(n,)`` int64: ``True`` pixels of ``band`` inside each box ``(n, 4)`` xyxy, where ``band`` holds rows
    ``[row0, row0 + rows)`` of a mask in whose pixels the boxes are given. Summed over a mask's bands, the
    counts are those of the whole mask."""
    # int32 counts are exact up to 2^31 pixels per band and a third of int64's memory
    dtype = np.int32 if band.size < 2**31 else np.int64
    h, w = band.shape
    sat = np.zeros((h + 1, w + 1), dtype)
    np.cumsum(band, axis=0, dtype=dtype, out=sat[1:, 1:])
    np.cumsum(sat[1:, 1:], axis=1, out=sat[1:, 1:])
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0 = np.clip(np.floor(b[:, 0]), 0, w).astype(np.int64)
    y0 = np.clip(np.floor(b[:, 1]) - row0, 0, h).astype(np.int64)
    x1 = np.clip(np.ceil(b[:, 2]), 0, w).astype(np.int64)
    y1 = np.clip(np.ceil(b[:, 3]) - row0, 0, h).astype(np.int64)
    return (sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]).astype(np.int64)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """``(n,)`` pixel areas of boxes ``(n, 4)`` xyxy after rounding outwards to whole pixels (at least 1)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.maximum((np.ceil(b[:, 2]) - np.floor(b[:, 0])) * (np.ceil(b[:, 3]) - np.floor(b[:, 1])), 1)


def qc_overlay(thumb: np.ndarray, mask: np.ndarray, kept: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """Thumbnail with the foreground tinted green, kept patches outlined blue, dropped ones grey.

    ``kept``/``dropped``: ``(n, 4)`` xyxy boxes in thumbnail pixels.
    """
    out = thumb.copy()
    tinted = cv2.addWeighted(thumb, 0.55, np.full_like(thumb, (40, 200, 60)), 0.45, 0.0)  # uint8, no float copy
    np.copyto(out, tinted, where=mask[..., None])
    del tinted
    for boxes, colour in ((dropped, (170, 170, 170)), (kept, (20, 60, 230))):
        for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
            cv2.rectangle(out, (int(x0), int(y0)), (max(int(x1) - 1, int(x0)), max(int(y1) - 1, int(y0))), colour, 1)
    return out
