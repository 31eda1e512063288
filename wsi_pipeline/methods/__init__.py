"""Training methods (``train.method``): each an ``nn.Module`` returning its loss dict (:mod:`.base`).

A new method is a module with a :class:`~wsi_pipeline.methods.base.TrainingMethod` subclass, registered
here under its config name.
"""

from __future__ import annotations

from wsi_pipeline.config import PipelineConfig
from wsi_pipeline.methods.base import TrainingMethod
from wsi_pipeline.methods.consistency import Csd, MeanTeacher
from wsi_pipeline.methods.dual_alignment import DualAlignment
from wsi_pipeline.methods.soft_alignment import SoftTeacherAlignment
from wsi_pipeline.methods.soft_teacher import SoftTeacher
from wsi_pipeline.methods.supervised import Supervised
from wsi_pipeline.modeling import CytologyDetector, build_detector

METHODS: dict[str, type[TrainingMethod]] = {
    cls.name: cls for cls in (Supervised, DualAlignment, MeanTeacher, Csd, SoftTeacher, SoftTeacherAlignment)
}


def method_class(name: str) -> type[TrainingMethod]:
    if name not in METHODS:
        raise ValueError(f"train.method: unknown method {name!r} (known: {', '.join(METHODS)})")
    return METHODS[name]


def build_method(config: PipelineConfig, detector: CytologyDetector | None = None) -> TrainingMethod:
    """The configured method around ``detector`` (a fresh one from ``config.model`` when ``None``)."""
    cls = method_class(config.train.method)
    return cls.from_config(config, detector if detector is not None else build_detector(config.model))


__all__ = ["METHODS", "TrainingMethod", "build_method", "method_class"]
