"""Assemble and run training from a :class:`PipelineConfig` (what ``wsi-pipeline train`` does).

``run_training`` is a short sequence of ``build_*`` steps: the labeled data, the training method
(``train.method``, :mod:`wsi_pipeline.methods`) around a fresh detector, the optimizer, the hooks, the
loader; then the :class:`~wsi_pipeline.engine.trainer.Trainer` runs it. Output folder: ``config.yaml``
(resolved), ``checkpoints/last.pt`` and ``best.pt``, ``metrics.csv`` (and ``tensorboard/``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsi_pipeline.config import PipelineConfig, config_to_dict, save_config
from wsi_pipeline.data.batch import TrainBatch, detection_collate, original_errors, unlabeled_collate
from wsi_pipeline.data.datasets import CocoPatchDataset
from wsi_pipeline.data.pool import UnlabeledSet, open_pool
from wsi_pipeline.device import select_device
from wsi_pipeline.distributed import DistInfo, cleanup, init_distributed
from wsi_pipeline.engine.hooks import (
    Checkpointer,
    Diagnostics,
    Evaluator,
    HookBase,
    LRSchedule,
    MethodSteps,
    MetricsLog,
)
from wsi_pipeline.engine.schedule import BatchSchedule
from wsi_pipeline.engine.trainer import Trainer
from wsi_pipeline.evaluation.detection import evaluate
from wsi_pipeline.inference.patches import coco_ground_truth, predict_patches
from wsi_pipeline.io import exclusive_folder, remove_stale_temporaries
from wsi_pipeline.methods import TrainingMethod, build_method, method_class
from wsi_pipeline.modeling import build_detector
from wsi_pipeline.modeling.checkpoint import init_detector_from, load_checkpoint

log = logging.getLogger(__name__)

# the training stream (RPN/RoI sampler draws) starts from this seed offset once the model is built, so it
# does not depend on how many parameters a method initialises
_STREAM_SEED_OFFSET = 1_000_003


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


def make_loader(
    dataset: Any, schedule: BatchSchedule, start: int, workers: int, collate: Any = detection_collate
) -> Iterator[Any]:
    """Batches for iterations ``start, start + 1, ...``. The loader gets its own generator: creating its
    iterator would otherwise draw a seed from torch's global generator and, on resume, shift the random
    stream of the detector's samplers."""
    loader = DataLoader(
        dataset,
        batch_sampler=_ScheduleSampler(schedule, start),
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(schedule.seed),
    )
    return original_errors(loader)


def with_unlabeled(
    labeled: Iterator[TrainBatch], unlabeled: Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]
) -> Iterator[TrainBatch]:
    """Each labeled batch with the next batch of unlabeled images and their given boxes, if the pool has
    any (the paper samples both equally)."""
    for batch, (images, targets) in zip(labeled, unlabeled, strict=False):
        yield replace(batch, unlabeled=images, unlabeled_targets=targets)


@dataclass
class TrainResult:
    out: Path
    iterations: int
    best_map: float | None
    slides: int  # labeled slides trained on (after train.labeled_fraction)
    patches: int


def build_train_set(config: PipelineConfig) -> CocoPatchDataset:
    """The labeled training patches: ``train.train_json``, restricted to ``train.labeled_fraction`` of its
    slides, with augmentation and crops."""
    cfg = config.train
    train_set = CocoPatchDataset(
        cfg.train_json,
        augment_cfg=cfg.augment,
        seed=cfg.seed,
        crop_size=cfg.crop_size,
        crop_min_visible=cfg.crop_min_visible,
    )
    train_set.check_mpp(config.model.input_mpp)
    subset_seed = cfg.seed if cfg.subset_seed is None else cfg.subset_seed
    subset = labeled_subset(train_set.slide_ids(), cfg.labeled_fraction, subset_seed)
    if subset is not None:
        train_set = train_set.only_slides(subset)
    log.info("training on %d patches from %d slides", len(train_set), len(train_set.slide_ids()))
    if not any(train_set.annotations.values()):
        log.warning(
            "%s: the training patches hold no lesion annotation: the detector learns background only", train_set.path
        )
    return train_set


