"""Whole slides: detection mAP next to patch mAP, and slide triage by the risk score.

    wsi-pipeline synth --config synthpap-triage --out data/synthpap-triage            # once
    python benchmarks/triage.py --checkpoint data/bench/curve-cpu-2threads/frac1_seed0/checkpoints/last.pt

1. ``infer`` on synthpap-v3's test slides (cached in ``--out``) and ``eval`` of the lesion maps against the
   slides' ground truth: the whole-slide mAP, beside the model's patch mAP on the same slides' COCO patches.
2. ``infer`` on synthpap-triage's validation and test slides (70% negative). A slide is positive when its
   ground truth holds a lesion. Thresholds are chosen on the validation slides only: ``review`` = the
   highest risk that still flags ``--sensitivity`` of the positive validation slides, ``high`` = the lowest
   risk above ``--specificity`` of the negative ones. The test slides are scored once: sensitivity and
   specificity at both thresholds, and the ROC AUC of the risk score.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wsi_pipeline.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def slides_by_role(dataset: Path) -> dict[str, list[tuple[str, bool]]]:
    """``role -> [(slide id, positive)]`` from a synthpap manifest."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    roles: dict[str, list[tuple[str, bool]]] = {}
    for s in manifest["slides"]:
        roles.setdefault(s["role"], []).append((s["slide_id"], s["n_lesions"] > 0))
    return roles


def run_infer(checkpoint: Path, dataset: Path, ids: list[str], out: Path) -> dict[str, float]:
    """Risk per slide (``infer`` resumes: finished slides are not redone)."""
    import torch

    from wsi_pipeline.config import PipelineConfig
    from wsi_pipeline.inference.batch import infer_slides
    from wsi_pipeline.modeling.checkpoint import model_from_checkpoint

    model, trained = model_from_checkpoint(checkpoint)
    config = PipelineConfig(trained.synth, trained.tile, trained.model, trained.train)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    paths = [dataset / "slides" / f"{sid}.tiff" for sid in ids]
    result = infer_slides(paths, checkpoint, out, config, model, device, progress=True)
    if result.failed:
        raise SystemExit(f"infer failed: {[(o.slide_id, o.reason) for o in result.failed]}")
    return {o.slide_id: float(o.risk or 0.0) for o in result.outcomes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--v3", type=Path, default=ROOT / "data" / "synthpap-v3")
    parser.add_argument("--triage", type=Path, default=ROOT / "data" / "synthpap-triage")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "bench" / "triage")
    parser.add_argument("--sensitivity", type=float, default=1.0)
    parser.add_argument("--specificity", type=float, default=0.9)
    args = parser.parse_args()
    from wsi_pipeline.evaluation.report import evaluate_saved
    from wsi_pipeline.evaluation.slides import choose_thresholds, rates, roc_auc
    from wsi_pipeline.inference.patches import evaluate_checkpoint

    # 1. whole-slide vs patch mAP on v3's test slides
    v3_test = [sid for sid, _ in slides_by_role(args.v3)["test"]]
    maps = args.out / "v3-test"
    run_infer(args.checkpoint, args.v3, v3_test, maps)
    truth = args.out / "v3-test-truth"
    truth.mkdir(parents=True, exist_ok=True)
    for sid in v3_test:
        (truth / f"{sid}.geojson").write_bytes((args.v3 / "slides" / f"{sid}.geojson").read_bytes())
    import torch

    whole = evaluate_saved(truth, maps)
    patches = evaluate_checkpoint(args.v3 / "patches" / "test.json", args.checkpoint, torch.device("cpu"))
    print("| v3 test, curve-cpu | mAP (AP10-70) | ASC-US | LSIL | HSIL | AGC | AP10 | AP50 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, report in (("patches (COCO)", patches), ("whole slides (infer)", whole)):
        cls = " | ".join(f"{100 * (report['classes'][c]['mAP'] or 0):.1f}" for c in ("ASC-US", "LSIL", "HSIL", "AGC"))
        o = report["overall"]
        print(f"| {name} | {100 * o['mAP']:.1f} | {cls} | {100 * o['AP10']:.1f} | {100 * o['AP50']:.1f} |")

    # 2. triage: thresholds on validation slides, scored once on test slides
    roles = slides_by_role(args.triage)
    risk = {}
    for role in ("val", "test"):
        risk.update(run_infer(args.checkpoint, args.triage, [s for s, _ in roles[role]], args.out / f"triage-{role}"))
    split = {
        role: ([risk[s] for s, p in roles[role] if p], [risk[s] for s, p in roles[role] if not p])
        for role in ("val", "test")
    }
    review, high = choose_thresholds(*split["val"], args.sensitivity, args.specificity)
    pos, neg = split["test"]
    print(f"\nvalidation: {len(split['val'][0])} positive / {len(split['val'][1])} negative slides; "
          f"test: {len(pos)} / {len(neg)}")  # fmt: skip
    print(f"thresholds (validation): review {review:.4f} (sensitivity >= {args.sensitivity:g}), "
          f"high {high:.4f} (specificity >= {args.specificity:g})")  # fmt: skip
    print("| test slides | sensitivity | specificity |")
    print("|---|---|---|")
    for name, t in (("review or high risk", review), ("high risk", high)):
        sens, spec = rates(pos, neg, t)
        print(f"| {name} (risk >= {t:.3f}) | {sens:.2f} ({sum(r >= t for r in pos)}/{len(pos)}) | "
              f"{spec:.2f} ({sum(r < t for r in neg)}/{len(neg)}) |")  # fmt: skip
    print(f"ROC AUC of the risk score on the test slides: {roc_auc(pos, neg):.3f}")
    write_json_atomic(args.out / "triage.json", {"review": review, "high": high, "risk": risk}, indent=1)


if __name__ == "__main__":
    main()
