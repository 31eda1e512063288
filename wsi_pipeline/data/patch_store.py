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
    chunk_bytes, chunk_crc32 (n,) int64 / uint32: size and CRC-32 of each patch's chunk file, recorded
                            as it is written

A store is written under a temporary name, made durable (one ``sync`` once every chunk is written) and
renamed when complete, so a store under its final name that passes :func:`verify_store` is finished.
``verify_store`` checks every chunk file's size (cheap: a ``stat`` each) and, when asked, its checksum;
:class:`PatchStore` checks the checksum of every patch it reads.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

TABLE_COLUMNS = ("x", "y", "width", "height", "foreground", "row", "col")
ATTRS_KEY = "wsi_pipeline"
STORE_FORMAT = 2  # 2: chunk sizes and checksums recorded


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

    def write(self, index: int, patch: np.ndarray) -> tuple[int, int]:
        """Write one patch; returns the chunk file's ``(size in bytes, CRC-32)``."""
        data = np.ascontiguousarray(patch, dtype=np.uint8)
        payload = data.tobytes() if self.codec is None else self.codec.encode(data)
        (self.root / chunk_name(index)).write_bytes(payload)
        return len(payload), zlib.crc32(payload)


def chunk_name(index: int) -> str:
    return f"c.{int(index)}.0.0.0"


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


def write_patches(path: Path, indices: np.ndarray, patches: list[np.ndarray], compressor: str) -> np.ndarray:
    """Write pixel patches ``patches[k]`` at rows ``indices[k]`` (each its own chunk); returns their
    ``(k, 3)`` int64 records ``[index, chunk bytes, CRC-32]`` for :func:`record_chunks`."""
    writer = ChunkWriter(path, compressor)
    records = np.zeros((len(patches), 3), np.int64)
    for k, (i, patch) in enumerate(zip(indices, patches, strict=True)):
        records[k] = (int(i), *writer.write(int(i), patch))
    return records


def record_chunks(path: Path, records: Sequence[np.ndarray]) -> None:
    """Store the chunk sizes and checksums gathered from the block writers; each index exactly once."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    n = group["x"].shape[0]
    rows = np.concatenate([np.asarray(r, np.int64).reshape(-1, 3) for r in records]) if records else np.zeros((0, 3))
    index = rows[:, 0].astype(np.int64)
    if len(index) != n or len(np.unique(index)) != n:
        raise RuntimeError(f"{path}: {len(np.unique(index))} of {n} patches written")
    order = np.argsort(index)
    for name, column, dtype in (("chunk_bytes", 1, np.int64), ("chunk_crc32", 2, np.uint32)):
        values = rows[order, column].astype(dtype)
        group.create_array(name, shape=(n,), dtype=dtype, chunks=(max(n, 1),), overwrite=True)
        if n:
            group[name][:] = values


def make_durable(path: Path) -> None:
    """Flush the store's files to disk: one ``sync`` for all its chunks (not one fsync per chunk)."""
    if hasattr(os, "sync"):
        os.sync()
    else:  # pragma: no cover - platforms without sync(2)
        for file in path.rglob("*"):
            if file.is_file():
                with file.open("rb+") as fh:
                    os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Persist a rename inside ``path`` (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def mark_complete(path: Path, extra: dict[str, Any]) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs[ATTRS_KEY])
    attrs.update(extra, complete=True)
    group.attrs[ATTRS_KEY] = attrs


def stored_slide(path: Path) -> dict[str, Any] | None:
    """The ``slide`` record (path, fingerprint, ...) of an existing store, or ``None`` when there is no
    store or its metadata cannot be read."""
    import zarr

    if not path.is_dir():
        return None
    try:
        attrs = zarr.open_group(str(path), mode="r").attrs.get(ATTRS_KEY)
        slide = attrs.get("slide") if isinstance(attrs, dict) else None
    except Exception:  # unreadable: a damaged store, redone like any other
        return None
    return slide if isinstance(slide, dict) else None


def _chunk_problem(array_dir: Path, sizes: np.ndarray, crcs: np.ndarray | None) -> str | None:
    """The first chunk whose file is missing, of the wrong size, or (``crcs`` given) of the wrong checksum."""
    for i, size in enumerate(sizes):
        file = array_dir / chunk_name(i)
        try:
            found = file.stat().st_size
        except FileNotFoundError:
            return f"patch {i}: chunk file missing"
        if found != int(size):
            return f"patch {i}: chunk file has {found} of {int(size)} bytes (truncated or damaged)"
        if crcs is not None and zlib.crc32(file.read_bytes()) != int(crcs[i]):
            return f"patch {i}: chunk checksum mismatch (damaged)"
    return None


def verify_store(
    path: Path, config_hash: str | None = None, fingerprint: str | None = None, checksums: bool = False
) -> str | None:
    """``None`` when the store is complete and matches; otherwise a one-line reason it must be redone.
    Every chunk file's size is checked; ``checksums`` also reads each chunk and checks its CRC-32."""
    import zarr

    if not path.is_dir():
        return "missing"
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = group.attrs.get(ATTRS_KEY)
        if not isinstance(attrs, dict) or not attrs.get("complete"):
            return "incomplete (interrupted run)"
        if attrs.get("format") != STORE_FORMAT:
            return f"store format {attrs.get('format')} of an older version (no chunk checksums)"
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
            sizes = np.asarray(group["chunk_bytes"][:])
            crcs = np.asarray(group["chunk_crc32"][:]) if checksums else None
            if len(sizes) != n:
                return f"chunk table length {len(sizes)} != {n}"
            problem = _chunk_problem(path / "patches", sizes, crcs)
            if problem is not None:
                return problem
    except Exception as err:  # unreadable metadata means redo, whatever the cause
        return f"unreadable ({type(err).__name__}: {err})"
    return None


class PatchStore:
    """Read access to one slide's patch store.

    ``len(store)``, ``store.table`` (dict of numpy columns), ``store.attrs``, ``store[i]`` (patch pixels
    ``(P, P, 3)`` uint8) and :meth:`iter_patches` (arrays or CHW float tensors). Every patch read is
    checked against its recorded size and checksum (``ValueError`` naming the store and patch);
    :meth:`verify` checks them all. Coordinates-only stores read their pixels from the slide recorded in
    the store (or ``slide_path``).
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
        if self._pixels is not None:
            self._chunk_bytes = np.asarray(self._group["chunk_bytes"][:])
            self._chunk_crc = np.asarray(self._group["chunk_crc32"][:])
            codecs = self._pixels.metadata.codecs if hasattr(self._pixels, "metadata") else ()
            self._compressed = any("blosc" in type(c).__name__.lower() for c in codecs)
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
            return self._read_chunk(i)
        return self._read_from_slide(i)

    def _read_chunk(self, i: int) -> np.ndarray:
        """Patch ``i`` from its chunk file, after checking its size and CRC-32 (zarr's own encoding: a Blosc
        frame, or the raw bytes without a compressor)."""
        payload = (self.path / "patches" / chunk_name(i)).read_bytes()
        if len(payload) != int(self._chunk_bytes[i]) or zlib.crc32(payload) != int(self._chunk_crc[i]):
            raise ValueError(f"{self.path}: patch {i} is damaged (chunk size or checksum mismatch); re-run tile")
        if self._compressed:
            from numcodecs import Blosc

            payload = Blosc().decode(payload)
        p = self.patch_size
        return np.frombuffer(payload, np.uint8).reshape(p, p, 3)

    def verify(self, checksums: bool = True) -> str | None:
        """``None`` when every chunk is present with its recorded size (and checksum); else the first problem."""
        return verify_store(self.path, checksums=checksums)

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
