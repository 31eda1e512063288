"""Pure geometry and raster helpers for the generator (all coordinates in pixels, ``(x, y)``)."""

from __future__ import annotations

import cv2
import numpy as np

_SUBPIXEL_BITS = 4  # cv2 fixed-point precision for polygon vertices
_SUPERSAMPLE = 4  # polygon coverage is computed on a 4x finer grid


def star_polygon(
    rng: np.random.Generator,
    center: tuple[float, float],
    radius: float,
    n_vertices: int,
    irregularity: float,
    elongation: float = 1.0,
    angle: float = 0.0,
    angular_jitter: float = 0.35,
) -> np.ndarray:
    """Polygon ``(n, 2)`` whose vertices lie around ``center`` at radii ``radius * (1 +- irregularity)``.

    ``elongation`` stretches the shape along ``angle`` (radians) before rotation, which gives the
    oval, columnar or spindle outlines of different cell types.
    """
    base = np.linspace(0.0, 2 * np.pi, n_vertices, endpoint=False)
    step = 2 * np.pi / n_vertices
    theta = base + rng.uniform(-angular_jitter, angular_jitter, n_vertices) * step + rng.uniform(0, 2 * np.pi)
    r = radius * (1.0 + rng.uniform(-irregularity, irregularity, n_vertices))
    x = r * np.cos(theta) * np.sqrt(elongation)
    y = r * np.sin(theta) / np.sqrt(elongation)
    ca, sa = np.cos(angle), np.sin(angle)
    pts = np.stack([x * ca - y * sa + center[0], x * sa + y * ca + center[1]], axis=1)
    return pts.astype(np.float64)


def smooth_outline(
    rng: np.random.Generator,
    center: tuple[float, float],
    radius: float,
    elongation: float = 1.0,
    angle: float = 0.0,
    irregularity: float = 0.0,
    n_points: int = 48,
) -> np.ndarray:
    """Smooth closed outline (ellipse with low-order radial harmonics), e.g. a nucleus; ``(n, 2)``.

    ``irregularity`` is the summed amplitude of harmonics 2..6 relative to the radius: 0 is a clean
    ellipse, ~0.15 an irregular, notched (high-grade) nuclear membrane.
    """
    theta = np.linspace(0.0, 2 * np.pi, n_points, endpoint=False)
    r = np.ones_like(theta)
    if irregularity > 0:
        orders = np.arange(2, 7)
        amps = rng.dirichlet(np.ones(len(orders))) * irregularity
        phases = rng.uniform(0, 2 * np.pi, len(orders))
        r = r + (amps[:, None] * np.cos(orders[:, None] * theta[None, :] + phases[:, None])).sum(0)
    x = radius * r * np.cos(theta) * np.sqrt(elongation)
    y = radius * r * np.sin(theta) / np.sqrt(elongation)
    ca, sa = np.cos(angle), np.sin(angle)
    return np.stack([x * ca - y * sa + center[0], x * sa + y * ca + center[1]], axis=1)


def fill_mask(shape: tuple[int, int], polygons: list[np.ndarray], origin: tuple[float, float]) -> np.ndarray:
    """Exact-area coverage ``(h, w)`` float32 in [0, 1] of ``polygons`` in a canvas whose pixel ``(0, 0)``
    covers ``[origin, origin + 1)``: filled at 4x supersampling, then area-averaged."""
    ss = _SUPERSAMPLE
    h, w = shape
    canvas = np.zeros((h * ss, w * ss), np.uint8)
    scale = (1 << _SUBPIXEL_BITS) * ss
    offset = 0.5 / ss  # supersampled pixel centres sit at (k + 0.5) / ss
    pts = [np.round((p - np.asarray(origin) - offset) * scale).astype(np.int32).reshape(-1, 1, 2) for p in polygons]
    cv2.fillPoly(canvas, pts, 255, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return cv2.resize(canvas.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) / 255.0


def draw_lines(
    shape: tuple[int, int],
    polylines: list[np.ndarray],
    origin: tuple[float, float],
    thickness: int = 1,
) -> np.ndarray:
    """Anti-aliased open polylines ``(h, w)`` float32 in [0, 1]."""
    canvas = np.zeros(shape, np.uint8)
    scale = 1 << _SUBPIXEL_BITS
    pts = [np.round((p - np.asarray(origin) - 0.5) * scale).astype(np.int32).reshape(-1, 1, 2) for p in polylines]
    cv2.polylines(canvas, pts, False, 255, thickness=thickness, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
    return canvas.astype(np.float32) / 255.0


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field ``(h, w)`` float32 with correlation length ~``scale`` px."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    if scale > 0.3:
        noise = cv2.GaussianBlur(noise, (0, 0), scale, borderType=cv2.BORDER_REFLECT)
    std = float(noise.std())
    return noise / std if std > 0 else noise


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (identity below 0.25 px)."""
    if sigma < 0.25:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)


def ring(mask: np.ndarray, width: float) -> np.ndarray:
    """Inner rim of a soft mask: ~1 within ``width`` px inside its edge, 0 in the interior and outside."""
    inner = cv2.GaussianBlur(mask, (0, 0), max(width, 0.3), borderType=cv2.BORDER_CONSTANT)
    return np.clip(mask - inner, 0.0, 1.0) * 2.0


def bilinear_field(grid: np.ndarray, cell: float, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Sample a coarse grid (value at ``(i*cell, j*cell)``) bilinearly on pixel rows y0..y1, cols x0..x1.

    Separable (``Wy @ grid @ Wx.T``), so any band of a slide gets exactly the values it would get as
    part of the whole: the generator renders slides band by band.
    """

    def weights(start: int, stop: int, n: int) -> np.ndarray:
        pos = (np.arange(start, stop, dtype=np.float64) + 0.5) / cell
        pos = np.clip(pos, 0, n - 1)
        i0 = np.minimum(np.floor(pos).astype(int), n - 2) if n > 1 else np.zeros(len(pos), int)
        frac = pos - i0
        w = np.zeros((stop - start, n))
        rows = np.arange(stop - start)
        w[rows, i0] = 1 - frac if n > 1 else 1.0
        if n > 1:
            w[rows, i0 + 1] = frac
        return w

    gh, gw = grid.shape
    return (weights(y0, y1, gh) @ grid @ weights(x0, x1, gw).T).astype(np.float32)


def soften_polygon(
    rng: np.random.Generator, points: np.ndarray, iterations: int = 2, wiggle: float = 0.015
) -> np.ndarray:
    """Round a polygon's corners (Chaikin corner cutting) and add a fine wavy border.

    ``wiggle`` is the border's radial noise relative to the polygon's mean radius.
    """
    pts = points
    for _ in range(iterations):
        nxt = np.roll(pts, -1, axis=0)
        pts = np.stack([0.8 * pts + 0.2 * nxt, 0.2 * pts + 0.8 * nxt], axis=1).reshape(-1, 2)
    if wiggle > 0:
        center = pts.mean(axis=0)
        rel = pts - center
        radius = float(np.hypot(rel[:, 0], rel[:, 1]).mean())
        noise = np.convolve(np.tile(rng.normal(0, 1, len(pts)), 3), np.ones(3) / 3, mode="same")[
            len(pts) : 2 * len(pts)
        ]
        pts = pts + rel / np.maximum(np.hypot(rel[:, 0], rel[:, 1]), 1e-6)[:, None] * (noise * wiggle * radius)[:, None]
    return pts
