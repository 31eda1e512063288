"""Soft Teacher with dual alignment's metric terms on top (``soft_teacher_alignment``).

Soft Teacher (:mod:`.soft_teacher`) trains the student's detector on the EMA teacher's pseudo-boxes; this
method adds the four alignment terms of :mod:`.dual_alignment` in the same step. The unlabeled rows are
Soft Teacher's pseudo-boxes (teacher score >= ``soft_teacher.threshold``), embedded from the student's box
head on its strong view; the labeled rows are the supervised pass's foreground proposals, as in dual
alignment. Soft Teacher's terms weigh ``train.ssl.weight`` x lambda(t); the alignment terms
``train.ssl.dual_alignment.weight`` times that.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wsi_pipeline.config import SemiSupervisedConfig
from wsi_pipeline.data.batch import TrainBatch
from wsi_pipeline.methods.dual_alignment import AlignmentTerms
from wsi_pipeline.methods.soft_teacher import SoftTeacher
from wsi_pipeline.modeling import CytologyDetector
from wsi_pipeline.modeling.detector import SupervisedOutputs


class SoftTeacherAlignment(SoftTeacher):
    """Soft Teacher's ``unsup_loss_*`` terms plus ``sup_pml``, ``unsup_pml``, ``sup_pmb``, ``unsup_pmb``."""

    name = "soft_teacher_alignment"

    def __init__(self, detector: CytologyDetector, cfg: SemiSupervisedConfig, seed: int = 0):
        da = cfg.dual_alignment
        if da.pseudo_labels != "self" or da.background_rows:
            raise ValueError(
                "train.ssl.dual_alignment: soft_teacher_alignment takes its rows from Soft Teacher's pseudo-boxes, "
                f"so pseudo_labels={da.pseudo_labels} and background_rows={da.background_rows} do not apply "
                "(they are dual_alignment's; leave them at self and false)"
            )
        super().__init__(detector, cfg, seed)
        self.alignment = AlignmentTerms(detector.roi_heads.box_predictor.cls_score.in_features, da)
        self.loss_names = SoftTeacher.loss_names + self.alignment.loss_names
        self.term_scale = dict.fromkeys(self.alignment.loss_names, da.weight)

    def parameter_groups(self, lr: float) -> list[dict]:
        return self.alignment.parameter_groups(list(self.parameters()), lr)

    def semi_supervised_losses(self, batch: TrainBatch, sup: SupervisedOutputs) -> dict[str, Tensor]:
        losses, view = self.soft_teacher_losses(batch)
        labels = torch.cat([t["labels"] for t in view.targets])
        scores = torch.cat(view.scores)
        if len(labels):
            boxes = [t["boxes"] for t in view.targets]
            features = self.detector.box_head(view.features, boxes, view.image_sizes).features
        else:
            features = scores.new_zeros(0, 1)
        unlabeled = self.alignment.box_rows(features, labels, scores)
        return {**losses, **self.alignment(self.alignment.proposal_rows(sup), unlabeled, self.diagnostics)}
