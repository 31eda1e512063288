"""``build_detector(cfg)``: Faster R-CNN + FPN for cell lesions, exposing its stages as named methods.

torchvision's detector is five steps: transform -> backbone -> RPN -> RoI heads -> postprocess. Here the
same torchvision modules are held by :class:`CytologyDetector` and composed by named stages, so a training
method can run any part on any images: ``preprocess``, ``features``, ``proposals`` (with losses only when
targets are given, so unlabeled images need no fake ones), ``sample_proposals`` (torchvision's sampler),
``box_head`` (box-head features, class logits and deltas of *given* boxes: proposal embeddings for metric
learning), ``box_losses`` (a swappable classifier loss + Fast R-CNN box regression) and ``detect``.
:meth:`CytologyDetector.supervised` and :meth:`CytologyDetector.predict` compose them exactly as
torchvision's ``GeneralizedRCNN.forward`` does (same calls, same order, same random draws).

The transform resamples images by a fixed factor (``input_mpp / mpp``) instead of resizing them to 800 px.
Frames: images and targets come in *input pixels* (the patch's own pixels at ``input_mpp``); the stages
between ``preprocess`` and ``detect`` work in *network pixels* (at ``mpp``); ``detect``/``predict`` return
boxes in input pixels again.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops.boxes import batched_nms, clip_boxes_to_image, remove_small_boxes

from wsi_pipeline.config import ModelConfig
from wsi_pipeline.losses.detection import box_regression_loss, build_classifier_loss
from wsi_pipeline.modeling.backbones import build_backbone
from wsi_pipeline.taxonomy import NUM_CLASSES

# Pap-stained patches are bright; normalise with round numbers, not ImageNet statistics
IMAGE_MEAN = (0.8, 0.75, 0.8)
IMAGE_STD = (0.2, 0.2, 0.2)

Targets = list[dict[str, Tensor]]


@dataclass
class BoxHeadOutputs:
    """The box head on a set of boxes; row ``i`` belongs to image ``image_index[i]`` (images in order)."""

    features: Tensor  # (N, 1024) box-head features: what the metric space embeds
    class_logits: Tensor  # (N, C + 1), column 0 is background
    box_regression: Tensor  # (N, 4 (C + 1)) class-specific deltas
    image_index: Tensor  # (N,)


@dataclass
class RoiSamples:
    """Proposals (per image, network pixels) chosen by the RoI sampler, with their assigned classes
    (0 = background), the encoded deltas to their matched ground truth, and the matched target index."""

    proposals: list[Tensor]
    labels: list[Tensor]
    regression_targets: list[Tensor]
    matched_idxs: list[Tensor]


@dataclass
class SupervisedOutputs:
    """A supervised pass: the four detector losses, and the box head on the sampled proposals with the
    classes the sampler assigned them (``labels``, ``(N,)``)."""

    losses: dict[str, Tensor]
    head: BoxHeadOutputs
    labels: Tensor


class _FixedScaleTransform(GeneralizedRCNNTransform):
    """Normalise and batch like torchvision, but resample every image by the same ``scale`` (1: untouched),
    so an image's physical resolution, not its size, decides what the network sees. Boxes of the targets
    follow; :meth:`postprocess` maps detections back to the input's pixels."""

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
    """Faster R-CNN + FPN as named stages over torchvision's modules (see the module docstring).

    ``forward(images, targets)`` in training mode returns the loss dict (``loss_classifier``,
    ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``); otherwise one dict per image with
    ``boxes`` (xyxy, input pixels), ``labels`` (lesion class ids) and ``scores``.
    """

    def __init__(
        self,
        transform: GeneralizedRCNNTransform,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
        classifier_loss: nn.Module,
    ):
        super().__init__()
        self.transform, self.backbone, self.rpn, self.roi_heads = transform, backbone, rpn, roi_heads
        self.classifier_loss = classifier_loss

    # -- stages ---------------------------------------------------------------------------------
    def preprocess(self, images: list[Tensor], targets: Targets | None = None) -> tuple[ImageList, Targets | None]:
        """Normalise, resample to ``mpp`` and batch ``(3, H, W)`` images in [0, 1]; targets (``boxes`` xyxy in
        input pixels, ``labels``) are copied and follow."""
        batch, targets = self.transform(images, targets)
        for k, t in enumerate(targets or []):
            bad = (t["boxes"][:, 2:] <= t["boxes"][:, :2]).any(dim=1)
            if bad.any():
                box = [round(v, 2) for v in t["boxes"][bad][0].tolist()]
                raise ValueError(f"target {k}: a box without positive width and height ({box}, network pixels)")
        return batch, targets

    def features(self, images: ImageList) -> OrderedDict[str, Tensor]:
        """FPN feature maps, finest first."""
        return self.backbone(images.tensors)

    def proposals(
        self, images: ImageList, features: OrderedDict[str, Tensor], targets: Targets | None = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """RPN proposals per image (network pixels; top-n counts of the module's train/eval mode) and, when
        ``targets`` are given, the RPN losses (``loss_objectness``, ``loss_rpn_box_reg``)."""
        rpn = self.rpn
        maps = list(features.values())
        objectness, deltas = rpn.head(maps)
        anchors = rpn.anchor_generator(images, maps)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        decoded = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, _ = rpn.filter_proposals(decoded, objectness, images.image_sizes, per_level)
        if targets is None:
            return boxes, {}
        labels, matched = rpn.assign_targets_to_anchors(anchors, targets)
        objectness_loss, box_loss = rpn.compute_loss(objectness, deltas, labels, rpn.box_coder.encode(matched, anchors))
        return boxes, {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}

    def sample_proposals(self, proposals: list[Tensor], targets: Targets) -> RoiSamples:
        """torchvision's RoI sampler: ground-truth boxes join the proposals, then a balanced sample of
        foreground/background per image with assigned classes and regression targets."""
        proposals, matched, labels, regression = self.roi_heads.select_training_samples(proposals, targets)
        return RoiSamples(proposals, labels, regression, matched)

    def box_head(self, features: OrderedDict[str, Tensor], boxes: list[Tensor], image_sizes) -> BoxHeadOutputs:  # type: ignore[no-untyped-def]
        """RoI-pool ``boxes`` (per image, network pixels) and run the box head and predictor."""
        heads = self.roi_heads
        pooled = heads.box_roi_pool(features, boxes, image_sizes)
        embedded = heads.box_head(pooled)
        class_logits, box_regression = heads.box_predictor(embedded)
        device = embedded.device
        counts = torch.tensor([len(b) for b in boxes], device=device)
        image_index = torch.repeat_interleave(torch.arange(len(boxes), device=device), counts)
        return BoxHeadOutputs(embedded, class_logits, box_regression, image_index)

    def box_losses(self, head: BoxHeadOutputs, labels: Tensor, regression_targets: Tensor) -> dict[str, Tensor]:
        """``loss_classifier`` (the configured classifier loss) and ``loss_box_reg`` (Fast R-CNN)."""
        return {
            "loss_classifier": self.classifier_loss(head.class_logits, labels),
            "loss_box_reg": box_regression_loss(head.box_regression, labels, regression_targets),
        }

    def detect(
        self,
        head: BoxHeadOutputs,
        boxes: list[Tensor],
        image_sizes,
        original_sizes,  # type: ignore[no-untyped-def]
    ) -> list[dict[str, Tensor]]:
        """Detections of the box head's outputs on ``boxes``, per image: every (proposal, class) pair
        decoded, kept above ``model.box_score_thresh``, per-class NMS, the best
        ``model.detections_per_image``; ``boxes`` (xyxy) mapped back to the input pixels of images of
        ``original_sizes``, ``labels``, ``scores`` and ``probs`` (K + 1 class probabilities of the proposal
        each came from, background first). The same selection as torchvision's RoI heads, which drop
        ``probs``."""
        heads = self.roi_heads
        decoded = heads.box_coder.decode(head.box_regression, boxes)  # (N, K + 1, 4)
        probs = torch.softmax(head.class_logits, -1)
        counts = [len(b) for b in boxes]
        found = []
        for image_boxes, image_probs, size in zip(decoded.split(counts), probs.split(counts), image_sizes, strict=True):
            image_boxes = clip_boxes_to_image(image_boxes, size)
            classes = image_probs.shape[1] - 1
            scores = image_probs[:, 1:].reshape(-1)  # (proposal, class) pairs, background left out
            pairs = torch.where(scores > heads.score_thresh)[0]
            pairs = pairs[remove_small_boxes(image_boxes[:, 1:].reshape(-1, 4)[pairs], min_size=1e-2)]
            flat_boxes, labels = image_boxes[:, 1:].reshape(-1, 4)[pairs], pairs % classes + 1
            keep = batched_nms(flat_boxes, scores[pairs], labels, heads.nms_thresh)[: heads.detections_per_img]
            pairs = pairs[keep]
            found.append(
                {
                    "boxes": flat_boxes[keep],
                    "labels": labels[keep],
                    "scores": scores[pairs],
                    "probs": image_probs[pairs // classes],
                }
            )
        return self.transform.postprocess(found, image_sizes, original_sizes)

    # -- compositions ---------------------------------------------------------------------------
    def supervised(self, images: list[Tensor], targets: Targets) -> SupervisedOutputs:
        """The supervised losses of labeled images (and the box head on the sampled proposals)."""
        batch, targets = self.preprocess(images, targets)
        assert targets is not None
        features = self.features(batch)
        proposals, rpn_losses = self.proposals(batch, features, targets)
        samples = self.sample_proposals(proposals, targets)
        head = self.box_head(features, samples.proposals, batch.image_sizes)
        labels = torch.cat(samples.labels)
        losses = self.box_losses(head, labels, torch.cat(samples.regression_targets))
        return SupervisedOutputs({**losses, **rpn_losses}, head, labels)

    def predict(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Detections per image: ``boxes`` (xyxy, input pixels), ``labels``, ``scores``."""
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, _ = self.preprocess(images)
        features = self.features(batch)
        proposals, _ = self.proposals(batch, features)
        head = self.box_head(features, proposals, batch.image_sizes)
        return self.detect(head, proposals, batch.image_sizes, sizes)

    def forward(self, images: list[Tensor], targets: Targets | None = None):  # type: ignore[no-untyped-def]
        if self.training:
            if targets is None:
                raise ValueError("a detector in training mode needs targets (call eval() to predict)")
            return self.supervised(images, targets).losses
        return self.predict(images)


def anchor_sizes_px(cfg: ModelConfig) -> tuple[tuple[int, ...], ...]:
    """Anchor sizes per FPN level in network pixels (microns / mpp)."""
    return tuple((max(4, round(um / cfg.mpp)),) for um in cfg.anchor_sizes_um)


def build_detector(cfg: ModelConfig) -> CytologyDetector:
    """The detector for ``NUM_CLASSES`` lesion classes + background, randomly initialised unless
    ``cfg.backbone_weights`` names a local file. torchvision's ``FasterRCNN`` builds the parts."""
    backbone = build_backbone(cfg.backbone, cfg.norm, cfg.fpn_channels, cfg.backbone_weights)
    anchors = AnchorGenerator(anchor_sizes_px(cfg), (tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes_um))
    parts = FasterRCNN(
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
    transform = _FixedScaleTransform(cfg.input_mpp / cfg.mpp, list(IMAGE_MEAN), list(IMAGE_STD))
    return CytologyDetector(
        transform, parts.backbone, parts.rpn, parts.roi_heads, build_classifier_loss(cfg.classifier_loss)
    )
