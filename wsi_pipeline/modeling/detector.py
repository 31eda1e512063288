"""``build_detector(cfg)``: Faster R-CNN + FPN for cell lesions, and per-proposal embeddings.

The torchvision detector is used as is: transform -> backbone -> RPN -> RoI heads -> postprocess, except
that its transform resamples images by a fixed factor (``input_mpp / mpp``) instead of resizing them to 800 px.
For metric learning, :meth:`CytologyDetector.forward_with_embeddings` also returns, for every proposal
the box head saw, its 1024-d box-head feature, its projection into the metric space, its class logits,
its image index and (in training) the class it was assigned by torchvision's own sampler. These are
recorded with forward hooks and a one-method subclass of ``RoIHeads``; no torchvision code is copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from wsi_pipeline.config import ModelConfig
from wsi_pipeline.modeling.backbones import build_backbone
from wsi_pipeline.taxonomy import NUM_CLASSES

# Pap-stained patches are bright; normalise with round numbers, not ImageNet statistics
IMAGE_MEAN = (0.8, 0.75, 0.8)
IMAGE_STD = (0.2, 0.2, 0.2)


class ProjectionHead(nn.Module):
    """x = W2 ReLU(W1 h): box-head features (1024-d) into the metric space (128-d by default)."""

    def __init__(self, in_dim: int = 1024, hidden: int = 512, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)


@dataclass
class ProposalOutputs:
    """Per-proposal tensors of one forward pass; row ``i`` belongs to image ``image_index[i]``.

    ``labels`` are the sampler's assigned classes (0 = background) in training, ``None`` in eval.
    """

    features: Tensor  # (N, 1024)
    embeddings: Tensor  # (N, D) projection of the features
    class_logits: Tensor  # (N, C + 1)
    image_index: Tensor  # (N,)
    labels: Tensor | None


class _RecordingRoIHeads(RoIHeads):
    """RoIHeads that remembers the proposals and labels its sampler chose (training)."""

    record: dict | None = None

    def select_training_samples(self, proposals, targets):  # type: ignore[no-untyped-def]
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(proposals, targets)
        if self.record is not None:
            self.record["proposals"] = proposals
            self.record["labels"] = labels
        return proposals, matched_idxs, labels, regression_targets


class _FixedScaleTransform(GeneralizedRCNNTransform):
    """Normalise and batch like torchvision, but resample every image by the same ``scale`` (1: untouched),
    so an image's physical resolution, not its size, decides what the network sees. Boxes of the targets
    follow; torchvision's postprocess maps detections back to the input's pixels."""

    def __init__(self, scale: float, image_mean: list[float], image_std: list[float]):
        super().__init__(1, 1, image_mean, image_std)  # min/max size: unused, resize() is replaced
        self.scale = scale

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):  # type: ignore[no-untyped-def]
        if self.scale == 1.0:
            return image, target
        size = image.shape[-2:]
        image = nn.functional.interpolate(
            image[None],
            scale_factor=self.scale,
            mode="bilinear",
            align_corners=False,
            recompute_scale_factor=True,
            antialias=self.scale < 1.0,
        )[0]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (int(size[0]), int(size[1])), image.shape[-2:])
        return image, target


class CytologyDetector(nn.Module):
    """torchvision Faster R-CNN (``self.detector``) plus the metric-space ``projection`` head."""

    def __init__(self, detector: FasterRCNN, projection: ProjectionHead):
        super().__init__()
        self.detector = detector
        self.projection = projection
        heads = detector.roi_heads
        assert isinstance(heads, _RecordingRoIHeads)
        heads.box_head.register_forward_hook(self._on_box_head)
        heads.box_predictor.register_forward_hook(self._on_box_predictor)
        heads.register_forward_pre_hook(self._on_roi_heads)

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):  # type: ignore[no-untyped-def]
        """Training: loss dict (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``,
        ``loss_rpn_box_reg``). Eval: one dict per image with ``boxes`` (xyxy, input pixels), ``labels``,
        ``scores``."""
        return self.detector(images, targets)

    def forward_with_embeddings(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):  # type: ignore[no-untyped-def]
        """Like :meth:`forward`, and also the :class:`ProposalOutputs` of the box head."""
        record: dict = {}
        heads = self.detector.roi_heads
        heads.record = record  # type: ignore[union-attr]
        try:
            out = self.detector(images, targets)
        finally:
            heads.record = None  # type: ignore[union-attr]
        counts = [len(p) for p in record["proposals"]]
        device = record["features"].device
        image_index = torch.repeat_interleave(
            torch.arange(len(counts), device=device), torch.tensor(counts, device=device)
        )
        labels = torch.cat(record["labels"]) if "labels" in record and self.training else None
        features = record["features"]
        return out, ProposalOutputs(features, self.projection(features), record["class_logits"], image_index, labels)

    # hooks: record only inside forward_with_embeddings
    def _on_roi_heads(self, module, args):  # type: ignore[no-untyped-def]
        if module.record is not None and not self.training:
            module.record["proposals"] = args[1]

    def _on_box_head(self, module, args, output):  # type: ignore[no-untyped-def]
        record = self.detector.roi_heads.record
        if record is not None:
            record["features"] = output

    def _on_box_predictor(self, module, args, output):  # type: ignore[no-untyped-def]
        record = self.detector.roi_heads.record
        if record is not None:
            record["class_logits"] = output[0]


def anchor_sizes_px(cfg: ModelConfig) -> tuple[tuple[int, ...], ...]:
    """Anchor sizes per FPN level in input pixels (microns / mpp)."""
    return tuple((max(4, round(um / cfg.mpp)),) for um in cfg.anchor_sizes_um)


def build_detector(cfg: ModelConfig) -> CytologyDetector:
    """The detector for ``NUM_CLASSES`` lesion classes + background, randomly initialised unless
    ``cfg.backbone_weights`` names a local file."""
    backbone = build_backbone(cfg.backbone, cfg.norm, cfg.fpn_channels, cfg.backbone_weights)
    anchors = AnchorGenerator(anchor_sizes_px(cfg), (tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes_um))
    detector = FasterRCNN(
        backbone,
        num_classes=NUM_CLASSES + 1,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        rpn_anchor_generator=anchors,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n[0],
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n[1],
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n[0],
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n[1],
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.detections_per_image,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
    )
    detector.transform = _FixedScaleTransform(cfg.input_mpp / cfg.mpp, list(IMAGE_MEAN), list(IMAGE_STD))
    old = detector.roi_heads
    detector.roi_heads = _RecordingRoIHeads(
        old.box_roi_pool,
        old.box_head,
        old.box_predictor,
        old.proposal_matcher.high_threshold,
        old.proposal_matcher.low_threshold,
        old.fg_bg_sampler.batch_size_per_image,
        old.fg_bg_sampler.positive_fraction,
        old.box_coder.weights,
        old.score_thresh,
        old.nms_thresh,
        old.detections_per_img,
    )
    hidden, out_dim = cfg.projection_dims
    return CytologyDetector(detector, ProjectionHead(detector.roi_heads.box_head.fc7.out_features, hidden, out_dim))
