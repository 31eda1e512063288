"""A training method is an ``nn.Module`` whose ``forward(batch)`` returns its loss dict.

The engine optimises the sum of the dict; whatever a method learns or keeps (the detector, a projection
head, proxies, a memory bank, an EMA teacher) is a submodule or buffer of the method, so DDP averages its
gradients and the checkpoint holds it. Loss names carry a prefix: ``sup_`` for losses of labeled data,
``unsup_`` for those of unlabeled data. :meth:`TrainingMethod.inference_detector` names the detector whose
weights are meant for inference (the EMA teacher where a method has one); checkpoints store it as their
``detector`` entry, which is all that ``infer`` and ``eval`` load.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from wsi_pipeline.config import PipelineConfig
from wsi_pipeline.data.batch import TrainBatch
from wsi_pipeline.modeling import CytologyDetector


def prefixed(prefix: str, losses: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{"loss_classifier": x}`` -> ``{"sup_loss_classifier": x}`` for ``prefix="sup"``."""
    return {f"{prefix}_{name}": value for name, value in losses.items()}


class TrainingMethod(nn.Module):
    """Base class: holds the (student) ``detector``; subclasses implement :meth:`forward`."""

    name: ClassVar[str]
    uses_unlabeled: ClassVar[bool] = False  # whether batches must carry unlabeled images

    def __init__(self, detector: CytologyDetector):
        super().__init__()
        self.detector = detector

    @classmethod
    def from_config(cls, config: PipelineConfig, detector: CytologyDetector) -> TrainingMethod:
        """Build the method around ``detector`` from its config section (none for the supervised method)."""
        return cls(detector)

    @classmethod
    def needs_pool_boxes(cls, config: PipelineConfig) -> bool:
        """Whether the method, so configured, reads boxes given with the unlabeled pool (a COCO pool)."""
        return False

    def forward(self, batch: TrainBatch) -> dict[str, Tensor]:
        raise NotImplementedError

    def parameter_groups(self, lr: float) -> list[dict]:
        """The optimiser's parameter groups: every trainable parameter at ``lr`` (a method with its own
        rates, such as dual alignment's proxies, adds groups)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def begin_step(self, iteration: int) -> None:
        """Called before each step with its iteration (lambda(t), seeded views)."""

    def end_step(self) -> None:
        """Called after each optimiser step (an EMA teacher's update)."""

    def inference_detector(self) -> CytologyDetector:
        """The detector whose weights ``infer``/``eval`` use."""
        return self.detector
