"""Find slides among the inputs a user gives: files, folders (searched recursively by extension) and list
files (one path per line, ``#`` comments, relative paths resolved against the list's folder). DICOM
series are folders of ``.dcm`` instances: one file per folder is opened (OpenSlide finds the rest).
Every stage that takes slides (``tile``, ``infer``, ``mine``) discovers and names them here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


LIST_SUFFIXES = ("", ".txt", ".list", ".lst", ".csv", ".tsv")  # list files: plain text, one path per line
OWN_OUTPUTS = (".quicklook.png", ".qc.png", ".thumbnail.png", ".overlay.png")  # images this project writes


def discover_slides(
    inputs: Sequence[str | Path], suffixes: tuple[str, ...] = SLIDE_SUFFIXES, exclude: Sequence[Path] = ()
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Slide paths (sorted, unique) and ``(input, reason)`` for every input or folder entry that is not
    usable: nothing is dropped silently. Folders under ``exclude`` (the command's own ``--out``), patch
    stores and images this project writes (quick-looks, QC images) are never taken as slides."""
    excluded = [Path(e).resolve() for e in exclude]
    found: list[Path] = []
    problems: list[tuple[str, str]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            hits = _scan(path, suffixes, excluded, problems)
            if not hits and not any(p[0].startswith(str(path)) for p in problems):
                problems.append((str(path), "no slide files found in folder"))
            found.extend(hits)
        elif path.is_file() and path.suffix.lower() in suffixes:
            found.append(path)
        elif path.is_file() and path.suffix.lower() not in LIST_SUFFIXES:
            problems.append(
                (str(path), f"not a slide format read here ({path.suffix}); list files are .txt, one path a line")
            )
        elif path.is_file():
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                problems.append((str(path), f"not a slide and not a readable list file ({err})"))
                continue
            entries = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            sub, sub_problems = discover_slides(
                [p if Path(p).is_absolute() else path.parent / p for p in entries], suffixes, exclude
            )
            found.extend(sub)
            problems.extend(sub_problems)
        elif path.is_symlink():
            problems.append((str(path), "dangling symbolic link"))
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


def _scan(folder: Path, suffixes: tuple[str, ...], excluded: list[Path], problems: list[tuple[str, str]]) -> list[Path]:
    """Slide files under ``folder`` (recursively, sorted); entries with a slide suffix that cannot be slides
    (folders, dangling links) become problems."""
    hits = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in suffixes:
            continue
        resolved = p.resolve() if not p.is_symlink() or p.exists() else p
        if any(resolved.is_relative_to(e) for e in excluded) or any(q.suffix == ".zarr" for q in p.parents):
            continue
        if p.name.lower().endswith(OWN_OUTPUTS):
            continue
        if p.is_symlink() and not p.exists():
            problems.append((str(p), "dangling symbolic link"))
        elif p.is_dir():
            problems.append((str(p), "a folder named like a slide file, not a slide"))
        elif p.is_file():
            hits.append(p)
    return hits


def slide_ids(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique by prefixing parent folder names where two slides in different folders share
    a stem. Slides of one folder that share a stem (``A.svs``, ``A.tiff``) keep it: :func:`name_clashes`
    reports them."""
    plain = [_dicom_id(p) if p.suffix.lower() == ".dcm" else slide_name(p) for p in paths]
    same_folder = {
        k
        for k, p in enumerate(paths)
        for j, q in enumerate(paths)
        if j != k and plain[j] == plain[k] and p.parent == q.parent
    }
    ids = list(plain)
    for depth in range(1, 6):
        dupes = {i for i in ids if ids.count(i) > 1}
        if not dupes:
            break
        ids = [
            "__".join([*p.parts[-1 - depth : -1], slide_name(p)])
            if ids[k] in dupes and k not in same_folder
            else ids[k]
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


@dataclass(frozen=True)
class FoundSlide:
    """A slide to process: its path, its id, and ``refused``: why it must not run ("" when it may)."""

    path: Path
    slide_id: str
    refused: str = ""


def find_slides(
    inputs: Sequence[str | Path],
    suffixes: tuple[str, ...] = SLIDE_SUFFIXES,
    exclude: Sequence[Path] = (),
    extra: Sequence[Path] = (),
) -> tuple[list[FoundSlide], list[tuple[str, str]]]:
    """What every batch command starts with: the slides of ``inputs`` (and ``extra`` inputs named by their
    stem, e.g. patch stores), with slides whose names clash refused before any work, and the
    ``(input, reason)`` problems of :func:`discover_slides`."""
    paths, problems = discover_slides(inputs, suffixes, exclude) if inputs else ([], [])
    ids = slide_ids(paths) + [p.stem for p in extra]
    paths = [*paths, *extra]
    clashes = name_clashes(paths, ids)
    found = []
    for path, sid in zip(paths, ids, strict=True):
        refused = ""
        if sid in clashes:
            files = " and ".join(p.name for p in clashes[sid])
            refused = (
                f"{files} are both named {sid} and would write the same outputs: rename one, or use separate --out"
            )
        found.append(FoundSlide(path, sid, refused))
    return found, problems
