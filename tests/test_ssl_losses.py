"""The semi-supervised loss terms against hand-computed values on small tensors, and their degenerate
cases (a class absent, no rows, an empty bank): always finite, never NaN, and still in the graph."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsi_pipeline.engine.diagnostics import CollapseWatch
from wsi_pipeline.losses.metric import (
    class_prototypes,
    inter_loss,
    intra_loss,
    prototype_alignment,
    proxy_loss,
    ramp_up,
)
from wsi_pipeline.methods.consistency import csd_terms, js_divergence, mirror_boxes, squared_consistency
from wsi_pipeline.methods.soft_teacher import box_spread, jitter_boxes, soft_classification_loss


def test_ramp_up_is_the_mean_teacher_sigmoid():
    assert ramp_up(0, 100) == pytest.approx(math.exp(-5))
    assert ramp_up(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert ramp_up(100, 100) == 1.0 and ramp_up(500, 100) == 1.0 and ramp_up(0, 0) == 1.0


def test_proxy_loss_hand_values():
    proxies = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    x = torch.tensor([[0.0, 0.0]])
    # distances 0, 5, 1; class 0: 0 + log(exp(-5) + exp(-1))
    expected = math.log(math.exp(-5) + math.exp(-1))
    assert float(proxy_loss(x, torch.tensor([0]), proxies)) == pytest.approx(expected, abs=1e-6)
    # class 2: 1 + log(exp(0) + exp(-5)); the mean over two rows
    second = 1 + math.log(1 + math.exp(-5))
    both = proxy_loss(torch.zeros(2, 2), torch.tensor([0, 2]), proxies)
    assert float(both) == pytest.approx((expected + second) / 2, abs=1e-6)


def test_proxy_loss_without_rows_is_a_zero_in_the_graph():
    proxies = torch.randn(4, 3, requires_grad=True)
    x = torch.zeros(0, 3, requires_grad=True)
    loss = proxy_loss(x, torch.zeros(0, dtype=torch.long), proxies)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert proxies.grad is not None and torch.equal(proxies.grad, torch.zeros(4, 3))


def test_prototypes_plain_and_confidence_weighted():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 2])
    protos, present = class_prototypes(x, labels, 3)
    assert present.tolist() == [True, False, True]
    assert protos.tolist() == [[2.0, 0.0], [0.0, 0.0], [0.0, 2.0]]
    weighted, _ = class_prototypes(x, labels, 3, torch.tensor([0.25, 0.75, 0.5]))
    assert weighted[0].tolist() == [2.5, 0.0]  # (0.25 * 1 + 0.75 * 3) / 1


def test_intra_and_inter_hand_values_skip_absent_classes():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0], [9.0, 9.0]])
    b = torch.tensor([[0.0, 0.5], [1.0, 0.0], [0.0, 0.0]])
    a_present = torch.tensor([True, True, False])
    b_present = torch.tensor([True, True, True])
    # classes 0 and 1 on both sides: distances 0.5 and 0
    assert float(intra_loss(a, a_present, b, b_present)) == pytest.approx(0.25)
    # pairs (c, k), c != k, A_c and B_k present: (0,1) d=1, (0,2) d=0, (1,0) d=sqrt(1.25), (1,2) d=1
    m = 1.0
    expected = (0 + 1 + max(0, 1 - math.sqrt(1.25)) + 0) / 4
    assert float(inter_loss(a, a_present, b, b_present, m)) == pytest.approx(expected)
    intra, inter_mb, inter_self = prototype_alignment(a, a_present, b, b_present, m)
    assert float(intra) == pytest.approx(0.25) and float(inter_mb) == pytest.approx(expected)
    assert float(inter_self) == pytest.approx(  # B against itself: all 6 pairs of 3 present classes
        np.mean([max(0, 1 - d) for d in [math.sqrt(1.25), 0.5, math.sqrt(1.25), 1.0, 0.5, 1.0]])
    )


@pytest.mark.parametrize(
    "present_a, present_b", [([False] * 3, [True] * 3), ([True, False, False], [False, True, False])]
)
def test_alignment_with_nothing_to_compare_is_zero_not_nan(present_a, present_b):
    a = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(3, 2, requires_grad=True)
    pa, pb = torch.tensor(present_a), torch.tensor(present_b)
    intra = intra_loss(a, pa, b, pb)
    assert float(intra.detach()) == 0.0
    total = intra + inter_loss(a, pa, a, pa, 1.0) + sum(prototype_alignment(a, pa, b, pb, 1.0))
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_empty_bank_and_absent_class_prototypes_are_finite():
    protos, present = class_prototypes(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 4)
    assert not present.any() and torch.isfinite(protos).all()


def test_consistency_terms_hand_values():
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    same = squared_consistency(logits, logits)
    assert float(same) == 0.0
    other = torch.log(torch.tensor([[1.0, 1e-12], [0.9, 0.1]]))
    assert float(squared_consistency(logits, other)) == pytest.approx((0.25 + 0.25) / 2, abs=1e-6)
    p, q = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert float(js_divergence(p, q)[0]) == pytest.approx(math.log(2), abs=1e-5)  # disjoint: log 2
    assert float(js_divergence(p, p)[0]) == pytest.approx(0.0, abs=1e-6)
    assert mirror_boxes(torch.tensor([[10.0, 5.0, 30.0, 8.0]]), 100).tolist() == [[70.0, 5.0, 90.0, 8.0]]


def test_csd_terms_hand_values_background_elimination_and_scale():
    big = 20.0  # logits that make a class certain
    # 4 proposals, classes (background, A, B): 0 background in both views (eliminated), 1 A in both,
    # 2 B in the plain view only, 3 background in the plain view and A in the flip
    plain = torch.tensor([[big, 0, 0], [0, big, 0], [0, 0, big], [big, 0, 0]])
    flipped = torch.tensor([[big, 0, 0], [0, big, 0], [big, 0, 0], [0, big, 0]])
    deltas_plain = torch.zeros(4, 12)
    deltas_flip = torch.zeros(4, 12)
    deltas_plain[1, 4:8] = torch.tensor([0.5, 1.0, 0.0, 0.0])  # class A's deltas of proposal 1
    deltas_flip[1, 4:8] = torch.tensor([0.5, 0.0, 0.0, 0.0])  # its flip: dx should be -0.5, dy 1.0
    deltas_plain[1, 8:12] = 100.0  # class B's deltas on proposal 1: not compared
    deltas_flip[2, 8:12] = torch.tensor([0.0, 0.0, 2.0, 0.0])  # proposal 2, class B: dw differs by 2
    cls, reg, kept = csd_terms(plain, flipped, deltas_plain, deltas_flip)
    assert int(kept) == 3
    # proposals 2 and 3 have disjoint distributions (JS = log 2), proposal 1 agrees; divided by all 4
    assert float(cls) == pytest.approx(2 * math.log(2) / 4, abs=1e-4)
    # proposal 1: (0.5 - -0.5)^2 + (1 - 0)^2 = 2; proposal 2: 2^2 = 4; proposal 3: 0; divided by 4
    assert float(reg) == pytest.approx((2 + 4) / 4)
    none, zero_reg, k = csd_terms(torch.tensor([[big, 0.0, 0.0]]), torch.tensor([[big, 0.0, 0.0]]),
                                  torch.ones(1, 12), torch.zeros(1, 12))  # fmt: skip
    assert int(k) == 0 and float(none) == 0.0 and float(zero_reg) == 0.0
    empty = csd_terms(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 12), torch.zeros(0, 12))
    assert all(math.isfinite(float(v)) for v in empty)


def test_soft_classification_weights_background_by_the_teacher():
    logits = torch.zeros(3, 3)  # uniform: every CE is log 3
    labels = torch.tensor([1, 0, 0])
    background = torch.tensor([0.0, 0.9, 0.1])  # normalised over the background rows: 0.9, 0.1
    loss = soft_classification_loss(logits, labels, background)
    assert float(loss) == pytest.approx(math.log(3) + math.log(3) * (0.9 + 0.1))
    only_bg = soft_classification_loss(torch.zeros(2, 3), torch.tensor([0, 0]), torch.tensor([0.0, 0.0]))
    assert torch.isfinite(only_bg)  # all-zero background scores: no division by zero


def test_box_jitter_stays_within_scale_and_its_spread_is_relative():
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    copies = jitter_boxes(boxes, 50, 0.1, g)
    assert copies.shape == (50, 4)
    moved = (copies - boxes).abs().max(dim=0).values
    assert (moved <= torch.tensor([2.0, 4.0, 2.0, 4.0]) + 1e-5).all() and (moved > 1.0).all()
    refined = boxes.repeat(4, 1)
    refined[:, 0] = torch.tensor([9.0, 11.0, 9.0, 11.0])  # x0 std 1 over a 20 px wide box: 0.05, others 0
    assert box_spread(refined, boxes, 4).tolist() == pytest.approx([0.05 / 4])


def test_collapse_watch_warns_once_per_episode():
    watch = CollapseWatch(patience=3, min_count=4)
    none = np.zeros(4)
    assert watch.update(none, {}) == [] and watch.update(none, {}) == []
    warned = watch.update(none, {})
    assert len(warned) == 1 and "no pseudo-label for 3 iterations" in warned[0]
    assert watch.update(none, {}) == []  # the same episode
    one_class = np.array([0, 5, 0, 0])
    warned = watch.update(one_class, {})
    assert len(warned) == 1 and "LSIL holds 100%" in warned[0]
    assert watch.update(one_class, {}) == []
    assert watch.update(None, {}) == []  # a step without pseudo-labelling leaves the counts alone
    fresh = CollapseWatch(patience=3, min_count=4)  # a run's first steps: one class, but not yet 3 iterations
    assert fresh.update(one_class, {}) == [] and fresh.update(one_class, {}) == []
    assert "LSIL holds 100% of the pseudo-labels of the last 3 iterations" in fresh.update(one_class, {})[0]
    watch = CollapseWatch(patience=3)
    for k in range(30):  # zero on steps without pseudo-labels: a later non-zero value is no explosion
        assert watch.update(None, {"unsup_pml": 0.5 if k % 2 else 0.0}) == []
    assert watch.update(None, {"unsup_pml": -3.0}) == []  # 6x: within bounds, whatever the sign
    jumped = watch.update(None, {"unsup_pml": 50.0})
    assert len(jumped) == 1 and "unsup_pml exploded" in jumped[0]


def test_diagnostics_tally_pseudo_labels_over_the_period():
    from types import SimpleNamespace

    from wsi_pipeline.engine.hooks import Diagnostics

    written: list[tuple[int, dict[str, float]]] = []
    hook = Diagnostics(period=3, patience=100, metrics_log=SimpleNamespace(write=lambda i, v: written.append((i, v))))
    steps = [(np.array([1, 0, 0, 1]), 0.6), (np.zeros(4), float("nan")), (np.array([0, 3, 0, 0]), 0.8)]
    for i, (counts, score) in enumerate(steps):
        method = SimpleNamespace(
            pseudo_counts=torch.tensor(counts, dtype=torch.float32),
            diagnostics={"lambda": 0.1, "pseudo_labels": float(counts.sum()), "pseudo_score": score},
        )
        hook.trainer = SimpleNamespace(unwrapped=method, iter=i, max_iter=10, last_losses={})  # type: ignore[assignment]
        hook.after_step()
    [(iteration, values)] = written
    assert iteration == 3 and values["diag/pseudo_labels"] == 5  # 2 + 0 + 3, not the last step's 3
    assert values["diag/pseudo_score"] == pytest.approx((2 * 0.6 + 3 * 0.8) / 5)
    assert [values[f"diag/pseudo_{c}"] for c in ("ASC-US", "LSIL", "HSIL", "AGC")] == [1, 3, 0, 1]
