"""Region reads from tiled pyramidal TIFF files through tifffile + zarr (only the needed tiles decode)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import zarr


@dataclass(frozen=True)
class TiffLevel:
    width: int
    height: int
    downsample: float  # level-0 pixels per pixel of this level


class TiffPyramid:
    """A pyramidal TIFF (generic/Aperio-style): level shapes and region reads at any level.

    Coordinates passed to :meth:`read` are level-0 pixels ``(x, y)`` and a size in *level* pixels.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except (tifffile.TiffFileError, OSError, ValueError) as err:
            raise ValueError(f"{self.path}: not a readable TIFF ({err})") from None
        series = self._tif.series[0]
        self._pages = [lvl.keyframe for lvl in series.levels]
        base_h, base_w = self._pages[0].shape[:2]
        self.levels = [TiffLevel(p.shape[1], p.shape[0], base_w / p.shape[1]) for p in self._pages]
        self._arrays: dict[int, zarr.Array] = {}
        self.width, self.height = base_w, base_h

    def _array(self, level: int) -> zarr.Array:
        if level not in self._arrays:
            self._arrays[level] = zarr.open(self._pages[level].aszarr(), mode="r")
        return self._arrays[level]

    def read(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        """RGB ``(height, width, 3)`` uint8 at ``level``, top-left at level-0 ``(x, y)``; clipped at the
        slide edge (the result is then smaller)."""
        ds = self.levels[level].downsample
        lx, ly = round(x / ds), round(y / ds)
        lvl = self.levels[level]
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + width, lvl.width), min(ly + height, lvl.height)
        return np.asarray(self._array(level)[y0:y1, x0:x1])[..., :3]

    def read_level(self, level: int) -> np.ndarray:
        """A whole level (use for small levels: thumbnails)."""
        return np.asarray(self._pages[level].asarray())[..., :3]

    def best_level_for_size(self, longest_side: int) -> int:
        """Smallest level whose longest side is still >= ``longest_side`` (level 0 otherwise)."""
        ok = [i for i, lv in enumerate(self.levels) if max(lv.width, lv.height) >= longest_side]
        return ok[-1] if ok else 0

    @property
    def mpp(self) -> float | None:
        """Level-0 microns per pixel from the TIFF resolution tags, if present."""
        page = self._pages[0]
        tags = page.tags
        if "XResolution" not in tags or "ResolutionUnit" not in tags:
            return None
        num, den = tags["XResolution"].value
        unit = int(tags["ResolutionUnit"].value)
        per_unit = num / den if den else 0.0
        if per_unit <= 0 or unit not in (2, 3):
            return None
        microns = 25400.0 if unit == 2 else 10000.0
        return microns / per_unit

    def close(self) -> None:
        self._tif.close()

    def __enter__(self) -> TiffPyramid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
