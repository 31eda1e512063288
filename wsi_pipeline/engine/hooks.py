"""Hooks: learning-rate schedule, the method's step calls, periodic checkpoints, validation with
best-model keeping, logging and semi-supervised diagnostics."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from wsi_pipeline.engine.diagnostics import CollapseWatch
from wsi_pipeline.engine.schedule import lr_factor
from wsi_pipeline.engine.trainer import HookBase
from wsi_pipeline.methods import TrainingMethod
from wsi_pipeline.modeling.checkpoint import save_checkpoint
from wsi_pipeline.taxonomy import CLASS_CODES

log = logging.getLogger(__name__)


class LRSchedule(HookBase):
    """Sets every parameter group's lr to ``group["base_lr"] * lr_factor(iteration)`` before each step."""

    def __init__(self, warmup_iters: int, warmup_factor: float, steps: tuple[int, ...], gamma: float):
        self.args = (warmup_iters, warmup_factor, steps, gamma)

    def before_train(self) -> None:
        for group in self.trainer.optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])

    def before_step(self) -> None:
        factor = lr_factor(self.trainer.iter, *self.args)
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor


class Checkpointer(HookBase):
    """Saves ``last.pt`` every ``period`` iterations and at the end (atomically), keeping the run's
    resolved config in the file; ``best.pt`` is written by :class:`Evaluator`."""

    def __init__(self, folder: Path, period: int, config: dict[str, Any]):
        self.folder, self.period, self.config = folder, period, config

    def save(self, name: str) -> Path:
        state = self.trainer.state_dict()
        model = self.trainer.unwrapped
        if isinstance(model, TrainingMethod):  # which method, and the weights inference uses
            state["method"] = model.name
            state["detector"] = model.inference_detector().state_dict()
        return save_checkpoint(self.folder / name, state, self.config)

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done % self.period == 0 or done == self.trainer.max_iter:
            self.save("last.pt")


class Evaluator(HookBase):
    """Runs ``evaluate_fn(model) -> metrics dict (with "mAP")`` every ``period`` iterations and at the end
    (on a training method's inference detector); keeps ``best.pt`` for the highest mAP. Must come after
    the :class:`Checkpointer` in the hook list."""

    def __init__(self, evaluate_fn, period: int, checkpointer: Checkpointer, metrics_log: MetricsLog | None = None):
        self.evaluate_fn, self.period, self.checkpointer, self.metrics_log = (
            evaluate_fn,
            period,
            checkpointer,
            metrics_log,
        )
        self.best_map = float("-inf")
        self.best_iter = -1

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done % self.period and done != self.trainer.max_iter:
            return
        model = self.trainer.unwrapped
        model.eval()
        with torch.no_grad():
            metrics = self.evaluate_fn(model.inference_detector() if isinstance(model, TrainingMethod) else model)
        model.train()
        value = metrics.get("mAP")
        log.info("iteration %d: validation mAP %s", done, "n/a" if value is None else f"{100 * value:.2f}")
        if self.metrics_log is not None:
            self.metrics_log.write(done, {f"val_{k}": v for k, v in metrics.items() if isinstance(v, int | float)})
        if value is not None and value > self.best_map:
            self.best_map, self.best_iter = value, done
            self.checkpointer.save("best.pt")

    def state_dict(self) -> dict[str, Any]:
        return {"best_map": self.best_map, "best_iter": self.best_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_map = float(state.get("best_map", float("-inf")))
        self.best_iter = int(state.get("best_iter", -1))


class MetricsLog(HookBase):
    """Scalars to ``metrics.csv`` (and TensorBoard when installed) every ``period`` iterations, with a
    progress bar and ETA."""

    def __init__(self, folder: Path, period: int, progress: bool = True):
        self.folder, self.period, self.progress = folder, period, progress
        self._bar: tqdm | None = None
        self._tb = None

    def before_train(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.folder / "tensorboard"))
        except ImportError:
            self._tb = None
        t = self.trainer
        self._bar = tqdm(total=t.max_iter, initial=t.start_iter, desc="train", unit="it", disable=not self.progress)

    def write(self, iteration: int, values: dict[str, float]) -> None:
        path = self.folder / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["iteration", "name", "value"])
            for name, value in values.items():
                writer.writerow([iteration, name, f"{value:.6g}"])
                if self._tb is not None:
                    self._tb.add_scalar(name, value, iteration)

    def after_step(self) -> None:
        t = self.trainer
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{t.last_losses.get('total', float('nan')):.3f}", refresh=False)
        done = t.iter + 1
        if done % self.period == 0 or done == t.max_iter:
            lr = t.optimizer.param_groups[0]["lr"]
            self.write(done, {**{f"loss/{k}": v for k, v in t.last_losses.items()}, "lr": lr})

    def after_train(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()


class MethodSteps(HookBase):
    """Tells a training method each step's iteration (lambda(t), seeded views) before the step and that
    the optimiser stepped (an EMA teacher's update) after it. On every rank."""

    def before_step(self) -> None:
        method = self.trainer.unwrapped
        if isinstance(method, TrainingMethod):
            method.begin_step(self.trainer.iter)

    def after_step(self) -> None:
        method = self.trainer.unwrapped
        if isinstance(method, TrainingMethod):
            method.end_step()


class Diagnostics(HookBase):
    """A semi-supervised method's diagnostics (pseudo-labels per class and their mean score, proxy and
    prototype distances, memory-bank fill, each loss term) into ``metrics.csv`` as ``diag/*`` and the log
    every ``period`` iterations; collapse and exploding-term warnings (:class:`CollapseWatch`) as they happen.

    Pseudo-labels are tallied over the period: ``pseudo_labels`` and ``pseudo_<class>`` are the period's
    counts and ``pseudo_score`` their mean score; every other value is the last step's."""

    def __init__(self, period: int, patience: int, metrics_log: MetricsLog | None = None):
        self.period, self.metrics_log = period, metrics_log
        self.watch = CollapseWatch(patience)
        self.pseudo_total: np.ndarray | None = None  # (C,) pseudo-labels per class this period
        self.score_sum = 0.0  # sum of their scores

    def after_step(self) -> None:
        t = self.trainer
        method = t.unwrapped
        values = dict(getattr(method, "diagnostics", {}))
        if not values:
            return
        counts = method.pseudo_counts.numpy() if "pseudo_labels" in values else None  # type: ignore[union-attr]
        if counts is not None:
            self.pseudo_total = counts if self.pseudo_total is None else self.pseudo_total + counts
            if values["pseudo_labels"] > 0:
                self.score_sum += values["pseudo_score"] * values["pseudo_labels"]
        for warning in self.watch.update(counts, {k: v for k, v in t.last_losses.items() if k != "total"}):
            log.warning("iteration %d: %s", t.iter, warning)
        done = t.iter + 1
        if done % self.period and done != t.max_iter:
            return
        if self.pseudo_total is not None:
            n = float(self.pseudo_total.sum())
            values["pseudo_labels"], values["pseudo_score"] = n, self.score_sum / n if n else float("nan")
            values.update({f"pseudo_{CLASS_CODES[c]}": float(k) for c, k in enumerate(self.pseudo_total)})
            self.pseudo_total, self.score_sum = None, 0.0
        if self.metrics_log is not None:
            self.metrics_log.write(done, {f"diag/{k}": v for k, v in values.items()})
        log.info("iteration %d: %s", done, ", ".join(f"{k} {v:.3g}" for k, v in values.items()))
