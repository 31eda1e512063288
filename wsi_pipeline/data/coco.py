"""COCO detection files of patches (boxes in patch pixels, categories from the taxonomy): the one reader
(:func:`read_coco`, used by training datasets and evaluation alike) and the writer (:class:`CocoBuilder`)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_pipeline.data.labeled_patches import PatchRecord
from wsi_pipeline.data.patches import PatchLabel
from wsi_pipeline.io import write_json_atomic
from wsi_pipeline.taxonomy import BY_CODE, LESION_CLASSES, LabelTally

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CocoFile:
    """A parsed COCO file. ``annotations`` maps every image id to all its annotations (``iscrowd`` ones
    and those of categories outside the lesion classes included: each user decides what to keep);
    ``categories`` maps COCO category ids to lesion class ids (``None``: not one of the four classes),
    and ``labels`` reports, in one line, the category names that map to no class."""

    path: Path
    info: dict[str, Any]
    images: list[dict[str, Any]]
    annotations: dict[int, list[dict[str, Any]]]
    categories: dict[int, int | None]
    labels: str
    dropped: int = 0  # annotations with an invalid bbox, left out (and warned about)

    def lesion_id(self, annotation: dict[str, Any]) -> int | None:
        return self.categories.get(int(annotation["category_id"]))


def lesion_categories(categories: list[dict[str, Any]], tally: LabelTally) -> dict[int, int | None]:
    """COCO category id -> lesion class id (``None``: not a detector class), names counted in ``tally``."""
    mapping = {}
    for cat in categories:
        lesion = tally.resolve(str(cat.get("name", "")))
        mapping[int(cat["id"])] = lesion.id if lesion else None
    return mapping


def read_coco(path: str | Path) -> CocoFile:
    """Parse a COCO detection file; ``ValueError`` naming the file when it is unreadable or not COCO.
    Category names go through the taxonomy (Bethesda names and QuPath classes map to our classes)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable COCO file ({err})") from None
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise ValueError(f"{path}: not a COCO file (needs images, annotations, categories)")
    tally = LabelTally()
    categories = lesion_categories(data["categories"], tally)
    images = list(data["images"])
    by_image: dict[int, list[dict[str, Any]]] = {int(img["id"]): [] for img in images}
    invalid = []
    for k, ann in enumerate(data["annotations"]):
        if not _valid_bbox(ann.get("bbox")):
            invalid.append(ann.get("id", f"#{k}"))
            continue
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    if invalid:
        log.warning(
            "%s: %d annotation(s) dropped: a bbox that is not 4 finite numbers with positive width and height "
            "(first: id %s)",
            path,
            len(invalid),
            invalid[0],
        )
    return CocoFile(path, dict(data.get("info") or {}), images, by_image, categories, tally.summary(), len(invalid))


def _valid_bbox(bbox: Any) -> bool:
    """``[x, y, w, h]``: four finite numbers, ``w`` and ``h`` positive."""
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return False
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox):
        return False
    return bbox[2] > 0 and bbox[3] > 0


def coco_categories() -> list[dict[str, Any]]:
    return [{"id": c.id, "name": c.code, "supercategory": "lesion", "full_name": c.name} for c in LESION_CLASSES]


@dataclass
class CocoBuilder:
    """Accumulates images and their labels; ids are assigned in insertion order (deterministic)."""

    info: dict[str, Any] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)

    def add_image(self, file_name: str, width: int, height: int, labels: list[PatchLabel], **extra: Any) -> int:
        """Add one patch; ``extra`` (slide id, level-0 origin, mpp, ...) is stored on the image record."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": width, "height": height, **extra})
        for lab in labels:
            b = lab.box
            self.annotations.append(
                {
                    "id": len(self.annotations) + 1,
                    "image_id": image_id,
                    "category_id": BY_CODE[lab.label].id,
                    "bbox": [b.x0, b.y0, b.width, b.height],
                    "area": b.area,
                    "iscrowd": int(lab.ignore),
                }
            )
        return image_id

    def add_record(self, record: PatchRecord, **extra: Any) -> int:
        """Add a cut patch, keeping its level-0 origin and kind on the image record."""
        return self.add_image(
            record.file_name,
            record.width,
            record.height,
            list(record.labels),
            x0=record.x0,
            y0=record.y0,
            kind=record.kind,
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": self.info,
            "images": self.images,
            "annotations": self.annotations,
            "categories": coco_categories(),
        }

    def write(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict(), indent=None)
