"""Per-slide patch stores (zarr v3) and the Python API to read them.

Layout of ``<slide_id>.zarr``::

    zarr.json               group attributes under "wsi_pipeline": slide metadata (path, size, mpp,
                            reader, fingerprint), patch size and target mpp, resolved tile config,
                            "complete": true once every patch is written
    patches                 (n, P, P, 3) uint8, one patch per chunk (flat keys c.<i>.0.0.0), Blosc-lz4
                            compressed (absent with --coords-only: later stages read from the slide)
    x, y, width, height     (n,) int64: each patch's level-0 box (xywh)
    foreground              (n,) float32: cell-foreground fraction
    row, col                (n,) int64: grid indices

A store is written under a temporary name and renamed when complete, so a store under its final name
that passes :func:`verify_store` is finished.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TABLE_COLUMNS = ("x", "y", "width", "height", "foreground", "row", "col")
ATTRS_KEY = "wsi_pipeline"
STORE_FORMAT = 1


def slide_fingerprint(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Quick content fingerprint: SHA-256 of the size, first and last MiB (whole-slide files are large)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(chunk))
        if size > chunk:
            fh.seek(max(size - chunk, chunk))
            digest.update(fh.read(chunk))
    return digest.hexdigest()[:32]


_CLEVEL = {"lz4": 1, "zstd": 3}


def _compressors(name: str) -> list[Any] | None:
    from zarr.codecs import BloscCodec

    if name == "none":
        return None
    return [BloscCodec(cname=name, clevel=_CLEVEL[name], shuffle="noshuffle", typesize=1)]


class ChunkWriter:
    """Writes whole patches as zarr v3 chunk files directly (``patches/c.<i>.0.0.0``).

    zarr's synchronous API adds ~30 ms per 4 MB chunk here (its event loop round trip and copies),
    more than compressing the chunk. A patch is exactly one chunk, so the encoded bytes are what
    zarr's own pipeline would produce: ``BytesCodec`` (uint8, a no-op) then a Blosc frame with the
    codec settings recorded in the array metadata. Stores are read back through zarr (tested).
    """

    def __init__(self, store: Path, compressor: str):
        from numcodecs import Blosc

        self.root = store / "patches"
        self.codec = (
            None
            if compressor == "none"
            else Blosc(cname=compressor, clevel=_CLEVEL[compressor], shuffle=Blosc.NOSHUFFLE)
        )

    def write(self, index: int, patch: np.ndarray) -> None:
        data = np.ascontiguousarray(patch, dtype=np.uint8)
        payload = data.tobytes() if self.codec is None else self.codec.encode(data)
        (self.root / f"c.{int(index)}.0.0.0").write_bytes(payload)


def create_store(
    path: Path, table: dict[str, np.ndarray], patch_size: int, coords_only: bool, compressor: str, attrs: dict[str, Any]
) -> None:
    """Create a store with its table and (empty) pixel array; ``attrs`` go under ``wsi_pipeline``."""
    import zarr

    n = len(table["x"])
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name in TABLE_COLUMNS:
        column = np.ascontiguousarray(table[name])
        arr = group.create_array(name, shape=column.shape, dtype=column.dtype, chunks=(max(n, 1),))
        if n:
            arr[:] = column
    if not coords_only:
        group.create_array(
            "patches",
            shape=(n, patch_size, patch_size, 3),
            dtype="uint8",
            chunks=(1, patch_size, patch_size, 3),
            compressors=_compressors(compressor),
            fill_value=0,
            config={"write_empty_chunks": True},
            chunk_key_encoding={"name": "default", "separator": "."},  # flat: patches/c.<i>.0.0.0
        )
    group.attrs[ATTRS_KEY] = {
        **attrs,
        "format": STORE_FORMAT,
        "n_patches": n,
        "coords_only": coords_only,
        "complete": False,
    }


def write_patches(path: Path, indices: np.ndarray, patches: list[np.ndarray], compressor: str) -> None:
    """Write pixel patches ``patches[k]`` at rows ``indices[k]`` (each its own chunk)."""
    writer = ChunkWriter(path, compressor)
    for i, patch in zip(indices, patches, strict=True):
        writer.write(int(i), patch)


def mark_complete(path: Path, extra: dict[str, Any]) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs[ATTRS_KEY])
    attrs.update(extra, complete=True)
    group.attrs[ATTRS_KEY] = attrs


def _count_chunk_files(array_dir: Path) -> int:
    return sum(1 for p in array_dir.iterdir() if p.name.startswith("c."))


def verify_store(path: Path, config_hash: str | None = None, fingerprint: str | None = None) -> str | None:
    """``None`` when the store is complete and matches; otherwise a one-line reason it must be redone."""
    import zarr

    if not path.is_dir():
        return "missing"
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = group.attrs.get(ATTRS_KEY)
        if not isinstance(attrs, dict) or not attrs.get("complete"):
            return "incomplete (interrupted run)"
        if config_hash is not None and attrs.get("config_hash") != config_hash:
            return "written with different tile settings"
        if fingerprint is not None and attrs.get("slide", {}).get("fingerprint") != fingerprint:
            return "the slide file changed"
        n = int(attrs["n_patches"])
        lengths = {name: group[name].shape[0] for name in TABLE_COLUMNS}
        if any(v != n for v in lengths.values()):
            return f"table length mismatch {lengths} != {n}"
        if not attrs.get("coords_only"):
            if group["patches"].shape[0] != n:
                return "pixel array length mismatch"
            written = _count_chunk_files(path / "patches")
            if written != n:
                return f"{written} of {n} patch chunks on disk"
    except Exception as err:  # unreadable metadata means redo, whatever the cause
        return f"unreadable ({type(err).__name__}: {err})"
    return None


class PatchStore:
    """Read access to one slide's patch store.

    ``len(store)``, ``store.table`` (dict of numpy columns), ``store.attrs``, ``store[i]`` (patch pixels
    ``(P, P, 3)`` uint8) and :meth:`iter_patches` (arrays or CHW float tensors). Coordinates-only
    stores read their pixels from the slide recorded in the store (or ``slide_path``).
    """

    def __init__(self, path: str | os.PathLike[str], slide_path: str | os.PathLike[str] | None = None):
        import zarr

        self.path = Path(path)
        reason = verify_store(self.path)
        if reason is not None:
            raise ValueError(f"{self.path}: not a usable patch store: {reason}")
        self._group = zarr.open_group(str(self.path), mode="r")
        self.attrs: dict[str, Any] = dict(self._group.attrs[ATTRS_KEY])
        self.table = {name: np.asarray(self._group[name][:]) for name in TABLE_COLUMNS}
        self._pixels = None if self.attrs["coords_only"] else self._group["patches"]
        self._slide_path = Path(slide_path) if slide_path else Path(self.attrs["slide"]["path"])
        self._reader = None

    def __len__(self) -> int:
        return int(self.attrs["n_patches"])

    @property
    def patch_size(self) -> int:
        return int(self.attrs["patch_size"])

    @property
    def target_mpp(self) -> float:
        return float(self.attrs["target_mpp"])

    def row(self, i: int) -> dict[str, float]:
        return {name: self.table[name][i].item() for name in TABLE_COLUMNS}

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        if self._pixels is not None:
            return np.asarray(self._pixels[i])
        return self._read_from_slide(i)

    def _read_from_slide(self, i: int) -> np.ndarray:
        from wsi_pipeline.slide import open_slide

        if self._reader is None:
            slide = self.attrs["slide"]
            self._reader = open_slide(self._slide_path, slide.get("backend_choice", "auto"), slide.get("mpp_override"))
        x, y = int(self.table["x"][i]), int(self.table["y"][i])
        return self._reader.read_region(x, y, self.patch_size, self.patch_size, mpp=self.target_mpp)

    def iter_patches(self, as_tensor: bool = False) -> Iterator[tuple[Any, dict[str, float]]]:
        """Yield ``(pixels, row)``; pixels as ``(P, P, 3)`` uint8, or ``(3, P, P)`` float32 tensors in [0, 1]."""
        for i in range(len(self)):
            pixels = self[i]
            if as_tensor:
                from wsi_pipeline.data.image import to_tensor

                yield to_tensor(pixels), self.row(i)
            else:
                yield pixels, self.row(i)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
