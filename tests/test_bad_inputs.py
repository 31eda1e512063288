"""What each command refuses, and what it warns about: one table per command, input -> one-line message.

Every row is a careless user's input that once gave a silent wrong result or a traceback. A refused input
exits with 1 (bad file or value) or 2 (bad option) and a one-line message naming the file and the problem;
a warning lets the command finish and says what it did.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from wsi_pipeline.cli.main import cli

NAN, INF = float("nan"), float("inf")


def run(*args: str):
    return CliRunner().invoke(cli, ["-q", *args])


def one_line(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.startswith("Error")]
    assert len(lines) == 1, output
    return lines[0]


# -- eval: predictions that are not predictions ------------------------------------------------------

COCO_GT = {
    "images": [{"id": 1, "file_name": "p.png", "width": 64, "height": 64}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 20], "iscrowd": 0}],
    "categories": [{"id": 2, "name": "LSIL"}],
}
GOOD_DET = {"image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 20], "score": 0.9}

EVAL_COCO = [
    # (detection fields changed, message)
    ({"score": NAN}, "detection 0: score nan is not a probability in [0, 1]"),  # once mAP 100
    ({"score": 1.5}, "detection 0: score 1.5 is not a probability in [0, 1]"),
    ({"score": INF}, "detection 0: score inf is not a probability in [0, 1]"),
    ({"score": -0.1}, "detection 0: score -0.1 is not a probability in [0, 1]"),
    ({"bbox": [10, 10, -5, 20]}, "detection 0: box [10.0, 10.0, 5.0, 30.0] has no positive width and height"),
    ({"bbox": [NAN, 10, 5, 5]}, "detection 0: box [nan, 10.0, nan, 15.0] has non-finite coordinates"),
    ({"category_id": 99}, "detection 0: category_id 99 is not a ground-truth category (2)"),
    ({"bbox": [1, 2]}, "detection 0 lacks image_id/category_id/bbox/score"),
]


@pytest.mark.parametrize(("change", "message"), EVAL_COCO)
def test_eval_refuses_invalid_coco_predictions(tmp_path: Path, change: dict, message: str):
    (tmp_path / "gt.json").write_text(json.dumps(COCO_GT))
    (tmp_path / "pred.json").write_text(json.dumps([GOOD_DET, {**GOOD_DET, **change}][::-1]))
    result = run("eval", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"))
    assert result.exit_code == 1
    assert one_line(result.output).startswith(f"Error: {tmp_path / 'pred.json'}: {message}")


def _slides(folder: Path, *names: str, label: str = "LSIL", score: float | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    for name in names:
        props: dict = {"classification": {"name": label}}
        if score is not None:
            props["score"] = score
        ring = [[10, 10], [50, 10], [50, 40], [10, 40], [10, 10]]
        feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props}
        (folder / f"{name}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return folder


def test_eval_refuses_a_ground_truth_slide_without_predictions_unless_told(tmp_path: Path):
    gt = _slides(tmp_path / "gt", "S1", "S2", "S3")
    pred = _slides(tmp_path / "pred", "S1", "S2", score=0.9)
    result = run("eval", "--gt", str(gt), "--pred", str(pred))  # once: mAP 67 without a word
    assert result.exit_code == 1
    assert "no predictions for 1 ground-truth slide(s): S3 (--missing-as-empty" in one_line(result.output)
    counted = run("eval", "--gt", str(gt), "--pred", str(pred), "--missing-as-empty", "--out", str(tmp_path / "r"))
    assert counted.exit_code == 0, counted.output
    assert json.loads((tmp_path / "r").read_text())["overall"]["mAP"] == pytest.approx(2 / 3, abs=0.01)


EVAL_SLIDES = [
    # (label, score, exit code, message)
    ("LSIL", NAN, 1, "S1.geojson: feature 0: score nan is not a probability in [0, 1]"),
    ("LSIL", 7.0, 1, "S1.geojson: feature 0: score 7.0 is not a probability in [0, 1]"),
    ("LSIL", None, 1, "S1.geojson: feature 0 has no score (properties.score)"),
    ("Mitosis", 0.9, 0, "prediction labels not evaluated: mapped none; not detector classes: none; unknown: Mitosis=1"),
]


@pytest.mark.parametrize(("label", "score", "code", "message"), EVAL_SLIDES)
def test_eval_checks_every_slide_prediction(tmp_path: Path, label: str, score, code: int, message: str):
    gt = _slides(tmp_path / "gt", "S1")
    pred = _slides(tmp_path / "pred", "S1", label=label, score=score)
    result = CliRunner().invoke(cli, ["eval", "--gt", str(gt), "--pred", str(pred)])
    assert result.exit_code == code and message in result.output, result.output


def test_eval_option_and_output_errors_are_one_line(tmp_path: Path, monkeypatch):
    (tmp_path / "gt.json").write_text(json.dumps(COCO_GT))
    (tmp_path / "pred.json").write_text(json.dumps([GOOD_DET]))
    base = ["eval", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")]
    zero = run(*base, "--max-dets", "0")  # once: mAP 0 with a full confusion matrix
    assert zero.exit_code == 2 and "Invalid value for '--max-dets': 0 is not in the range x>=1" in zero.output
    (tmp_path / "taken").mkdir()
    into_folder = run(*base, "--out", str(tmp_path / "taken"))
    assert into_folder.exit_code == 2 and "is a directory" in into_folder.output

    def disk_full(src, dst):  # the rename of a finished temporary fails (a full disk, a quota)
        raise OSError(28, "No space left on device", str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", disk_full)
    full = run(*base, "--out", str(tmp_path / "r.json"))  # once: the message named the temporary file
    assert full.exit_code == 1
    assert one_line(full.output) == f"Error: {tmp_path / 'r.json'}: cannot write (No space left on device)"
    assert not list(tmp_path.glob(".tmp-*"))


# -- checkpoints, devices, configs ---------------------------------------------------------------------


class Pickled:  # any class: torch.save pickles it, and loading it would run code
    pass


CHECKPOINT_AND_DEVICE = [
    # (what, args after the command, exit code, message)
    ("a pickle that would run code", "pickle", 1, "not a weights-only checkpoint (it pickles GLOBAL"),
    ("random bytes", "garbage", 1, "not a readable checkpoint (corrupt or truncated"),
    ("a bogus device", "device", 1, "device 'bogus': not a device name (this machine offers: auto, cpu"),
]


@pytest.mark.parametrize(("what", "case", "code", "message"), CHECKPOINT_AND_DEVICE)
def test_eval_checkpoint_and_device_errors(tmp_path: Path, what: str, case: str, code: int, message: str):
    (tmp_path / "gt.json").write_text(json.dumps(COCO_GT))
    ckpt = tmp_path / "model.pt"
    if case == "pickle":
        torch.save({"format": "wsi-pipeline-checkpoint/2", "x": Pickled()}, ckpt)
    else:
        ckpt.write_bytes(b"\x80\x02not a checkpoint")
    device = "bogus" if case == "device" else "cpu"
    result = run("eval", "--gt", str(tmp_path / "gt.json"), "--checkpoint", str(ckpt), "--device", device)
    assert result.exit_code == code and message in one_line(result.output), (what, result.output)


CONFIG_VALUES = [
    # (--set, message): numbers that make no sense, booleans taken for numbers
    ("tile.target_mpp=.inf", "tile.target_mpp: Input should be a finite number"),
    ("tile.target_mpp=-0.25", "tile.target_mpp: Input should be greater than or equal to 0.01"),
    ("tile.target_mpp=1e-9", "tile.target_mpp: Input should be greater than or equal to 0.01"),
    ("tile.foreground.od_threshold=.nan", "tile.foreground.od_threshold: Input should be a finite number"),
    ("train.lr=true", "train.lr: expected a number, got a boolean"),
    ("tile.min_foreground=1.5", "tile.min_foreground: Input should be less than or equal to 1"),
    ("tile.labels.annotation_pattern=gt.geojson", "annotation_pattern: must contain {slide}"),
]


@pytest.mark.parametrize(("override", "message"), CONFIG_VALUES)
def test_config_values_that_make_no_sense(tmp_path: Path, override: str, message: str):
    result = run("tile", str(tmp_path), "--out", str(tmp_path / "o"), "--set", override)
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize("value", ["-0.25", "0", "inf", "nan", "1e-9"])
def test_mpp_is_a_resolution(tmp_path: Path, value: str):
    result = run("tile", str(tmp_path), "--out", str(tmp_path / "o"), f"--mpp={value}")
    assert result.exit_code == 2 and "is not a resolution (microns per pixel between 0.01 and 100)" in result.output


def test_random_bytes_as_config_name_the_file(tmp_path: Path):
    (tmp_path / "c.yaml").write_bytes(bytes(range(128, 256)))
    result = run("tile", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(tmp_path / "c.yaml"))
    assert result.exit_code == 2 and f"{tmp_path / 'c.yaml'}: not a YAML text file" in result.output


# -- tile --------------------------------------------------------------------------------------------


@pytest.fixture()
def slides(tiny_dataset: Path, tmp_path: Path) -> Path:
    """Two tiny slides named S1 and S10 with their ground truth under other names."""
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(tiny_dataset / "slides" / "L0001.tiff", folder / "S1.tiff")
    shutil.copy(tiny_dataset / "slides" / "L0002.tiff", folder / "S10.tiff")
    return folder


SMALL = ["--set", "tile.patch_size=512", "--set", "tile.foreground.mask_mpp=2.0"]


def _summary(out: Path) -> dict[str, dict]:
    return {r["slide_id"]: r for r in json.loads((out / "summary.json").read_text())}


def test_tile_refuses_name_clashes_and_other_files_stores(slides: Path, tmp_path: Path):
    shutil.copy(slides / "S1.tiff", slides / "S1.svs")  # two slides named S1 in one folder
    out = tmp_path / "out"
    result = run("tile", str(slides), "--out", str(out), *SMALL)
    rows = _summary(out)
    assert result.exit_code == 1 and rows["S10"]["status"] == "done"
    clash = [r for r in json.loads((out / "summary.json").read_text()) if r["slide_id"] == "S1"]
    assert len(clash) == 2 and all("S1.svs and S1.tiff are both named S1" in r["reason"] for r in clash)
    (slides / "S1.svs").unlink()
    shutil.copy(slides / "S10.tiff", tmp_path / "S10.tiff")
    shutil.copy(slides / "S1.tiff", slides / "S10.tiff")  # another file under a finished slide's name
    again = run("tile", str(slides), "--out", str(out), *SMALL)
    assert again.exit_code == 1 and "holds patches of another file" in _summary(out)["S10"]["reason"]
    assert "pass --overwrite" in _summary(out)["S10"]["reason"]
    forced = run("tile", str(slides), "--out", str(out), *SMALL, "--overwrite")
    assert forced.exit_code == 0 and _summary(out)["S10"]["status"] == "done", _summary(out)


def test_tile_reports_folder_entries_it_cannot_use(slides: Path, tmp_path: Path):
    (slides / "x.svs").mkdir()  # a folder named like a slide
    (slides / "gone.tiff").symlink_to(tmp_path / "nowhere.tiff")  # a dangling link
    (tmp_path / "a.geojson").write_text("{}")  # a GeoJSON given as input (once read as a list file)
    out = slides / "out"  # --out inside the input folder: its own outputs are never slides
    result = run("tile", str(slides), str(tmp_path / "a.geojson"), "--out", str(out), *SMALL)
    rows = _summary(out)
    assert result.exit_code == 1
    assert rows["x"]["reason"] == "a folder named like a slide file, not a slide"
    assert rows["gone"]["reason"] == "dangling symbolic link"
    assert rows["a"]["reason"].startswith("not a slide format read here (.geojson)")
    assert {k for k, r in rows.items() if r["status"] == "done"} == {"S1", "S10"}
    assert "failed" in (out / "summary.tsv").read_text()


def test_tile_warns_about_a_slide_without_cells_and_cleans_only_dead_temporaries(tmp_path: Path):
    import tifffile

    folder = tmp_path / "blank"
    folder.mkdir()
    tifffile.imwrite(folder / "glass.tiff", np.full((1024, 1024, 3), 245, np.uint8), resolution=(40000, 40000),
                     resolutionunit="CENTIMETER", tile=(256, 256))  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    dead = out / f".tmp-x~{os.uname().nodename}~999999999~abc.json"
    alive = out / f".tmp-y~{os.uname().nodename}~{os.getpid()}~abc.json"
    other_host = out / ".tmp-z~elsewhere~123~abc.json"
    for f in (dead, alive, other_host):
        f.write_text("{}")
    result = CliRunner().invoke(cli, ["tile", str(folder), "--out", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    assert "no cell foreground, 0 patches" in _summary(out)["glass"]["reason"]
    assert "glass: warning: no cell foreground" in result.output
    assert not dead.exists() and alive.exists() and other_host.exists()  # live or foreign work is not touched


# -- tile --annotations ------------------------------------------------------------------------------


def _annotations(folder: Path, name: str, source: Path, extra: list[dict] = ()) -> None:
    folder.mkdir(exist_ok=True)
    data = json.loads(source.read_text())
    data["features"] += list(extra)
    (folder / name).write_text(json.dumps(data))


def test_annotations_pair_by_whole_token_and_report_the_rest(slides: Path, tiny_dataset: Path, tmp_path: Path):
    ann = tmp_path / "ann"
    _annotations(ann, "case-S10-gt.geojson", tiny_dataset / "slides" / "L0002.geojson")  # S10's only
    out = tmp_path / "out"
    result = run("tile", str(slides), "--annotations", str(ann), "--out", str(out), *SMALL)
    assert result.exit_code == 1  # S1 has no annotations: reported, not fed S10's labels (once: it was)
    assert f"FAILED S1: no annotation file names it in {ann}" in result.output
    report = json.loads((out / "labels_report.json").read_text())
    assert [f["slide_id"] for f in report["failures"]] == ["S1"]


def test_one_annotation_file_is_not_applied_to_every_slide(slides: Path, tiny_dataset: Path, tmp_path: Path):
    one = tiny_dataset / "slides" / "L0001.geojson"
    result = run("tile", str(slides), "--annotations", str(one), "--out", str(tmp_path / "o"), *SMALL)
    assert result.exit_code == 1
    assert (
        one_line(result.output) == f"Error: {one}: one annotation file for 2 slides, and it names none of them; "
        "give a folder of per-slide files (or one slide)"
    )


def test_points_and_features_outside_the_slide_are_counted_as_used_or_skipped(
    slides: Path, tiny_dataset: Path, tmp_path: Path
):
    ann = tmp_path / "ann"
    props = {"classification": {"name": "HSIL"}}
    extra = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [800, 700]}, "properties": props},
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[300, 300], [1200, 1000]]},
         "properties": props},
        {"type": "Feature", "geometry": {"type": "Polygon",
         "coordinates": [[[5000, 5000], [5100, 5000], [5100, 5100], [5000, 5000]]]}, "properties": props},
    ]  # fmt: skip
    _annotations(ann, "S1.geojson", tiny_dataset / "slides" / "L0001.geojson", extra)
    out = tmp_path / "out"
    result = run("tile", str(slides / "S1.tiff"), "--annotations", str(ann), "--out", str(out), *SMALL)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "labels_report.json").read_text())
    truth = json.loads((tiny_dataset / "slides" / "L0001.geojson").read_text())["features"]
    assert sum(report["mapped"].values()) == len(truth) + 3  # the point and both points of the MultiPoint
    assert report["skipped"] == {"outside the image": 1}


# -- train -------------------------------------------------------------------------------------------


def _coco(folder: Path, annotations: list[dict], images: int = 2) -> Path:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), np.uint8)).save(folder / f"p{i}.png")
    coco = {
        "info": {"image_root": "."},
        "images": [{"id": i + 1, "file_name": f"p{i}.png", "width": 96, "height": 96} for i in range(images)],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "ASC-US"}],
    }
    (folder / "train.json").write_text(json.dumps(coco))
    return folder / "train.json"


BOX = {"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "iscrowd": 0}
TRAIN = [
    # (annotations, extra --set, exit code, message in the output)
    ([{**BOX, "id": 1}, {**BOX, "id": 7, "bbox": [40, 40, 0, 10]}], [], 0,
     "train.json: 1 annotation(s) dropped: a bbox that is not 4 finite numbers with positive width and height "
     "(first: id 7)"),  # once an AssertionError traceback in augmented coordinates
    ([], [], 0, "the training patches hold no lesion annotation"),
    ([{**BOX, "id": 1}], ["train.device=bogus"], 1, "Error: device 'bogus': not a device name"),
    ([{**BOX, "id": 1}], ["train.workers=1", "missing"], 1, "p1.png: cannot read image"),  # once: "Caught ValueError"
]  # fmt: skip


@pytest.mark.parametrize(("annotations", "extra", "code", "message"), TRAIN)
def test_train_inputs(tmp_path: Path, annotations: list, extra: list, code: int, message: str):
    coco = _coco(tmp_path / "data", annotations)
    if "missing" in extra:
        (coco.parent / "p1.png").unlink()
        extra = [e for e in extra if e != "missing"]
    sets = [f"train.train_json={coco}", "train.val_json=null", "train.max_iter=2", "train.batch_size=2", *extra]
    args = ["train", "--config", "tiny", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(cli, [*args, *[x for s in sets for x in ("--set", s)]])
    assert result.exit_code == code and message in result.output, result.output
    if code:
        assert "Traceback" not in result.output


def test_resume_without_a_checkpoint_says_it_starts_fresh(tmp_path: Path):
    coco = _coco(tmp_path / "data", [{**BOX, "id": 1}])
    sets = [f"train.train_json={coco}", "train.val_json=null", "train.max_iter=1"]
    args = ["train", "--config", "tiny", "--out", str(tmp_path / "run"), "--resume"]
    result = CliRunner().invoke(cli, [*args, *[x for s in sets for x in ("--set", s)]])
    assert (
        result.exit_code == 0 and "no checkpoint to resume (checkpoints/last.pt); starting a new run" in result.output
    )


def test_two_trainings_into_one_folder_the_second_stops_in_one_line(tmp_path: Path):
    from wsi_pipeline.io import exclusive_folder

    coco = _coco(tmp_path / "data", [{**BOX, "id": 1}])
    sets = [f"train.train_json={coco}", "train.val_json=null", "train.max_iter=1"]
    args = ["train", "--config", "tiny", "--out", str(tmp_path / "run")]
    with exclusive_folder(tmp_path / "run"):  # as a first training of the same folder would hold it
        result = CliRunner().invoke(cli, [*args, *[x for s in sets for x in ("--set", s)]])
    assert result.exit_code == 1, result.output
    assert "run: another process is writing a training run here" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run" / "config.yaml").exists()


# -- infer and mine ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from wsi_pipeline.config import ModelConfig, PipelineConfig, config_to_dict
    from wsi_pipeline.methods import build_method
    from wsi_pipeline.modeling.checkpoint import save_checkpoint

    config = PipelineConfig(model=ModelConfig(backbone="tiny", fpn_channels=16))
    method = build_method(config)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    state = {"iteration": 0, "model": method.state_dict(), "method": method.name,
             "detector": method.inference_detector().state_dict()}  # fmt: skip
    return save_checkpoint(path, state, config_to_dict(config))


def test_infer_and_mine_inputs(tmp_path: Path, tiny_checkpoint: Path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02 not a checkpoint")
    (tmp_path / "bad.csv").write_text("S1\n")
    (tmp_path / "s").mkdir()
    slides, out, ckpt = str(tmp_path / "s"), str(tmp_path / "o"), str(tiny_checkpoint)
    infer = ["infer", slides, "--out", out, "--checkpoint"]
    cases = [
        # (args, exit code, message)
        ([*infer, str(garbage)], 1, "not a readable checkpoint"),
        ([*infer, "missing.pt"], 2, "does not exist"),
        ([*infer, ckpt, "--batch-size", "0"], 2, "x>=1"),
        ([*infer, ckpt, "--mpp", "0"], 2, "not a resolution"),
        ([*infer, ckpt, "--set", "infer.overlap=900"], 2, "overlap must be below half the patch size"),
        ([*infer, ckpt, "--device", "bogus"], 1, "device 'bogus': not a device name"),
        ([*infer, ckpt], 1, "no slide files found in folder"),
        (["mine", slides, "--out", out, "--checkpoint", ckpt, "--patients", str(tmp_path / "bad.csv")], 1,
         "bad.csv: line 1: expected slide_id,patient_id"),
    ]  # fmt: skip
    for args, code, message in cases:
        result = run(*args)
        assert result.exit_code == code and message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_name_clashes_are_refused_by_every_batch_command(slides: Path, tiny_dataset: Path, tmp_path: Path):
    shutil.copy(slides / "S1.tiff", slides / "S1.svs")  # two slides named S1 in one folder
    ann = tmp_path / "ann"
    _annotations(ann, "S1.geojson", tiny_dataset / "slides" / "L0001.geojson")
    result = run("tile", str(slides), "--annotations", str(ann), "--out", str(tmp_path / "o"), *SMALL)
    assert result.exit_code == 1  # once: patches of both cut under the same names
    assert result.output.count("FAILED S1: S1.svs and S1.tiff are both named S1") == 2
