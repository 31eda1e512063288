"""The semi-supervised methods on a tiny detector: a short CPU run of every method and ablation from the
CLI without NaN, proxies that unlabeled data cannot move, fixed-seed golden values of the dual-alignment
loss, the memory bank and EMA teacher through checkpoint + exact resume, and the unlabeled pool's
bad-input table."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_memory_bank import run_two_ranks
from test_methods import TINY, _target

from wsi_pipeline.cli.main import cli
from wsi_pipeline.config import PipelineConfig, TrainConfig, load_config
from wsi_pipeline.data.batch import TrainBatch
from wsi_pipeline.methods import build_method
from wsi_pipeline.modeling.checkpoint import load_checkpoint
from wsi_pipeline.tiling.batch import tile_slides

LOW = [  # a random detector's scores are ~0.2: low thresholds so that pseudo-labels exist from step one
    "train.ssl.dual_alignment.threshold=0.05",
    "train.ssl.soft_teacher.threshold=0.1",
    "train.ssl.ramp_iters=0",
]


@pytest.fixture(scope="module")
def pools(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tile stores of tiny slides as unlabeled pools: the unlabeled slide at the model's 0.25 um/px, the
    same at 0.5 um/px, and a labeled slide."""
    root = tmp_path_factory.mktemp("pools")
    slides = tiny_dataset / "slides"
    made = {}
    for name, slide, mpp in (("good", "U0001", 0.25), ("coarse", "U0001", 0.5), ("labeled", "L0001", 0.25)):
        config = load_config(None, ["tile.patch_size=384", f"tile.target_mpp={mpp}"])
        result = tile_slides([slides / f"{slide}.tiff"], root / name, config, progress=False)
        assert not result.failed
        made[name] = root / name
    return made


def _train(out: Path, tiny_dataset: Path, preset: str, *sets: str):
    train_json = tiny_dataset / "patches" / "train.json"
    common = [f"train.train_json={train_json}", "train.val_json=null", "model.fpn_channels=16", "train.log_every=1"]
    args = ["-q", "train", "--config", preset, "--out", str(out)]
    return CliRunner().invoke(cli, [*args, *[x for s in [*common, *LOW, *sets] for x in ("--set", s)]])


def _metrics(run: Path) -> dict[str, list[float]]:
    seen: dict[str, list[float]] = {}
    with (run / "metrics.csv").open() as fh:
        for row in csv.DictReader(fh):
            seen.setdefault(row["name"], []).append(float(row["value"]))
    return seen


PRESETS = ["dual_alignment", "dual_alignment-no-proposal", "dual_alignment-no-prototype", "dual_alignment-no-bank",
           "mean_teacher", "csd", "soft_teacher", "soft_teacher_alignment"]  # fmt: skip


@pytest.mark.parametrize("preset", PRESETS)
def test_every_method_and_ablation_trains_from_the_cli_without_nan(preset, pools, tiny_dataset: Path, tmp_path: Path):
    result = _train(tmp_path / "run", tiny_dataset, preset, f"train.unlabeled={pools['good']}", "train.max_iter=2",
                    "train.ssl.diagnostics_every=1")  # fmt: skip
    assert result.exit_code == 0, result.output
    seen = _metrics(tmp_path / "run")
    losses = {k: v for k, v in seen.items() if k.startswith("loss/")}
    assert all(math.isfinite(x) for v in losses.values() for x in v), losses
    unsup = [k for k in losses if k.startswith("loss/unsup_")]
    assert unsup, losses  # every semi-supervised method logs its unlabeled terms
    assert any(k.startswith("diag/") for k in seen)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["method"] == load_config(preset).train.method and "detector" in state


def test_a_semi_supervised_method_needs_a_pool(tiny_dataset: Path, tmp_path: Path):
    result = _train(tmp_path / "run", tiny_dataset, "dual_alignment", "train.max_iter=1")
    assert result.exit_code == 1
    assert "Error: train.method dual_alignment learns from unlabeled patches: set train.unlabeled" in result.output


