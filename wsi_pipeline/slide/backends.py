"""Reader backends: tifffile (fast path for TIFF-family files: direct tile decoding), OpenSlide, in-memory array."""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from wsi_pipeline.slide.reader import LevelInfo, SlideError, SlideInfo, SlideReader, plausible_mpp

TIFF_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".btf", ".qptiff")


class TiffReader(SlideReader):
    """Aperio SVS, generic pyramidal TIFF, OME-TIFF and Hamamatsu NDPI through tifffile's tile decoding.

    Only the file tiles a region touches are decoded (tifffile's read_segments + decode, seam cache).
    Each thread gets its own file handle, so one reader serves a thread pool.
    """

    backend = "tifffile"

    def __init__(self, path: str | Path, mpp_override: float | None = None):

        self._path = Path(path)
        self._local = threading.local()  # one TiffFile per thread: file positions are per handle
        self._handles: list = []
        self._handles_lock = threading.Lock()
        self._seams = SeamCache()
        tf = self._open()
        try:
            series = tf.series[0]
            pages = [lvl.keyframe for lvl in series.levels]
            shape = pages[0].shape
            if len(shape) != 3 or shape[2] not in (3, 4) or pages[0].dtype != np.uint8:
                raise SlideError(f"{self._path}: not an RGB 8-bit slide (shape {shape}, {pages[0].dtype})")
            h0, w0 = shape[:2]
            levels = tuple(LevelInfo(p.shape[1], p.shape[0], w0 / p.shape[1]) for p in pages)
            vendor, mpp, power = _tiff_metadata(tf, pages[0])
            associated = tuple(
                s.name.lower() for s in tf.series[1:] if s.name and s.name.lower() in ("label", "macro", "thumbnail")
            )
        except SlideError:
            raise
        except Exception as err:
            raise SlideError(f"{self._path}: tifffile cannot read the pyramid: {type(err).__name__}: {err}") from err
        info = SlideInfo(
            path=str(self._path),
            backend=self.backend,
            vendor=vendor,
            width=w0,
            height=h0,
            levels=levels,
            mpp=plausible_mpp(mpp),
            mpp_source="metadata" if plausible_mpp(mpp) else "none",
            objective_power=power,
            associated=associated,
        )
        super().__init__(info, mpp_override)
        self._probe()

    def _probe(self) -> None:
        """Decode one tile of the smallest level so undecodable files fail at open (and fall back)."""
        level = len(self.info.levels) - 1
        try:
            self._read_level(level, 0, 0, 1, 1)
        except Exception as err:
            self.close()
            raise SlideError(f"{self._path}: tifffile cannot decode its tiles: {type(err).__name__}: {err}") from err

    def _open(self):  # one TiffFile (and zarr arrays) per thread
        import tifffile

        tf = getattr(self._local, "tif", None)
        if tf is None:
            try:
                tf = tifffile.TiffFile(self._path)
            except Exception as err:
                raise SlideError(f"{self._path}: not a readable TIFF: {type(err).__name__}: {err}") from err
            self._local.tif = tf
            self._local.arrays = {}
            with self._handles_lock:
                self._handles.append(tf)
        return tf

    def _array(self, level: int):
        import zarr

        tf = self._open()
        arrays = self._local.arrays
        if level not in arrays:
            page = tf.series[0].levels[level].keyframe
            arrays[level] = zarr.open(page.aszarr(), mode="r")
        return arrays[level]

    def _read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        ds = self.info.levels[level].downsample
        lx, ly = round(x / ds), round(y / ds)
        tf = self._open()
        page = tf.series[0].levels[level].keyframe
        if not page.is_tiled:  # strips, NDPI restart-marker JPEG, ...: tifffile's zarr store handles them
            return np.asarray(self._array(level)[ly : ly + height, lx : lx + width])[..., :3]
        return _read_tiles(tf, page, level, lx, ly, width, height, self._seams)

    def read_level(self, level: int) -> np.ndarray:
        """A whole level (small levels only)."""
        lv = self.info.levels[level]
        return self.read_level_region(level, 0, 0, lv.width, lv.height)

    def associated_image(self, name: str) -> np.ndarray:
        tf = self._open()
        for s in tf.series[1:]:
            if s.name and s.name.lower() == name:
                return np.asarray(s.asarray())[..., :3]
        return super().associated_image(name)

    def close(self) -> None:
        with self._handles_lock:
            for tf in self._handles:
                tf.close()
            self._handles.clear()
        self._local = threading.local()


