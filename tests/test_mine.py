"""``mine``: the pool's patches around detections, stores that train reads, patient-disjointness, resume and
bad-slide isolation (a fixed-output model on tiny synthetic slides)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_infer import FixedModel

from wsi_pipeline.config import load_config
from wsi_pipeline.data.datasets import PatchStoreDataset
from wsi_pipeline.data.patch_store import PatchStore
from wsi_pipeline.data.pool import pool_stores
from wsi_pipeline.data.splits import read_patients
from wsi_pipeline.inference.merge import Detections
from wsi_pipeline.mining.pool import choose_windows, mine_slides

SMALL = ("infer.patch_size=512", "infer.overlap=64", "mine.top_k=3")


@pytest.fixture()
def unlabeled(tiny_dataset: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "slides"
    folder.mkdir()
    for sid in ("L0001", "U0001"):
        shutil.copy(tiny_dataset / "slides" / f"{sid}.tiff", folder / f"{sid}.tiff")
    data = (tiny_dataset / "slides" / "L0002.tiff").read_bytes()
    (folder / "cut.tiff").write_bytes(data[: len(data) * 6 // 10])  # opens, then dies mid-read
    return folder


def _mine(slides: Path, out: Path, *extra: str, **kwargs):
    ckpt = out.parent / "model.pt"
    ckpt.write_bytes(b"stands in for a checkpoint: only hashed")
    config = load_config(None, [*SMALL, *extra])
    return mine_slides([slides], ckpt, out, config, FixedModel(), torch.device("cpu"), **kwargs)


def test_mine_builds_a_pool_that_train_reads(unlabeled: Path, tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "pool"
    labeled = tiny_dataset / "patches" / "train.json"  # L0001 and L0002 are labeled: never in the pool
    result = _mine(unlabeled, out, labeled=[labeled])
    status = {o.slide_id: (o.status, o.reason) for o in result.outcomes}
    assert status["U0001"] == ("done", "")
    assert status["L0001"][0] == "failed" and "patient L0001 is in the labeled set" in status["L0001"][1]
    assert status["cut"][0] == "failed" and "file truncated or damaged" in status["cut"][1]  # never read as glass
    manifest = json.loads((out / "U0001.mine.json").read_text())
    assert [p["kind"] for p in manifest["patches"]] == ["positive"] * 3  # top_k
    assert all(p["max_score"] == 0.9 and p["classes"]["HSIL"] >= 1 for p in manifest["patches"])
    store = PatchStore(out / "U0001.zarr")
    assert len(store) == 3 and store.patch_size == 512 and store.verify() is None
    assert store.table["x"].tolist() == [round(p["box"][0]) for p in manifest["patches"]]
    pool = json.loads((out / "pool.json").read_text())
    assert pool["checkpoint_sha256"] and list(pool["slides"]) == ["U0001"] and "cut" in pool["failed"]
    dataset = PatchStoreDataset(pool_stores(out))
    image, meta = dataset[0]
    assert tuple(image.shape) == (3, 512, 512) and meta["slide_id"] == "U0001"
    again = _mine(unlabeled, out, labeled=[labeled])  # resume: the finished slide is skipped
    assert {o.slide_id: o.status for o in again.outcomes}["U0001"] == "skipped"


def test_a_patient_table_keeps_other_slides_of_labeled_patients_out(unlabeled: Path, tiny_dataset: Path, tmp_path):
    table = tmp_path / "patients.csv"
    table.write_text("slide_id,patient_id\nL0001,P7\nU0001,P7\n")  # U0001 is another slide of L0001's patient
    assert read_patients(table) == {"L0001": "P7", "U0001": "P7"}
    result = _mine(unlabeled, tmp_path / "pool", labeled=[tiny_dataset / "patches" / "train.json"], patients=table)
    reasons = {o.slide_id: o.reason for o in result.outcomes}
    assert "patient P7 is in the labeled set" in reasons["U0001"]
    (tmp_path / "bad.csv").write_text("L0001\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 1: expected slide_id,patient_id"):
        read_patients(tmp_path / "bad.csv")


def test_windows_are_centred_clamped_deduplicated_and_negatives_follow():
    boxes = np.array([[100.0, 100, 140, 140], [110, 100, 150, 140], [900, 900, 940, 940], [500, 500, 540, 540]])
    dets = Detections(boxes, np.array([3, 3, 1, 2]), np.array([0.9, 0.8, 0.7, 0.2]), np.zeros((4, 5), np.float32),
                      np.zeros((4, 4), bool))  # fmt: skip
    chosen = choose_windows(dets, 400.0, (1000.0, 1000.0), 0.5, top_k=5, max_overlap=0.3, negatives=1.0)
    kinds = [(kind, i) for _, kind, i in chosen]
    assert kinds == [("positive", 0), ("positive", 2), ("negative", 3)]  # 1 overlaps 0: dropped
    assert chosen[0][0].tolist() == [0.0, 0.0, 400.0, 400.0]  # clamped into the slide
    assert chosen[1][0].tolist() == [600.0, 600.0, 1000.0, 1000.0]
    assert chosen[2][0].tolist() == [320.0, 320.0, 720.0, 720.0]


def test_patient_splits_keep_a_patients_slides_together():
    from wsi_pipeline.data.splits import assign_splits, assign_splits_by_patient

    slides = [f"S{i}" for i in range(20)]
    assert assign_splits_by_patient(slides, {}, (0.6, 0.2, 0.2), 3) == assign_splits(20, (0.6, 0.2, 0.2), 3)
    table = {f"S{i}": f"P{i // 2}" for i in range(20)}  # two slides per patient
    roles = assign_splits_by_patient(slides, table, (0.6, 0.2, 0.2), 3)
    assert all(roles[i] == roles[i + 1] for i in range(0, 20, 2))
    assert sorted(roles).count("train") == 12  # round(10 patients x 0.6) x 2 slides