def build_unlabeled_set(config: PipelineConfig) -> UnlabeledSet:
    """The unlabeled pool of ``train.unlabeled``, checked against the model's resolution and the labeled
    slides (train and validation sets), with the training augmentation seeded apart from the labeled set's."""
    cfg = config.train
    if not cfg.unlabeled:
        raise ValueError(
            f"train.method {cfg.method} learns from unlabeled patches: set train.unlabeled to a pool "
            "(`wsi-pipeline mine ... --out POOL`, then --set train.unlabeled=POOL), a folder of tile stores "
            "or a COCO file"
        )
    labeled = set(CocoPatchDataset(cfg.train_json).slide_ids())
    if cfg.val_json:
        labeled |= set(CocoPatchDataset(cfg.val_json).slide_ids())
    pool = open_pool(cfg.unlabeled, config.model.input_mpp, labeled, cfg.augment, cfg.seed + 1)
    if method_class(cfg.method).needs_pool_boxes(config) and not isinstance(pool, CocoPatchDataset):
        raise ValueError(
            f"{cfg.unlabeled}: the unlabeled pool gives no boxes (patch stores carry none); "
            "train.ssl.dual_alignment.pseudo_labels=given reads them from a COCO file as train.unlabeled"
        )
    log.info("unlabeled pool: %d patches from %d slides", len(pool), len(pool.slide_ids()))
    return pool


def build_model(
    config: PipelineConfig, device: torch.device, dist_info: DistInfo, *, resuming: bool = False
) -> torch.nn.Module:
    """The training method on ``device`` (same initial weights on every rank: seeded by ``train.seed``, the
    detector's from ``train.init_checkpoint`` when set and not ``resuming``), wrapped in DDP under torchrun.
    The global random stream is then reseeded, so the samplers' draws do not depend on what the method
    initialised."""
    cfg = config.train
    torch.manual_seed(cfg.seed)
    detector = build_detector(config.model)
    if cfg.init_checkpoint and not resuming:
        init_detector_from(detector, cfg.init_checkpoint, config.model.mpp)
    method = build_method(config, detector).to(device)
    torch.manual_seed(cfg.seed + _STREAM_SEED_OFFSET)
    if cfg.channels_last and device.type == "cuda":
        method = method.to(memory_format=torch.channels_last)
    if not dist_info.enabled:
        return method
    return torch.nn.parallel.DistributedDataParallel(
        method, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
    )


