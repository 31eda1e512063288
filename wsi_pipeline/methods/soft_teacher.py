"""Soft Teacher (Xu et al. 2021), the strongest Faster R-CNN baseline of the semi-supervised detection
literature, on the same detector and engine (``shared/method.md``).

- The EMA teacher detects on the unlabeled image (the weak view: the dataset's flips and mild jitter);
  detections with score >= ``soft_teacher.threshold`` (0.9) are the pseudo-boxes.
- The student sees a strong photometric view (colour, noise, cutout: no geometric change, so boxes map
  unchanged). Its RPN learns objectness and box regression from the pseudo-boxes; its RoI sampler
  assigns proposals to them.
- Classification: ``(1 / N_fg) sum_fg CE + sum_bg w_j CE`` with ``w_j = r_j / sum_k r_k``, ``r_j`` the
  teacher's background probability of background proposal ``j`` (the "soft teacher").
- Regression: only pseudo-boxes whose teacher refinements of ``jitter_copies`` jittered copies spread
  less than ``max_jitter_std`` of the box size (mean of the four coordinates' std) are regression targets.

Our CPU batch (``train.batch_size`` labeled + ``train.unlabeled_batch_size`` unlabeled, 2 + 2 in the CPU
presets) is 1:1 instead of the paper's 1:4; ``train.ssl.weight`` is the unsupervised weight (4 in the paper).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from wsi_pipeline.data.batch import TrainBatch
from wsi_pipeline.losses.detection import box_regression_loss
from wsi_pipeline.methods.semi import SemiSupervised
from wsi_pipeline.modeling import CytologyDetector
from wsi_pipeline.modeling.detector import SupervisedOutputs


def soft_classification_loss(class_logits: Tensor, labels: Tensor, background_scores: Tensor) -> Tensor:
    """Soft Teacher's classification loss: foreground proposals averaged, background ones weighted by
    the teacher's background probability ``r`` normalised over the background proposals."""
    ce = F.cross_entropy(class_logits, labels, reduction="none")
    fg = labels > 0
    loss = ce[fg].sum() / fg.sum().clamp(min=1)
    bg = ~fg
    if bool(bg.any()):
        r = background_scores[bg]
        loss = loss + (ce[bg] * r / r.sum().clamp(min=1e-12)).sum()
    return loss


def jitter_boxes(boxes: Tensor, copies: int, scale: float, generator: torch.Generator) -> Tensor:
    """``(n * copies, 4)``: each xyxy box ``copies`` times, every coordinate moved by a uniform offset of at
    most ``scale`` of the box's width (x) or height (y); rows of one box are consecutive."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # (n, 4): w, h, w, h
    noise = (torch.rand((len(boxes), copies, 4), generator=generator).to(boxes.device) * 2 - 1) * scale
    jittered = boxes[:, None, :] + noise * wh[:, None, :]
    x0y0 = torch.minimum(jittered[..., :2], jittered[..., 2:] - 1e-2)
    return torch.cat([x0y0, jittered[..., 2:]], dim=-1).reshape(-1, 4)


def box_spread(refined: Tensor, boxes: Tensor, copies: int) -> Tensor:
    """``(n,)``: the mean over the 4 coordinates of the std of ``refined`` ``(n * copies, 4)`` copies,
    relative to the box's width (x) or height (y)."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6).repeat(1, 2)
    std = refined.reshape(len(boxes), copies, 4).std(dim=1, unbiased=False)
    return (std / wh).mean(dim=1)


@dataclass
class StudentView:
    """The student's pass over the strong views: FPN ``features``, the pseudo-boxes as ``targets`` (network
    pixels, labels 1 .. C), their teacher ``scores`` and the batch's ``image_sizes``."""

    features: OrderedDict[str, Tensor]
    targets: list[dict[str, Tensor]]
    scores: list[Tensor]
    image_sizes: list[tuple[int, int]]


