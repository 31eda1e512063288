"""Slide-level metrics of a risk score: sensitivity and specificity at a threshold, ROC AUC, and the
thresholds chosen on validation slides for a stated sensitivity and specificity (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def rates(positive: Sequence[float], negative: Sequence[float], threshold: float) -> tuple[float, float]:
    """``(sensitivity, specificity)``: positives at or above ``threshold``, negatives below (NaN if none)."""
    sens = sum(r >= threshold for r in positive) / len(positive) if positive else math.nan
    spec = sum(r < threshold for r in negative) / len(negative) if negative else math.nan
    return sens, spec


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Probability that a positive slide's risk exceeds a negative one's (ties count half); NaN without both."""
    if not positive or not negative:
        return math.nan
    pos, neg = np.asarray(positive, float)[:, None], np.asarray(negative, float)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def choose_thresholds(
    positive: Sequence[float], negative: Sequence[float], sensitivity: float, specificity: float
) -> tuple[float, float]:
    """``(review, high)`` on validation risks: ``review`` is the highest threshold that still flags at least
    ``sensitivity`` of the positive slides; ``high`` the lowest threshold that keeps at least
    ``specificity`` of the negative slides below it (never below ``review``)."""
    if not positive:
        raise ValueError("choosing thresholds needs positive validation slides")
    pos = sorted(positive, reverse=True)
    review = pos[max(1, math.ceil(sensitivity * len(pos))) - 1]
    if not negative:
        return float(review), float(review)
    neg = sorted(negative)
    below = min(len(neg), max(1, math.ceil(specificity * len(neg))))  # negatives that must stay below
    high = float(np.nextafter(neg[below - 1], math.inf))
    return float(review), max(float(review), high)
