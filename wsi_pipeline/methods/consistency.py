"""The paper's Table 2 baselines on the same detector: Mean Teacher and CSD (``shared/method.md``).

Both compare class distributions of the *same* proposals under two views of an unlabeled image. The
proposals are the student's RPN proposals on the image (training top-n), of which the best
``model.box_batch_size_per_image`` by objectness per image are kept, so the consistency costs about what
the supervised box head does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wsi_pipeline.data.batch import TrainBatch
from wsi_pipeline.methods.semi import SemiSupervised
from wsi_pipeline.modeling.detector import SupervisedOutputs


def _student_proposals(method: SemiSupervised, images: list[Tensor]):  # type: ignore[no-untyped-def]
    """Preprocessed images, the student's features and its best proposals per image (network pixels)."""
    det = method.detector
    batch, _ = det.preprocess(images)
    features = det.features(batch)
    proposals, _ = det.proposals(batch, features)
    top = det.roi_heads.fg_bg_sampler.batch_size_per_image
    return batch, features, [p[:top].detach() for p in proposals]


def squared_consistency(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean over proposals of the squared difference of the two class distributions (summed over classes)."""
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    diff = torch.softmax(student_logits, 1) - torch.softmax(teacher_logits, 1)
    return diff.pow(2).sum(1).mean()


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """``(N,)`` symmetric Jensen-Shannon divergence between rows of class distributions."""
    m = (p + q) / 2
    eps = 1e-8

    def kl(a: Tensor, b: Tensor) -> Tensor:
        return (a * ((a + eps).log() - (b + eps).log())).sum(1)

    return 0.5 * (kl(p, m) + kl(q, m))


def mirror_boxes(boxes: Tensor, width: float) -> Tensor:
    """xyxy boxes of an image ``width`` pixels wide -> the same boxes in its horizontal flip."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


class MeanTeacher(SemiSupervised):
    """``unsup_consistency``: the EMA teacher on the unlabeled image and the student on a strong view of
    it must give the same class distributions on the student's proposals. The teacher (decay
    ``train.ssl.ema_decay``) is what ``infer`` uses."""

    name = "mean_teacher"
    uses_teacher = True
    loss_names = ("unsup_consistency",)

    def semi_supervised_losses(self, batch: TrainBatch, sup: SupervisedOutputs) -> dict[str, Tensor]:
        views = self.strong(batch.unlabeled)
        student_batch, features, proposals = _student_proposals(self, views)
        student = self.detector.box_head(features, proposals, student_batch.image_sizes)
        teacher = self.teacher.model  # type: ignore[union-attr]
        with torch.no_grad():
            teacher_batch, _ = teacher.preprocess(batch.unlabeled)
            target = teacher.box_head(teacher.features(teacher_batch), proposals, teacher_batch.image_sizes)
        self.diagnostics["teacher_foreground"] = float((target.class_logits.argmax(1) > 0).float().mean())
        return {"unsup_consistency": squared_consistency(student.class_logits, target.class_logits)}


def csd_terms(
    plain_logits: Tensor, flipped_logits: Tensor, plain_deltas: Tensor, flipped_deltas: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """CSD's consistency terms over ``N`` proposals seen in an image and (mirrored) in its flip.

    ``*_logits`` ``(N, C+1)`` (background first); ``*_deltas`` ``(N, (C+1)*4)`` class-specific box deltas.
    Proposals whose most likely class is background in both views count zero (background elimination).
    For the others: the symmetric JS divergence of the class distributions, and the squared difference of
    the 4 deltas of the foreground class the two views find most likely together, the flip's x offset
    negated (the deltas of the other classes are not trained on that proposal and would dominate). Both
    are summed over the kept proposals and divided by ``N``, as the detector's own RoI losses are by the
    proposals sampled: a few kept proposals weigh what they would there. Returns ``(cls, reg, kept)``.
    """
    n = plain_logits.shape[0]
    p, q = torch.softmax(plain_logits, 1), torch.softmax(flipped_logits, 1)
    keep = (p.argmax(1) > 0) | (q.argmax(1) > 0)
    if n == 0 or not bool(keep.any()):
        zero = (plain_logits.sum() + flipped_logits.sum() + plain_deltas.sum() + flipped_deltas.sum()) * 0.0
        return zero, zero, keep.sum()
    cls = js_divergence(p[keep], q[keep]).sum() / n
    kept = int(keep.sum())
    best = (p[keep] + q[keep])[:, 1:].argmax(1) + 1  # (K,) the foreground class both views favour
    rows = torch.arange(kept, device=best.device)
    d = plain_deltas[keep].reshape(kept, -1, 4)[rows, best]
    e = flipped_deltas[keep].reshape(kept, -1, 4)[rows, best]
    e = torch.cat([-e[:, :1], e[:, 1:]], dim=1)  # dx mirrors; dy, dw, dh do not
    return cls, (d - e).pow(2).sum() / n, keep.sum()


class Csd(SemiSupervised):
    """``unsup_csd_cls`` and ``unsup_csd_reg`` (:func:`csd_terms`) between an unlabeled image and its
    horizontal flip, on the student's proposals and their mirror images."""

    name = "csd"
    loss_names = ("unsup_csd_cls", "unsup_csd_reg")

    def semi_supervised_losses(self, batch: TrainBatch, sup: SupervisedOutputs) -> dict[str, Tensor]:
        det = self.detector
        images = batch.unlabeled
        plain_batch, features, proposals = _student_proposals(self, images)
        plain = det.box_head(features, proposals, plain_batch.image_sizes)
        flipped_batch, _ = det.preprocess([img.flip(-1) for img in images])
        mirrored = [mirror_boxes(p, float(size[1])) for p, size in zip(proposals, plain_batch.image_sizes, strict=True)]
        flipped = det.box_head(det.features(flipped_batch), mirrored, flipped_batch.image_sizes)
        cls, reg, kept = csd_terms(
            plain.class_logits, flipped.class_logits, plain.box_regression, flipped.box_regression
        )
        self.diagnostics["csd_kept"] = float(kept)
        return {"unsup_csd_cls": cls, "unsup_csd_reg": reg}
