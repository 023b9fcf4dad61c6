"""Geometric judge for loom-shapes images: no learned model, only colour statistics and mask geometry.

Why geometric: the benchmark must not depend on another network (that could share the generator's
blind spots), and the synthetic grammar makes every attribute measurable:
- background = median of the border pixels, foreground = median of the pixels far from it, each named by
  the nearest colour of the union of both palettes (so a white "red circle" counts as wrong);
- the shape mask = pixels nearer the foreground colour than the background, largest component, holes
  filled; shape = the template (rendered into the mask's bounding box with the generator's own shape
  function) with the best IoU;
- position = bounding-box centre against the image centre; size = half-extent of the bounding box, the
  same quantities the generator controls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from . import data as D

_NAMES = tuple(D.ALL_COLORS)
_PALETTE = np.array([D.ALL_COLORS[n] for n in _NAMES], dtype=np.float32)
CENTER_TOLERANCE = 4.0  # pixels: a box centre closer than this (on both axes) to the middle is "center"
SMALL_MAX = 10.25  # half-extent thresholds between the size classes' ranges in data.SIZE_RANGES
LARGE_MIN = 15.5
MIN_FG_PIXELS = 6


@dataclass
class Judgement:
    """What the judge sees in one image; fields are None when there is no usable foreground."""

    background: str
    color: str | None
    shape: str | None
    position: str | None
    size: str | None
    mask: np.ndarray = field(repr=False)
    shape_iou: float = 0.0
    bbox: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 inclusive


def nearest_color(rgb: np.ndarray) -> str:
    return _NAMES[int(np.argmin(((_PALETTE - rgb[None].astype(np.float32)) ** 2).sum(1)))]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, dtype=bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Everything not reachable from the image border through background pixels."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask.astype(np.uint8)
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2)
    return (flood != 2)[1:-1, 1:-1]


def _templates(bbox: tuple[int, int, int, int], shape_hw: tuple[int, int], supersample: int = 2) -> np.ndarray:
    """(len(SHAPES), H, W) bool masks of every shape fitted to bbox, rasterised like the generator."""
    x0, y0, x1, y1 = bbox
    h, w = shape_hw
    s = supersample
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    hw, hh = (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
    xs = (np.arange(w * s, dtype=np.float32) + 0.5) / s
    ys = (np.arange(h * s, dtype=np.float32) + 0.5) / s
    u = np.broadcast_to((xs[None, :] - cx) / hw, (h * s, w * s))
    v = np.broadcast_to((ys[:, None] - cy) / hh, (h * s, w * s))
    out = []
    for k in range(len(D.SHAPES)):
        inside = D.shape_inside(k, u, v).astype(np.float32)
        out.append(inside.reshape(h, s, w, s).mean((1, 3)) >= 0.5)  # same rasterisation as the generator
    return np.stack(out)


def classify_position(cx: float, cy: float, size: int = D.IMAGE_SIZE) -> str:
    dx, dy = cx - size / 2, cy - size / 2
    if max(abs(dx), abs(dy)) < CENTER_TOLERANCE:
        return "center"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def classify_size(half_extent: float) -> str:
    if half_extent < SMALL_MAX:
        return "small"
    if half_extent > LARGE_MIN:
        return "large"
    return "medium"


def foreground_mask(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(mask, background rgb, foreground rgb or None) of an (H, W, 3) uint8 image."""
    f = img.astype(np.float32)
    border = np.concatenate([f[:2].reshape(-1, 3), f[-2:].reshape(-1, 3), f[:, :2].reshape(-1, 3),
                             f[:, -2:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    dist_bg = np.sqrt(((f - bg) ** 2).sum(-1))
    far = dist_bg > max(40.0, 0.5 * float(np.percentile(dist_bg, 99.5)))
    if int(far.sum()) < MIN_FG_PIXELS:
        return np.zeros(img.shape[:2], bool), bg, None
    fg = np.median(f[far], axis=0)
    dist_fg = np.sqrt(((f - fg) ** 2).sum(-1))
    mask = fill_holes(_largest_component(dist_fg < dist_bg))
    return mask, bg, fg


def judge(img: np.ndarray) -> Judgement:
    """Judge one (H, W, 3) uint8 RGB image."""
    mask, bg, fg = foreground_mask(img)
    background = nearest_color(bg)
    if fg is None or int(mask.sum()) < MIN_FG_PIXELS:
        return Judgement(background, None, None, None, None, mask)
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    templates = _templates(bbox, mask.shape)
    inter = (templates & mask[None]).sum((1, 2))
    union = (templates | mask[None]).sum((1, 2))
    ious = inter / np.maximum(union, 1)
    k = int(np.argmax(ious))
    x0, y0, x1, y1 = bbox
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    half = max(x1 - x0 + 1, y1 - y0 + 1) / 2
    return Judgement(background, nearest_color(fg), D.SHAPES[k], classify_position(cx, cy), classify_size(half),
                     mask, float(ious[k]), bbox)


def score(j: Judgement, truth: dict[str, object]) -> dict[str, bool | None]:
    """Per-attribute correctness against `Attributes.row(i)`; None where the caption did not ask."""
    return {
        "color": j.color == truth["color"],
        "background": j.background == truth["background"],
        "shape": j.shape == truth["shape"],
        "position": (j.position == truth["position"]) if truth["position_named"] else None,
        "size": (j.size == truth["size"]) if truth["size_named"] else None,
    }


def edge_region(edges: np.ndarray) -> np.ndarray:
    """Filled region enclosed by an edge map ((H, W) uint8, nonzero = edge): what ControlNet should paint.

    Edges are closed with a 3x3 dilation (Canny contours can have one-pixel gaps), holes are filled, and
    the region is eroded back by one pixel to undo the dilation.
    """
    kernel = np.ones((3, 3), np.uint8)
    closed = cv2.dilate((edges > 0).astype(np.uint8), kernel)
    filled = fill_holes(closed).astype(np.uint8)
    return cv2.erode(filled, kernel).astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum()) / union if union else 0.0
