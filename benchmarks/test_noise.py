"""How much of a paired gain's spread is test-set noise? A slide bootstrap of the test set.

The semi-supervised tables pair each method's run with the supervised run of the same seed and report the
mean +- std of the per-seed gains. Part of that std is training (initialisation, data order, the labeled
slides), part is the test set: 25 test slides, and AGC, a quarter of the mAP, has 24 test boxes. This
benchmark resamples the test slides with replacement (the same resample for both runs of a pair) and
reports, per pair, the std of its gain under that resampling and, per method, the std of its mean gain
over seeds when every seed is scored on the same resample: the part of the uncertainty that more seeds
do not remove. A test set ``k`` times larger divides those by about ``sqrt(k)``.

    python benchmarks/test_noise.py                 # every cached run of the tables with its supervised pair
    python benchmarks/test_noise.py --fractions 0.25 --samples 100
    python benchmarks/test_noise.py --gt data/synthpap-v4/patches/test.json   # 100 test slides

Pairs are found in ``benchmarks/ssl_tables.py``'s folders: each ``SSL/<preset>/frac<f>_seed<s>`` with a
score on ``--gt`` (``result.json`` on v3's test split, ``result-<dataset>.json`` on another) against
``CURVE/frac<f>_seed<s>``, and the noise floor's extra initialisations of seed 0's
labeled slides (``CURVE/frac0.25_seed<s>_subset0``) against seed 0. A run's test detections are the ones
it saved when the tables scored it (``test_predictions[-<dataset>].json``, COCO results as ``wsi-pipeline eval
--save-pred`` writes them); older runs are predicted once and cached in ``OUT/predictions/``. Markdown goes
to stdout and ``OUT/test_noise[-<dataset>].md``, numbers to ``OUT/test_noise[-<dataset>].json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from wsi_pipeline.io import write_json_atomic, write_text_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import scored_checkpoint, scored_files, split_tag

ROOT = Path(__file__).resolve().parents[1]
V3_TEST = ROOT / "data" / "synthpap-v3" / "patches" / "test.json"
CURVE = ROOT / "data" / "bench" / "curve-cpu-redesign"
SSL = ROOT / "data" / "bench" / "ssl"
OUT = ROOT / "data" / "bench" / "test-noise"
log = logging.getLogger("test_noise")


def find_pairs(ssl: Path, curve: Path, fractions: list[float] | None, gt: Path) -> list[tuple[str, Path, Path]]:
    """``(group, run folder, supervised folder)`` of every run scored on ``gt`` with a supervised pair
    scored on it; ``group`` is ``<preset> <fraction>`` (the noise floor's runs: ``init seeds 0.25``)."""

    def scored(folder: Path) -> bool:
        return scored_files(folder, gt)[0].is_file()

    pairs = []
    for folder in sorted(f for f in ssl.glob("*/frac*_seed*") if scored(f)):
        tag = folder.name.removesuffix("_subset0")
        base = curve / tag
        fraction = float(tag.removeprefix("frac").split("_")[0])
        if tag == folder.name and scored(base) and (not fractions or fraction in fractions):
            pairs.append((f"{folder.parent.name} {fraction:g}", folder, base))
    if not fractions or 0.25 in fractions:
        for folder in sorted(curve.glob("frac0.25_seed*_subset0")):
            if scored(folder) and scored(curve / "frac0.25_seed0"):
                pairs.append(("init seeds 0.25", folder, curve / "frac0.25_seed0"))
    return pairs


def predictions(folder: Path, gt: Path, out: Path):  # type: ignore[no-untyped-def]
    """``(gts, preds)`` per image id on ``gt`` of the checkpoint a run was scored with (best.pt, else last.pt):
    the detections the run saved when it was scored, else predicted once and cached in ``out``."""
    import torch

    from wsi_pipeline.evaluation.inputs import load_coco
    from wsi_pipeline.inference.patches import predict_coco_file

    cache = scored_files(folder, gt)[1]
    if not cache.is_file():
        cache = out / f"{folder.parent.name}--{folder.name}{cache.name.removeprefix('test_predictions')}"
    if cache.is_file():
        return load_coco(gt, cache)[:2]
    log.info("predicting %s/%s", folder.parent.name, folder.name)
    gts, preds, _ = predict_coco_file(gt, scored_checkpoint(folder), torch.device("cpu"), cache)
    return gts, preds


def slide_draws(slides: list[str], samples: int, seed: int) -> list[list[str]]:
    """The test set itself, then ``samples`` draws of as many slides with replacement."""
    rng = np.random.default_rng(seed)
    return [slides] + [list(rng.choice(slides, len(slides))) for _ in range(samples)]


def resampled_maps(gts: dict, preds: dict, images: dict[str, list], draws: list[list[str]]) -> np.ndarray:
    """``(len(draws),)`` mAP of ``preds`` on each drawn test set; a slide drawn twice counts twice. The
    detections are matched once; each draw only re-accumulates AP over its images."""
    from wsi_pipeline.evaluation.detection import PAPER_IOUS, DetectionMetrics, accumulate, match_detections
    from wsi_pipeline.taxonomy import CLASS_NAMES

    class_ids = tuple(sorted(CLASS_NAMES))
    matches = match_detections(gts, preds, class_ids)
    maps = np.zeros(len(draws))
    for d, drawn in enumerate(draws):
        ap, recall, _ = accumulate(matches, [i for s in drawn for i in images[s]], len(class_ids), len(PAPER_IOUS))
        maps[d] = DetectionMetrics(class_ids, tuple(CLASS_NAMES.values()), PAPER_IOUS, ap, recall).mean_ap
    return maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, default=V3_TEST)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--fractions", type=float, nargs="+", help="only these labeled fractions")
    parser.add_argument("--ssl", type=Path, default=SSL)
    parser.add_argument("--curve", type=Path, default=CURVE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from wsi_pipeline.data.coco import read_coco

    pairs = find_pairs(args.ssl, args.curve, args.fractions, args.gt)
    if not pairs:
        raise SystemExit(f"{args.ssl}: no finished run with a finished supervised pair in {args.curve}")
    (args.out / "predictions").mkdir(parents=True, exist_ok=True)
    slide_of = {img["id"]: img["slide_id"] for img in read_coco(args.gt).images}
    slides = sorted(set(slide_of.values()))
    images = {s: [i for i in slide_of if slide_of[i] == s] for s in slides}
    draws = slide_draws(slides, args.samples, seed=0)
    maps: dict[Path, np.ndarray] = {}
    for folder in dict.fromkeys(f for _, run, base in pairs for f in (run, base)):
        gts, preds = predictions(folder, args.gt, args.out / "predictions")
        maps[folder] = resampled_maps(gts, preds, images, draws) * 100
        scored = 100 * json.loads(scored_files(folder, args.gt)[0].read_text())["overall"]["mAP"]
        if abs(maps[folder][0] - scored) > 0.05:  # the cache or the checkpoint is not what the table scored
            log.warning("%s: mAP %.2f here against %.2f in its scores", folder, maps[folder][0], scored)
    lines = [
        f"Test set: {len(slides)} slides, {len(slide_of)} patches; {args.samples} resamples of its slides.\n",
        "| group | run | mAP | paired gain | std of the gain over resampled test sets |",
        "|---|---|---|---|---|",
    ]
    result: dict = {"samples": args.samples, "pairs": [], "groups": {}}
    groups: dict[str, list[np.ndarray]] = {}
    for group, run, base in pairs:
        gain = maps[run] - maps[base]  # (draws,): the test set itself, then its resamples
        std = float(gain[1:].std())
        lines.append(f"| {group} | {run.name} | {maps[run][0]:.1f} | {gain[0]:+.1f} | {std:.2f} |")
        groups.setdefault(group, []).append(gain)
        result["pairs"].append(
            {"group": group, "run": str(run), "supervised": str(base), "mAP": maps[run][0], "gain": gain[0],
             "gain_test_std": std, "run_test_std": maps[run][1:].std()}
        )  # fmt: skip
    lines += ["", "| group | seeds | mean gain | std of the per-seed gains | one gain's test-set std (rms) | "
              "the mean gain's test-set std |", "|---|---|---|---|---|---|"]  # fmt: skip
    for group, found in groups.items():
        gains = np.stack(found)  # (seeds, draws)
        one = float(np.sqrt(np.mean(gains[:, 1:].std(axis=1) ** 2)))
        mean = float(gains.mean(axis=0)[1:].std())  # every seed scored on the same resample: no averaging out
        spread = float(gains[:, 0].std())
        lines.append(f"| {group} | {len(found)} | {gains[:, 0].mean():+.1f} | {spread:.2f} | {one:.2f} | {mean:.2f} |")
        result["groups"][group] = {"gains": gains[:, 0].tolist(), "spread": spread, "one_gain_test_std": one,
                                   "mean_gain_test_std": mean}  # fmt: skip
    text = "\n".join(lines)
    print(text)
    tag = split_tag(args.gt)
    write_text_atomic(args.out / f"test_noise{tag}.md", text + "\n")
    write_json_atomic(args.out / f"test_noise{tag}.json", result, indent=1)


if __name__ == "__main__":
    main()
