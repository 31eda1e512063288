"""Detections as QuPath GeoJSON, streamed to disk: memory does not grow with the number of detections.

The file is a FeatureCollection QuPath imports as it is: one Feature per lesion with a UUID ``id``
(derived from the slide, class and box, so a re-run or a cluster run writes the same file), a closed
Polygon in level-0 pixels, ``properties.objectType`` ("detection" or "annotation"),
``classification`` {name, color} from the taxonomy and ``measurements`` (score, the probability of each
class, area in um^2). The collection's foreign member ``wsi_pipeline`` records the slide, its mpp, the
coordinate frame and the provenance (version, checkpoint hash, resolved config). Written atomically
(``.geojson`` or ``.geojson.gz``).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import numpy as np

from wsi_pipeline.io import atomic_path
from wsi_pipeline.taxonomy import BY_ID, LESION_CLASSES

NAMESPACE = uuid.UUID("0b3f7f4e-5a0c-4f41-9d55-6e3c2f8a9e17")


class ScoredBoxes(Protocol):
    """Columnar detections: ``boxes`` (n, 4) xyxy level-0, ``labels`` (n,), ``scores`` (n,), ``probs`` (n, K+1)
    (``wsi_pipeline.inference.merge.Detections`` is one)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    probs: np.ndarray

    def __len__(self) -> int: ...


def feature_id(slide_id: str, label: int, box: np.ndarray) -> str:
    """Deterministic UUID of a detection: the same slide, class and box give the same id."""
    key = f"{slide_id}/{label}/" + ",".join(f"{v:.1f}" for v in box)
    return str(uuid.uuid5(NAMESPACE, key))


def detection_feature(slide_id: str, box: np.ndarray, label: int, score: float, probs: np.ndarray, mpp: float,
                      object_type: str) -> dict[str, Any]:  # fmt: skip
    """One detection as a QuPath feature (box xyxy in level-0 pixels)."""
    x0, y0, x1, y1 = (round(float(v), 2) for v in box)
    lesion = BY_ID[int(label)]
    measurements = {"score": round(float(score), 5)}
    measurements.update({f"p_{c.code}": round(float(probs[c.id]), 5) for c in LESION_CLASSES})
    measurements["area_um2"] = round((x1 - x0) * (y1 - y0) * mpp * mpp, 2)
    return {
        "type": "Feature",
        "id": feature_id(slide_id, int(label), np.array([x0, y0, x1, y1])),
        "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
        "properties": {
            "objectType": object_type,
            "classification": {"name": lesion.code, "color": list(lesion.color)},
            "isLocked": False,
            "measurements": measurements,
        },
    }


class GeoJsonStream:
    """``with GeoJsonStream(path, ...) as out: out.write(detections)`` ... the file appears complete on exit
    (and not at all if the block fails)."""

    def __init__(self, path: Path, *, slide_id: str, mpp: float, object_type: str = "detection",
                 provenance: dict[str, Any] | None = None):  # fmt: skip
        self.path, self.slide_id, self.mpp, self.object_type = Path(path), slide_id, mpp, object_type
        self.header = {
            "slide_id": slide_id,
            "mpp": mpp,
            "coordinates": "level-0 pixels, boxes as polygons (x0,y0)-(x1,y1), x1/y1 exclusive",
            **(provenance or {}),
        }
        self.count = 0
        self._stack = contextlib.ExitStack()
        self._fh: IO[str] | None = None

    def __enter__(self) -> GeoJsonStream:
        tmp = self._stack.enter_context(atomic_path(self.path))
        opener = gzip.open if self.path.name.endswith(".gz") else open
        self._fh = self._stack.enter_context(opener(tmp, "wt", encoding="utf-8"))  # type: ignore[operator]
        head = json.dumps({"type": "FeatureCollection", "wsi_pipeline": self.header})
        self._fh.write(head[:-1] + ', "features": [\n')
        return self

    def write(self, dets: ScoredBoxes) -> None:
        assert self._fh is not None, "use GeoJsonStream as a context manager"
        for k in range(len(dets)):
            feature = detection_feature(
                self.slide_id, dets.boxes[k], int(dets.labels[k]), float(dets.scores[k]), dets.probs[k], self.mpp,
                self.object_type,
            )  # fmt: skip
            self._fh.write((",\n" if self.count else "") + json.dumps(feature, separators=(",", ":")))
            self.count += 1

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None and self._fh is not None:
            self._fh.write("\n]}\n")
        self._stack.__exit__(kind, err, tb)
