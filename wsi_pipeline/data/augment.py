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


def random_crop(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    size: int,
    min_visible: float,
    rng: np.random.Generator,
    tries: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` window of ``image`` (the whole axis where the image is smaller) and its targets.

    The window is placed uniformly, so crops show lesions and background in the proportions whole patches
    do. Boxes are clipped to it; those with less than ``min_visible`` of their area inside are dropped. A
    dropped box that is still partly visible would teach the detector that lesion texture is background,
    so up to ``tries`` windows are drawn and the first that cuts no box that way is kept (else the one
    cutting fewest). Returns ``(image view, boxes (m, 4) xyxy in window pixels, labels (m,))``.
    """
    h, w = image.shape[:2]
    ch, cw = min(size, h), min(size, w)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
    labels = np.asarray(labels, np.int64).reshape(-1)
    best_cut, window, kept, keep = len(boxes) + 1, (0, 0), boxes, np.ones(len(boxes), bool)
    for _ in range(tries):
        x0, y0 = int(rng.integers(w - cw + 1)), int(rng.integers(h - ch + 1))
        clipped = np.clip(boxes - np.float32([x0, y0, x0, y0]), 0, np.float32([cw, ch, cw, ch]))
        visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]) / area
        cut = int(np.count_nonzero((visible > 0) & (visible < min_visible)))
        if cut < best_cut:
            best_cut, window, kept, keep = cut, (x0, y0), clipped, (visible > 0) & (visible >= min_visible)
        if cut == 0:
            break
    x0, y0 = window
    return image[y0 : y0 + ch, x0 : x0 + cw], kept[keep], labels[keep]


GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])  # luma, for saturation


def colour_jitter(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation (multiplicative) and hue (shift), in random order.

    Brightness, contrast (around the image mean) and saturation (around the luma) are affine maps of each
    pixel's colour, so consecutive ones are composed into one 3x4 matrix and applied in a single pass;
    only a hue shift (a lookup on the HSV hue channel) needs the image in between.
    """
    ops = rng.permutation(4)
    factors = {
        0: rng.uniform(1 - cfg.brightness, 1 + cfg.brightness),
        1: rng.uniform(1 - cfg.contrast, 1 + cfg.contrast),
        2: rng.uniform(1 - cfg.saturation, 1 + cfg.saturation),
        3: rng.uniform(-cfg.hue, cfg.hue),
    }
    matrix, bias = np.eye(3), np.zeros(3)
    mean = np.array(cv2.mean(image)[:3])  # per-channel mean of the image the affine map applies to
    for op in ops:
        f = float(factors[int(op)])
        if op == 0:
            matrix, bias = f * matrix, f * bias
        elif op == 1:
            level = float((matrix @ mean + bias).mean())  # mean grey level after the maps so far
            matrix, bias = f * matrix, f * bias + (1 - f) * level
        elif op == 2:
            towards_grey = f * np.eye(3) + (1 - f) * np.outer(np.ones(3), GREY_WEIGHTS)
            matrix, bias = towards_grey @ matrix, towards_grey @ bias
        elif abs(f) > 1e-6:
            image = _apply_affine(image, matrix, bias)
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)
            hsv[..., 0] = ((np.arange(256) + f * 256.0) % 256.0).astype(np.uint8)[hsv[..., 0]]
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
            matrix, bias = np.eye(3), np.zeros(3)
            mean = np.array(cv2.mean(image)[:3])
    return _apply_affine(image, matrix, bias)


def _apply_affine(image: np.ndarray, matrix: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``matrix @ rgb + bias`` for every pixel of a uint8 ``(H, W, 3)`` image, rounded and clipped to uint8."""
    if np.allclose(matrix, np.eye(3)) and np.allclose(bias, 0):
        return image
    return cv2.transform(np.ascontiguousarray(image), np.hstack([matrix, bias[:, None]]).astype(np.float32))


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