POOL_INPUTS = [  # (which pool, the one-line error)
    ("missing", "no such unlabeled pool"),
    ("empty", "neither a mined pool (pool.json) nor a folder of patch stores"),
    ("empty_manifest", "the unlabeled pool holds no patches"),
    ("coarse", "unlabeled patches at 0.5 um/px, the model takes 0.25 um/px"),
    ("labeled", "the unlabeled pool holds slides of the labeled set (L0001)"),
    ("coco_labeled", "the unlabeled pool holds slides of the labeled set (L0001"),  # a COCO pool: train.json
    ("coco_coarse", "is at 0.5 um/px but the model takes 0.25 um/px"),
]


@pytest.mark.parametrize(("which", "message"), POOL_INPUTS)
def test_bad_unlabeled_pools_are_refused_in_one_line(which, message, pools, tiny_dataset: Path, tmp_path: Path):
    pool = pools.get(which, tmp_path / which)
    if which == "empty":
        pool.mkdir()
    if which == "empty_manifest":
        pool.mkdir()
        (pool / "pool.json").write_text(json.dumps({"slides": {"U0009": {"store": "U0009.zarr", "patches": 0}}}))
    if which == "coco_labeled":
        pool = tiny_dataset / "patches" / "train.json"
    if which == "coco_coarse":
        coco = json.loads((tiny_dataset / "patches" / "test.json").read_text())
        coco["info"]["mpp"] = 0.5
        for img in coco["images"]:
            img["mpp"] = 0.5
        pool = tmp_path / "coarse.json"
        pool.write_text(json.dumps(coco))
    result = _train(tmp_path / "run", tiny_dataset, "dual_alignment", f"train.unlabeled={pool}", "train.max_iter=1")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0] and str(pool.name) in errors[0], result.output


def _batch(generator_seed: int = 1) -> TrainBatch:
    g = torch.Generator().manual_seed(generator_seed)
    images = [torch.rand(3, 256, 256, generator=g), torch.rand(3, 256, 320, generator=g)]
    targets = [_target([[10, 20, 80, 90], [100, 100, 160, 150]], [2, 4]), _target([[30, 30, 90, 100]], [1])]
    return TrainBatch(images, targets, [torch.rand(3, 256, 256, generator=g) for _ in range(2)])


def _dual_alignment(**switches):
    from wsi_pipeline.config import DualAlignmentConfig, SemiSupervisedConfig

    ssl = SemiSupervisedConfig(ramp_iters=0, dual_alignment=DualAlignmentConfig(threshold=0.0, **switches))
    torch.manual_seed(0)
    method = build_method(PipelineConfig(model=TINY, train=TrainConfig(method="dual_alignment", ssl=ssl))).train()
    torch.manual_seed(0 + 1_000_003)
    return method


def test_given_pseudo_labels_come_from_a_coco_pool(pools, tiny_dataset: Path, tmp_path: Path):
    pool = tiny_dataset / "patches" / "test.json"  # slides apart from train.json's: a pool with boxes
    given = "train.ssl.dual_alignment.pseudo_labels=given"
    result = _train(tmp_path / "run", tiny_dataset, "dual_alignment", f"train.unlabeled={pool}", given,
                    "train.max_iter=2", "train.ssl.diagnostics_every=1")  # fmt: skip
    assert result.exit_code == 0, result.output
    seen = _metrics(tmp_path / "run")
    assert all(math.isfinite(x) for k, v in seen.items() if k.startswith("loss/unsup_") for x in v)
    assert all(x == 1.0 for x in seen["diag/pseudo_score"] if math.isfinite(x))  # given boxes count as sure
    assert any(math.isfinite(x) for x in seen["diag/pseudo_score"])  # test.json's patches hold lesions
    result = _train(tmp_path / "stores", tiny_dataset, "dual_alignment", f"train.unlabeled={pools['good']}", given,
                    "train.max_iter=1")  # fmt: skip
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code == 1 and len(errors) == 1 and "the unlabeled pool gives no boxes" in errors[0]
    assert pools["good"].name in errors[0]  # the early check names the pool; the step's own check cannot


