"""``wsi-pipeline eval`` on COCO patch sets and on whole-slide GeoJSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from wsi_pipeline.cli.main import cli
from wsi_pipeline.data.geojson_io import read_geojson, write_geojson
from wsi_pipeline.types import Annotation, Box


def test_coco_patches_perfect_and_degraded(tiny_dataset: Path, tmp_path: Path):
    gt_path = tiny_dataset / "patches" / "train.json"
    gt = json.loads(gt_path.read_text())
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]
    (tmp_path / "perfect.json").write_text(json.dumps(perfect))
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli, ["eval", "--gt", str(gt_path), "--pred", str(tmp_path / "perfect.json"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["overall"]["mAP"] > 0.999 and report["mode"] == "patches (COCO)"
    # half the detections shifted by half a box: AP drops at high IoU, not at IoU 0.10
    rng = np.random.default_rng(0)
    shifted = []
    for det in perfect:
        x, y, w, h = det["bbox"]
        if rng.uniform() < 0.5:
            x += 0.5 * w
        shifted.append({**det, "bbox": [x, y, w, h], "score": float(rng.uniform())})
    (tmp_path / "shifted.json").write_text(json.dumps(shifted))
    result = CliRunner().invoke(
        cli, ["eval", "--gt", str(gt_path), "--pred", str(tmp_path / "shifted.json"), "--out", str(out)]
    )
    report = json.loads(out.read_text())
    assert report["overall"]["AP10"] > 0.95
    assert report["overall"]["mAP"] < 0.9
    assert "mean" in result.output and "AP10" in result.output


def test_whole_slides_from_geojson(tiny_dataset: Path, tmp_path: Path):
    gt_dir = tmp_path / "gt"
    pred_dir = tmp_path / "pred"
    gt_dir.mkdir()
    for path in sorted((tiny_dataset / "slides").glob("L*.geojson")):
        (gt_dir / path.name).write_text(path.read_text())
        anns = read_geojson(path)
        # predictions: every lesion found except the first; one false positive per slide
        preds = [Annotation(a.box, a.label, {"score": 0.8}) for a in anns[1:]]
        preds.append(Annotation(Box(5, 5, 60, 60), "HSIL", {"score": 0.99}))
        write_geojson(pred_dir / path.name, preds, slide_id=path.stem, mpp=0.25)
    out = tmp_path / "slides.json"
    result = CliRunner().invoke(cli, ["eval", "--gt", str(gt_dir), "--pred", str(pred_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["mode"] == "whole slides (GeoJSON)" and report["images"] == 3
    assert 0.3 < report["overall"]["mAP"] < 1.0
    missed = sum(row["missed"] for name, row in report["confusion"].items() if name != "background")
    assert missed == 3  # the first lesion of each slide
    assert report["confusion"]["background"]["HSIL"] == 3


def test_prediction_without_score_is_a_clear_error(tiny_dataset: Path, tmp_path: Path):
    gt = tiny_dataset / "slides" / "L0001.geojson"
    pred = tmp_path / "L0001.geojson"
    write_geojson(pred, read_geojson(gt), slide_id="L0001", mpp=0.25)  # no scores
    result = CliRunner().invoke(cli, ["eval", "--gt", str(gt), "--pred", str(pred)])
    assert result.exit_code == 1
    assert "L0001.geojson: feature 0 has no score" in result.output


def test_nucleus_centred_labels_score_by_centre_and_pair_by_slide_name(tmp_path: Path):
    """CRIC-style ground truth (cric-<id>-gt.geojson, nucleus-centred labels) against infer's <id>.geojson."""
    truth, pred = tmp_path / "gt", tmp_path / "pred"
    truth.mkdir()
    nuclei = [Annotation(Box(95, 95, 105, 105), "HSIL"), Annotation(Box(395, 195, 405, 205), "LSIL")]
    write_geojson(truth / "cric-f00d-gt.geojson", nuclei, slide_id="f00d", mpp=0.25)
    cells = [  # whole cells around the nuclei: IoU with the small labels is low, their centres are inside
        Annotation(Box(60, 60, 150, 160), "HSIL", {"score": 0.9}),
        Annotation(Box(350, 150, 440, 260), "LSIL", {"score": 0.8}),
    ]
    write_geojson(pred / "f00d.geojson", cells, slide_id="f00d", mpp=0.25)
    out = {}
    for match in ("iou", "centre"):
        result = CliRunner().invoke(
            cli,
            ["-q", "eval", "--gt", str(truth), "--pred", str(pred), "--match", match, "--out", str(tmp_path / match)],
        )
        assert result.exit_code == 0, result.output
        out[match] = json.loads((tmp_path / match).read_text())
    assert out["centre"]["overall"]["mAP"] == 1.0 and out["centre"]["images"] == 1
    assert out["iou"]["overall"]["mAP"] < 0.5  # boxes of another size: IoU cannot tell they agree
