"""The supervised learning curve on synthpap-v3: test mAP (AP over IoU 0.10-0.70) per class with 25, 50,
75 and 100% of the labeled training slides, over several seeds. Every run is cached in its own folder
(``result.json``) and resumes from its last checkpoint, so the benchmark can be stopped and restarted.

    wsi-pipeline synth --config synthpap-v3 --out data/synthpap-v3 --export-patches   # once
    python benchmarks/learning_curve.py                              # CPU preset (configs/curve-cpu.yaml)
    python benchmarks/learning_curve.py --config supervised --set model.backbone=resnet50 --out data/bench/curve-gpu
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from wsi_pipeline.io import write_json_atomic

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]


def worker_init(threads: int) -> None:
    """A training worker: ``threads`` torch threads, timestamped logs, and (on Linux) a SIGTERM when the
    benchmark that started it dies, so that a killed benchmark leaves no run training on its own."""
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(message)s")
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def in_workers(fn: Callable[..., T], calls: list[tuple], jobs: int) -> list[T]:
    """``fn(*call)`` for each call, in order: here when ``jobs`` is 1, else in ``jobs`` spawned processes
    that share the cores (one thread each on 2 cores and 2 jobs, as the learning curve's runs)."""
    if jobs == 1:
        return [fn(*call) for call in calls]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=worker_init, initargs=(threads,)) as workers:
        return [f.result() for f in [workers.submit(fn, *call) for call in calls]]


def scored_checkpoint(folder: Path) -> Path:
    """The checkpoint a run is scored with: best.pt (validation chose it), else last.pt."""
    best = folder / "checkpoints" / "best.pt"
    return best if best.is_file() else folder / "checkpoints" / "last.pt"


FIRST_TEST_SET = "synthpap-v3"  # the dataset whose test scores keep the plain names (result.json, ...)


def split_tag(test_json: Path) -> str:
    """The name suffix of what is scored on ``test_json`` (``<data>/<dataset>/patches/test.json``): "" on
    synthpap-v3, where the tables began, else ``-<dataset>``."""
    dataset = test_json.resolve().parents[1].name
    return "" if dataset == FIRST_TEST_SET else f"-{dataset}"


def scored_files(folder: Path, test_json: Path) -> tuple[Path, Path]:
    """``(scores, test detections)`` of a run on ``test_json`` (``<data>/<dataset>/patches/test.json``):
    ``result.json`` and ``test_predictions.json`` on synthpap-v3, where the tables began, else
    ``result-<dataset>.json`` and ``test_predictions-<dataset>.json``. Training does not depend on the
    test split, so one trained run is scored on every test split that shares its train/val slides."""
    suffix = split_tag(test_json)
    return folder / f"result{suffix}.json", folder / f"test_predictions{suffix}.json"


def _slide_digests(dataset: Path) -> dict[str, str]:
    """{slide id: SHA-256 of its TIFF} from a synth dataset's slide manifests."""
    found = {}
    for manifest in (dataset / "slides").glob("*.json"):
        digest = json.loads(manifest.read_text()).get("tiff_sha256")
        if digest:
            found[manifest.stem] = digest
    return found


def saved_detections(folder: Path, patches):  # type: ignore[no-untyped-def]
    """Detections a run saved on another synth dataset's test split (``test_predictions*.json``, see
    :func:`scored_files`), for the patches of ``patches`` that are the same patch (file name) of the same
    slide (its TIFF's SHA-256), keyed by ``patches``' image ids: a test split that contains a smaller one
    predicts only its new slides. The checkpoint is the one both were scored with (runs are finished)."""
    from wsi_pipeline.data.coco import read_coco
    from wsi_pipeline.evaluation.inputs import load_coco
    from wsi_pipeline.types import ImageBoxes

    here = patches.path.resolve().parents[1]
    digests = _slide_digests(here)
    by_name = {img["file_name"]: (int(img["id"]), str(img.get("slide_id", ""))) for img in patches.images}
    empty = ImageBoxes(np.zeros((0, 4)), np.zeros(0, int), scores=np.zeros(0))
    found = {}
    for saved in sorted(folder.glob("test_predictions*.json")):
        other = here.parent / (saved.stem.removeprefix("test_predictions").removeprefix("-") or FIRST_TEST_SET)
        gt = other / "patches" / "test.json"
        if other == here or not gt.is_file():
            continue
        same = {s for s, d in _slide_digests(other).items() if digests.get(s) == d}
        preds = load_coco(gt, saved)[1]
        for img in read_coco(gt).images:
            image_id, slide = by_name.get(img["file_name"], (None, None))
            if image_id is not None and slide in same and str(img.get("slide_id", "")) == slide:
                found[image_id] = preds.get(int(img["id"]), empty)
    return found


