"""QuPath-compatible GeoJSON: lesion boxes out, any polygon annotations in.

Written files are FeatureCollections of ``Polygon`` features in level-0 pixel coordinates with
``properties.objectType = "annotation"`` and ``properties.classification = {name, color}``: QuPath
(0.3+) imports them by drag and drop. The collection carries a foreign member ``wsi_pipeline`` with
the slide id, mpp and coordinate frame.
"""

from __future__ import annotations

import gzip
import json
import math
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import geojson
import ijson
from shapely.geometry import shape

from wsi_pipeline.io import write_text_atomic
from wsi_pipeline.taxonomy import BY_CODE, LabelTally
from wsi_pipeline.types import Annotation, Box

_NAMESPACE = uuid.UUID("6f1d8a52-3c1e-4a8e-9a57-1d0c7b3f2e11")


def box_feature(annotation: Annotation, feature_id: str) -> geojson.Feature:
    """One lesion box as a QuPath annotation feature (classification name = taxonomy code)."""
    b = annotation.box
    ring = [[b.x0, b.y0], [b.x1, b.y0], [b.x1, b.y1], [b.x0, b.y1], [b.x0, b.y0]]
    lesion = BY_CODE[annotation.label]
    props: dict[str, Any] = {
        "objectType": "annotation",
        "classification": {"name": lesion.code, "color": list(lesion.color)},
        "isLocked": False,
    }
    props.update(annotation.properties)
    return geojson.Feature(id=feature_id, geometry=geojson.Polygon([ring]), properties=props)


def annotations_to_geojson(annotations: Iterable[Annotation], *, slide_id: str, mpp: float | None) -> dict[str, Any]:
    """FeatureCollection (plain dict) of lesion boxes; feature ids are stable UUIDs per slide/index."""
    features = [box_feature(a, str(uuid.uuid5(_NAMESPACE, f"{slide_id}/{i}"))) for i, a in enumerate(annotations)]
    collection = dict(geojson.FeatureCollection(features))
    collection["wsi_pipeline"] = {
        "slide_id": slide_id,
        "mpp": mpp,
        "coordinates": "level-0 pixels, boxes as polygons (x0,y0)-(x1,y1), x1/y1 exclusive",
    }
    return collection


def write_geojson(path: str | Path, annotations: Iterable[Annotation], *, slide_id: str, mpp: float | None) -> None:
    write_text_atomic(
        path, json.dumps(annotations_to_geojson(annotations, slide_id=slide_id, mpp=mpp), indent=1) + "\n"
    )


def _label_of(props: dict[str, Any]) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict) and cls.get("name"):
        return str(cls["name"])
    if isinstance(cls, str) and cls:
        return cls
    for key in ("label", "name", "class", "class_name"):
        if props.get(key):
            return str(props[key])
    return None


def read_geojson(path: str | Path, tally: LabelTally | None = None, point_box: float | None = None) -> list[Annotation]:
    """Lesion annotations (bounding boxes of any geometry) from a GeoJSON file (``.geojson.gz`` too).

    Labels come from ``classification.name`` (QuPath) or ``label``/``name`` (other tools) and are
    mapped through the taxonomy; non-target and unknown labels are counted in ``tally`` and skipped.
    A ``Point`` (a cell's centre) becomes a square box ``point_box`` pixels wide centred on it, each point of
    a ``MultiPoint`` its own box; without ``point_box`` points are skipped and counted
    (``tally.skipped``), so ``tally.mapped`` counts exactly the boxes returned. A detection confidence
    (``score``/``confidence``/``probability``, also as a QuPath measurement) is kept in
    ``properties["score"]``. Raises ``ValueError`` naming the file when it is not GeoJSON.
    """
    path = Path(path)
    tally = tally if tally is not None else LabelTally()
    try:
        mine = LabelTally()  # merged into ``tally`` once the file is read
        out = _annotations(path, _features(path), mine, point_box)
    except ijson.JSONError:  # not strict JSON (NaN, Infinity, as Python writes them): read it whole
        mine = LabelTally()
        out = _annotations(path, iter(_whole_file(path)), mine, point_box)
    for name in ("mapped", "other", "unknown", "skipped"):
        getattr(tally, name).update(getattr(mine, name))
    return out


