"""Quick-look PNG: a slide thumbnail with lesion boxes drawn in their class colours and a legend."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from wsi_pipeline.io import atomic_path
from wsi_pipeline.slide.tiff import TiffPyramid
from wsi_pipeline.taxonomy import BY_CODE, LESION_CLASSES
from wsi_pipeline.types import Annotation


def draw_quicklook(thumbnail: np.ndarray, scale: float, annotations: list[Annotation]) -> Image.Image:
    """Draw ``annotations`` (level-0 boxes) on ``thumbnail`` (``thumb = level0 * scale``)."""
    img = Image.fromarray(thumbnail)
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 800))
    for ann in annotations:
        b = ann.box
        x0, y0, x1, y1 = b.x0 * scale, b.y0 * scale, b.x1 * scale, b.y1 * scale
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half = max((x1 - x0) / 2, (y1 - y0) / 2, 4.0) + width  # never smaller than a visible square
        hx, hy = (
            max((x1 - x0) / 2, half if x1 - x0 < 8 else 0) + width,
            max((y1 - y0) / 2, half if y1 - y0 < 8 else 0) + width,
        )
        draw.rectangle([cx - hx, cy - hy, cx + hx, cy + hy], outline=BY_CODE[ann.label].color, width=width)
    counts = Counter(a.label for a in annotations)
    line_h = 14
    draw.rectangle([0, 0, 150, line_h * len(LESION_CLASSES) + 6], fill=(255, 255, 255))
    for i, cls in enumerate(LESION_CLASSES):
        y = 3 + i * line_h
        draw.rectangle([4, y + 2, 14, y + 11], fill=cls.color)
        draw.text((20, y), f"{cls.code}: {counts.get(cls.code, 0)}", fill=(0, 0, 0))
    return img


def write_quicklook(slide_path: str | Path, annotations: list[Annotation], out_path: str | Path, size: int) -> None:
    """Thumbnail (longest side ``size``) from the slide's best pyramid level, boxes drawn, PNG."""
    with TiffPyramid(slide_path) as slide:
        level = slide.best_level_for_size(size)
        pixels = slide.read_level(level)
        full_w = slide.width
    h, w = pixels.shape[:2]
    factor = min(1.0, size / max(h, w))
    if factor < 1.0:
        pixels = cv2.resize(
            pixels, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA
        )
    scale = pixels.shape[1] / full_w
    img = draw_quicklook(np.ascontiguousarray(pixels), scale, annotations)
    with atomic_path(out_path) as tmp:
        img.save(tmp, format="PNG")
