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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from wsi_pipeline.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
PREDICTIONS = "test_predictions.json"  # a run's detections on the test split (COCO results), for later analyses


def worker_init(threads: int) -> None:
    """A training worker: ``threads`` torch threads, timestamped logs, and (on Linux) a SIGTERM when the
    benchmark that started it dies, so that a killed benchmark leaves no run training on its own."""
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(message)s")
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def scored_checkpoint(folder: Path) -> Path:
    """The checkpoint a run is scored with: best.pt (validation chose it), else last.pt."""
    best = folder / "checkpoints" / "best.pt"
    return best if best.is_file() else folder / "checkpoints" / "last.pt"


def score(folder: Path, coco_json: Path, save_pred: Path | None = None):  # type: ignore[no-untyped-def]
    """DetectionMetrics of a run's checkpoint (best.pt, else last.pt) on the patches of ``coco_json``;
    ``save_pred`` keeps the detections as COCO results (scored from memory, as before, not re-read)."""
    import torch

    from wsi_pipeline.data.datasets import CocoPatchDataset
    from wsi_pipeline.evaluation.detection import evaluate
    from wsi_pipeline.inference.patches import coco_predictions, to_coco_results
    from wsi_pipeline.modeling.checkpoint import model_from_checkpoint

    model, config = model_from_checkpoint(scored_checkpoint(folder))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    patches = CocoPatchDataset(coco_json)
    patches.check_mpp(config.model.input_mpp)
    gts, preds = coco_predictions(model.to(device), patches, device)
    if save_pred is not None:
        write_json_atomic(save_pred, to_coco_results(preds, patches))
    return evaluate(gts, preds)


def run_one(
    config_name: str, overrides: list[str], fraction: float, seed: int, test_json: Path, folder: Path, progress: bool
) -> dict:
    """Train (or resume) one run and evaluate its checkpoint on the test split; cached in ``result.json``."""
    from wsi_pipeline.config import load_config
    from wsi_pipeline.engine.run import run_training

    config = load_config(config_name, [*overrides, f"train.labeled_fraction={fraction}", f"train.seed={seed}"])
    saved = folder / "config.yaml"
    if saved.is_file() and load_config(saved) != config:
        raise SystemExit(f"{folder}: holds a run with other settings; remove it or choose another --out")
    result_path = folder / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    started = time.perf_counter()
    logging.getLogger(__name__).info("run %s: fraction %g, seed %d", folder.name, fraction, seed)
    trained = run_training(config, folder, resume=(folder / "checkpoints" / "last.pt").is_file(), progress=progress)
    metrics = score(folder, test_json, folder / PREDICTIONS)
    result = {
        "fraction": fraction,
        "seed": seed,
        "train_slides": trained.slides,
        "train_patches": trained.patches,
        "seconds": round(time.perf_counter() - started, 1),
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
    if args.jobs == 1:
        results = [run_one(*common, f, s, args.test_json, args.out / f"frac{f:g}_seed{s}", True) for f, s in runs]
    else:  # one run per core with one thread each: ~1.35x the throughput of one run on two threads
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=worker_init, initargs=(threads,)) as pool:
            futures = [
                pool.submit(run_one, *common, f, s, args.test_json, args.out / f"frac{f:g}_seed{s}", False)
                for f, s in runs
            ]
            results = [future.result() for future in futures]
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
