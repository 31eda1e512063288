"""Training engine: schedules, overfitting 4 patches, exact resume, NaN guard, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from wsi_pipeline.cli.main import cli
from wsi_pipeline.config import load_config
from wsi_pipeline.data.datasets import CocoPatchDataset
from wsi_pipeline.engine.run import labeled_subset, run_training
from wsi_pipeline.engine.schedule import BatchSchedule, lr_factor
from wsi_pipeline.engine.trainer import Trainer, TrainingDiverged
from wsi_pipeline.evaluation.detection import evaluate
from wsi_pipeline.inference.patches import coco_predictions
from wsi_pipeline.modeling.checkpoint import load_checkpoint, model_from_checkpoint

NO_AUG = [
    "train.augment.hflip=0",
    "train.augment.vflip=0",
    "train.augment.rot90=false",
    "train.augment.brightness=0",
    "train.augment.contrast=0",
    "train.augment.saturation=0",
]


def test_lr_factor_hand_values():
    f = [lr_factor(i, 10, 0.1, (20, 30), 0.1) for i in (0, 5, 10, 19, 20, 29, 30, 1000)]
    assert f == pytest.approx([0.1, 0.55, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_labeled_subset_is_seeded_nested_and_rounds_to_slides():
    slides = [f"S{i:02d}" for i in range(35)]
    assert labeled_subset(slides, 1.0, 0) is None
    quarter, half = labeled_subset(slides, 0.25, 0), labeled_subset(slides, 0.5, 0)
    assert len(quarter) == 9 and len(half) == 18 and quarter < half <= set(slides)  # round(8.75), round(17.5)
    assert labeled_subset(slides, 0.25, 0) == quarter and labeled_subset(slides, 0.25, 1) != quarter
    assert len(labeled_subset(slides, 0.001, 0)) == 1  # never an empty training set


def test_batch_schedule_is_a_pure_function_of_the_iteration():
    s = BatchSchedule(10, 4, seed=0)
    assert s.per_epoch == 2
    first = [s.batch(i) for i in range(4)]
    assert [s.batch(i) for i in range(4)] == first  # no hidden state
    assert sorted(first[0] + first[1]) == sorted(set(first[0] + first[1]))  # no repeats inside an epoch
    assert s.epoch_of(3) == 1 and first[2] != first[0]
    ranks = [BatchSchedule(10, 4, 0, rank=r, world_size=2).batch(5) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(s.batch(5))  # ranks split each global batch
    assert len(BatchSchedule(3, 4, 0).batch(0)) == 4  # fewer samples than a batch: cycled
    stream = s.iterate(3)
    assert next(stream) == [(i, 1) for i in s.batch(3)] and next(stream) == [(i, 2) for i in s.batch(4)]


@pytest.fixture(scope="module")
def four_patches(tiny_dataset: Path, tmp_path_factory) -> Path:
    """Four 256 x 256 crops around small lesions of the tiny dataset, with a COCO file."""
    src = tiny_dataset / "patches" / "train.json"
    data = json.loads(src.read_text())
    out = tmp_path_factory.mktemp("four")
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        if not a["iscrowd"]:
            by_image.setdefault(a["image_id"], []).append(a)
    images, anns = [], []
    for img in data["images"]:
        for a in by_image.get(img["id"], []):
            x, y, w, h = a["bbox"]
            if len(images) == 4 or w > 200 or h > 200:
                continue
            x0 = int(min(max(x + w / 2 - 128, 0), img["width"] - 256))
            y0 = int(min(max(y + h / 2 - 128, 0), img["height"] - 256))
            pixels = np.asarray(Image.open(src.parent / "train" / img["file_name"]))[y0 : y0 + 256, x0 : x0 + 256]
            name = f"p{len(images)}.png"
            Image.fromarray(pixels).save(out / name)
            images.append(
                {"id": len(images) + 1, "file_name": name, "width": 256, "height": 256, "slide_id": img["slide_id"]}
            )
            for b in by_image[img["id"]]:
                bx0, by0 = max(b["bbox"][0] - x0, 0), max(b["bbox"][1] - y0, 0)
                bx1, by1 = min(b["bbox"][0] + b["bbox"][2] - x0, 256), min(b["bbox"][1] + b["bbox"][3] - y0, 256)
                if bx1 > bx0 and by1 > by0 and (bx1 - bx0) * (by1 - by0) > 0.5 * b["bbox"][2] * b["bbox"][3]:
                    anns.append(
                        {
                            "id": len(anns) + 1,
                            "image_id": images[-1]["id"],
                            "category_id": b["category_id"],
                            "bbox": [bx0, by0, bx1 - bx0, by1 - by0],
                            "area": 1.0,
                            "iscrowd": 0,
                        }
                    )
            break
    assert len(images) == 4
    (out / "four.json").write_text(
        json.dumps(
            {"info": {"image_root": "."}, "images": images, "annotations": anns, "categories": data["categories"]}
        )
    )
    return out / "four.json"


def _cfg(coco: Path, *extra: str):
    return load_config(
        "tiny",
        [
            f"train.train_json={coco}",
            "train.val_json=null",
            "train.lr_steps=[]",
            "train.warmup_iters=10",
            *NO_AUG,
            *extra,
        ],
    )


def test_tiny_config_overfits_four_patches_and_evaluates_from_the_cli(four_patches: Path, tmp_path: Path):
    torch.set_num_threads(2)
    cfg = _cfg(four_patches, "train.max_iter=100", "train.checkpoint_every=100")
    result = run_training(cfg, tmp_path, progress=False)
    assert result.patches == 4 and result.slides >= 1
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert saved["method"] == "supervised" and set(saved["detector"]) == {
        k.removeprefix("detector.") for k in saved["model"]
    }
    model, config = model_from_checkpoint(tmp_path / "checkpoints" / "last.pt")  # rebuilt from the file alone
    assert config.model.backbone == "tiny"
    gts, preds = coco_predictions(model, CocoPatchDataset(four_patches), torch.device("cpu"))
    metrics = evaluate(gts, preds)
    assert metrics.mean_ap > 0.9, metrics.summary()

    # the same model evaluated from the command line, then its saved predictions re-evaluated
    ckpt, saved = tmp_path / "checkpoints" / "last.pt", tmp_path / "preds.json"
    base = ["-q", "eval", "--gt", str(four_patches)]
    fresh = CliRunner().invoke(
        cli, [*base, "--checkpoint", str(ckpt), "--save-pred", str(saved), "--out", str(tmp_path / "a.json")]
    )
    assert fresh.exit_code == 0, fresh.output
    results = json.loads(saved.read_text())
    assert results and {"image_id", "category_id", "bbox", "score"} == set(results[0])
    again = CliRunner().invoke(cli, [*base, "--pred", str(saved), "--out", str(tmp_path / "b.json")])
    assert again.exit_code == 0, again.output
    a, b = (json.loads((tmp_path / f"{x}.json").read_text())["overall"]["mAP"] for x in "ab")
    assert a == b and a == pytest.approx(metrics.mean_ap, abs=1e-3)  # boxes saved to 0.01 px
    for wrong in ([], ["--pred", str(saved), "--checkpoint", str(ckpt)], ["--pred", str(saved), "--save-pred", "x"]):
        bad = CliRunner().invoke(cli, [*base, *wrong])
        assert bad.exit_code == 2 and ("--pred" in bad.output or "--save-pred" in bad.output), bad.output


class _FixedDetector(torch.nn.Module):
    """Stands in for a trained model: the same detections for every image."""

    def __init__(self, boxes: list[list[float]], scores: list[float]):
        super().__init__()
        self.out = {
            "boxes": torch.tensor(boxes),
            "labels": torch.full((len(boxes),), 2),
            "scores": torch.tensor(scores),
        }

    def forward(self, images):  # type: ignore[no-untyped-def]
        return [dict(self.out) for _ in images]


def test_validation_treats_cut_lesions_as_ignore_regions_like_eval(tmp_path: Path):
    """A detection on an ``iscrowd`` box (a lesion cut by the patch edge) is neither a hit nor a false
    positive, in validation/benchmarks exactly as in ``wsi-pipeline eval``."""
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "p.png")
    coco = {
        "images": [{"id": 5, "file_name": "p.png", "width": 64, "height": 64}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 2, "bbox": [10, 10, 20, 20], "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 2, "bbox": [40, 40, 20, 20], "iscrowd": 1},
        ],
        "categories": [{"id": 2, "name": "LSIL"}],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    model = _FixedDetector([[40.0, 40.0, 60.0, 60.0], [10.0, 10.0, 30.0, 30.0]], [0.9, 0.8])  # cut one first
    gts, preds = coco_predictions(
        model, CocoPatchDataset(tmp_path / "c.json", image_root=tmp_path), torch.device("cpu")
    )
    assert list(gts) == [5] and gts[5].ignore.tolist() == [False, True]
    assert evaluate(gts, preds).summary()["classes"]["LSIL"]["mAP"] == pytest.approx(1.0)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(four_patches: Path, tmp_path: Path, monkeypatch):
    torch.set_num_threads(1)
    cfg = _cfg(four_patches, "train.max_iter=6", "train.checkpoint_every=3", "train.augment.hflip=0.5")
    run_training(cfg, tmp_path / "straight", progress=False)
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]

    real_step = Trainer.run_step

    def crash_at_4(self):
        if self.iter == 4:
            raise KeyboardInterrupt("simulated crash")
        real_step(self)

    monkeypatch.setattr(Trainer, "run_step", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "resumed", progress=False)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["iteration"] == 3
    monkeypatch.setattr(Trainer, "run_step", real_step)
    run_training(cfg, tmp_path / "resumed", resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert resumed["iteration"] == 6
    assert all(torch.equal(straight[k], resumed["model"][k]) for k in straight)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
    four_patches, tmp_path, monkeypatch
):
    real = Trainer.compute_losses

    def poisoned(self, batch):
        losses = real(self, batch)
        if self.iter == 2:
            losses["sup_loss_classifier"] = losses["sup_loss_classifier"] * float("nan")
        return losses

    monkeypatch.setattr(Trainer, "compute_losses", poisoned)
    with pytest.raises(TrainingDiverged, match=r"iteration 2: loss is not finite \(sup_loss_classifier=nan"):
        run_training(_cfg(four_patches, "train.max_iter=5", "train.checkpoint_every=1"), tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["iteration"] == 2


def test_corrupt_and_foreign_checkpoints_are_clear_errors(tmp_path: Path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"bad\.pt: not a readable checkpoint"):
        load_checkpoint(bad)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match=r"foreign\.pt: not a wsi-pipeline checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_cli_trains_and_refuses_to_overwrite_a_run(four_patches: Path, tmp_path: Path):
    args = [
        "-q",
        "train",
        "--config",
        "tiny",
        "--out",
        str(tmp_path),
        "--set",
        f"train.train_json={four_patches}",
        "--set",
        f"train.val_json={four_patches}",
        "--set",
        "train.max_iter=4",
        "--set",
        "train.eval_every=4",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "checkpoints" / "best.pt").is_file() and (tmp_path / "metrics.csv").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "pass --resume" in again.output


def _losses(run: Path) -> dict[int, float]:
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    return {int(it): float(v) for it, name, v in rows if name == "loss/total"}


@pytest.mark.filterwarnings("ignore")
def test_ddp_on_two_cpu_processes_matches_the_single_process_loss_scale(four_patches: Path, tmp_path: Path):
    import subprocess
    import sys

    common = [
        "train",
        "--config",
        "tiny",
        "--set",
        f"train.train_json={four_patches}",
        "--set",
        "train.val_json=null",
        "--set",
        "train.max_iter=3",
        "--set",
        "train.log_every=1",
        "--set",
        "train.batch_size=4",
        "--set",
        "train.device=cpu",
        *[x for s in NO_AUG for x in ("--set", s)],
    ]
    single = subprocess.run(
        [sys.executable, "-m", "wsi_pipeline", "-q", *common, "--out", str(tmp_path / "single")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "wsi_pipeline",
            "-q",
            *common,
            "--out",
            str(tmp_path / "ddp"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    one, two = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert sorted(two) == [1, 2, 3]
    # each rank averages its half of the global batch and DDP averages gradients: no 2x loss or step
    for it in (1, 2, 3):
        assert 0.6 < two[it] / one[it] < 1.6, (one, two)
    assert load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")["iteration"] == 3
