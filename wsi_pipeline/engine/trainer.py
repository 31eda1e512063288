"""The training loop: ``before_step -> run_step -> after_step`` with everything else in hooks.

``Trainer.run_step`` does one optimisation step on one batch (AMP and channels-last on CUDA, gradient
clipping, a non-finite-loss guard). The model is a training method (:mod:`wsi_pipeline.methods`): any
``nn.Module`` whose ``forward(batch)`` returns a dict of loss tensors, which the trainer sums. Hooks
(:mod:`.hooks`) schedule the learning rate, save and evaluate, and log; each has
``state_dict``/``load_state_dict`` so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class HookBase:
    """A hook sees the trainer as ``self.trainer``; override what you need."""

    trainer: Trainer

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """``batch`` on ``device``: tensors, dicts, lists/tuples of them, or objects with ``.to(device, channels_last)``
    (:class:`~wsi_pipeline.data.batch.TrainBatch`)."""
    if hasattr(batch, "to") and not isinstance(batch, torch.Tensor):
        return batch.to(device, channels_last)
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.dim() == 4 else batch
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


class Trainer:
    """Trains ``model`` (``forward(batch) -> loss dict``) on ``data``, an iterator of batches for iterations
    ``start_iter, start_iter + 1, ...`` (see :func:`wsi_pipeline.engine.run.make_loader`)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Iterator[Any],
        max_iter: int,
        device: torch.device,
        hooks: list[HookBase] = (),  # type: ignore[assignment]
        amp: bool = False,
        clip_grad_norm: float = 0.0,
        channels_last: bool = False,
    ):
        self.model, self.optimizer, self.data = model, optimizer, data
        self.max_iter, self.device = max_iter, device
        self.amp = amp and device.type == "cuda"
        self.channels_last = channels_last and device.type == "cuda"
        self.clip_grad_norm = clip_grad_norm
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.hooks: list[HookBase] = []
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)
        self.iter = 0  # the iteration in progress (hooks read it)
        self.start_iter = 0
        self.completed = 0  # iterations done, what a checkpoint resumes after
        self.last_losses: dict[str, float] = {}

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> None:
        self.model.train()
        for h in self.hooks:
            h.before_train()
        try:
            for it in range(self.start_iter, self.max_iter):
                self.iter = it
                for h in self.hooks:
                    h.before_step()
                self.run_step()
                self.completed = it + 1
                for h in self.hooks:
                    h.after_step()
        finally:
            for h in self.hooks:
                h.after_train()

    def compute_losses(self, batch: Any) -> dict[str, torch.Tensor]:
        """Loss dict of one batch: the model's forward (under DDP, the wrapped model's, so gradients sync)."""
        return self.model(batch)

    def run_step(self) -> None:
        batch = to_device(next(self.data), self.device, self.channels_last)
        with torch.autocast(self.device.type, enabled=self.amp):
            losses = self.compute_losses(batch)
        total = sum(losses.values())
        values = {k: float(v.detach()) for k, v in losses.items()}
        if not math.isfinite(float(total.detach())):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            raise TrainingDiverged(f"iteration {self.iter}: loss is not finite ({shown})")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.last_losses = {**values, "total": float(total.detach())}

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """State after the last completed iteration (resume continues at ``iteration``)."""
        # the torch generator drives the RPN/RoI samplers; data order and augmentation are seeded by
        # iteration (engine.schedule, data.datasets), so they need no saved state
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "iteration": self.completed,
            "model": self.unwrapped.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "hooks": {type(h).__name__: h.state_dict() for h in self.hooks},
        }

    @property
    def unwrapped(self) -> nn.Module:
        """The model without a DistributedDataParallel wrapper (what checkpoints hold)."""
        return self.model.module if isinstance(self.model, nn.parallel.DistributedDataParallel) else self.model

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.unwrapped.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        for h in self.hooks:
            h.load_state_dict(state["hooks"].get(type(h).__name__, {}))
        self.start_iter = self.completed = int(state["iteration"])
