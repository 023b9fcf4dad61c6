"""Tensor helpers for the mask nodes: MASK tensors are float [batch, height, width] in 0..1 (1 = change).

The arithmetic follows ComfyUI's comfy_extras/nodes_mask.py, so a ComfyUI prompt gives the same masks here;
morphology runs in torch (max-pooling) rather than scipy, which matches scipy's grey dilation / erosion with
a 3x3 footprint exactly (its default "reflect" border repeats the edge pixel, already inside the window).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHANNELS = ("red", "green", "blue", "alpha")
OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


def color_match(image: torch.Tensor, color: int) -> torch.Tensor:
    """1 where a pixel's RGB, rounded to 0..255 as ComfyUI rounds it (clamp, x255, round half to even), is `color`."""
    q = (image[..., :3].clamp(0.0, 1.0) * 255.0).round().to(torch.int64)
    packed = (q[..., 0] << 16) + (q[..., 1] << 8) + q[..., 2]
    return (packed == color).to(torch.float32)


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, operation: str) -> torch.Tensor:
    """`source` combined into `destination` with its top-left corner at (x, y), clipped to the destination; the
    whole result is clamped to 0..1. A batch of 1 on either side applies to every row of the other."""
    b = max(destination.shape[0], source.shape[0])
    out = destination.expand(b, -1, -1).clone()
    source = source.to(out.device, out.dtype).expand(b, -1, -1)
    H, W = out.shape[-2:]
    h, w = source.shape[-2:]
    right, bottom = min(x + w, W), min(y + h, H)
    if right > x and bottom > y:
        dst = out[:, y:bottom, x:right]
        src = source[:, :bottom - y, :right - x]
        if operation == "multiply":
            dst.mul_(src)
        elif operation == "add":
            dst.add_(src)
        elif operation == "subtract":
            dst.sub_(src)
        else:  # ComfyUI's logical operations: each side rounded to 0 or 1 first (0.5 rounds to 0)
            a, s = dst.round().bool(), src.round().bool()
            logic = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}[operation]
            dst.copy_(logic(a, s))
    return out.clamp_(0.0, 1.0)


def _ramp(n: int, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Weights (1/n, 2/n, ..., n/n) for the n pixels nearest an edge, the edge pixel first; 1 elsewhere."""
    w = torch.ones(size, dtype=torch.float64)
    if n > 0:
        w[:n] = torch.arange(1, n + 1, dtype=torch.float64) / n
    return w.to(device, dtype)


def feather(mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> torch.Tensor:
    """Fade linearly to the edges: the k-th pixel from an edge (k = 0 at the edge) is scaled by (k + 1) / n, n the
    feather width of that side (capped at the mask's size); where two sides' bands overlap both scales apply."""
    H, W = mask.shape[-2:]
    left, right, top, bottom = min(left, W), min(right, W), min(top, H), min(bottom, H)
    dt, dev = mask.dtype, mask.device
    cols = _ramp(left, W, dt, dev) * _ramp(right, W, dt, dev).flip(0)
    rows = _ramp(top, H, dt, dev) * _ramp(bottom, H, dt, dev).flip(0)
    return mask * cols[None, None, :] * rows[None, :, None]


def grow(mask: torch.Tensor, expand: int, tapered_corners: bool) -> torch.Tensor:
    """Dilate (expand > 0) or erode (expand < 0) |expand| times with a 3x3 window: a plus shape when
    `tapered_corners` (corners grow round), the full square otherwise. Pixels outside the mask take no part."""
    if expand == 0:
        return mask.clone()
    H, W = mask.shape[-2:]
    # a plus shape reaches every pixel of an HxW mask after H + W - 2 steps; more steps change nothing
    steps = min(abs(expand), H + W)
    x = mask[:, None]
    if expand < 0:
        x = -x  # erosion is dilation of the negative
    for _ in range(steps):
        if tapered_corners:
            x = torch.maximum(F.max_pool2d(x, (3, 1), stride=1, padding=(1, 0)),
                              F.max_pool2d(x, (1, 3), stride=1, padding=(0, 1)))
        else:
            x = F.max_pool2d(x, 3, stride=1, padding=1)
    if expand < 0:
        x = -x
    return x[:, 0].contiguous()
