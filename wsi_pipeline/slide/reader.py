"""The reader protocol: slide facts (:class:`SlideInfo`) and resolution-aware region reads.

Backends implement one method, :meth:`SlideReader._read_level` (a region of one pyramid level, given
by its level-0 origin and a size in that level's pixels). This base class does everything else:
choosing the level for a requested mpp, resizing, clipping at slide edges, banded thumbnails, and
wrapping backend failures into :class:`SlideError` messages that name the file.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

MPP_PLAUSIBLE = (0.05, 50.0)  # microscope scans; outside this a resolution tag is not a real mpp


class SlideError(ValueError):
    """A slide cannot be opened or read; ``str(err)`` is one line starting with the file name."""


@dataclass(frozen=True)
class LevelInfo:
    width: int
    height: int
    downsample: float  # level-0 pixels per pixel of this level


@dataclass(frozen=True)
class SlideInfo:
    """What we know about a slide. Dimensions are level-0 pixels; ``mpp`` is microns per level-0 pixel."""

    path: str
    backend: str
    vendor: str
    width: int
    height: int
    levels: tuple[LevelInfo, ...]
    mpp: float | None
    mpp_source: str  # where the mpp came from ("metadata", "--mpp", "none")
    objective_power: float | None = None
    associated: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict, compare=False)

    def with_mpp(self, mpp: float, source: str) -> SlideInfo:
        return replace(self, mpp=mpp, mpp_source=source)


def plausible_mpp(value: float | None) -> float | None:
    """``value`` if it is a believable microscope resolution, else ``None`` (e.g. 72 dpi defaults)."""
    if value is None or not math.isfinite(value):
        return None
    return value if MPP_PLAUSIBLE[0] <= value <= MPP_PLAUSIBLE[1] else None


def choose_level(downsamples: list[float] | tuple[float, ...], target: float, tolerance: float = 0.01) -> int:
    """Index of the coarsest level whose downsample does not exceed ``target`` (within ``tolerance``).

    Reading from a finer level and shrinking keeps detail; a target finer than level 0 reads level 0.
    """
    best = 0
    for i, ds in enumerate(downsamples):
        if ds <= target * (1 + tolerance) and ds >= downsamples[best]:
            best = i
    return best


class SlideReader(ABC):
    """A whole-slide image. Coordinates are level-0 pixels ``(x, y)``; sizes are stated per call."""

    info: SlideInfo

    def __init__(self, info: SlideInfo, mpp_override: float | None = None):
        if mpp_override is not None:
            info = info.with_mpp(mpp_override, "--mpp")
        self.info = info

    # -- backend interface ----------------------------------------------------------------------
    @abstractmethod
    def _read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 ``(height, width, 3)`` of ``level``; ``(x, y)`` is the level-0 origin, the size is in
        level pixels and lies inside the level."""

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (``label``, ``macro``, ``thumbnail``) as RGB uint8."""
        raise SlideError(f"{self.info.path}: no associated image {name!r}")

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release file handles."""

    # -- shared logic ---------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.info.path

    def require_mpp(self) -> float:
        if self.info.mpp is None:
            raise SlideError(f"{self.info.path}: no microns-per-pixel in the slide metadata; pass --mpp")
        return self.info.mpp

    def read_level_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """``(height, width, 3)`` of ``level`` from level-0 ``(x, y)``; outside the slide is white."""
        lv = self.info.levels[level]
        lx, ly = math.floor(x / lv.downsample), math.floor(y / lv.downsample)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + width, lv.width), min(ly + height, lv.height)
        pixels = None
        if x1 > x0 and y1 > y0:
            try:
                pixels = self._read_level(level, round(x0 * lv.downsample), round(y0 * lv.downsample), x1 - x0, y1 - y0)
            except SlideError:
                raise
            except Exception as err:  # backends raise their own types; callers get one clear error
                where = f"level {level} at ({x}, {y})"
                raise SlideError(f"{self.info.path}: cannot read {where}: {_one_line(err)}") from err
            if (x0, y0, x1, y1) == (lx, ly, lx + width, ly + height):
                return pixels  # entirely inside the level: no padding copy
        out = np.full((height, width, 3), 255, np.uint8)
        if pixels is not None:
            out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = pixels
        return out

    def read_region(self, x: float, y: float, width: int, height: int, mpp: float) -> np.ndarray:
        """RGB ``(height, width, 3)`` at resolution ``mpp`` whose top-left is level-0 ``(x, y)``.

        The region covers ``width * mpp / slide_mpp`` level-0 pixels horizontally. The pyramid level
        with the largest downsample not above the request is read, then resized (area interpolation
        when shrinking); the origin snaps to that level's pixel grid. Pixels outside the slide are white.
        """
        scale = mpp / self.require_mpp()  # level-0 pixels per output pixel
        level = choose_level([lv.downsample for lv in self.info.levels], scale)
        ds = self.info.levels[level].downsample
        f = scale / ds  # level pixels per output pixel
        lw, lh = max(1, round(width * f)), max(1, round(height * f))
        pixels = self.read_level_region(level, round(x), round(y), lw, lh)
        if (lw, lh) == (width, height):
            return pixels
        interp = cv2.INTER_AREA if f > 1 else cv2.INTER_LINEAR
        return cv2.resize(pixels, (width, height), interpolation=interp)

    def thumbnail(self, mpp: float, band: int | None = None) -> np.ndarray:
        """The whole slide at ``mpp`` (coarse), read in bands of ``band`` rows so memory stays bounded: by
        default bands of about a megapixel of output, so the pyramid level each band is read from (up to
        4x finer per side between levels) stays a few tens of MB whatever the slide's size."""
        scale = mpp / self.require_mpp()
        out_w = max(1, math.ceil(self.info.width / scale))
        out_h = max(1, math.ceil(self.info.height / scale))
        band = band or max(64, 1_000_000 // out_w)
        out = np.empty((out_h, out_w, 3), np.uint8)  # filled band by band: no second copy of the thumbnail
        for y in range(0, out_h, band):
            out[y : y + band] = self.read_region(0, y * scale, out_w, min(band, out_h - y), mpp)
        return out

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def slide_name(path: str | Path) -> str:
    """Slide id from a path: the file name without its (possibly double) extension."""
    name = Path(path).name
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem
