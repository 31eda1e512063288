"""Find slides among the inputs a user gives: files, folders (searched recursively by extension) and list
files (one path per line, ``#`` comments, relative paths resolved against the list's folder). DICOM
series are folders of ``.dcm`` instances: one file per folder is opened (OpenSlide finds the rest).
Every stage that takes slides (``tile``, ``infer``, ``mine``) discovers and names them here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from wsi_pipeline.slide.reader import slide_name

SLIDE_SUFFIXES = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".dcm",
    ".scn",
    ".bif",
    ".vms",
    ".vmu",
    ".svslide",
    ".btf",
    ".qptiff",
)


def discover_slides(
    inputs: Sequence[str | Path], suffixes: tuple[str, ...] = SLIDE_SUFFIXES
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Slide paths (sorted, unique) and ``(input, reason)`` for inputs that are not usable."""
    found: list[Path] = []
    problems: list[tuple[str, str]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            hits = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not hits:
                problems.append((str(path), "no slide files found in folder"))
            found.extend(hits)
        elif path.is_file() and path.suffix.lower() in suffixes:
            found.append(path)
        elif path.is_file():
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                problems.append((str(path), f"not a slide and not a readable list file ({err})"))
                continue
            entries = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            sub, sub_problems = discover_slides(
                [p if Path(p).is_absolute() else path.parent / p for p in entries], suffixes
            )
            found.extend(sub)
            problems.extend(sub_problems)
        else:
            problems.append((str(path), "no such file or folder"))
    unique: dict[Path, Path] = {}
    dicom_dirs: set[Path] = set()
    for p in found:
        if p.suffix.lower() == ".dcm":
            if p.parent in dicom_dirs:
                continue
            dicom_dirs.add(p.parent)
        unique.setdefault(p.resolve(), p)
    return list(unique.values()), problems


def slide_ids(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique by prefixing parent folder names where two slides share a stem."""
    ids = [_dicom_id(p) if p.suffix.lower() == ".dcm" else slide_name(p) for p in paths]
    for depth in range(1, 6):
        dupes = {i for i in ids if ids.count(i) > 1}
        if not dupes:
            break
        ids = [
            "__".join([*p.parts[-1 - depth : -1], slide_name(p)]) if ids[k] in dupes else ids[k]
            for k, p in enumerate(paths)
        ]
    return ids


def _dicom_id(path: Path) -> str:
    """A DICOM series is named after its folder, unless the folder also holds other slides."""
    others = [p for p in path.parent.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES]
    return path.parent.name if all(p.suffix.lower() == ".dcm" for p in others) else slide_name(path)


def name_clashes(paths: Sequence[Path], ids: Sequence[str]) -> dict[str, list[Path]]:
    """Ids that :func:`slide_ids` could not make unique (``A.svs`` and ``A.tiff`` in one folder), with
    their files: such slides would write the same outputs, so callers refuse them before any work."""
    by_id: dict[str, list[Path]] = {}
    for path, sid in zip(paths, ids, strict=True):
        by_id.setdefault(sid, []).append(path)
    return {sid: files for sid, files in by_id.items() if len(files) > 1}