def build_optimizer(config: PipelineConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum over every trainable parameter of the method, in its parameter groups."""
    cfg = config.train
    method = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    groups = method.parameter_groups(cfg.lr) if isinstance(method, TrainingMethod) else [
        {"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}
    ]  # fmt: skip
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_hooks(
    config: PipelineConfig, out: Path, device: torch.device, dist_info: DistInfo, progress: bool
) -> tuple[list[HookBase], Evaluator | None]:
    """LR schedule on every rank; logging, checkpoints and validation (``train.val_json``) on rank 0."""
    cfg = config.train
    hooks: list[HookBase] = [
        LRSchedule(cfg.warmup_iters, cfg.warmup_factor, cfg.lr_steps, cfg.lr_gamma),
        MethodSteps(),  # before the checkpointer: a saved EMA teacher has this step's update
    ]
    if not dist_info.is_main:  # one writer: rank 0 logs, saves and validates
        return hooks, None
    metrics_log = MetricsLog(out, cfg.log_every, progress)
    checkpointer = Checkpointer(out / "checkpoints", cfg.checkpoint_every, config_to_dict(config))
    hooks += [metrics_log, Diagnostics(cfg.ssl.diagnostics_every, cfg.ssl.collapse_iters, metrics_log), checkpointer]
    if not cfg.val_json:
        return hooks, None
    val_set = CocoPatchDataset(cfg.val_json)
    val_set.check_mpp(config.model.input_mpp)
    val_gts = coco_ground_truth(val_set)  # read once, not at every validation

    def validate(detector: torch.nn.Module) -> dict[str, Any]:
        metrics = evaluate(val_gts, predict_patches(detector, val_set, device))
        return {"mAP": None if np.isnan(metrics.mean_ap) else metrics.mean_ap}

    evaluator = Evaluator(validate, cfg.eval_every, checkpointer, metrics_log)
    return [*hooks, evaluator], evaluator


def _resume_state(config: PipelineConfig, out: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (``--resume`` and ``last.pt`` present), checked against the config."""
    last = out / "checkpoints" / "last.pt"
    if last.exists() and not resume:
        raise ValueError(f"{out}: already holds a run (checkpoints/last.pt); pass --resume or choose another --out")
    if resume and not last.exists():
        log.warning("%s: no checkpoint to resume (checkpoints/last.pt); starting a new run", out)
    if not resume or not last.exists():
        return None
    state = load_checkpoint(last)
    if state.get("legacy"):
        raise ValueError(f"{last}: a format-1 checkpoint cannot be resumed; start a new run (--out)")
    saved, current = state["config"], config_to_dict(config)
    if state["method"] != config.train.method:
        raise ValueError(f"{last}: trained with method {state['method']!r}, not {config.train.method!r}")
    if saved.get("model") != current["model"]:
        raise ValueError(f"{last}: the model settings differ from this checkpoint's; resume with its config.yaml")
    if saved.get("train") != current["train"]:
        log.warning("%s: training settings differ from the checkpoint's; continuing with the new ones", last)
    return state


def run_training(
    config: PipelineConfig, out: str | Path, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    cfg = config.train
    out = Path(out)
    method_class(cfg.method)  # an unknown method fails before any work
    dist_info = init_distributed(cfg.device)
    try:
        with exclusive_folder(out, "a training run") if dist_info.is_main else contextlib.nullcontext():
            return _train(config, out, resume, progress, dist_info)
    finally:
        cleanup(dist_info)


def _train(config: PipelineConfig, out: Path, resume: bool, progress: bool, dist_info: DistInfo) -> TrainResult:
    cfg = config.train
    state = _resume_state(config, out, resume)
    if dist_info.is_main:
        for folder in (out, out / "checkpoints"):
            remove_stale_temporaries(folder)
        save_config(config, out)
    device = select_device(cfg.device, dist_info.local_rank)
    model = build_model(config, device, dist_info, resuming=state is not None)  # a bad init_checkpoint fails first
    train_set = build_train_set(config)
    pool = build_unlabeled_set(config) if method_class(cfg.method).uses_unlabeled else None
    optimizer = build_optimizer(config, model)
    hooks, evaluator = build_hooks(config, out, device, dist_info, progress and dist_info.is_main)
    trainer = Trainer(
        model, optimizer, iter(()), cfg.max_iter, device, hooks, cfg.amp, cfg.clip_grad_norm, cfg.channels_last
    )
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resuming at iteration %d", trainer.start_iter)
    schedule = BatchSchedule(len(train_set), cfg.batch_size, cfg.seed, dist_info.rank, dist_info.world_size)
    trainer.data = make_loader(train_set, schedule, trainer.start_iter, cfg.workers)
    if pool is not None:
        size = cfg.unlabeled_batch_size or cfg.batch_size
        pool_schedule = BatchSchedule(len(pool), size, cfg.seed + 1, dist_info.rank, dist_info.world_size)
        unlabeled = make_loader(pool, pool_schedule, trainer.start_iter, cfg.workers, unlabeled_collate)
        trainer.data = with_unlabeled(trainer.data, unlabeled)
    trainer.train()
    best = evaluator.best_map if evaluator is not None and evaluator.best_iter >= 0 else None
    return TrainResult(out, trainer.max_iter, best, len(train_set.slide_ids()), len(train_set))
