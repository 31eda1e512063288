"""A slide's summary, built while its detections stream past: counts, score statistics, the top lesions
per class, the risk score and the triage category.

Risk (documented in :class:`~wsi_pipeline.config.TriageConfig`): ``max_c severity[c] * mean(top_k scores of
class c)``, missing scores counting as 0. Category: **unsatisfactory** when the slide has less cell
foreground than ``min_cell_area_mm2`` or more than ``max_blurred`` of its patches are out of focus (it
cannot be judged: never called negative, as in Bethesda specimen adequacy); else **high risk** at or
above ``high_threshold``, **review** at or above ``review_threshold``, **negative** below. ASC-H and SCC
are not among the detector's four classes: a negative call does not rule them out.
"""

from __future__ import annotations

import heapq
from typing import Any

import cv2
import numpy as np

from wsi_pipeline.config import TriageConfig
from wsi_pipeline.inference.merge import Detections
from wsi_pipeline.taxonomy import LESION_CLASSES

NOT_DETECTED = "ASC-H and SCC are outside the detector's four classes (ASC-US, LSIL, HSIL, AGC)"
BINS = np.linspace(0.0, 1.0, 11)


def risk_score(top_scores: dict[str, list[float]], triage: TriageConfig) -> float:
    """``max_c severity[c] * mean(top_k scores of class c)`` (fewer than ``top_k`` scores: zeros fill in)."""
    risk = 0.0
    for code, scores in top_scores.items():
        best = sorted(scores, reverse=True)[: triage.top_k]
        risk = max(risk, triage.severity[code] * sum(best) / triage.top_k)
    return risk


def sharpness(patch: np.ndarray) -> float | None:
    """Focus of an RGB patch: the mean |Laplacian| over its stained pixels (grey < 200) at half resolution;
    ``None`` when under 2% of it is stained (glass says nothing about focus)."""
    grey = cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (max(1, grey.shape[1] // 2), max(1, grey.shape[0] // 2)), interpolation=cv2.INTER_AREA)
    stained = grey < 200
    if stained.mean() < 0.02:
        return None
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)[stained]).mean())


def triage_category(risk: float, foreground_mm2: float, triage: TriageConfig, blurred: float = 0.0) -> str:
    """``blurred``: the share of judged patches that are out of focus."""
    if foreground_mm2 < triage.min_cell_area_mm2 or blurred > triage.max_blurred:
        return "unsatisfactory"
    if risk >= triage.high_threshold:
        return "high risk"
    if risk >= triage.review_threshold:
        return "review"
    return "negative"


class SlideSummary:
    """Accumulates streamed detections (level-0 pixels) of one slide."""

    def __init__(self, top_n: int, triage: TriageConfig):
        self.top_n, self.triage = max(top_n, triage.top_k), triage
        self.counts = {c.code: 0 for c in LESION_CLASSES}
        self.histogram = {c.code: np.zeros(len(BINS) - 1, np.int64) for c in LESION_CLASSES}
        self.score_sum = {c.code: 0.0 for c in LESION_CLASSES}
        self._top: dict[str, list[tuple[float, tuple[float, ...]]]] = {c.code: [] for c in LESION_CLASSES}

    def add(self, dets: Detections) -> None:
        for c in LESION_CLASSES:
            mine = dets.labels == c.id
            scores = dets.scores[mine]
            self.counts[c.code] += int(mine.sum())
            self.score_sum[c.code] += float(scores.sum())
            self.histogram[c.code] += np.histogram(scores, BINS)[0]
            heap = self._top[c.code]
            for score, box in zip(scores.tolist(), dets.boxes[mine].tolist(), strict=True):
                item = (score, tuple(round(v, 1) for v in box))
                if len(heap) < self.top_n:
                    heapq.heappush(heap, item)
                elif item > heap[0]:
                    heapq.heapreplace(heap, item)

    def top(self, code: str) -> list[dict[str, Any]]:
        """The best lesions of a class: ``score`` and level-0 ``box`` (xyxy), best first."""
        return [{"score": round(s, 5), "box": list(b)} for s, b in sorted(self._top[code], reverse=True)]

    def result(self, foreground_mm2: float, sharpness: list[float | None] | None = None) -> dict[str, Any]:
        """The summary; ``sharpness`` per patch (:func:`sharpness`) judges the focus."""
        risk = risk_score({code: [s for s, _ in heap] for code, heap in self._top.items()}, self.triage)
        judged = [v for v in (sharpness or []) if v is not None]
        blurred = sum(v < self.triage.min_sharpness for v in judged) / len(judged) if judged else 0.0
        per_mm2 = foreground_mm2 if foreground_mm2 > 0 else float("nan")
        classes = {
            code: {
                "count": n,
                "per_mm2": None if not np.isfinite(n / per_mm2) else round(n / per_mm2, 3),
                "mean_score": round(self.score_sum[code] / n, 4) if n else None,
                "score_histogram": self.histogram[code].tolist(),
                "top": self.top(code),
            }
            for code, n in self.counts.items()
        }
        return {
            "risk": round(risk, 4),
            "category": triage_category(risk, foreground_mm2, self.triage, blurred),
            "cell_area_mm2": round(foreground_mm2, 4),
            "focus": {
                "patches_judged": len(judged),
                "out_of_focus": round(blurred, 4),
                "median_sharpness": round(float(np.median(judged)), 3) if judged else None,
            },
            "lesions": sum(self.counts.values()),
            "classes": classes,
            "score_bins": BINS.round(2).tolist(),
            "risk_rule": (
                f"max over classes of severity x mean of the top {self.triage.top_k} scores; severity "
                + ", ".join(f"{k} {v:g}" for k, v in self.triage.severity.items())
            ),
            "note": NOT_DETECTED,
        }
