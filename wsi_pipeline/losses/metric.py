"""Metric-learning losses of the dual-alignment method (``shared/method.md``, Eq. 2-6 and 9), pure functions.

Embeddings ``x`` are ``(N, D)`` rows of the metric space, ``labels`` ``(N,)`` lesion classes as indices
``0 .. C - 1`` (detector class id minus one), proxies and prototypes ``(C, D)``. Phi is the Euclidean
distance. Every loss is finite on degenerate input (no rows, a class absent on one side): such terms
contribute an exact zero that still belongs to the autograd graph.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ramp_up(iteration: int, ramp_iters: int) -> float:
    """lambda(t) / lambda_max (Eq. 9): ``exp(-5 (1 - t / T)^2)`` for ``t < T``, then 1 (always 1 when
    ``T == 0``)."""
    if ramp_iters <= 0 or iteration >= ramp_iters:
        return 1.0
    phase = 1.0 - max(iteration, 0) / ramp_iters
    return math.exp(-5.0 * phase * phase)


def proxy_loss(x: Tensor, labels: Tensor, proxies: Tensor) -> Tensor:
    """L_pml (Eq. 2-3), averaged over rows: ``-log(exp(-Phi(x, p_c)) / sum_{k != c} exp(-Phi(x, p_k)))``,
    i.e. ``Phi(x, p_c) + logsumexp_{k != c}(-Phi(x, p_k))`` (Proxy-NCA: the positive is left out of the
    denominator). 0 without rows."""
    if x.shape[0] == 0:
        return x.sum() * 0.0 + proxies.sum() * 0.0
    d = torch.cdist(x, proxies)  # (N, C)
    positive = d.gather(1, labels[:, None]).squeeze(1)
    others = (-d).masked_fill(torch.nn.functional.one_hot(labels, proxies.shape[0]).bool(), float("-inf"))
    return (positive + torch.logsumexp(others, dim=1)).mean()


def class_prototypes(
    x: Tensor, labels: Tensor, num_classes: int, weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-class (weighted) means of the rows (Eq. 4): ``(prototypes (C, D), present (C,) bool)``.
    Without ``weights`` the ground-truth-guided prototype P^gg; with the scores ``q`` (N,) the
    confidence-guided P^cg = sum q x / sum q. A class without rows (or zero total weight) has a zero row
    and ``present`` False."""
    w = torch.ones_like(labels, dtype=x.dtype) if weights is None else weights.to(x.dtype)
    sums = x.new_zeros(num_classes, x.shape[1]).index_add(0, labels, x * w[:, None])
    totals = x.new_zeros(num_classes).index_add(0, labels, w)
    present = totals > 0
    return sums / totals.clamp(min=1e-12)[:, None], present


def intra_loss(a: Tensor, a_present: Tensor, b: Tensor, b_present: Tensor) -> Tensor:
    """L_intra(A, B) (Eq. 5): the mean of ``Phi(A_c, B_c)`` over classes present on both sides; 0 when none."""
    both = a_present & b_present
    if not bool(both.any()):
        return (a.sum() + b.sum()) * 0.0
    return (a[both] - b[both]).norm(dim=1).mean()


def inter_loss(a: Tensor, a_present: Tensor, b: Tensor, b_present: Tensor, margin: float) -> Tensor:
    """L_inter(A, B) (Eq. 6): the mean of ``max(0, m - Phi(A_c, B_k))`` over pairs ``c != k`` with ``A_c``
    and ``B_k`` present; 0 when there is no such pair."""
    pairs = a_present[:, None] & b_present[None, :]
    pairs.fill_diagonal_(False)
    if not bool(pairs.any()):
        return (a.sum() + b.sum()) * 0.0
    d = torch.cdist(a, b)
    return torch.relu(margin - d[pairs]).mean()


def prototype_alignment(
    bank: Tensor, bank_present: Tensor, protos: Tensor, present: Tensor, margin: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The three terms of L_pmb (Eq. 7-8) for confidence-guided prototypes ``protos`` against the
    bank's class means: ``(L_intra(P^M, P^cg), L_inter(P^M, P^cg), L_inter(P^cg, P^cg))``."""
    return (
        intra_loss(bank, bank_present, protos, present),
        inter_loss(bank, bank_present, protos, present, margin),
        inter_loss(protos, present, protos, present, margin),
    )
