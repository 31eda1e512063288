"""Stream bands of pixels into a tiled, JPEG-compressed, pyramidal TIFF with resolution metadata.

Only one band of level 0 is in memory; reduced levels (each 4x smaller) are accumulated in a
memory-mapped scratch file beside the output, so memory stays bounded for any slide size.
The result opens in OpenSlide as ``generic-tiff`` with ``openslide.mpp-x`` and in tifffile.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tifffile

from wsi_pipeline.io import atomic_path

DOWNSAMPLE = 4
MIN_LEVEL_SIDE = 1024  # stop adding levels once the longest side is at most this


def pyramid_shapes(width: int, height: int) -> list[tuple[int, int]]:
    """``(width, height)`` of each level: level 0, then 4x reductions until the longest side <= 1024."""
    shapes = [(width, height)]
    while max(shapes[-1]) > MIN_LEVEL_SIDE and min(shapes[-1]) >= 2 * DOWNSAMPLE:
        w, h = shapes[-1]
        shapes.append((w // DOWNSAMPLE, h // DOWNSAMPLE))
    return shapes


def _reduce(band: np.ndarray) -> np.ndarray:
    """4x4 block mean of an ``(h, w, 3)`` uint8 band (partial blocks dropped)."""
    h, w = band.shape[0] // DOWNSAMPLE, band.shape[1] // DOWNSAMPLE
    blocks = band[: h * DOWNSAMPLE, : w * DOWNSAMPLE].reshape(h, DOWNSAMPLE, w, DOWNSAMPLE, 3)
    return np.rint(blocks.mean(axis=(1, 3), dtype=np.float32)).astype(np.uint8)


def write_pyramidal_tiff(
    path: str | Path,
    width: int,
    height: int,
    band: Callable[[int, int], np.ndarray],
    *,
    mpp: float,
    tile: int = 256,
    quality: int = 85,
    description: str = "",
    on_band: Callable[[int], None] | None = None,
) -> list[tuple[int, int]]:
    """Write the slide whose rows ``y0..y1`` are ``band(y0, y1)`` (called top to bottom, ``tile`` rows
    at a time). Returns the level shapes. The file appears atomically at ``path``."""
    shapes = pyramid_shapes(width, height)
    path = Path(path)
    bigtiff = width * height * 3 > 2**32 - 2**28
    with (
        atomic_path(path) as tmp,
        tempfile.TemporaryDirectory(dir=path.parent, prefix=".scratch-") as scratch,
    ):
        reduced = [
            np.lib.format.open_memmap(Path(scratch) / f"level{i}.npy", mode="w+", dtype=np.uint8, shape=(h, w, 3))
            for i, (w, h) in enumerate(shapes[1:], start=1)
        ]

        def level0_tiles() -> Iterator[np.ndarray]:
            for y0 in range(0, height, tile):
                y1 = min(y0 + tile, height)
                rows = band(y0, y1)
                if rows.shape != (y1 - y0, width, 3) or rows.dtype != np.uint8:
                    raise ValueError(f"band({y0}, {y1}) returned {rows.shape} {rows.dtype}")
                if reduced:
                    small = _reduce(rows)
                    r0 = y0 // DOWNSAMPLE
                    reduced[0][r0 : r0 + small.shape[0]] = small[:, : shapes[1][0]]
                for x0 in range(0, width, tile):
                    yield rows[:, x0 : x0 + tile]
                if on_band is not None:
                    on_band(y1 - y0)

        common = dict(
            tile=(tile, tile),
            compression="jpeg",
            compressionargs={"level": quality},
            photometric="rgb",
            resolutionunit="CENTIMETER",
            metadata=None,
        )
        with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
            tw.write(
                level0_tiles(),
                shape=(height, width, 3),
                dtype=np.uint8,
                subfiletype=0,
                resolution=(1e4 / mpp, 1e4 / mpp),
                description=description,
                software="wsi-pipeline",
                **common,
            )
            for level, (arr, (_, h)) in enumerate(zip(reduced, shapes[1:], strict=True), start=1):
                if level + 1 < len(shapes):  # fill the next level from this one, in row chunks
                    nw, nh = shapes[level + 1]
                    for r in range(0, h - h % DOWNSAMPLE, 1024):
                        small = _reduce(np.asarray(arr[r : r + 1024]))
                        reduced[level][r // DOWNSAMPLE : r // DOWNSAMPLE + small.shape[0]] = small[:nh, :nw]
                level_mpp = mpp * DOWNSAMPLE**level
                tw.write(arr, subfiletype=1, resolution=(1e4 / level_mpp, 1e4 / level_mpp), **common)
            reduced.clear()  # release the memory maps before the scratch folder goes
    return shapes
