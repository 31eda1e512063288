"""COCO detection datasets of patches (boxes in patch pixels, categories from the taxonomy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_pipeline.data.labeled_patches import PatchRecord
from wsi_pipeline.data.patches import PatchLabel
from wsi_pipeline.io import write_json_atomic
from wsi_pipeline.taxonomy import BY_CODE, LESION_CLASSES


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
