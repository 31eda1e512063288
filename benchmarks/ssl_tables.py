"""The paper's two tables on synthpap-v3 with the CPU learning-curve detector (configs/curve-cpu.yaml).

Table 1: test mAP (AP10-70) with 25/50/75/100% of the labeled slides, supervised vs dual alignment.
Table 2, 100% of the labels: supervised, CSD, Mean Teacher, Soft Teacher, the three dual-alignment
ablations, dual alignment, and Soft Teacher with the alignment terms. Three seeds; a seed fixes the
labeled slides and the initialisation for every method, so gains are reported paired (the mean +- std
of the per-seed differences to supervised).

The unlabeled pool is mined once from v3's 50 unlabeled slides by the 100% supervised model (seed 0) and
kept fixed. Every run is cached in ``OUT/<preset>/frac<f>_seed<s>/result.json`` and resumes from its last
checkpoint; supervised runs are shared with ``benchmarks/learning_curve.py`` (``--supervised-out``).

    python benchmarks/ssl_tables.py --quick                  # 25%: supervised vs dual alignment, 3 seeds
    python benchmarks/ssl_tables.py --rows table1 --rows table2
    python benchmarks/ssl_tables.py --rows noise             # one labeled subset, three init seeds
    python benchmarks/ssl_tables.py --rows quick-soft        # Soft Teacher (+ alignment) at 25%, 3 seeds
    OMP_NUM_THREADS=1 python benchmarks/ssl_tables.py --rows table2 --only csd --jobs 1   # beside another
    python benchmarks/ssl_tables.py --rows oracle            # 25% + the pool with its hidden labels, 2 + 2 a batch
    python benchmarks/ssl_tables.py --rows tune              # lambda on the validation slides (25%, seed 0)
    python benchmarks/ssl_tables.py --rows step-time         # one training step of each method, one process
    python benchmarks/ssl_tables.py --rows gradients         # each term's gradient size on the detector
    python benchmarks/ssl_tables.py --report                 # the tables from what is cached, nothing trained

Markdown goes to stdout and ``OUT/tables.md``, everything to ``OUT/tables.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import _set_threads, run_one, score

ROOT = Path(__file__).resolve().parents[1]
V3 = ROOT / "data" / "synthpap-v3"
OUT = ROOT / "data" / "bench" / "ssl"
CURVE = ROOT / "data" / "bench" / "curve-cpu-redesign"  # benchmarks/learning_curve.py --out: the supervised runs
# the pool's miner: the 100% seed-0 supervised run on 2 threads (learning_curve.py --jobs 1), kept apart from
# the tables' one-thread runs, which a thread count moves by about a step of the curve
MINER = ROOT / "data" / "bench" / "curve-cpu-2threads" / "frac1_seed0" / "checkpoints" / "last.pt"
SUPERVISED = "curve-cpu"
ORACLE = "oracle-pool"  # supervised on the labeled subset + the pool with its hidden labels: what the pool holds
TABLE2 = ["curve-cpu", "csd", "mean_teacher", "soft_teacher", "dual_alignment-no-prototype",
          "dual_alignment-no-proposal", "dual_alignment-no-bank", "dual_alignment",
          "soft_teacher_alignment"]  # fmt: skip
FRACTIONS = [0.25, 0.5, 0.75, 1.0]
# pseudo-labels from an EMA teacher (decay 0.99 over 2,000 iterations) instead of the model itself
EMA = ("train.ssl.dual_alignment.pseudo_labels=ema", "train.ssl.ema_decay=0.99")
TUNE = [  # settings tried on the validation slides (25%, seed 0); each preset takes its best
    ("dual_alignment", ("train.ssl.weight=1",)),  # the paper's lambda
    ("dual_alignment", ("train.ssl.weight=0.1",)),
    ("dual_alignment", ("train.ssl.weight=0.03",)),
    ("dual_alignment", ("train.ssl.weight=0.03", "train.ssl.dual_alignment.threshold=0.9")),  # pool: 0.69 precise
    ("dual_alignment", ("train.ssl.weight=0.1", "train.ssl.dual_alignment.threshold=0.9")),
    ("dual_alignment", ("train.ssl.weight=0.03", *EMA)),
    ("dual_alignment", ("train.ssl.weight=0.03", *EMA, "train.ssl.dual_alignment.threshold=0.7")),
    # Soft Teacher at its preset (weight 2, threshold 0.9) found almost no pseudo-box at 25% and trained the
    # pool's lesions as background (test mAP 32.3 against 53.3 supervised, seed 0)
    ("soft_teacher", ("train.ssl.weight=0.5",)),
    ("soft_teacher", ("train.ssl.weight=0.5", "train.ssl.soft_teacher.threshold=0.7")),
]
SEEDS = [0, 1, 2]
log = logging.getLogger("ssl_tables")


def runs_of(rows: list[str]) -> list[tuple[str, float, int, tuple[str, ...]]]:
    """``(preset, fraction, seed, extra overrides)`` of the named rows, without repeats."""
    runs: list[tuple[str, float, int, tuple[str, ...]]] = []
    for row in rows:
        if row in ("quick", "table1"):
            fractions = [0.25] if row == "quick" else FRACTIONS
            runs += [(p, f, s, ()) for f in fractions for p in (SUPERVISED, "dual_alignment") for s in SEEDS]
        elif row == "table2":
            runs += [(p, 1.0, s, ()) for p in TABLE2 for s in SEEDS]
        elif row == "tune":  # lambda for dual alignment, 25% of the labels, seed 0, judged on validation
            runs += [(preset, 0.25, 0, settings) for preset, settings in TUNE]
        elif row == "quick-soft":  # the strongest baseline where labels are scarce, and the combination
            runs += [(p, 0.25, s, ()) for p in ("soft_teacher", "soft_teacher_alignment") for s in SEEDS]
        elif row == "oracle":  # the ceiling of what the pool can teach at 25%
            runs += [(ORACLE, 0.25, s, ()) for s in SEEDS]
        elif row == "noise":  # the labeled subset of seed 0, three initialisation / data-order seeds
            runs += [(SUPERVISED, 0.25, s, ("train.subset_seed=0",) if s else ()) for s in SEEDS]
    return list(dict.fromkeys(runs))


def folder_of(out: Path, supervised_out: Path, preset: str, fraction: float, seed: int, extra: tuple[str, ...]) -> Path:
    tag = f"frac{fraction:g}_seed{seed}"
    if any(e.startswith("train.ssl.") for e in extra):  # tuning: judged on the validation slides
        settings = "".join(f"-{key.rsplit('.', 1)[1]}{value}" for key, value in (e.split("=") for e in extra))
        return out / "tune" / f"{preset}{settings}" / tag
    return (supervised_out if preset == SUPERVISED else out / preset) / (tag + ("_subset0" if extra else ""))


def ensure_pool(pool: Path, checkpoint: Path) -> None:
    """Mine the pool once (the 100% supervised model, seed 0) unless it is there."""
    if (pool / "pool.json").is_file() or any(pool.glob("*.zarr")):  # mined, or a folder of tile stores
        return
    if not checkpoint.is_file():
        run = checkpoint.parents[1]  # <out>/frac1_seed0/checkpoints/last.pt
        raise SystemExit(f"{checkpoint}: missing; train the miner first: python benchmarks/learning_curve.py "
                         f"--jobs 1 --fractions 1 --seeds 0 --out {run.parent}")  # fmt: skip
    slides = sorted(str(p) for p in (V3 / "slides").glob("U*.tiff"))
    labeled = [a for split in ("train", "val", "test") for a in ("--labeled", str(V3 / "patches" / f"{split}.json"))]
    command = [sys.executable, "-m", "wsi_pipeline", "mine", *slides, "--checkpoint", str(checkpoint),
               "--out", str(pool), *labeled]  # fmt: skip
    log.info("mining the pool: %s", " ".join(command))
    started = time.perf_counter()
    subprocess.run(command, check=True)
    (pool / "mine_seconds.txt").write_text(f"{time.perf_counter() - started:.0f}\n")


def hidden_labels(slide_id: str, meta: dict) -> list:
    """The generator's labels of one pool patch (``meta``: the store row, level-0 window), cropped as the
    labeled patches are (``PatchLabel`` in level-0 pixels from the window's corner, ``ignore`` kept)."""
    from wsi_pipeline.data.patches import crop_annotations
    from wsi_pipeline.types import Box

    window = Box(meta["x"], meta["y"], meta["x"] + meta["width"], meta["y"] + meta["height"])
    return crop_annotations(_slide_truth(slide_id), window, 0.5)


@functools.cache
def _slide_truth(slide_id: str) -> list:
    from wsi_pipeline.data.geojson_io import read_geojson

    return read_geojson(V3 / "slides" / f"{slide_id}.geojson")  # the unlabeled slides keep theirs on disk


def pseudo_label_quality(
    checkpoint: Path, pool: Path, thresholds: tuple[float, ...] = (0.5,), iou: float = 0.3, patches: int = 120
) -> dict[str, dict]:
    """Per score threshold: precision and recall of a checkpoint's detections on a fixed sample of pool
    patches against the pool slides' hidden ground truth (IoU >= ``iou``), class-aware, overall and per
    class (``classes``: precision among the detections of that class, recall of its lesions), and
    ``lesion_precision``: the share of detections on some lesion whatever its class."""
    import torch

    from wsi_pipeline.data.pool import open_pool
    from wsi_pipeline.evaluation.detection import box_iou
    from wsi_pipeline.inference.predictor import Predictor
    from wsi_pipeline.modeling.checkpoint import model_from_checkpoint
    from wsi_pipeline.taxonomy import BY_CODE, CLASS_CODES

    model, config = model_from_checkpoint(checkpoint)
    dataset = open_pool(pool, config.model.input_mpp)  # the slides' hidden ground truth: v3's geojson
    chosen = np.random.default_rng(0).choice(len(dataset), min(patches, len(dataset)), replace=False)
    predictor = Predictor(model, torch.device("cpu"))
    ids = [BY_CODE[c].id for c in CLASS_CODES]
    # per threshold, per class (rows): detections, class-aware hits, lesions; and detections on any lesion
    counts = {t: np.zeros((len(ids), 3), int) for t in thresholds}
    on_lesion = dict.fromkeys(thresholds, 0)
    for index in sorted(chosen.tolist()):
        s, i = dataset.index[int(index)]
        store = dataset.stores[s]
        image, meta, sid = store[i], store.row(i), store.attrs["slide_id"]
        labels = [p for p in hidden_labels(sid, meta) if not p.ignore]
        to_patch = image.shape[1] / meta["width"]  # patch pixels per level-0 pixel
        gt = np.array([[p.box.x0, p.box.y0, p.box.x1, p.box.y1] for p in labels], float).reshape(-1, 4) * to_patch
        gt_cls = np.array([BY_CODE[p.label].id for p in labels], int)
        found = predictor([image])[0]
        for t in thresholds:
            keep = found["scores"] >= t
            boxes, cls, scores = found["boxes"][keep], found["labels"][keep], found["scores"][keep]
            overlap = box_iou(boxes, gt, np.zeros(len(gt), bool)) if len(boxes) and len(gt) else None
            if overlap is not None:
                on_lesion[t] += int((overlap.max(axis=1) >= iou).sum())
            for row, c in enumerate(ids):
                mine, theirs = cls == c, gt_cls == c
                hits = 0
                if overlap is not None and mine.any() and theirs.any():
                    hits = _greedy_hits(overlap[np.ix_(mine, theirs)], scores[mine], iou)
                counts[t][row] += [int(mine.sum()), hits, int(theirs.sum())]
    return {f"{t:g}": _quality(c, on_lesion[t], len(chosen)) for t, c in counts.items()}


def _quality(counts: np.ndarray, on_lesion: int, patches: int) -> dict:
    """``counts`` (C, 3): detections, class-aware hits and lesions per class."""
    from wsi_pipeline.taxonomy import CLASS_CODES

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    detections, hits, lesions = (int(v) for v in counts.sum(axis=0))
    return {
        "precision": ratio(hits, detections),
        "recall": ratio(hits, lesions),
        "lesion_precision": ratio(on_lesion, detections),
        "pseudo_labels": detections,
        "lesions": lesions,
        "patches": patches,
        "classes": {
            code: {"pseudo_labels": int(d), "precision": ratio(h, d), "recall": ratio(h, g), "lesions": int(g)}
            for code, (d, h, g) in zip(CLASS_CODES, counts.tolist(), strict=True)
        },
    }


def _greedy_hits(overlap: np.ndarray, scores: np.ndarray, iou: float) -> int:
    """Detections (rows, best score first) matched one-to-one to ground truth (columns) at ``iou``."""
    used = np.zeros(overlap.shape[1], bool)
    for k in np.argsort(-scores):
        j = int(np.argmax(np.where(used, -1, overlap[k])))
        if overlap[k, j] >= iou and not used[j]:
            used[j] = True
    return int(used.sum())


def oracle_json(out: Path, pool: Path, fraction: float, seed: int) -> Path:
    """A COCO file of the labeled subset (``fraction``, ``seed``: the slides the supervised run trains on)
    and every pool patch with the labels the generator hid; the pool's images are written once as JPEG.
    The labeled patches are listed as many times as it takes to match the pool's count, so that a batch of
    4 holds 2 + 2 on average, as the semi-supervised methods' batches do."""
    from PIL import Image

    from wsi_pipeline.data.coco import CocoBuilder
    from wsi_pipeline.data.patches import PatchLabel
    from wsi_pipeline.data.pool import open_pool
    from wsi_pipeline.engine.run import labeled_subset
    from wsi_pipeline.io import atomic_path
    from wsi_pipeline.types import Box

    path = out / ORACLE / f"frac{fraction:g}_seed{seed}.json"
    if path.is_file():
        return path
    images = out / ORACLE / "images"
    images.mkdir(parents=True, exist_ok=True)
    train = json.loads((V3 / "patches" / "train.json").read_text())
    names = {c["id"]: c["name"] for c in train["categories"]}
    slides = sorted({str(img["slide_id"]) for img in train["images"]})
    subset = labeled_subset(slides, fraction, seed) or set(slides)
    coco = CocoBuilder(info={"description": f"{ORACLE}: labeled {fraction:g} seed {seed} + pool", "mpp": 0.25})
    boxes_of = {}
    for ann in train["annotations"]:
        boxes_of.setdefault(ann["image_id"], []).append(ann)
    chosen = [img for img in train["images"] if str(img["slide_id"]) in subset]
    dataset = open_pool(pool, 0.25)
    for img in chosen * max(1, round(len(dataset) / len(chosen))):
        target = images / img["file_name"]
        if not target.exists():
            target.symlink_to(V3 / "patches" / "train" / img["file_name"])
        labels = [
            PatchLabel(Box(x, y, x + w, y + h), names[a["category_id"]], bool(a.get("iscrowd")))
            for a in boxes_of.get(img["id"], [])
            for x, y, w, h in [a["bbox"]]
        ]
        coco.add_image(img["file_name"], img["width"], img["height"], labels, slide_id=img["slide_id"], mpp=0.25)
    for s, i in dataset.index:
        store = dataset.stores[s]
        meta, sid = store.row(i), str(store.attrs["slide_id"])
        name = f"{sid}_x{meta['x']}_y{meta['y']}.jpg"
        if not (images / name).exists():
            with atomic_path(images / name) as tmp:  # an interrupted write leaves no half image to reuse
                Image.fromarray(store[i]).save(tmp, format="JPEG", quality=95)
        coco.add_image(name, meta["width"], meta["height"], hidden_labels(sid, meta),
                       slide_id=sid, mpp=0.25)  # fmt: skip
    coco.info["image_root"] = "images"
    coco.write(path)
    return path


def train_runs(runs: list, out: Path, supervised_out: Path, pool: Path, jobs: int) -> dict:
    args = []
    for preset, fraction, seed, extra in runs:
        overrides = list(extra) + ([] if preset in (SUPERVISED, ORACLE) else [f"train.unlabeled={pool}"])
        folder = folder_of(out, supervised_out, preset, fraction, seed, extra)
        if preset == ORACLE:  # the subset is in the file: train on all of it
            overrides += [f"train.train_json={oracle_json(out, pool, fraction, seed)}", "train.batch_size=4"]
            args.append((SUPERVISED, overrides, 1.0, seed, V3 / "patches" / "test.json", folder))
            continue
        args.append((preset, overrides, fraction, seed, V3 / "patches" / "test.json", folder))
    if jobs == 1:
        results = [run_one(*a, True) for a in args]
    else:  # one run per core with one thread each, as the learning curve
        threads = max(1, (os.cpu_count() or 1) // jobs)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_set_threads, initargs=(threads,)) as workers:
            results = [f.result() for f in [workers.submit(run_one, *a, False) for a in args]]
    return {(run[0], run[1], run[2], a[5]): res for run, a, res in zip(runs, args, results, strict=True)}


def cached(runs: list, out: Path, supervised_out: Path) -> dict:
    found = {}
    for preset, fraction, seed, extra in runs:
        path = folder_of(out, supervised_out, preset, fraction, seed, extra) / "result.json"
        if path.is_file():
            found[(preset, fraction, seed, folder_of(out, supervised_out, preset, fraction, seed, extra))] = json.loads(
                path.read_text()
            )
    return found


def validation_map(folder: Path) -> float:
    """mAP of a run on v3's 5 validation slides (cached in ``result_val.json``): what tuning looks at."""
    cache = folder / "result_val.json"
    if not cache.is_file():
        cache.write_text(json.dumps(score(folder, V3 / "patches" / "val.json").summary(), indent=1))
    return json.loads(cache.read_text())["overall"]["mAP"]


def _pm(values: list[float]) -> str:
    v = np.asarray(values, float) * 100
    return "-" if not len(v) else f"{v.mean():.1f} +- {v.std():.1f}"


def table(results: dict, presets: list[str], fraction: float, classes: list[str]) -> tuple[list[str], list[dict]]:
    """Markdown rows and JSON rows for ``presets`` at ``fraction``: mean +- std per class and mAP, and the
    paired gain over supervised (seeds both have)."""
    by = {(p, s): r for (p, f, s, folder), r in results.items()
          if f == fraction and "subset0" not in folder.name and folder.parent.parent.name != "tune"}  # fmt: skip
    lines, rows = [], []
    for preset in presets:
        seeds = sorted(s for p, s in by if p == preset)
        if not seeds:
            continue
        metrics = {c: [by[(preset, s)]["classes"][c]["mAP"] or 0.0 for s in seeds] for c in classes}
        metrics["mAP"] = [by[(preset, s)]["overall"]["mAP"] for s in seeds]
        paired = [s for s in seeds if (SUPERVISED, s) in by]
        gains = {}
        if preset != SUPERVISED and paired:
            for c in classes:
                gains[c] = [
                    (by[(preset, s)]["classes"][c]["mAP"] or 0) - (by[(SUPERVISED, s)]["classes"][c]["mAP"] or 0)
                    for s in paired
                ]
            gains["mAP"] = [by[(preset, s)]["overall"]["mAP"] - by[(SUPERVISED, s)]["overall"]["mAP"] for s in paired]
        quality = [by[(preset, s)].get("pseudo_quality") for s in seeds]
        precision = [q["precision"] for q in quality if q and q["precision"] is not None]
        recall = [q["recall"] for q in quality if q and q["recall"] is not None]
        cpu = np.mean([by[(preset, s)]["seconds"] for s in seeds]) / 60
        lines.append(
            f"| {preset} | {len(seeds)} | {_pm(metrics['mAP'])} | {_pm(gains['mAP']) if gains else '-'} | "
            + " | ".join(f"{_pm(metrics[c])}" + (f" ({_pm(gains[c])})" if gains else "") for c in classes)
            + f" | {_pm(precision)} / {_pm(recall)} | {cpu:.0f} |"
        )
        rows.append({"preset": preset, "fraction": fraction, "seeds": seeds, "metrics": metrics, "gains": gains,
                     "pseudo_precision": precision, "pseudo_recall": recall, "minutes": cpu})  # fmt: skip
    return lines, rows


def pseudo_class_table(results: dict, classes: list[str]) -> list[str]:
    """Markdown rows: each semi-supervised run group's pseudo-labels on the pool per class, precision /
    recall over its seeds' pooled counts (a class has few lesions in the 120 sampled patches)."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for (preset, fraction, _s, folder), result in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        quality = result.get("pseudo_quality", {})
        if "classes" in quality and "subset0" not in folder.name and folder.parent.parent.name != "tune":
            groups.setdefault((preset, fraction), []).append(quality["classes"])
    lines = []
    for (preset, fraction), runs in groups.items():
        cells = []
        for c in classes:
            made = sum(r[c]["pseudo_labels"] for r in runs)
            hits = sum(round((r[c]["precision"] or 0) * r[c]["pseudo_labels"]) for r in runs)
            lesions = sum(r[c]["lesions"] for r in runs)
            cells.append(f"{hits / made if made else 0:.2f} / {hits / lesions if lesions else 0:.2f} ({made})")
        lines.append(f"| {preset} | {fraction:.0%} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def step_times(pool: Path, checkpoint: Path, steps: int = 4) -> list[str]:
    """One training step of each method on the same batch (2 labeled + 2 unlabeled patches), one process,
    same threads, every detector starting from ``checkpoint``'s weights (so pseudo-labels exist, as late in
    training); dual alignment also with its alignment terms switched off (pseudo-labels and the unlabeled
    images' box-head features still computed, no projection head, proxies, prototypes or bank)."""
    import torch

    from wsi_pipeline.config import load_config
    from wsi_pipeline.data.batch import TrainBatch, detection_collate
    from wsi_pipeline.data.datasets import CocoPatchDataset
    from wsi_pipeline.data.pool import open_pool
    from wsi_pipeline.methods import build_method
    from wsi_pipeline.methods.dual_alignment import DualAlignment

    class AlignmentOff(DualAlignment):  # pseudo-labels and the student's box head on them, nothing after
        def semi_supervised_losses(self, batch, sup):  # type: ignore[no-untyped-def]
            zero = sup.head.features.sum() * 0.0 + self.pseudo_labelled_features(batch.unlabeled)[0].sum() * 0.0
            return {name: zero for name in self.loss_names}

    from wsi_pipeline.modeling.checkpoint import model_from_checkpoint

    trained = model_from_checkpoint(checkpoint)[0].state_dict()
    labeled = CocoPatchDataset(V3 / "patches" / "train.json")
    batch = detection_collate([labeled[i] for i in range(2)])
    unlabeled = open_pool(pool, 0.25)
    batch = TrainBatch(batch.images, batch.targets, [unlabeled[i][0] for i in range(2)])
    lines = ["| method | seconds per step | vs supervised |", "|---|---|---|"]
    base = None
    for preset in [
        "curve-cpu",
        "dual_alignment",
        "dual_alignment (alignment off)",
        "mean_teacher",
        "csd",
        "soft_teacher",
    ]:
        config = load_config(preset.split(" ")[0], [f"train.unlabeled={pool}", "train.ssl.ramp_iters=0"])
        torch.manual_seed(0)
        method = build_method(config)
        if preset.endswith("(alignment off)"):
            torch.manual_seed(0)
            method = AlignmentOff(method.detector, config.train.ssl)
        method.detector.load_state_dict(trained)
        if getattr(method, "teacher", None) is not None:
            method.teacher.model.load_state_dict(trained)
        optimizer = torch.optim.SGD(method.parameters(), lr=1e-4, momentum=0.9)
        method.train()
        timings = []
        for k in range(steps + 1):
            started = time.perf_counter()
            method.begin_step(10_000 + k)
            losses = method(batch)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            method.end_step()
            timings.append(time.perf_counter() - started)
        seconds = float(np.median(timings[1:]))
        base = base or seconds
        lines.append(f"| {preset} | {seconds:.2f} | {seconds / base:.2f}x |")
        log.info(lines[-1])
    return lines


def term_gradients(pool: Path, checkpoint: Path, batches: int = 3) -> list[str]:
    """The size of each loss term's gradient on the detector's parameters (all, and the box head alone),
    dual alignment at lambda 1 around ``checkpoint``'s detector, on a few batches of 2 labeled + 2 pool
    patches: which terms drive the shared features."""
    import torch

    from wsi_pipeline.config import load_config
    from wsi_pipeline.data.batch import TrainBatch, detection_collate
    from wsi_pipeline.data.datasets import CocoPatchDataset
    from wsi_pipeline.data.pool import open_pool
    from wsi_pipeline.methods import build_method
    from wsi_pipeline.modeling.checkpoint import model_from_checkpoint

    config = load_config("dual_alignment", [f"train.unlabeled={pool}", "train.ssl.ramp_iters=0", "train.ssl.weight=1"])
    torch.manual_seed(0)
    method = build_method(config).train()
    method.detector.load_state_dict(model_from_checkpoint(checkpoint)[0].state_dict())
    labeled, unlabeled = CocoPatchDataset(V3 / "patches" / "train.json"), open_pool(pool, 0.25)
    params = {n: p for n, p in method.named_parameters() if n.startswith("detector.")}
    head = [p for n, p in params.items() if "roi_heads.box_head" in n]
    sizes: dict[str, list[tuple[float, float]]] = {}
    for b in range(batches):
        batch = detection_collate([labeled[i] for i in (3 * b, 3 * b + 40)])
        batch = TrainBatch(batch.images, batch.targets, [unlabeled[i][0] for i in (5 * b, 5 * b + 300)])
        method.begin_step(10_000)
        for name, value in method(batch).items():
            norms = []
            for group in (list(params.values()), head):
                grads = torch.autograd.grad(value, group, retain_graph=True, allow_unused=True)
                norms.append(sum(float(g.pow(2).sum()) for g in grads if g is not None) ** 0.5)
            sizes.setdefault(name, []).append((norms[0], norms[1]))
    lines = ["| term | gradient norm, detector | of which box head |", "|---|---|---|"]
    for name, rows in sizes.items():
        both = np.asarray(rows)
        lines.append(f"| {name} | {both[:, 0].mean():.2f} | {both[:, 1].mean():.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        action="append",
        default=[],
        choices=["quick", "quick-soft", "table1", "table2", "noise", "tune", "oracle", "step-time", "gradients"],
    )
    parser.add_argument("--quick", action="store_true", help="the same as --rows quick")
    parser.add_argument("--only", action="append", default=[], help="train only these presets of the rows")
    parser.add_argument("--seeds", type=int, nargs="+", help="train only these seeds of the rows")
    parser.add_argument("--report", action="store_true", help="tables from cached runs only")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--supervised-out", type=Path, default=CURVE)
    parser.add_argument("--pool", type=Path, default=OUT / "pool")
    parser.add_argument("--mining-checkpoint", type=Path, default=MINER)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(message)s")
    rows = args.rows + (["quick"] if args.quick else [])
    if not rows and not args.report:
        parser.error("name --rows (or --quick, --report)")
    training = [r for r in rows if r not in ("step-time", "gradients")]
    every = runs_of(["table1", "table2", "noise", "tune", "oracle", "quick-soft"])
    args.out.mkdir(parents=True, exist_ok=True)
    if training and not args.report:
        ensure_pool(args.pool, args.mining_checkpoint)
        runs = [r for r in runs_of(training) if (not args.only or r[0] in args.only)
                and (args.seeds is None or r[2] in args.seeds)]  # fmt: skip
        train_runs(runs, args.out, args.supervised_out, args.pool, args.jobs)
    results = cached(every, args.out, args.supervised_out)
    for (preset, _f, _s, folder), result in results.items():  # pseudo-label quality of each SSL run, cached
        checkpoint = folder / "checkpoints" / "last.pt"
        done = "classes" in result.get("pseudo_quality", {})  # older caches lack the per-class counts
        if preset not in (SUPERVISED, ORACLE) and not done and checkpoint.is_file():
            result["pseudo_quality"] = pseudo_label_quality(checkpoint, args.pool)["0.5"]
            (folder / "result.json").write_text(json.dumps(result, indent=1))
    md: list[str] = []
    out_json: dict = {"tables": {}}
    if (args.pool / "pool.json").is_file() and args.mining_checkpoint.is_file():
        cache = args.out / "pool_quality.json"
        if not cache.is_file() or "classes" not in json.loads(cache.read_text())["0.5"]:
            cache.write_text(
                json.dumps(pseudo_label_quality(args.mining_checkpoint, args.pool, (0.5, 0.7, 0.9)), indent=1)
            )
        quality = json.loads(cache.read_text())
        mined = json.loads((args.pool / "pool.json").read_text())["slides"]
        timing = args.pool / "mine_seconds.txt"
        seconds = timing.read_text().strip() if timing.is_file() else "?"
        first = next(iter(quality.values()))
        md += [
            f"Pool: {sum(e.get('patches', 0) for e in mined.values())} patches from {len(mined)} unlabeled slides "
            f"(mined in {seconds} s), {first['lesions']} hidden lesions in {first['patches']} sampled patches. "
            "The mining model's detections on them:\n",
            "| score >= | detections | precision | recall | on a lesion (any class) |", "|---|---|---|---|---|",
            *[f"| {t} | {q['pseudo_labels']} | {q['precision'] or 0:.2f} | {q['recall'] or 0:.2f} | "
              f"{q['lesion_precision'] or 0:.2f} |" for t, q in quality.items()],
        ]  # fmt: skip
        out_json["pool"] = {"quality": quality, "mine_seconds": seconds}
    if results:
        classes = list(next(iter(results.values()))["classes"])
        header = (f"| method | seeds | mAP | paired gain | {' | '.join(f'{c} (gain)' for c in classes)} | "
                  "pseudo-label precision / recall | minutes |")  # fmt: skip
        rule = "|---|---|---|---|" + "---|" * len(classes) + "---|---|"
        for fraction in FRACTIONS:
            lines, table_rows = table(results, [*TABLE2, ORACLE], fraction, classes)
            if lines:
                md += [f"\n**Table 1, {fraction:.0%} labeled**\n", header, rule, *lines]
                out_json["tables"][f"table1_{fraction:g}"] = table_rows
        lines, table_rows = table(results, TABLE2, 1.0, classes)
        if lines:
            md += ["\n**Table 2, 100% labeled**\n", header, rule, *lines]
            out_json["tables"]["table2"] = table_rows
        per_class = pseudo_class_table(results, classes)
        if per_class:
            md += ["\n**Pseudo-labels on the pool per class** (score >= 0.5, seeds pooled): precision / recall "
                   "(pseudo-labels made)\n", f"| method | labeled | seeds | {' | '.join(classes)} |",
                   "|---|---|---|" + "---|" * len(classes), *per_class]  # fmt: skip
        noise = [r["overall"]["mAP"] for (p, f, s, folder), r in results.items()
                 if p == SUPERVISED and f == 0.25 and (s == 0 or "subset0" in folder.name)]  # fmt: skip
        if len(noise) > 1:
            md += [f"\nNoise floor (25%, seed 0's labeled slides, {len(noise)} init seeds): mAP {_pm(noise)}"]
            out_json["noise_floor"] = noise
    tuning = [
        (p, folder)
        for (p, f, s, folder), _ in results.items()
        if f == 0.25 and s == 0 and "subset0" not in folder.name and p != ORACLE
    ]
    if any(folder.parent.parent.name == "tune" for _, folder in tuning):
        md += ["\n**Tuning on the 5 validation slides (25% of the labels, seed 0)**\n",
               "| run | settings | validation mAP |", "|---|---|---|"]  # fmt: skip
        for preset, folder in sorted(tuning, key=lambda t: str(t[1])):
            val = validation_map(folder)
            tuned = folder.parent.parent.name == "tune"
            settings = folder.parent.name.removeprefix(preset).lstrip("-") if tuned else "preset"
            md.append(f"| {folder.parent.name}/{folder.name} | {settings} | {100 * val:.1f} |")
            out_json.setdefault("tuning", {})[str(folder)] = val
    if "gradients" in rows:
        at = args.supervised_out / "frac0.25_seed0" / "checkpoints" / "last.pt"
        md += [f"\n**Gradient of each term on the detector ({at.parent.parent.name}'s weights, lambda 1)**\n",
               *term_gradients(args.pool, at)]  # fmt: skip
    if "step-time" in rows:
        lines = step_times(args.pool, args.mining_checkpoint)
        md += ["\n**One training step (2 labeled + 2 unlabeled patches)**\n", *lines]
        out_json["step_time"] = lines
    text = "\n".join(md)
    print(text)
    (args.out / "tables.md").write_text(text + "\n")
    (args.out / "tables.json").write_text(json.dumps(out_json, indent=1))


if __name__ == "__main__":
    main()
