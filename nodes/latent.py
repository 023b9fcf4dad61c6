"""Latent nodes: empty latents, upscaling (hires fix), noise masks for inpainting."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from pydantic import Field

from engine.node import NodeError, Widget, node
from engine.types import LATENT, MASK, VAE

Dim = Annotated[int, Field(512, ge=8, le=16384, multiple_of=8, description="pixels; a multiple of 8")]


@node(category="latent", output_name="latent")
def empty_latent(width: Dim = 512, height: Dim = 512, batch_size: Annotated[int, Field(1, ge=1, le=64)] = 1,
                 vae: VAE | None = None) -> LATENT:
    """All-zero latents for text-to-image. Connect the VAE to tag them with its model family and shape."""
    import torch

    from nodes.sd.handles import Latent

    down, channels, family = 8, 4, None
    if vae is not None:
        down, channels, family = vae.downscale, vae.latent_channels, vae.family
    if width % down or height % down:
        raise NodeError(f"width and height must be multiples of {down} for this VAE (got {width}x{height})")
    return Latent(samples=torch.zeros((batch_size, channels, height // down, width // down)), family=family)


LatentMethod = Literal["nearest-exact", "bilinear", "bicubic", "area"]


def _upscale(latent, h: int, w: int, method: str):
    import torch.nn.functional as F

    kwargs = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    samples = F.interpolate(latent.samples, size=(h, w), mode=method, **kwargs)
    mask = latent.noise_mask
    if mask is not None:
        m = mask if mask.ndim == 4 else mask[:, None]
        mask = F.interpolate(m.float(), size=(h * 8, w * 8), mode="nearest")
    return replace(latent, samples=samples, noise_mask=mask, inpaint=None)


@node(category="latent", output_name="latent")
def latent_upscale(latent: LATENT, width: Dim = 1024, height: Dim = 1024, method: LatentMethod = "nearest-exact") -> LATENT:
    """Resize latents to an image size (hires fix: upscale, then a second sampling pass at denoise < 1)."""
    return _upscale(latent, height // 8, width // 8, method)


@node(category="latent", output_name="latent")
def latent_upscale_by(latent: LATENT, scale: Annotated[float, Field(1.5, ge=0.1, le=8.0), Widget(step=0.05)] = 1.5,
                      method: LatentMethod = "nearest-exact") -> LATENT:
    """Resize latents by a factor."""
    h, w = latent.samples.shape[-2:]
    return _upscale(latent, max(1, round(h * scale)), max(1, round(w * scale)), method)


@node(category="latent", output_name="latent")
def set_latent_noise_mask(latent: LATENT, mask: MASK) -> LATENT:
    """Repaint only where the mask is 1: each step blends the re-noised original back elsewhere."""
    return replace(latent, noise_mask=mask)
