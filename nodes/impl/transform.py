"""Tensor geometry for IMAGE batches ([B,H,W,C] float): resize, composite, blur."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def resize_image(image: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    if crop == "center":
        h, w = image.shape[1:3]
        src_ratio, dst_ratio = w / h, width / height
        if src_ratio > dst_ratio:  # too wide: cut the sides
            new_w = max(1, round(h * dst_ratio))
            x0 = (w - new_w) // 2
            image = image[:, :, x0:x0 + new_w]
        elif src_ratio < dst_ratio:
            new_h = max(1, round(w / dst_ratio))
            y0 = (h - new_h) // 2
            image = image[:, y0:y0 + new_h]
    if method == "lanczos":
        out = []
        for img in image:
            arr = (img.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
            pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).resize((width, height), Image.LANCZOS)
            a = np.asarray(pil, dtype=np.float32) / 255.0
            out.append(torch.from_numpy(a[..., None] if a.ndim == 2 else a))
        return torch.stack(out).to(image.dtype)
    x = image.movedim(-1, 1)
    kwargs = {"align_corners": False, "antialias": True} if method in ("bilinear", "bicubic") else {}
    y = F.interpolate(x, size=(height, width), mode=method, **kwargs)
    return y.movedim(1, -1).clamp(0, 1).contiguous()


def composite(dest: torch.Tensor, src: torch.Tensor, x: int, y: int, mask: torch.Tensor | None) -> torch.Tensor:
    out = dest.clone()
    b = max(dest.shape[0], src.shape[0])
    if out.shape[0] < b:
        out = out.repeat(b // out.shape[0] + 1, 1, 1, 1)[:b].clone()
    H, W = out.shape[1:3]
    h, w = src.shape[1:3]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return out
    s = src[:, y0 - y:y1 - y, x0 - x:x1 - x, :]
    c = min(s.shape[-1], out.shape[-1])
    region = out[:, y0:y1, x0:x1, :c]
    if mask is None:
        region[:] = s[..., :c]
    else:
        m = mask
        if m.shape[1:] != (h, w):
            m = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        m = m[:, y0 - y:y1 - y, x0 - x:x1 - x, None]
        region[:] = s[..., :c] * m + region * (1 - m)
    return out


def gaussian_blur(image: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    k = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(k**2) / (2 * sigma**2))
    k = (k / k.sum()).to(image.dtype)
    x = image.movedim(-1, 1)
    c = x.shape[1]
    h, w = x.shape[-2:]
    # reflect needs a border smaller than the image; a small image with a wide kernel repeats its edge instead
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect" if radius < min(h, w) else "replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x.movedim(1, -1).contiguous()