class SeamCache:
    """Decoded tiles that a read used only in part: the neighbouring read (the next block of a tiling
    job, in any thread) needs the rest, so it is kept instead of decoded again. Bounded LRU."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._tiles: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> np.ndarray | None:
        with self._lock:
            tile = self._tiles.get(key)
            if tile is not None:
                self._tiles.move_to_end(key)
            return tile

    def put(self, key: tuple[int, int], tile: np.ndarray) -> None:
        with self._lock:
            if key in self._tiles:
                return
            self._tiles[key] = tile
            self._bytes += tile.nbytes
            while self._bytes > self.max_bytes and self._tiles:
                _, old = self._tiles.popitem(last=False)
                self._bytes -= old.nbytes


def _read_tiles(
    tf, page, level: int, x: int, y: int, width: int, height: int, cache: SeamCache | None = None
) -> np.ndarray:
    """Decode only the file tiles that cover the region (tifffile's own decoder, no zarr layer)."""
    tw, th = page.tilewidth, page.tilelength
    across = -(-page.imagewidth // tw)
    tx0, tx1 = x // tw, (x + width - 1) // tw
    ty0, ty1 = y // th, (y + height - 1) // th
    indices = [ty * across + tx for ty in range(ty0, ty1 + 1) for tx in range(tx0, tx1 + 1)]
    out = np.empty((height, width, 3), np.uint8)

    def paste(index: int, tile: np.ndarray | None) -> None:
        top, left = (index // across) * th, (index % across) * tw
        if tile is None:  # a missing tile reads as white glass
            out[max(top - y, 0) : max(top + th - y, 0), max(left - x, 0) : max(left + tw - x, 0)] = 255
            return
        r0, r1 = max(top, y), min(top + tile.shape[0], y + height, page.imagelength)
        c0, c1 = max(left, x), min(left + tile.shape[1], x + width, page.imagewidth)
        if r1 > r0 and c1 > c0:
            out[r0 - y : r1 - y, c0 - x : c1 - x] = tile[r0 - top : r1 - top, c0 - left : c1 - left]
        partial = top + th > y + height or left + tw > x + width or top < y or left < x
        if cache is not None and partial:
            cache.put((level, index), tile)

    todo = []
    for index in indices:
        tile = cache.get((level, index)) if cache is not None else None
        if tile is not None:
            paste(index, tile)
        else:
            todo.append(index)
    offsets = [page.dataoffsets[i] for i in todo]
    counts = [page.databytecounts[i] for i in todo]
    declared = dict(zip(todo, counts, strict=True))
    for data, index in tf.filehandle.read_segments(offsets, counts, indices=todo):
        if declared[index] and len(data or b"") != declared[index]:  # declared bytes missing: not glass
            raise SlideError(
                f"{tf.filehandle.path}: level {level} tile {index} has {len(data or b'')} of {declared[index]} bytes "
                "(file truncated or damaged)"
            )
        segment = page.decode(data, index, jpegtables=page.jpegtables)[0] if data else None
        paste(index, None if segment is None else segment[0, ..., :3])
    return out


def _tiff_metadata(tf, page) -> tuple[str, float | None, float | None]:
    """(vendor, mpp, objective power) from Aperio descriptions, NDPI/generic resolution tags, OME-XML."""
    if tf.is_svs:
        desc = page.description or ""
        fields = dict((k.strip(), v.strip()) for k, _, v in (part.partition("=") for part in desc.split("|")[1:]) if _)
        mpp = _float(fields.get("MPP"))
        return "aperio", mpp, _float(fields.get("AppMag"))
    if tf.is_ome:
        xml = tf.ome_metadata or ""
        size = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', xml)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml)
        factor = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}.get(unit.group(1) if unit else "µm")
        mpp = float(size.group(1)) * factor if size and factor else None
        return "ome", mpp, None
    vendor = "hamamatsu" if tf.is_ndpi else "generic-tiff"
    power = None
    if tf.is_ndpi:
        power = _float(str(page.tags.get("65421").value)) if page.tags.get("65421") else None
    return vendor, _resolution_mpp(page), power


def _resolution_mpp(page) -> float | None:
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    num, den = tags["XResolution"].value
    per_unit = num / den if den else 0.0
    unit = int(tags["ResolutionUnit"].value)
    if per_unit <= 0 or unit not in (2, 3):  # 2 inch, 3 centimetre; 1 means "no absolute unit"
        return None
    return (25400.0 if unit == 2 else 10000.0) / per_unit


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenSlideReader(SlideReader):
    """Everything OpenSlide reads: Aperio, Hamamatsu, MIRAX, DICOM, Philips, Leica, Ventana, generic TIFF."""

    backend = "openslide"

    def __init__(self, path: str | Path, mpp_override: float | None = None):
        import openslide

        self._path = Path(path)
        try:
            self._slide = openslide.OpenSlide(str(self._path))
        except Exception as err:
            raise SlideError(f"{self._path}: OpenSlide cannot open it: {type(err).__name__}: {err}") from err
        props = dict(self._slide.properties)
        mpp = plausible_mpp(_float(props.get("openslide.mpp-x")))
        (w, h) = self._slide.dimensions
        levels = tuple(
            LevelInfo(lw, lh, float(ds))
            for (lw, lh), ds in zip(self._slide.level_dimensions, self._slide.level_downsamples, strict=True)
        )
        info = SlideInfo(
            path=str(self._path),
            backend=self.backend,
            vendor=props.get("openslide.vendor", "unknown"),
            width=w,
            height=h,
            levels=levels,
            mpp=mpp,
            mpp_source="metadata" if mpp else "none",
            objective_power=_float(props.get("openslide.objective-power")),
            associated=tuple(sorted(self._slide.associated_images)),
            properties=props,
        )
        super().__init__(info, mpp_override)

    def _read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        region = self._slide.read_region((x, y), level, (width, height))
        rgba = np.asarray(region)
        rgb = rgba[..., :3].astype(np.float32)
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        return np.rint(rgb * alpha + 255.0 * (1 - alpha)).astype(np.uint8)  # transparent = white glass

    def associated_image(self, name: str) -> np.ndarray:
        if name not in self._slide.associated_images:
            return super().associated_image(name)
        return np.asarray(self._slide.associated_images[name].convert("RGB"))

    def close(self) -> None:
        self._slide.close()


class ArrayReader(SlideReader):
    """An RGB array as a slide (tests, plain images such as CRIC fields); pyramid levels are built 4x apart."""

    backend = "array"

    def __init__(self, image: np.ndarray, mpp: float | None, name: str = "<array>", vendor: str = "array"):
        if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
            raise SlideError(f"{name}: expected an RGB uint8 array, got {image.shape} {image.dtype}")
        self._levels = [np.ascontiguousarray(image[..., :3])]
        while min(self._levels[-1].shape[:2]) >= 512:
            prev = self._levels[-1]
            self._levels.append(
                cv2.resize(prev, (prev.shape[1] // 4, prev.shape[0] // 4), interpolation=cv2.INTER_AREA)
            )
        h0, w0 = image.shape[:2]
        levels = tuple(LevelInfo(a.shape[1], a.shape[0], w0 / a.shape[1]) for a in self._levels)
        info = SlideInfo(
            path=name,
            backend=self.backend,
            vendor=vendor,
            width=w0,
            height=h0,
            levels=levels,
            mpp=mpp,
            mpp_source="metadata" if mpp else "none",
        )
        super().__init__(info)

    @classmethod
    def from_image_file(cls, path: str | Path, mpp: float | None) -> ArrayReader:
        """A plain image (PNG, JPEG, WebP) as a slide; its mpp must come from the user."""
        from PIL import Image

        try:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"))
        except Exception as err:
            raise SlideError(f"{path}: not a readable image: {type(err).__name__}: {err}") from err
        return cls(pixels, mpp, name=str(path), vendor="image")

    def _read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        ds = self.info.levels[level].downsample
        lx, ly = math.floor(x / ds + 1e-9), math.floor(y / ds + 1e-9)
        return self._levels[level][ly : ly + height, lx : lx + width]
