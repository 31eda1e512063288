"""The detector: torchvision Faster R-CNN + FPN with proposal embeddings for metric learning.

Named ``modeling`` so it is never confused with the top-level ``models/`` folder of model cards.
"""

from wsi_pipeline.modeling.detector import CytologyDetector, ProposalOutputs, build_detector

__all__ = ["CytologyDetector", "ProposalOutputs", "build_detector"]
