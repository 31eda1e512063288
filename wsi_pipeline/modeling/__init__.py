"""The detector: torchvision Faster R-CNN + FPN exposing its stages as named methods.

Named ``modeling`` so it is never confused with the top-level ``models/`` folder of model cards.
"""

from wsi_pipeline.modeling.detector import BoxHeadOutputs, CytologyDetector, SupervisedOutputs, build_detector

__all__ = ["BoxHeadOutputs", "CytologyDetector", "SupervisedOutputs", "build_detector"]
