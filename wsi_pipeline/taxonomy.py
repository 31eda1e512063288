"""The lesion taxonomy: the four detector classes, their ids, names, colours and spellings.

This module is the only place that knows the classes. Id 0 is the detector's background; lesion ids
are stable (never renumbered) because checkpoints and COCO files store them.

Names coming from outside (QuPath classes, CRIC/Bethesda labels, COCO categories) go through
:func:`resolve_label`, which distinguishes three outcomes: one of our classes, a known cytology term
that is *not* a detector class (NILM, ASC-H, SCC, organisms, ...), or an unknown name. Callers count
the last two with :class:`LabelTally` and report them; nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class LesionClass:
    """One detector class. ``id`` is the detector/COCO category id (0 is background)."""

    id: int
    code: str
    name: str
    color: tuple[int, int, int]


LESION_CLASSES: tuple[LesionClass, ...] = (
    LesionClass(1, "ASC-US", "Atypical squamous cells of undetermined significance", (255, 170, 0)),
    LesionClass(2, "LSIL", "Low-grade squamous intraepithelial lesion", (0, 170, 60)),
    LesionClass(3, "HSIL", "High-grade squamous intraepithelial lesion", (220, 20, 40)),
    LesionClass(4, "AGC", "Atypical glandular cells", (150, 40, 220)),
)
CLASS_CODES: tuple[str, ...] = tuple(c.code for c in LESION_CLASSES)
BY_CODE: dict[str, LesionClass] = {c.code: c for c in LESION_CLASSES}
BY_ID: dict[int, LesionClass] = {c.id: c for c in LESION_CLASSES}
NUM_CLASSES = len(LESION_CLASSES)
CLASS_NAMES: dict[int, str] = {c.id: c.code for c in LESION_CLASSES}  # id -> code, what evaluation reports

_ALIASES: dict[str, tuple[str, ...]] = {
    "ASC-US": (
        "ASC-US",
        "ASCUS",
        "ASC US",
        "ASC_US",
        "Atypical squamous cells of undetermined significance",
        "Atypical squamous cells, undetermined significance",
    ),
    "LSIL": (
        "LSIL",
        "LGSIL",
        "LG-SIL",
        "Low-grade SIL",
        "CIN1",
        "CIN 1",
        "CIN-1",
        "Low-grade squamous intraepithelial lesion",
        "Low grade squamous intraepithelial lesion",
        "Koilocyte",
        "Koilocytes",
        "Koilocytosis",
    ),
    "HSIL": (
        "HSIL",
        "HGSIL",
        "HG-SIL",
        "High-grade SIL",
        "CIN2",
        "CIN 2",
        "CIN3",
        "CIN 3",
        "CIN2/3",
        "CIN 2/3",
        "High-grade squamous intraepithelial lesion",
        "High grade squamous intraepithelial lesion",
    ),
    "AGC": (
        "AGC",
        "AGUS",
        "AGC-NOS",
        "AGC NOS",
        "Atypical glandular cells",
        "Atypical glandular cells of undetermined significance",
        "Atypical glandular cells, not otherwise specified",
        "Atypical endocervical cells",
        "Atypical endometrial cells",
    ),
}

# Bethesda and common slide-review terms that are real but are not detector classes.
_KNOWN_OTHER: tuple[str, ...] = (
    "NILM",
    "Negative",
    "Normal",
    "Negative for intraepithelial lesion",
    "Negative for intraepithelial lesion or malignancy",
    "ASC-H",
    "ASCH",
    "Atypical squamous cells, cannot exclude HSIL",
    "Atypical squamous cells cannot exclude high-grade squamous intraepithelial lesion",
    "SCC",
    "Squamous cell carcinoma",
    "Carcinoma",
    "Adenocarcinoma",
    "AIS",
    "Adenocarcinoma in situ",
    "AGC-FN",
    "Atypical glandular cells, favor neoplastic",
    "Candida",
    "Trichomonas",
    "Actinomyces",
    "Herpes",
    "Shift in flora",
    "Bacterial vaginosis",
    "Endometrial cells",
    "Atrophy",
    "Reactive changes",
    "Repair",
    "Inflammation",
)


def normalize_label(name: str) -> str:
    """Case-, space- and punctuation-insensitive key: ``"ASC-US" -> "ascus"``."""
    return re.sub(r"[^0-9a-z/]+", "", name.lower())


_ALIAS_INDEX: dict[str, str] = {normalize_label(alias): code for code, aliases in _ALIASES.items() for alias in aliases}
_OTHER_INDEX: frozenset[str] = frozenset(normalize_label(n) for n in _KNOWN_OTHER)


class LabelKind(Enum):
    LESION = "lesion"  # one of our four classes
    OTHER = "other"  # a known term outside the detector's classes
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class LabelMatch:
    source: str
    kind: LabelKind
    lesion: LesionClass | None = None


def resolve_label(name: str) -> LabelMatch:
    """Map an outside spelling (``"ASCUS"``, ``"Low-grade squamous intraepithelial lesion"``) to a class."""
    key = normalize_label(name)
    if key in _ALIAS_INDEX:
        return LabelMatch(name, LabelKind.LESION, BY_CODE[_ALIAS_INDEX[key]])
    if key in _OTHER_INDEX:
        return LabelMatch(name, LabelKind.OTHER)
    return LabelMatch(name, LabelKind.UNKNOWN)


def lesion_class(code: str) -> LesionClass:
    """Strict lookup by any accepted spelling; ``ValueError`` naming the choices otherwise."""
    match = resolve_label(code)
    if match.lesion is None:
        raise ValueError(f"unknown lesion class {code!r}; expected one of {', '.join(CLASS_CODES)}")
    return match.lesion


@dataclass
class LabelTally:
    """Counts what an import used (``mapped``: lesions that became boxes), what it skipped as non-target
    (``other``), what it did not recognise (``unknown``), and lesions it could not use (``skipped``, by
    reason: a Point without a box size, a feature outside the image, ...)."""

    mapped: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)
    unknown: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    def unmap(self, code: str, reason: str, n: int = 1) -> None:
        """``n`` lesions of class ``code`` counted as mapped were not used after all, for ``reason``."""
        self.mapped[code] -= n
        if self.mapped[code] <= 0:
            del self.mapped[code]
        self.skipped[reason] += n

    def resolve(self, name: str) -> LesionClass | None:
        match = resolve_label(name)
        if match.lesion is not None:
            self.mapped[match.lesion.code] += 1
        elif match.kind is LabelKind.OTHER:
            self.other[name] += 1
        else:
            self.unknown[name] += 1
        return match.lesion

    def summary(self) -> str:
        """One line: ``mapped LSIL=13; not detector classes: NILM=13; unknown: foo=2``."""

        def fmt(counter: Counter[str]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sorted(counter.items())) or "none"

        line = f"mapped {fmt(self.mapped)}; not detector classes: {fmt(self.other)}; unknown: {fmt(self.unknown)}"
        return line + (f"; skipped: {fmt(self.skipped)}" if self.skipped else "")
