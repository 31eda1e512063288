"""Cut labeled patches from a slide: windows around lesions plus lesion-free negatives, saved as images.

Used by ``synth --export-patches`` and ``tile --annotations``. Pixels come from any object with a
``read(x, y, width, height)`` method in one pixel frame (:class:`FrameReader` gives a slide's frame
at the target mpp), and annotation boxes must be in that frame, so every slide format and resolution
goes through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from wsi_pipeline.config import PatchExportConfig
from wsi_pipeline.data.patches import PatchLabel, crop_annotations, plan_lesion_windows, sample_negative_window
from wsi_pipeline.io import atomic_path
from wsi_pipeline.slide.reader import SlideReader
from wsi_pipeline.types import Annotation, Box

GLASS_LEVEL = 205  # a pixel whose darkest channel is below this is stained material, not empty glass


class RegionReader(Protocol):
    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB ``(height, width, 3)`` uint8 of frame pixels whose top-left is frame pixel ``(x, y)``."""
        ...


class FrameReader:
    """A slide seen in the *target frame*: pixels at ``target_mpp`` (target px = level-0 / scale)."""

    def __init__(self, reader: SlideReader, target_mpp: float):
        self.reader = reader
        self.target_mpp = target_mpp
        self.scale = target_mpp / reader.require_mpp()  # level-0 pixels per frame pixel

    @property
    def size(self) -> tuple[int, int]:
        """Slide width and height in frame pixels."""
        return int(self.reader.info.width / self.scale), int(self.reader.info.height / self.scale)

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self.reader.read_region(x * self.scale, y * self.scale, width, height, mpp=self.target_mpp)


@dataclass(frozen=True)
class PatchRecord:
    """One written patch: file, size, level-0 origin, why it was cut, and its labels (patch pixels)."""

    file_name: str
    width: int
    height: int
    x0: int
    y0: int
    kind: str  # "lesion" or "negative"
    labels: tuple[PatchLabel, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file_name": self.file_name,
            "width": self.width,
            "height": self.height,
            "x0": self.x0,
            "y0": self.y0,
            "kind": self.kind,
            "labels": [{"box": list(lab.box.xyxy), "label": lab.label, "ignore": lab.ignore} for lab in self.labels],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> PatchRecord:
        labels = tuple(PatchLabel(Box(*lab["box"]), lab["label"], lab["ignore"]) for lab in data["labels"])
        fields = {k: data[k] for k in ("file_name", "width", "height", "x0", "y0", "kind")}
        return PatchRecord(**fields, labels=labels)


def has_cells(pixels: np.ndarray, min_fraction: float = 0.03) -> bool:
    """True when at least ``min_fraction`` of the patch is stained material."""
    return bool((pixels.min(axis=2) < GLASS_LEVEL).mean() >= min_fraction)


def cut_labeled_patches(
    reader: RegionReader,
    slide_id: str,
    size: tuple[int, int],
    annotations: list[Annotation],
    cfg: PatchExportConfig,
    rng: np.random.Generator,
    out_dir: Path,
) -> list[PatchRecord]:
    """Write patches covering every annotation, plus ``cfg.negatives_per_slide`` lesion-free patches
    that contain cells, into ``out_dir`` as ``<slide_id>_x<X>_y<Y>.<ext>``; return their records."""
    width, height = size
    boxes = [a.box for a in annotations]
    windows = [(w, "lesion") for w in plan_lesion_windows(boxes, width, height, cfg.patch_size, rng, cfg.jitter)]
    for _ in range(cfg.negatives_per_slide):
        for _attempt in range(20):
            taken = [w for w, kind in windows if kind == "negative"]
            win = sample_negative_window(boxes, width, height, cfg.patch_size, rng, taken)
            if win is None:
                break
            if has_cells(reader.read(int(win.x0), int(win.y0), int(win.width), int(win.height))):
                windows.append((win, "negative"))
                break
    records = []
    for win, kind in windows:
        x0, y0 = int(win.x0), int(win.y0)
        pixels = reader.read(x0, y0, int(win.width), int(win.height))
        name = f"{slide_id}_x{x0}_y{y0}.{cfg.image_format}"
        with atomic_path(out_dir / name) as tmp:
            if cfg.image_format == "jpg":
                Image.fromarray(pixels).save(tmp, format="JPEG", quality=cfg.jpeg_quality)
            else:
                Image.fromarray(pixels).save(tmp, format="PNG")
        labels = tuple(crop_annotations(annotations, win, cfg.min_visible))
        records.append(PatchRecord(name, pixels.shape[1], pixels.shape[0], x0, y0, kind, labels))
    return records
