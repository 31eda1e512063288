"""Quick-look PNG: a slide thumbnail with lesion boxes drawn in their class colours and a legend."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wsi_pipeline.io import atomic_path
from wsi_pipeline.slide.backends import TiffReader
from wsi_pipeline.taxonomy import BY_CODE, LESION_CLASSES
from wsi_pipeline.types import Annotation


def draw_quicklook(thumbnail: np.ndarray, scale: float, annotations: list[Annotation]) -> Image.Image:
    """Draw ``annotations`` (level-0 boxes) on ``thumbnail`` (``thumb = level0 * scale``)."""
    img = Image.fromarray(thumbnail)
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 800))
    min_half = 4 + width  # tiny boxes stay visible as small squares
    for ann in annotations:
        cx, cy = ann.box.center
        hx = max(ann.box.width * scale / 2, min_half)
        hy = max(ann.box.height * scale / 2, min_half)
        box = [cx * scale - hx, cy * scale - hy, cx * scale + hx, cy * scale + hy]
        draw.rectangle(box, outline=BY_CODE[ann.label].color, width=width)
    counts = Counter(a.label for a in annotations)
    line_h = max(14, round(max(img.size) / 60))
    font = ImageFont.load_default(size=round(line_h * 0.8))
    draw.rectangle([0, 0, line_h * 9, line_h * len(LESION_CLASSES) + line_h // 2], fill=(255, 255, 255))
    for i, cls in enumerate(LESION_CLASSES):
        y = line_h // 4 + i * line_h
        draw.rectangle([line_h // 4, y + line_h // 6, line_h * 3 // 4, y + line_h * 2 // 3], fill=cls.color)
        draw.text((line_h, y), f"{cls.code}: {counts.get(cls.code, 0)}", fill=(0, 0, 0), font=font)
    return img


def write_quicklook(slide_path: str | Path, annotations: list[Annotation], out_path: str | Path, size: int) -> None:
    """Thumbnail (longest side ``size``) read from the slide's best pyramid level, boxes drawn, PNG."""
    with TiffReader(slide_path) as slide:
        info = slide.info
        mpp = slide.require_mpp()
        thumb_mpp = mpp * max(1.0, max(info.width, info.height) / size)
        pixels = slide.thumbnail(thumb_mpp)
    img = draw_quicklook(pixels, pixels.shape[1] / info.width, annotations)
    with atomic_path(out_path) as tmp:
        img.save(tmp, format="PNG")