def _whole_file(path: Path) -> list[Any]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable GeoJSON file ({err})") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        return list(data.get("features", []))
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    if isinstance(data, list):
        return data
    raise ValueError(f"{path}: expected a GeoJSON FeatureCollection, Feature or list of features")


def _annotations(path: Path, features: Iterator[Any], tally: LabelTally, point_box: float | None) -> list[Annotation]:
    out: list[Annotation] = []
    for i, feat in _checked(features, path):
        props = (feat.get("properties") if isinstance(feat, dict) else None) or {}
        label = _label_of(props)
        if label is None:
            tally.unknown["<unlabeled>"] += 1
            continue
        lesion = tally.resolve(label)
        if lesion is None:
            continue
        try:
            geometry = shape(feat["geometry"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{path}: feature {i} has no valid geometry ({err})") from None
        lesions = len(geometry.geoms) if geometry.geom_type == "MultiPoint" else 1  # each point is a lesion
        tally.mapped[lesion.code] += lesions - 1
        boxes, reason = _boxes_of(geometry, point_box)
        if not boxes:
            tally.unmap(lesion.code, reason, lesions)
            continue
        extra: dict[str, Any] = {"source_label": label}
        score = _score_of(props)
        if score is not None:
            extra["score"] = score
        out += [Annotation(box, lesion.code, extra) for box in boxes]
    return out


def _features(path: Path) -> Iterator[Any]:
    """The features of a FeatureCollection (or a list of features, or one Feature), parsed one at a time
    (ijson): a 10^6-detection file never sits in memory as one document."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        first = next(ijson.parse(fh), ("", "", None))[1]
    with opener(path, "rb") as fh:
        if first == "start_array":
            yield from ijson.items(fh, "item", use_float=True)
            return
        found = False
        for feature in ijson.items(fh, "features.item", use_float=True):
            found = True
            yield feature
    if not found and first == "start_map":  # a single Feature, or a collection without features
        with opener(path, "rb") as fh:
            data = json.load(fh)
        if data.get("type") == "Feature":
            yield data
        elif data.get("type") != "FeatureCollection":
            raise ValueError(f"{path}: expected a GeoJSON FeatureCollection, Feature or list of features")
    elif first not in ("start_map", "start_array"):
        raise ValueError(f"{path}: expected a GeoJSON FeatureCollection, Feature or list of features")


def _checked(features: Iterator[Any], path: Path) -> Iterator[tuple[int, Any]]:
    """``enumerate(features)`` with unreadable files as one-line errors naming the file."""
    try:
        yield from enumerate(features)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable GeoJSON file ({err})") from None


def _boxes_of(geometry: Any, point_box: float | None) -> tuple[list[Box], str]:
    """The boxes a geometry stands for, or none and the reason."""
    if geometry.is_empty:
        return [], "empty geometry"
    if geometry.geom_type in ("Point", "MultiPoint"):
        if point_box is None:
            return [], "point without a box size"
        points = [geometry] if geometry.geom_type == "Point" else list(geometry.geoms)
        half = point_box / 2
        return [Box(p.x - half, p.y - half, p.x + half, p.y + half) for p in points], ""
    x0, y0, x1, y1 = geometry.bounds
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return [], "non-finite coordinates"
    return [Box(x0, y0, x1, y1)], ""


def _score_of(props: dict[str, Any]) -> float | None:
    """A detection confidence from ``properties.score`` or a QuPath measurement named like one."""
    candidates = [props.get(k) for k in ("score", "confidence", "probability")]
    measurements = props.get("measurements")
    if isinstance(measurements, dict):
        candidates += [v for k, v in measurements.items() if k.lower() in ("score", "confidence", "probability")]
    elif isinstance(measurements, list):  # older QuPath: [{"name": ..., "value": ...}]
        candidates += [
            m.get("value")
            for m in measurements
            if str(m.get("name", "")).lower() in ("score", "confidence", "probability")
        ]
    for value in candidates:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None
