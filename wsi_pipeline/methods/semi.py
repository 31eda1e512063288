"""What the semi-supervised methods share: the supervised part, lambda(t), an optional EMA teacher,
pseudo-labels under ``no_grad``, strong photometric views and per-step diagnostics.

A semi-supervised method's ``forward(batch)`` returns ``sup_*`` losses of the labeled images and
``unsup_*`` losses of the unlabeled ones, the latter already multiplied by lambda(t). The engine tells the
method the iteration before each step (:meth:`SemiSupervised.begin_step`) and calls
:meth:`SemiSupervised.end_step` after the optimiser step (the EMA teacher's update), through
:class:`~wsi_pipeline.engine.hooks.MethodSteps`.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from torch import Tensor, nn

from wsi_pipeline.config import PipelineConfig, SemiSupervisedConfig
from wsi_pipeline.data.batch import TrainBatch
from wsi_pipeline.losses.metric import ramp_up
from wsi_pipeline.methods.base import TrainingMethod, prefixed
from wsi_pipeline.modeling import CytologyDetector
from wsi_pipeline.modeling.detector import SupervisedOutputs
from wsi_pipeline.taxonomy import NUM_CLASSES


class EmaTeacher(nn.Module):
    """A frozen copy of the student updated as ``teacher = decay * teacher + (1 - decay) * student`` after
    every optimiser step (buffers copied). Its parameters take no gradient, so DDP leaves them alone; every
    rank applies the same update to the same (all-reduced) student, so the teachers stay identical."""

    def __init__(self, student: nn.Module, decay: float):
        super().__init__()
        self.model = copy.deepcopy(student)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        for t, s in zip(self.model.parameters(), student.parameters(), strict=True):
            t.mul_(self.decay).add_(s.detach(), alpha=1.0 - self.decay)
        for t, s in zip(self.model.buffers(), student.buffers(), strict=True):
            t.copy_(s)

    def train(self, mode: bool = True) -> EmaTeacher:  # the teacher always predicts in eval mode
        super().train(mode)
        self.model.eval()
        return self


@torch.no_grad()
def pseudo_labels(detector: CytologyDetector, images: list[Tensor], threshold: float) -> list[dict[str, Tensor]]:
    """Detections of ``detector`` in eval mode at ``score >= threshold``, per image: ``boxes`` (xyxy, input
    pixels), ``labels`` (class ids 1..C), ``scores``. The detector's train/eval mode is restored."""
    was_training = detector.training
    detector.eval()
    try:
        found = detector.predict(images)
    finally:
        detector.train(was_training)
    return [{k: d[k][d["scores"] >= threshold] for k in ("boxes", "labels", "scores")} for d in found]


def strong_view(image: Tensor, cfg: SemiSupervisedConfig, generator: torch.Generator) -> Tensor:
    """A photometric strong view of ``(3, H, W)`` in [0, 1]: brightness, contrast and per-channel gain
    within ``strong_jitter``, Gaussian noise of ``strong_noise``, ``cutout`` grey squares of up to 1/8 of the
    side. No geometric change: boxes of one view are boxes of the other."""

    def uniform(low: float, high: float, size: tuple[int, ...] = ()) -> Tensor:
        return torch.rand(size, generator=generator).to(image.device) * (high - low) + low

    j = cfg.strong_jitter
    out = image * uniform(1 - j, 1 + j) * uniform(1 - j / 2, 1 + j / 2, (3, 1, 1))
    mean = out.mean()
    out = (out - mean) * uniform(1 - j, 1 + j) + mean
    if cfg.strong_noise > 0:
        noise = torch.randn(image.shape, generator=generator).to(image.device)
        out = out + cfg.strong_noise * noise
    h, w = image.shape[-2:]
    for _ in range(cfg.cutout):
        side = int(uniform(0.04, 0.125) * min(h, w))
        y, x = int(uniform(0, h - side)), int(uniform(0, w - side))
        out[:, y : y + side, x : x + side] = 0.5
    return out.clamp(0.0, 1.0)