class SoftTeacher(SemiSupervised):
    """``unsup_loss_classifier``, ``unsup_loss_box_reg``, ``unsup_loss_objectness``, ``unsup_loss_rpn_box_reg``."""

    name = "soft_teacher"
    uses_teacher = True
    loss_names = ("unsup_loss_classifier", "unsup_loss_box_reg", "unsup_loss_objectness", "unsup_loss_rpn_box_reg")

    @property
    def teacher_model(self) -> CytologyDetector:
        return self.teacher.model  # type: ignore[union-attr,return-value]

    @torch.no_grad()
    def teacher_pass(self, images: list[Tensor]):  # type: ignore[no-untyped-def]
        """The teacher's features and its pseudo-boxes (network pixels) with labels, scores and whether each
        is reliable enough to be a regression target."""
        t, st = self.teacher_model, self.cfg.soft_teacher
        sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        batch, _ = t.preprocess(images)
        features = t.features(batch)
        proposals, _ = t.proposals(batch, features)
        found = t.detect(t.box_head(features, proposals, batch.image_sizes), proposals, batch.image_sizes, sizes)
        scale = t.transform.scale  # input pixels -> network pixels
        pseudo = []
        for k, d in enumerate(found):
            keep = d["scores"] >= st.threshold
            boxes, labels = d["boxes"][keep] * scale, d["labels"][keep]
            reliable = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
            if len(boxes):
                copies = jitter_boxes(boxes, st.jitter_copies, st.jitter_scale, self._views)
                per_image = [copies if j == k else copies[:0] for j in range(len(found))]
                head = t.box_head(features, per_image, batch.image_sizes)
                decoded = t.roi_heads.box_coder.decode(head.box_regression, [copies])  # (n * J, C + 1, 4)
                cls = labels.repeat_interleave(st.jitter_copies)
                refined = decoded[torch.arange(len(cls)), cls]
                reliable = box_spread(refined, boxes, st.jitter_copies) < st.max_jitter_std
            pseudo.append({"boxes": boxes, "labels": labels, "scores": d["scores"][keep], "reliable": reliable})
        return batch, features, pseudo

    def semi_supervised_losses(self, batch: TrainBatch, sup: SupervisedOutputs) -> dict[str, Tensor]:
        return self.soft_teacher_losses(batch)[0]

    def soft_teacher_losses(self, batch: TrainBatch) -> tuple[dict[str, Tensor], StudentView]:
        """The four ``unsup_loss_*`` terms, and the student's view they came from."""
        det, t = self.detector, self.teacher_model
        teacher_batch, teacher_features, pseudo = self.teacher_pass(batch.unlabeled)
        self.count_pseudo([{"labels": p["labels"], "scores": p["scores"]} for p in pseudo])
        reliable = torch.cat([p["reliable"] for p in pseudo])
        self.diagnostics["reliable_share"] = float(reliable.float().mean()) if len(reliable) else float("nan")
        scale = t.transform.scale
        targets = [{"boxes": p["boxes"] / scale, "labels": p["labels"]} for p in pseudo]  # input pixels
        student_batch, targets = det.preprocess(self.strong(batch.unlabeled), targets)
        features = det.features(student_batch)
        proposals, rpn = det.proposals(student_batch, features, targets)
        samples = det.sample_proposals(proposals, targets)  # type: ignore[arg-type]
        head = det.box_head(features, samples.proposals, student_batch.image_sizes)
        labels = torch.cat(samples.labels)
        with torch.no_grad():
            background = torch.softmax(
                t.box_head(teacher_features, samples.proposals, teacher_batch.image_sizes).class_logits, 1
            )[:, 0]
        # regression only towards reliable pseudo-boxes: other foreground proposals count as background here
        matched_reliable = torch.cat(
            [p["reliable"][m] if len(p["reliable"]) else torch.zeros_like(m, dtype=torch.bool)
             for p, m in zip(pseudo, samples.matched_idxs, strict=True)]
        )  # fmt: skip
        regression_labels = torch.where(matched_reliable, labels, torch.zeros_like(labels))
        view = StudentView(features, targets, [p["scores"] for p in pseudo], student_batch.image_sizes)
        return {
            "unsup_loss_classifier": soft_classification_loss(head.class_logits, labels, background),
            "unsup_loss_box_reg": box_regression_loss(
                head.box_regression, regression_labels, torch.cat(samples.regression_targets)
            ),
            "unsup_loss_objectness": rpn["loss_objectness"],
            "unsup_loss_rpn_box_reg": rpn["loss_rpn_box_reg"],
        }, view
