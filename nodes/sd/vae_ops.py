"""VAE encode/decode as diffusers' pipelines do them, plus the inpainting mask preparation."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from engine.node import NodeError

from .denoise import check_family
from .handles import Latent, VAEHandle


@contextmanager
def _tiling(model: Any, tile_size: int) -> Iterator[None]:
    old = (model.use_tiling, model.tile_sample_min_size, model.tile_latent_min_size)
    model.enable_tiling()
    model.tile_sample_min_size = tile_size
    down = 2 ** (len(model.config.block_out_channels) - 1)
    model.tile_latent_min_size = tile_size // down
    try:
        yield
    finally:
        model.use_tiling, model.tile_sample_min_size, model.tile_latent_min_size = old


def compute_dtype(vae: VAEHandle, devices: Any) -> torch.dtype:
    """The dtype the VAE runs in: the device manager's, but fp32 under fp16 for an SDXL VAE that says it needs it
    (`force_upcast`: the stock SDXL VAE overflows in fp16 and decodes to NaN), as diffusers' SDXL pipelines do for
    both encode and decode. Every use of such a VAE runs in fp32, so the shared model is never rounded to fp16."""
    dtype = devices.dtype
    if dtype == torch.float16 and vae.family == "sdxl" and bool(getattr(vae.model.config, "force_upcast", False)):
        return torch.float32
    return dtype


def decode(vae: VAEHandle, latent: Latent, devices: Any, tiled: bool = False, tile_size: int = 512) -> torch.Tensor:
    check_family("the latent", latent.family, vae.family, "VAE", latent=True)
    if latent.samples.shape[1] != vae.latent_channels:
        raise NodeError(f"the latent has {latent.samples.shape[1]} channels, the VAE expects {vae.latent_channels}")
    with devices.use(vae.model, compute_dtype(vae, devices)) as model:
        dtype = next(model.parameters()).dtype
        z = latent.samples.to(devices.device, dtype) / vae.scaling_factor + vae.shift_factor
        if tiled:
            with _tiling(model, tile_size):
                img = model.decode(z, return_dict=False)[0]
        else:
            img = model.decode(z, return_dict=False)[0]
    img = (img / 2 + 0.5).clamp(0, 1)
    return img.float().cpu().permute(0, 2, 3, 1).contiguous()


def _crop8(image: torch.Tensor, ctx: Any, down: int) -> torch.Tensor:
    h, w = image.shape[1:3]
    nh, nw = h // down * down, w // down * down
    if nh == 0 or nw == 0:
        raise NodeError(f"the image ({w}x{h}) is smaller than the VAE's {down}-pixel grid")
    if (nh, nw) != (h, w):
        if ctx is not None:
            ctx.warn(f"image {w}x{h} cropped to {nw}x{nh} (a multiple of {down})")
        y0, x0 = (h - nh) // 2, (w - nw) // 2
        image = image[:, y0:y0 + nh, x0:x0 + nw]
    return image


def _encode_pixels(vae: VAEHandle, pixels: torch.Tensor, devices: Any, tile_size: int | None = None) -> torch.Tensor:
    """[B,3,H,W] in -1..1 -> scaled latents (mode of the posterior); in overlapping tiles with a `tile_size`."""
    with devices.use(vae.model, compute_dtype(vae, devices)) as model:
        dtype = next(model.parameters()).dtype
        with _tiling(model, tile_size) if tile_size else nullcontext():
            dist = model.encode(pixels.to(devices.device, dtype)).latent_dist
        z = dist.mode()
    return ((z - vae.shift_factor) * vae.scaling_factor).float().cpu()


def encode(vae: VAEHandle, image: torch.Tensor, ctx: Any, tiled: bool = False, tile_size: int = 512) -> Latent:
    image = _crop8(image[..., :3], ctx, vae.downscale)
    pixels = image.permute(0, 3, 1, 2) * 2 - 1
    samples = _encode_pixels(vae, pixels, ctx.settings.devices(), tile_size if tiled else None)
    return Latent(samples=samples, family=vae.family, downscale=vae.downscale)


def encode_for_inpaint(vae: VAEHandle, image: torch.Tensor, mask: torch.Tensor, grow: int, ctx: Any) -> Latent:
    image = _crop8(image[..., :3], ctx, vae.downscale)
    h, w = image.shape[1:3]
    m = mask if mask.ndim == 3 else mask[..., 0]
    m = F.interpolate(m[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)
    if grow > 0:
        m = F.max_pool2d(m, kernel_size=2 * grow + 1, stride=1, padding=grow)
    m = (m >= 0.5).float()  # diffusers binarises inpainting masks
    pixels = image.permute(0, 3, 1, 2) * 2 - 1
    devices = ctx.settings.devices()
    image_latents = _encode_pixels(vae, pixels, devices)
    masked_latents = _encode_pixels(vae, pixels * (m < 0.5), devices)
    down = vae.downscale
    m_lat = F.interpolate(m, size=(h // down, w // down))
    if m_lat.shape[0] != masked_latents.shape[0]:
        m_lat = m_lat.repeat(masked_latents.shape[0] // m_lat.shape[0], 1, 1, 1)
    return Latent(samples=image_latents, family=vae.family, noise_mask=m[:, 0], inpaint=torch.cat([m_lat, masked_latents], dim=1),
                  downscale=down)
