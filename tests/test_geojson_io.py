import json
from pathlib import Path

import pytest

from wsi_pipeline.data.geojson_io import annotations_to_geojson, read_geojson, write_geojson
from wsi_pipeline.taxonomy import LabelTally
from wsi_pipeline.types import Annotation, Box


def test_qupath_geojson_round_trip(tmp_path: Path):
    anns = [Annotation(Box(10, 20, 110, 220), "HSIL"), Annotation(Box(5.5, 6, 7, 8), "ASC-US")]
    path = tmp_path / "s.geojson"
    write_geojson(path, anns, slide_id="S1", mpp=0.25)
    data = json.loads(path.read_text())
    feat = data["features"][0]
    assert data["type"] == "FeatureCollection" and data["wsi_pipeline"]["mpp"] == 0.25
    assert feat["properties"]["objectType"] == "annotation"
    assert feat["properties"]["classification"] == {"name": "HSIL", "color": [220, 20, 40]}
    assert feat["geometry"]["coordinates"][0] == [[10, 20], [110, 20], [110, 220], [10, 220], [10, 20]]
    assert [(a.box, a.label) for a in read_geojson(path)] == [(a.box, a.label) for a in anns]
    # ids are stable per slide and index
    assert annotations_to_geojson(anns, slide_id="S1", mpp=0.25)["features"][1]["id"] == data["features"][1]["id"]


def test_reads_third_party_cric_labels_and_reports_non_targets(shared_data: Path):
    path = shared_data / "cric-sample" / "cric-3731e3064f5b3dfaf2df337f4b481c78-gt.geojson"
    tally = LabelTally()
    anns = read_geojson(path, tally)
    assert len(anns) == 13 and {a.label for a in anns} == {"LSIL"}
    assert tally.mapped == {"LSIL": 13}
    assert sum(tally.other.values()) == 13 and not tally.unknown  # NILM cells: known, not a detector class
    assert all(a.box.width <= 64 and a.box.height <= 64 for a in anns)


def test_unreadable_geojson_names_the_file(tmp_path: Path):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.geojson: not a readable GeoJSON file"):
        read_geojson(bad)
    wrong = tmp_path / "wrong.geojson"
    wrong.write_text('{"type": "Point", "coordinates": [1, 2]}')
    with pytest.raises(ValueError, match="expected a GeoJSON FeatureCollection"):
        read_geojson(wrong)


def _collection(*features: dict) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def _feature(geometry: dict, label: str = "HSIL") -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": {"classification": {"name": label}}}


def test_points_become_boxes_of_the_given_size_and_counts_say_what_was_used(tmp_path):
    import gzip
    import json

    from wsi_pipeline.data.geojson_io import read_geojson
    from wsi_pipeline.taxonomy import LabelTally

    data = _collection(
        _feature({"type": "Point", "coordinates": [100, 50]}),
        _feature({"type": "MultiPoint", "coordinates": [[10, 10], [300, 300]]}, "LSIL"),
        _feature({"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 6], [0, 0]]]}, "AGC"),
    )
    path = tmp_path / "a.geojson.gz"
    with gzip.open(path, "wt") as fh:
        json.dump(data, fh)
    tally = LabelTally()
    anns = read_geojson(path, tally, point_box=20)
    assert [(a.label, a.box.xyxy) for a in anns] == [
        ("HSIL", (90, 40, 110, 60)),
        ("LSIL", (0, 0, 20, 20)),  # each point of a MultiPoint is its own lesion, not one box over all
        ("LSIL", (290, 290, 310, 310)),
        ("AGC", (0, 0, 4, 6)),
    ]
    assert dict(tally.mapped) == {"HSIL": 1, "LSIL": 2, "AGC": 1} and not tally.skipped
    tally = LabelTally()
    assert [a.label for a in read_geojson(path, tally)] == ["AGC"]  # no box size: points are skipped ...
    assert dict(tally.mapped) == {"AGC": 1} and dict(tally.skipped) == {"point without a box size": 3}  # ... said
    assert "skipped: point without a box size=3" in tally.summary()


def test_every_geojson_shape_reads_streamed_or_whole(tmp_path):
    from wsi_pipeline.data.geojson_io import read_geojson

    feature = _feature({"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 6], [0, 0]]]}, "AGC")
    cases = {
        "collection.geojson": json.dumps(_collection(feature, feature)),
        "list.geojson": json.dumps([feature, feature]),
        "one.geojson": json.dumps(feature),
        "nan.geojson": json.dumps(
            _collection({**feature, "properties": {**feature["properties"], "score": float("nan")}})
        ),
        "empty.geojson": json.dumps(_collection()),
    }
    counts = {}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        counts[name] = len(read_geojson(tmp_path / name))
    assert counts == {
        "collection.geojson": 2,
        "list.geojson": 2,
        "one.geojson": 1,
        "nan.geojson": 1,
        "empty.geojson": 0,
    }
    for name, text in {
        "bytes.geojson": "\x00\x01 not json",
        "other.geojson": '{"type": "Topology"}',
        "num.geojson": "3",
    }.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            read_geojson(tmp_path / name)
