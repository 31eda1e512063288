"""The fully supervised baseline: Faster R-CNN's own four losses on labeled images."""

from __future__ import annotations

from torch import Tensor

from wsi_pipeline.data.batch import TrainBatch
from wsi_pipeline.methods.base import TrainingMethod, prefixed


class Supervised(TrainingMethod):
    """``sup_loss_classifier``, ``sup_loss_box_reg``, ``sup_loss_objectness``, ``sup_loss_rpn_box_reg``."""

    name = "supervised"

    def loss_by_gt(self, batch: TrainBatch) -> dict[str, Tensor]:
        """The detector's supervised losses on the labeled images (the part every method shares)."""
        return prefixed("sup", self.detector.supervised(batch.images, batch.targets).losses)

    def forward(self, batch: TrainBatch) -> dict[str, Tensor]:
        return self.loss_by_gt(batch)
