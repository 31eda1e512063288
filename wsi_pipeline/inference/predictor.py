"""A detector on batches of patches: the one place where pixels meet the model at inference.

Used by ``infer``, ``mine``, validation and ``eval --checkpoint``. Patches are ``(H, W, 3)`` uint8 arrays at
the model's ``input_mpp``; on CUDA the batch goes through pinned memory, in channels-last layout and under
autocast (AMP). Detections come back as numpy arrays in the patch's own pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from wsi_pipeline.data.image import to_tensor


class Predictor:
    """``predictor(patches) -> [{"boxes" (n, 4) xyxy patch px, "labels" (n,), "scores" (n,), "probs" (n, K+1)}]``."""

    def __init__(self, model: torch.nn.Module, device: torch.device, amp: bool = True, channels_last: bool = True):
        self.device = device
        self.cuda = device.type == "cuda"
        self.amp = amp and self.cuda
        self.model = model.to(device).eval()
        if channels_last and self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def __call__(self, patches: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        tensors = [to_tensor(p) for p in patches]
        if self.cuda:
            tensors = [t.pin_memory().to(self.device, non_blocking=True) for t in tensors]
        with torch.autocast(self.device.type, enabled=self.amp):
            outputs = self.model(tensors)
        results = []
        for out in outputs:
            probs = out.get("probs")
            results.append(
                {
                    "boxes": out["boxes"].float().cpu().numpy().reshape(-1, 4),
                    "labels": out["labels"].cpu().numpy().astype(np.int64),
                    "scores": out["scores"].float().cpu().numpy(),
                    "probs": None if probs is None else probs.float().cpu().numpy(),
                }
            )
        return results
