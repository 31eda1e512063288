"""Cell foreground for liquid-based cytology: sparse cells on bright glass, not H&E tissue.

Computed on a low-resolution thumbnail (``mask_mpp`` microns per pixel):

1. the glass level is estimated locally (block means, a 3x3 median against JPEG ringing, a max
   filter over ``glass_window_um``, wider than any cell, then smoothed), which flattens illumination
   drift and vignetting; it never drops below 85% of the slide's brightest glass, so large dense
   clusters are not mistaken for glass;
2. a pixel is stained when its optical density above glass (max over channels) exceeds
   ``od_threshold`` or its HSV saturation exceeds ``saturation_threshold``;
3. morphology: an opening removes dust-sized specks, a dilation by ``dilate_um`` joins a cell's parts
   and adds a margin, components smaller than ``min_object_um2`` are dropped.

Patch foreground fractions come from a summed-area table, so any number of patches costs O(1) each.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from wsi_pipeline.config import ForegroundConfig


def foreground_mask(thumb: np.ndarray, mpp: float, params: ForegroundConfig | None = None) -> np.ndarray:
    """Boolean ``(h, w)`` mask of cellular material in an RGB thumbnail at ``mpp`` microns per pixel
    (``params``: ``tile.foreground``, its defaults when ``None``)."""
    params = params or ForegroundConfig()
    darkest = None  # min over channels of (pixel + 1) / (glass + 1): one (h, w) plane at a time, not (h, w, 3)
    for c, glass in enumerate(glass_planes(thumb, mpp, params.glass_window_um)):
        glass += 1.0
        ratio = thumb[..., c].astype(np.float32)
        ratio += 1.0
        ratio /= glass
        del glass
        darkest = ratio if darkest is None else np.minimum(darkest, ratio, out=darkest)
    np.clip(darkest, 1e-3, 1.0, out=darkest)
    od = np.log(darkest, out=darkest)
    od *= -1.0  # max over channels of the optical density above glass
    mask = (od > params.od_threshold).astype(np.uint8)
    del od, darkest
    sat = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32)
    sat /= 255.0
    mask |= (sat > params.saturation_threshold).astype(np.uint8)
    del sat
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    radius = max(1, round(params.dilate_um / mpp))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_px = params.min_object_um2 / (mpp * mpp)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    return keep[labels]


def glass_level(rgb: np.ndarray, mpp: float, window_um: float) -> np.ndarray:
    """Per-pixel, per-channel brightness of empty glass ``(h, w, 3)`` float32 (``rgb`` uint8)."""
    return np.stack(list(glass_planes(rgb, mpp, window_um)), axis=-1)


def glass_planes(rgb: np.ndarray, mpp: float, window_um: float) -> Iterator[np.ndarray]:
    """:func:`glass_level` one ``(h, w)`` channel at a time (a third of the memory at full resolution)."""
    # the window is far wider than a pixel: work 4x coarser. Block means and a 3x3 median first, so
    # isolated bright outliers (JPEG ringing beside dark nuclei, hot pixels) cannot pose as glass.
    h, w = rgb.shape[:2]
    f = 4 if min(h, w) >= 64 else 1
    pooled = cv2.resize(rgb, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA) if f > 1 else rgb
    pooled = cv2.medianBlur(pooled, 3)
    k = max(3, round(window_um / (mpp * f)) | 1)
    local = cv2.dilate(pooled, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(np.float32)
    local = cv2.GaussianBlur(local, (0, 0), k / 2)
    brightest = np.maximum(np.percentile(pooled.reshape(-1, 3), 99, axis=0), 180.0).astype(np.float32)
    for c in range(3):  # cv2 resamples channels independently: the same values as resizing all three
        plane = cv2.resize(np.ascontiguousarray(local[..., c]), (w, h), interpolation=cv2.INTER_LINEAR)
        yield np.maximum(plane, 0.85 * brightest[c], out=plane)


def region_fractions(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Fraction of ``True`` pixels of ``mask`` inside each box ``(n, 4)`` xyxy in mask pixels.

    Boxes are clipped to the mask; the fraction is over the whole box area (outside counts as empty).
    """
    # int32 counts are exact up to 2^31 mask pixels (a 46,000 px square thumbnail) and a third of int64's memory
    dtype = np.int32 if mask.size < 2**31 else np.int64
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype)
    np.cumsum(mask, axis=0, dtype=dtype, out=sat[1:, 1:])
    np.cumsum(sat[1:, 1:], axis=1, out=sat[1:, 1:])
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0 = np.clip(np.floor(b[:, 0]), 0, mask.shape[1]).astype(np.int64)
    y0 = np.clip(np.floor(b[:, 1]), 0, mask.shape[0]).astype(np.int64)
    x1 = np.clip(np.ceil(b[:, 2]), 0, mask.shape[1]).astype(np.int64)
    y1 = np.clip(np.ceil(b[:, 3]), 0, mask.shape[0]).astype(np.int64)
    inside = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    area = np.maximum((np.ceil(b[:, 2]) - np.floor(b[:, 0])) * (np.ceil(b[:, 3]) - np.floor(b[:, 1])), 1)
    return (inside / area).astype(np.float32)


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