def score(folder: Path, coco_json: Path, save_pred: Path | None = None):  # type: ignore[no-untyped-def]
    """DetectionMetrics of a run's checkpoint (best.pt, else last.pt) on the patches of ``coco_json``;
    ``save_pred`` keeps the detections as COCO results (scored from memory, not re-read). Patches the run
    already predicted on another test split (:func:`saved_detections`) are not predicted again."""
    import torch

    from wsi_pipeline.data.datasets import CocoPatchDataset
    from wsi_pipeline.evaluation.detection import evaluate
    from wsi_pipeline.inference.patches import coco_ground_truth, predict_patches, to_coco_results
    from wsi_pipeline.modeling.checkpoint import model_from_checkpoint

    model, config = model_from_checkpoint(scored_checkpoint(folder))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    patches = CocoPatchDataset(coco_json)
    patches.check_mpp(config.model.input_mpp)
    preds = saved_detections(folder, patches)
    todo = patches.only_slides({str(img.get("slide_id", "")) for img in patches.images if int(img["id"]) not in preds})
    if preds:
        logging.getLogger(__name__).info(
            "%s: %d of %d patches predicted before; predicting %d", folder.name, len(preds), len(patches), len(todo)
        )
    preds.update(predict_patches(model.to(device), todo, device))
    if save_pred is not None:
        write_json_atomic(save_pred, to_coco_results(preds, patches))
    return evaluate(coco_ground_truth(patches), preds)


def run_one(
    config_name: str, overrides: list[str], fraction: float, seed: int, test_json: Path, folder: Path, progress: bool
) -> dict:
    """Train (or resume) one run and evaluate its checkpoint on the test split; cached per test split
    (:func:`scored_files`). A run already trained and scored on another test split is only scored."""
    from wsi_pipeline.config import load_config
    from wsi_pipeline.engine.run import run_training

    config = load_config(config_name, [*overrides, f"train.labeled_fraction={fraction}", f"train.seed={seed}"])
    saved = folder / "config.yaml"
    if saved.is_file() and load_config(saved) != config:
        raise SystemExit(f"{folder}: holds a run with other settings; remove it or choose another --out")
    result_path, predictions = scored_files(folder, test_json)
    if result_path.is_file():
        return json.loads(result_path.read_text())
    earlier = sorted(folder.glob("result*.json"))  # written after training: the run is trained
    started = time.perf_counter()
    if earlier:
        trained = json.loads(earlier[0].read_text())
        logging.getLogger(__name__).info("run %s: trained, scoring it on %s", folder.name, test_json)
        kept = {k: trained[k] for k in ("train_slides", "train_patches", "seconds", "pseudo_quality") if k in trained}
    else:
        logging.getLogger(__name__).info("run %s: fraction %g, seed %d", folder.name, fraction, seed)
        run = run_training(config, folder, resume=(folder / "checkpoints" / "last.pt").is_file(), progress=progress)
        kept = {"train_slides": run.slides, "train_patches": run.patches}
    metrics = score(folder, test_json, predictions)
    result = {
        "fraction": fraction,
        "seed": seed,
        **kept,
        "seconds": kept.get("seconds", round(time.perf_counter() - started, 1)),  # training (and first scoring)
        **metrics.summary(),
    }
    write_json_atomic(result_path, result, indent=1)
    logging.getLogger(__name__).info("run %s: mAP %.3f in %.0f s", folder.name, metrics.mean_ap, result["seconds"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="curve-cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--test-json", type=Path, default=ROOT / "data" / "synthpap-v3" / "patches" / "test.json")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once (one thread each when > 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "bench" / "curve-cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(message)s")
    if not args.test_json.is_file():
        sys.exit(f"{args.test_json}: missing; generate synthpap-v3 first (see the docstring)")
    runs = [(f, s) for f in args.fractions for s in args.seeds]
    common = (args.config, args.overrides)
    # one run per core with one thread each: ~1.35x the throughput of one run on two threads
    calls = [(*common, f, s, args.test_json, args.out / f"frac{f:g}_seed{s}", args.jobs == 1) for f, s in runs]
    results = in_workers(run_one, calls, args.jobs)
    classes = list(results[0]["classes"])
    print(f"| labeled slides | seeds | mAP (AP10-70) | {' | '.join(classes)} | AP10 | AP50 | minutes |")
    print("|---|---|---|" + "---|" * len(classes) + "---|---|---|")
    for f in sorted(args.fractions):
        rows = [r for r in results if r["fraction"] == f]

        def stat(values: list[float | None]) -> str:
            v = np.array([x for x in values if x is not None], float) * 100
            return "-" if not len(v) else f"{v.mean():.1f} +- {v.std():.1f}"

        per_class = [stat([r["classes"][c]["mAP"] for r in rows]) for c in classes]
        slides = sorted({r.get("train_slides", "?") for r in rows}, key=str)
        minutes = np.mean([r["seconds"] for r in rows]) / 60
        print(
            f"| {f:.0%} ({'/'.join(map(str, slides))}) | {len(rows)} | {stat([r['overall']['mAP'] for r in rows])} | "
            f"{' | '.join(per_class)} | {stat([r['overall'].get('AP10') for r in rows])} | "
            f"{stat([r['overall'].get('AP50') for r in rows])} | {minutes:.1f} |"
        )


if __name__ == "__main__":
    main()
