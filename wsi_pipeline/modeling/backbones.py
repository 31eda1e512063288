"""Backbones with FPN, built locally (nothing is downloaded): ResNet-18/50/101 or a tiny CNN for tests."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (fewer for narrow layers): trains from scratch at batch size 2-8."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


NORMS = {"group": group_norm, "batch": nn.BatchNorm2d, "frozen_batch": FrozenBatchNorm2d}


def _tiny_body(norm) -> nn.Module:
    """Four stride-2 stages (16-128 channels): a small, fast backbone for tests and CPU smoke runs."""

    def stage(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
            norm(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            norm(cout),
            nn.ReLU(inplace=True),
        )

    return nn.Sequential(
        OrderedDict(
            stem=stage(3, 16), layer1=stage(16, 16), layer2=stage(16, 32), layer3=stage(32, 64), layer4=stage(64, 128)
        )
    )


def build_backbone(name: str, norm: str, fpn_channels: int, weights: str | None = None) -> BackboneWithFPN:
    """FPN backbone; ``weights`` is a local ResNet state dict (torchvision key names) or ``None``."""
    norm_layer = NORMS[norm]
    if name == "tiny":
        if weights:
            raise ValueError("model.backbone_weights: the tiny backbone has no pretrained weights")
        return BackboneWithFPN(
            _tiny_body(norm_layer),
            {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
            [16, 32, 64, 128],
            fpn_channels,
            extra_blocks=LastLevelMaxPool(),
        )
    backbone = resnet_fpn_backbone(backbone_name=name, weights=None, norm_layer=norm_layer, trainable_layers=5)
    if fpn_channels != 256:  # torchvision's builder fixes 256; rebuild the FPN around the same body
        in_list = [
            backbone.body[layer][-1].conv1.in_channels * (4 if name != "resnet18" else 1)
            for layer in ("layer1", "layer2", "layer3", "layer4")
        ]
        backbone = BackboneWithFPN(
            backbone.body,
            {f"layer{i}": str(i - 1) for i in range(1, 5)},
            in_list,
            fpn_channels,
            extra_blocks=LastLevelMaxPool(),
        )
    if weights:
        load_backbone_weights(backbone, Path(weights))
    return backbone


def load_backbone_weights(backbone: BackboneWithFPN, path: Path) -> None:
    """Load a local ResNet state dict into the FPN's body; a clear error when nothing matches."""
    if not path.is_file():
        raise ValueError(f"{path}: backbone weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a readable weights file ({type(err).__name__}: {err})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    body = backbone.body.state_dict()
    matched = {k: v for k, v in state.items() if k in body and body[k].shape == v.shape}
    if not matched:
        raise ValueError(f"{path}: no tensor matches the {type(backbone.body).__name__} backbone")
    backbone.body.load_state_dict(matched, strict=False)
