"""Assemble and run supervised training from a :class:`PipelineConfig` (what ``wsi-pipeline train`` does).

Output folder: ``config.yaml`` (resolved), ``checkpoints/last.pt`` and ``best.pt``, ``metrics.csv``
(and ``tensorboard/`` when TensorBoard is installed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsi_pipeline.config import PipelineConfig, config_to_dict, save_config
from wsi_pipeline.data.datasets import CocoPatchDataset, detection_collate
from wsi_pipeline.distributed import cleanup, init_distributed
from wsi_pipeline.engine.checkpoint import load_checkpoint
from wsi_pipeline.engine.hooks import Checkpointer, Evaluator, LRSchedule, MetricsLog
from wsi_pipeline.engine.predict import coco_ground_truth, predict_patches
from wsi_pipeline.engine.schedule import BatchSchedule
from wsi_pipeline.engine.trainer import Trainer
from wsi_pipeline.evaluation.detection import evaluate
from wsi_pipeline.modeling import build_detector
from wsi_pipeline.taxonomy import BY_ID

log = logging.getLogger(__name__)
CLASSES = {c.id: c.code for c in BY_ID.values()}


def select_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available on this machine")
    return device


def labeled_subset(slides: list[str], fraction: float, seed: int) -> set[str] | None:
    """A seeded choice of ``fraction`` of the labeled *slides* (the learning-curve protocol); ``None``
    keeps them all. For one seed the choices are nested: 25% of the slides are among the 50%."""
    if fraction >= 1.0:
        return None
    k = max(1, round(fraction * len(slides)))
    order = np.random.default_rng([seed, 1]).permutation(len(slides))
    return {slides[int(i)] for i in order[:k]}


class _ScheduleSampler:
    """Batch sampler over a :class:`BatchSchedule` from ``start``: items are ``(index, epoch)``."""

    def __init__(self, schedule: BatchSchedule, start: int):
        self.schedule, self.start = schedule, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return self.schedule.iterate(self.start)


def make_loader(dataset: Any, schedule: BatchSchedule, start: int, workers: int) -> Iterator[Any]:
    """Batches for iterations ``start, start + 1, ...``. The loader gets its own generator: creating its
    iterator would otherwise draw a seed from torch's global generator and, on resume, shift the random
    stream of the detector's samplers."""
    loader = DataLoader(
        dataset,
        batch_sampler=_ScheduleSampler(schedule, start),
        collate_fn=detection_collate,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(schedule.seed),
    )
    return iter(loader)


@dataclass
class TrainResult:
    out: Path
    iterations: int
    best_map: float | None
    slides: int  # labeled slides trained on (after train.labeled_fraction)
    patches: int


def run_training(
    config: PipelineConfig, out: str | Path, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    cfg = config.train
    out = Path(out)
    last = out / "checkpoints" / "last.pt"
    if last.exists() and not resume:
        raise ValueError(f"{out}: already holds a run (checkpoints/last.pt); pass --resume or choose another --out")
    state = load_checkpoint(last) if resume and last.exists() else None
    if state is not None:
        saved = state["config"]
        if saved.get("model") != config_to_dict(config)["model"]:
            raise ValueError(f"{last}: the model settings differ from this checkpoint's; resume with its config.yaml")
        if saved.get("train") != config_to_dict(config)["train"]:
            log.warning("%s: training settings differ from the checkpoint's; continuing with the new ones", last)
    dist_info = init_distributed(cfg.device)
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    device = select_device(cfg.device, dist_info.local_rank)

    train_set = CocoPatchDataset(
        cfg.train_json,
        augment_cfg=cfg.augment,
        seed=cfg.seed,
        crop_size=cfg.crop_size,
        crop_min_visible=cfg.crop_min_visible,
    )
    train_set.check_mpp(config.model.input_mpp)
    subset = labeled_subset(train_set.slide_ids(), cfg.labeled_fraction, cfg.seed)
    if subset is not None:
        train_set = train_set.only_slides(subset)
    log.info("training on %d patches from %d slides", len(train_set), len(train_set.slide_ids()))
    model = build_detector(config.model).to(device)
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if state is not None:
        model.load_state_dict(state["model"])
    if dist_info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    hooks: list[Any] = [LRSchedule(cfg.warmup_iters, cfg.warmup_factor, cfg.lr_steps, cfg.lr_gamma)]
    metrics_log = MetricsLog(out, cfg.log_every, progress and dist_info.is_main)
    checkpointer = Checkpointer(out / "checkpoints", cfg.checkpoint_every, config_to_dict(config))
    if dist_info.is_main:  # one writer: rank 0 logs, saves and validates
        hooks += [metrics_log, checkpointer]
    evaluator = None
    if cfg.val_json and dist_info.is_main:
        val_set = CocoPatchDataset(cfg.val_json)
        val_set.check_mpp(config.model.input_mpp)
        val_gts = coco_ground_truth(val_set)  # read once, not at every validation

        def validate(m: torch.nn.Module) -> dict[str, Any]:
            metrics = evaluate(val_gts, predict_patches(m, val_set, device), CLASSES)
            return {"mAP": None if np.isnan(metrics.mean_ap) else metrics.mean_ap}

        evaluator = Evaluator(validate, cfg.eval_every, checkpointer, metrics_log)
        hooks.append(evaluator)

    schedule = BatchSchedule(len(train_set), cfg.batch_size, cfg.seed, dist_info.rank, dist_info.world_size)
    trainer = Trainer(
        model, optimizer, iter(()), cfg.max_iter, device, hooks, cfg.amp, cfg.clip_grad_norm, cfg.channels_last
    )
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resuming at iteration %d", trainer.start_iter)
    trainer.data = make_loader(train_set, schedule, trainer.start_iter, cfg.workers)
    try:
        trainer.train()
    finally:
        cleanup(dist_info)
    best = evaluator.best_map if evaluator is not None and evaluator.best_iter >= 0 else None
    return TrainResult(out, trainer.max_iter, best, len(train_set.slide_ids()), len(train_set))
