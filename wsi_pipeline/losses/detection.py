"""The box head's losses, as a swappable classifier loss next to the Fast R-CNN box regression loss.

``class_logits`` are ``(N, C + 1)`` (column 0 is background), ``labels`` ``(N,)`` the classes the proposal
sampler assigned (0 = background), ``box_regression`` ``(N, 4 (C + 1))`` class-specific deltas and
``regression_targets`` ``(N, 4)`` the encoded ground-truth deltas of each proposal.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CrossEntropyClassifierLoss(nn.Module):
    """Softmax cross-entropy averaged over the sampled proposals (Faster R-CNN's own)."""

    def forward(self, class_logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(class_logits, labels)


# model.classifier_loss -> factory; a long-tail loss (Grad-Libra) is one more entry
CLASSIFIER_LOSSES: dict[str, Callable[[], nn.Module]] = {"cross_entropy": CrossEntropyClassifierLoss}


def build_classifier_loss(name: str) -> nn.Module:
    if name not in CLASSIFIER_LOSSES:
        raise ValueError(f"model.classifier_loss: unknown loss {name!r} (known: {', '.join(CLASSIFIER_LOSSES)})")
    return CLASSIFIER_LOSSES[name]()


def box_regression_loss(box_regression: Tensor, labels: Tensor, regression_targets: Tensor) -> Tensor:
    """Smooth-L1 (beta 1/9) between the deltas predicted *for each foreground proposal's own class* and its
    targets, summed and divided by the number of sampled proposals (background ones included), as in
    Fast R-CNN; 0 when no proposal is foreground."""
    positive = torch.where(labels > 0)[0]
    deltas = box_regression.reshape(box_regression.shape[0], -1, 4)[positive, labels[positive]]
    loss = F.smooth_l1_loss(deltas, regression_targets[positive], beta=1 / 9, reduction="sum")
    return loss / labels.numel()
