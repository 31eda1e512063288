"""Box-aware augmentations on ``(H, W, 3)`` uint8 images with xyxy boxes in image pixels (pure numpy/cv2).

Every random choice comes from the ``rng`` passed in, so a dataset seeded per (seed, epoch, index)
is reproducible whatever the worker layout.
"""

from __future__ import annotations

import cv2
import numpy as np

from wsi_pipeline.config import AugmentConfig


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = image.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return image[:, ::-1], out


def vflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = image.shape[0]
    out = boxes.copy()
    out[:, 1], out[:, 3] = h - boxes[:, 3], h - boxes[:, 1]
    return image[::-1], out


def rot90(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate 90 degrees counter-clockwise: pixel (x, y) moves to (y, W - x)."""
    w = image.shape[1]
    out = np.stack([boxes[:, 1], w - boxes[:, 2], boxes[:, 3], w - boxes[:, 0]], axis=1)
    return np.rot90(image), out


def colour_jitter(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation (multiplicative) and hue (shift), in random order."""
    img = image.astype(np.float32)
    ops = rng.permutation(4)
    factors = {
        0: rng.uniform(1 - cfg.brightness, 1 + cfg.brightness),
        1: rng.uniform(1 - cfg.contrast, 1 + cfg.contrast),
        2: rng.uniform(1 - cfg.saturation, 1 + cfg.saturation),
        3: rng.uniform(-cfg.hue, cfg.hue),
    }
    for op in ops:
        f = factors[int(op)]
        if op == 0:
            img *= f
        elif op == 1:
            img = (img - img.mean()) * f + img.mean()
        elif op == 2:
            grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
            img = (img - grey[..., None]) * f + grey[..., None]
        elif abs(f) > 1e-6:
            hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
            hsv[..., 0] = (hsv[..., 0] + f * 256.0) % 256.0
            img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB_FULL).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def augment(
    image: np.ndarray, boxes: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random flips, 90-degree rotation, colour jitter and blur; boxes follow the geometry."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if rng.uniform() < cfg.hflip:
        image, boxes = hflip(image, boxes)
    if rng.uniform() < cfg.vflip:
        image, boxes = vflip(image, boxes)
    if cfg.rot90:
        for _ in range(int(rng.integers(0, 4))):
            image, boxes = rot90(image, boxes)
    image = colour_jitter(np.ascontiguousarray(image), cfg, rng)
    if cfg.blur > 0 and rng.uniform() < cfg.blur:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 1.5)))
    return np.ascontiguousarray(image), boxes
