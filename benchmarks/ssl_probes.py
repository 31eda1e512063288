"""Probes of one training step for the semi-supervised tables (``benchmarks/ssl_tables.py --rows
step-time --rows gradients``): each method's step time on the same batch, and each loss term's gradient
size on the detector."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from ssl_pool import V3

log = logging.getLogger("ssl_tables")


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
            zero = sup.head.features.sum() * 0.0 + self.pseudo_labelled_features(batch)[0].sum() * 0.0
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
