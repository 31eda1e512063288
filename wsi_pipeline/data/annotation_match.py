"""Pair slides (or images) with their annotation files by name: the one rule every importer uses.

A file belongs to a slide when the slide's name is a **whole token** of the file's name: it stands at the
start or after ``-``, ``_`` or ``.``, and ends at the end or before one of them. So ``cric-<id>-gt.geojson``
pairs with ``<id>.webp`` and ``S1.geojson`` with ``S1.svs``, but ``case-S10-gt.geojson`` never pairs with
``S1``. When a file names several slides (``S1-a.geojson`` names ``S1`` and ``S1-a``), the longest name
wins. A slide that several files name is ambiguous: an error naming the candidates. An explicit pattern
(``{slide}-gt.geojson``) replaces the rule: a slide's file is the one named exactly so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ANNOTATION_SUFFIXES = (".geojson", ".geojson.gz", ".json")
_DELIMS = "-_."


def annotation_stem(path: Path) -> str:
    """The file name without its annotation suffix (``a.geojson.gz`` -> ``a``)."""
    name = path.name
    for suffix in ANNOTATION_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def names_slide(file_stem: str, slide_id: str) -> bool:
    """Whether ``slide_id`` is a whole token of ``file_stem`` (delimited by the ends or ``-``, ``_``, ``.``)."""
    pattern = rf"(?:^|(?<=[{re.escape(_DELIMS)}])){re.escape(slide_id)}(?=$|[{re.escape(_DELIMS)}])"
    return re.search(pattern, file_stem) is not None


@dataclass
class Pairing:
    """``files``: slide id -> its annotation file; ``problems``: slide id -> why it has none (missing or
    ambiguous); ``unused``: annotation files that name no slide."""

    files: dict[str, Path] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    unused: list[Path] = field(default_factory=list)


def _candidates(annotations: Path) -> list[Path]:
    return sorted(
        p for p in annotations.rglob("*") if p.is_file() and p.name.lower().endswith((".geojson", ".geojson.gz"))
    )


def pair_annotations(slide_ids: Sequence[str], annotations: Path, pattern: str | None = None) -> Pairing:
    """Pair every slide id with its file in ``annotations`` (a folder, searched recursively, or one file).

    One file given for several slides pairs only with the slide it names; if it names none, that is an
    error (``ValueError``): one set of labels is never applied to every slide.
    """
    pairing = Pairing()
    if annotations.is_file():
        if len(slide_ids) == 1:
            pairing.files[slide_ids[0]] = annotations
            return pairing
        files = [annotations]
    elif annotations.is_dir():
        files = _candidates(annotations)
    else:
        raise ValueError(f"{annotations}: no such annotation file or folder")
    if pattern is not None:
        by_name: dict[str, list[Path]] = {}
        for f in files:
            by_name.setdefault(f.name, []).append(f)
        for sid in slide_ids:
            hits = by_name.get(pattern.format(slide=sid), [])
            _assign(pairing, sid, hits, f"no file named {pattern.format(slide=sid)} in {annotations}")
        used = set(pairing.files.values())
        pairing.unused = [f for f in files if f not in used]
        return pairing
    owners: dict[str, list[Path]] = {sid: [] for sid in slide_ids}
    for f in files:
        stem = annotation_stem(f)
        named = [sid for sid in slide_ids if names_slide(stem, sid)]
        if not named:
            pairing.unused.append(f)
            continue
        longest = max(len(s) for s in named)
        winners = sorted({s for s in named if len(s) == longest})
        if len(winners) > 1:
            for sid in winners:
                pairing.problems[sid] = f"{f.name} names several slides ({', '.join(winners)}); use a pattern"
            continue
        owners[winners[0]].append(f)
    for sid, hits in owners.items():
        if sid not in pairing.problems:
            _assign(pairing, sid, hits, f"no annotation file names it in {annotations}")
    if annotations.is_file() and not pairing.files:
        raise ValueError(
            f"{annotations}: one annotation file for {len(slide_ids)} slides, and it names none of them; "
            "give a folder of per-slide files (or one slide)"
        )
    return pairing


def _assign(pairing: Pairing, sid: str, hits: list[Path], missing: str) -> None:
    if len(hits) == 1:
        pairing.files[sid] = hits[0]
    elif not hits:
        pairing.problems[sid] = missing
    else:
        pairing.problems[sid] = f"several annotation files name it: {', '.join(str(h) for h in hits)}"
