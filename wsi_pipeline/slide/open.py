"""Pick a backend for a slide file, with one clear error when nothing can read it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from wsi_pipeline.slide.backends import TIFF_SUFFIXES, ArrayReader, OpenSlideReader, TiffReader
from wsi_pipeline.slide.reader import SlideError, SlideReader

Backend = Literal["auto", "tifffile", "openslide", "image"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def open_slide(path: str | Path, backend: Backend = "auto", mpp: float | None = None) -> SlideReader:
    """Open ``path`` with ``backend`` (``auto``: tifffile fast path for TIFF-family files, else OpenSlide,
    plain images in memory). ``mpp`` overrides the metadata. Raises :class:`SlideError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise SlideError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if backend == "tifffile":
        return TiffReader(path, mpp)
    if backend == "openslide":
        return OpenSlideReader(path, mpp)
    if backend == "image" or (backend == "auto" and suffix in IMAGE_SUFFIXES):
        return ArrayReader.from_image_file(path, mpp)
    errors = []
    if suffix in TIFF_SUFFIXES:
        try:
            return TiffReader(path, mpp)
        except SlideError as err:
            errors.append(f"tifffile: {_reason(err, path)}")
    try:
        return OpenSlideReader(path, mpp)
    except SlideError as err:
        errors.append(f"openslide: {_reason(err, path)}")
    raise SlideError(f"{path}: cannot open slide ({'; '.join(errors)})")


def _reason(err: SlideError, path: Path) -> str:
    return str(err).removeprefix(f"{path}: ")