def test_a_mined_pools_manifest_stands_for_its_folder(pools, tmp_path: Path):
    from wsi_pipeline.data.pool import open_pool

    store = next(pools["good"].glob("*.zarr"))
    manifest = tmp_path / "pool.json"  # as `mine` writes it, the store given by its absolute path
    manifest.write_text(json.dumps({"slides": {"U0001": {"store": str(store), "patches": 3}}}))
    assert len(open_pool(manifest, 0.25)) == len(open_pool(tmp_path, 0.25)) == len(open_pool(pools["good"], 0.25))


def test_given_pseudo_labels_are_the_pools_boxes_and_patch_stores_give_none():
    from wsi_pipeline.data.batch import unlabeled_collate

    method = _dual_alignment(pseudo_labels="given")
    batch = _batch()
    images, targets = unlabeled_collate([(img, _target([[5, 5, 60, 70]], [3])) for img in batch.unlabeled])
    assert len(images) == 2 and [t["labels"].tolist() for t in targets] == [[3], [3]]
    with pytest.raises(ValueError, match="the unlabeled pool gives no boxes"):
        method.pseudo_labelled_features(batch)
    batch.unlabeled_targets = [targets[0], {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    features, labels, scores = method.pseudo_labelled_features(batch)
    assert labels.tolist() == [3] and scores.tolist() == [1.0] and features.shape == (1, 1024)
    assert method.diagnostics["pseudo_labels"] == 1
    assert unlabeled_collate([(img, {"slide_id": "U1", "x": 0}) for img in images])[1] == []  # store meta


def test_background_rows_add_a_background_class_sampled_against_the_pseudo_boxes():
    method = _dual_alignment(pseudo_labels="given", background_rows=True)
    terms = method.alignment
    assert (terms.num_classes, terms.offset, tuple(terms.proxies.shape)) == (5, 0, (5, 128))
    batch = _batch()
    none = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    batch.unlabeled_targets = [_target([[5, 5, 60, 70]], [3]), none]  # the second image: background only
    sup = method.detector.supervised(batch.images, batch.targets)
    x, classes, scores = terms.proposal_rows(sup)
    assert torch.equal(classes, sup.labels) and len(x) == len(sup.labels)  # every sampled proposal, labels as they are
    assert (classes == 0).any() and bool(((scores > 0) & (scores <= 1)).all())
    losses = method.semi_supervised_losses(batch, sup)
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    assert "bank_fill_0" in method.diagnostics and method.diagnostics["pseudo_labels"] == 1
    assert terms.bank.counts(5)[0] == 1  # this step's background prototype joined the bank
    losses["unsup_pml"].backward(retain_graph=True)
    assert method.alignment.proxies.grad is None or not method.alignment.proxies.grad.any()
    # without the switch: foreground rows only, classes 0 .. C - 1 (the paper's)
    paper = _dual_alignment().alignment
    x, classes, _ = paper.proposal_rows(sup)
    assert torch.equal(classes, sup.labels[sup.labels > 0] - 1) and paper.num_classes == 4


def test_proxies_learn_from_labeled_data_only():
    method = _dual_alignment()
    batch = _batch()
    sup = method.detector.supervised(batch.images, batch.targets)
    losses = method.semi_supervised_losses(batch, sup)
    assert float(method.diagnostics["pseudo_labels"]) > 0  # threshold 0: the unlabeled term has rows
    losses["unsup_pml"].backward(retain_graph=True)
    assert method.alignment.proxies.grad is None or not method.alignment.proxies.grad.any()
    assert method.alignment.projection.net[0].weight.grad.abs().sum() > 0  # the projection head does learn from it
    losses["sup_pml"].backward()
    assert method.alignment.proxies.grad.abs().sum() > 0


def test_a_burn_in_keeps_the_unlabeled_losses_off_until_start_iter_then_ramps_from_there():
    from wsi_pipeline.config import SemiSupervisedConfig, SoftTeacherConfig
    from wsi_pipeline.losses.metric import ramp_up

    ssl = SemiSupervisedConfig(weight=2.0, start_iter=3, ramp_iters=4, soft_teacher=SoftTeacherConfig(threshold=0.0))
    torch.manual_seed(0)
    method = build_method(PipelineConfig(model=TINY, train=TrainConfig(method="soft_teacher", ssl=ssl))).train()
    batch = _batch()
    method.begin_step(2)
    losses = method(batch)
    assert method.weight == 0.0 and "pseudo_labels" not in method.diagnostics  # no teacher pass in the burn-in
    assert all(float(losses[k].detach()) == 0.0 for k in method.loss_names)
    method.begin_step(3)
    assert method.weight == pytest.approx(2.0 * math.exp(-5))  # the ramp starts at start_iter, not at 0
    method.begin_step(5)
    assert method.weight == pytest.approx(2.0 * ramp_up(2, 4))
    losses = method(batch)
    assert method.diagnostics["pseudo_labels"] > 0 and float(losses["unsup_loss_classifier"].detach()) > 0
    assert load_config("soft_teacher-burn-in").train.ssl.start_iter == 1000


def test_soft_teacher_alignment_adds_the_alignment_terms_on_the_teachers_pseudo_boxes():
    from wsi_pipeline.config import DualAlignmentConfig, SemiSupervisedConfig, SoftTeacherConfig

    ssl = SemiSupervisedConfig(ramp_iters=0, weight=2.0, soft_teacher=SoftTeacherConfig(threshold=0.0),
                               dual_alignment=DualAlignmentConfig(weight=0.25))  # fmt: skip
    torch.manual_seed(0)
    config = PipelineConfig(model=TINY, train=TrainConfig(method="soft_teacher_alignment", ssl=ssl))
    method = build_method(config).train()
    batch = _batch()
    sup = method.detector.supervised(batch.images, batch.targets)
    terms = method.semi_supervised_losses(batch, sup)
    assert set(terms) == {"unsup_loss_classifier", "unsup_loss_box_reg", "unsup_loss_objectness",
                          "unsup_loss_rpn_box_reg", "sup_pml", "unsup_pml", "sup_pmb", "unsup_pmb"}  # fmt: skip
    assert method.diagnostics["pseudo_labels"] > 0 and all(math.isfinite(float(v.detach())) for v in terms.values())
    terms["unsup_pml"].backward(retain_graph=True)
    assert method.alignment.proxies.grad is None or not method.alignment.proxies.grad.any()
    assert method.alignment.projection.net[0].weight.grad.abs().sum() > 0
    method.zero_grad()
    method.begin_step(0)
    # lambda 2; the alignment terms 0.25 of it, Soft Teacher's in full
    weighted = {k: float(v.detach()) for k, v in method(batch).items()}
    raw = method.diagnostics
    assert weighted["sup_pml"] == pytest.approx(2.0 * 0.25 * raw["sup_pml"], rel=1e-5)
    assert weighted["unsup_loss_classifier"] == pytest.approx(2.0 * raw["unsup_loss_classifier"], rel=1e-5)
    groups = method.parameter_groups(0.02)
    assert [g["lr"] for g in groups] == [0.02, 0.01] and groups[1]["params"][0] is method.alignment.proxies
    given = SemiSupervisedConfig(dual_alignment=DualAlignmentConfig(pseudo_labels="given"))
    with pytest.raises(ValueError, match="pseudo-boxes, so pseudo_labels=given and background_rows=False do not apply"):
        build_method(PipelineConfig(model=TINY, train=TrainConfig(method="soft_teacher_alignment", ssl=given)))


# The total loss of 2 SGD steps of dual alignment (every term on, bank and proxies included) on the tiny
# detector: seed 0, stream reseeded, pseudo-label threshold 0, lambda 1, one thread. A change in any term,
# in the pseudo-labelling pass or in the random streams moves them. Step 1 follows an SGD step, and a CPU
# with other kernels (an AVX-512/AMX machine against the one that set the values) moved it by 1.7e-4 of
# itself: hence rel 1e-3; a changed term moves the total by far more (every term is 0.005-1.8 here).
GOLDEN_TOTAL = {0: 5.337318119127303, 1: 6.487007982563227}


def test_dual_alignment_total_loss_matches_the_golden_values():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        method = _dual_alignment()
        batch = _batch()
        optimizer = torch.optim.SGD(method.parameter_groups(0.02), lr=0.02, momentum=0.9)
        seen = {}
        for step in range(2):
            method.begin_step(step)
            losses = method(batch)
            seen[step] = {k: float(v.detach()) for k, v in losses.items()}
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            method.end_step()
    finally:
        torch.set_num_threads(threads)
    assert set(seen[0]) == {"sup_loss_classifier", "sup_loss_box_reg", "sup_loss_objectness",
                            "sup_loss_rpn_box_reg", "sup_pml", "unsup_pml", "sup_pmb", "unsup_pmb"}  # fmt: skip
    assert all(math.isfinite(v) for step in seen.values() for v in step.values())
    for step, expected in GOLDEN_TOTAL.items():
        total = sum(seen[step].values())
        assert expected is not None and total == pytest.approx(expected, rel=1e-3), f"step {step}: {seen[step]}"
    assert int(method.alignment.bank.counts(4).sum()) > 0


def test_bank_and_teacher_survive_checkpoint_and_exact_resume(pools, tiny_dataset: Path, tmp_path: Path):
    sets = [f"train.unlabeled={pools['good']}", "train.max_iter=4", "train.checkpoint_every=2",
            "train.ssl.dual_alignment.pseudo_labels=ema"]  # fmt: skip
    straight = _train(tmp_path / "straight", tiny_dataset, "dual_alignment", *sets)
    assert straight.exit_code == 0, straight.output
    first = _train(tmp_path / "resumed", tiny_dataset, "dual_alignment", *sets[:-3], "train.max_iter=2",
                   "train.checkpoint_every=2", sets[-1])  # fmt: skip
    assert first.exit_code == 0, first.output
    args = ["-q", "train", "--config", str(tmp_path / "resumed" / "config.yaml"), "--out", str(tmp_path / "resumed")]
    second = CliRunner().invoke(cli, [*args, "--resume", "--set", "train.max_iter=4"])
    assert second.exit_code == 0, second.output
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    bank = {k.removeprefix("alignment.") for k in a if k.startswith("alignment.bank.")}
    assert bank == {"bank.vectors", "bank.labels", "bank.pointer"}
    assert any(k.startswith("teacher.") for k in a)
    assert int((a["alignment.bank.labels"] >= 0).sum()) > 0
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.filterwarnings("ignore")
def test_two_ranks_hold_the_same_teacher_and_bank(tmp_path: Path):
    ranks = run_two_ranks("ssl_worker.py", tmp_path)
    bank = ranks[0]["alignment.bank.labels"]
    assert int((bank >= 0).sum()) >= 4  # both ranks' prototypes of two steps
    assert set(bank.tolist()) >= {0, 1, 2}  # rank 0 pushed class 1, rank 1 class 2 (ids - 1)
    teacher = [k for k in ranks[0] if k.startswith("teacher.")]
    assert teacher
    student = ranks[0]["detector.roi_heads.box_predictor.cls_score.weight"]
    assert not torch.equal(ranks[0]["teacher.model.roi_heads.box_predictor.cls_score.weight"], student)
    for key, value in ranks[0].items():
        assert torch.allclose(value.float(), ranks[1][key].float(), atol=1e-6), key