class SemiSupervised(TrainingMethod):
    """Base of the semi-supervised methods (``uses_unlabeled``); subclasses implement
    :meth:`unsupervised_losses` and may set ``uses_teacher``."""

    uses_unlabeled = True
    uses_teacher: ClassVar[bool] = False

    def __init__(
        self, detector: CytologyDetector, cfg: SemiSupervisedConfig, seed: int = 0, teacher: bool | None = None
    ):
        super().__init__(detector)
        self.cfg, self.seed = cfg, seed
        with_teacher = self.uses_teacher if teacher is None else teacher
        self.teacher = EmaTeacher(detector, cfg.ema_decay) if with_teacher else None
        self.iteration = 0
        self.diagnostics: dict[str, float] = {}
        self.pseudo_counts = torch.zeros(NUM_CLASSES)  # pseudo-labels per class in this step (for diagnostics)
        self.term_scale: dict[str, float] = {}  # a term's weight relative to lambda(t) (default 1)
        self._views = torch.Generator()

    @classmethod
    def from_config(cls, config: PipelineConfig, detector: CytologyDetector) -> TrainingMethod:
        return cls(detector, config.train.ssl, config.train.seed)

    # -- the engine's calls ---------------------------------------------------------------------
    def begin_step(self, iteration: int) -> None:
        self.iteration = iteration
        # the strong views' draws depend on the seed and iteration only: a resumed run draws the same ones
        self._views.manual_seed(self.seed * 1_000_003 + iteration)

    def end_step(self) -> None:
        if self.teacher is not None:
            self.teacher.update(self.detector)

    def inference_detector(self) -> CytologyDetector:
        return self.teacher.model if self.teacher is not None else self.detector  # type: ignore[return-value]

    # -- the loss -------------------------------------------------------------------------------
    @property
    def weight(self) -> float:
        """lambda(t): 0 before ``start_iter``, then ``weight`` ramped up over ``ramp_iters``."""
        if self.iteration < self.cfg.start_iter:
            return 0.0
        return self.cfg.weight * ramp_up(self.iteration - self.cfg.start_iter, self.cfg.ramp_iters)

    loss_names: tuple[str, ...] = ()  # the keys of :meth:`semi_supervised_losses`

    def forward(self, batch: TrainBatch) -> dict[str, Tensor]:
        self.diagnostics = {"lambda": self.weight}
        sup = self.detector.supervised(batch.images, batch.targets)
        losses = prefixed("sup", sup.losses)
        if batch.unlabeled and self.weight > 0:
            extra = self.semi_supervised_losses(batch, sup)
        else:  # the same keys, zero: every step logs the same columns
            extra = {name: sup.losses["loss_classifier"] * 0.0 for name in self.loss_names}
        self.diagnostics.update({k: float(v.detach()) for k, v in extra.items()})
        return {**losses, **{k: v * self.weight * self.term_scale.get(k, 1.0) for k, v in extra.items()}}

    def semi_supervised_losses(self, batch: TrainBatch, sup: SupervisedOutputs) -> dict[str, Tensor]:
        """The method's own terms, unweighted (the caller applies lambda(t)), named ``sup_*`` when they
        come from labeled images and ``unsup_*`` from unlabeled ones."""
        raise NotImplementedError

    def strong(self, images: list[Tensor]) -> list[Tensor]:
        return [strong_view(img, self.cfg, self._views) for img in images]

    def count_pseudo(self, found: list[dict[str, Tensor]]) -> None:
        """Diagnostics of this step's pseudo-labels: count per class and mean score."""
        labels = torch.cat([d["labels"] for d in found]) if found else torch.zeros(0, dtype=torch.long)
        scores = torch.cat([d["scores"] for d in found]) if found else torch.zeros(0)
        self.pseudo_counts = torch.bincount(labels.cpu() - 1, minlength=NUM_CLASSES)[:NUM_CLASSES].float()
        self.diagnostics["pseudo_labels"] = float(len(labels))
        self.diagnostics["pseudo_score"] = float(scores.mean()) if len(scores) else float("nan")
