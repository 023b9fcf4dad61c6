"""VAE nodes: latents <-> pixels, tiled decoding, and the encodes for inpainting."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from engine.compat.comfy import ComfyClass, register_comfy_class
from engine.node import NodeContext, Outputs, node
from engine.types import CONDITIONING, IMAGE, LATENT, MASK, VAE


# ComfyUI's VAE Decode/Encode (Tiled) range (64..4096 in steps of 32). Tiles overlap by a quarter (diffusers' tiling).
TileSize = Annotated[int, Field(512, ge=64, le=4096, multiple_of=32, description="tile size in pixels when tiled")]


@node(category="vae", name="VAEDecode", output_name="image")
def vae_decode(vae: VAE, latent: LATENT, ctx: NodeContext, tiled: bool = False, tile_size: TileSize = 512) -> IMAGE:
    """Turn latents back into pixels with the model's VAE (tiled: less memory for large images)."""
    from nodes.sd.vae_ops import decode

    if getattr(ctx.settings, "fast", False) and not tiled:  # fast mode: compiled decode (nodes/sd/fast.py)
        from nodes.sd.fast import decode as fast_decode

        return fast_decode(vae, latent, ctx)
    return decode(vae, latent, ctx.settings.devices(), tiled, tile_size)


@node(category="vae", name="VAEEncode", output_name="latent")
def vae_encode(vae: VAE, image: IMAGE, ctx: NodeContext, tiled: bool = False, tile_size: TileSize = 512) -> LATENT:
    """Turn pixels into latents (the distribution's mode, so it is deterministic); sizes are cropped to multiples of 8.
    Tiled: the image is encoded in overlapping tiles of `tile_size` pixels (less memory for large images)."""
    from nodes.sd.vae_ops import encode

    return encode(vae, image, ctx, tiled, tile_size)


@node(category="vae", name="VAEEncodeForInpaint", output_name="latent")
def vae_encode_for_inpaint(vae: VAE, image: IMAGE, mask: MASK, ctx: NodeContext,
                           grow_mask_by: Annotated[int, Field(0, ge=0, le=64, description="dilate the mask by N pixels")] = 0) -> LATENT:
    """Encode an image and mask for inpainting: a 9-channel inpainting UNet gets [mask, masked image
    latents]; a regular UNet repaints only the masked area (noise-mask blending)."""
    from nodes.sd.vae_ops import encode_for_inpaint

    return encode_for_inpaint(vae, image, mask, grow_mask_by, ctx)


class InpaintConditioning(Outputs):
    positive: CONDITIONING
    negative: CONDITIONING
    latent: LATENT


@node(category="vae", name="InpaintModelConditioning")
def inpaint_model_conditioning(positive: CONDITIONING, negative: CONDITIONING, vae: VAE, image: IMAGE, mask: MASK,
                               ctx: NodeContext, noise_mask: bool = True) -> InpaintConditioning:
    """Prepare inpainting for any UNet (ComfyUI's InpaintModelConditioning): the latent of the whole image, the
    [mask, masked image] latents a 9-channel inpainting UNet reads, and (noise_mask on) the noise mask that makes a
    regular UNet repaint only the masked area. The conditionings pass through unchanged."""
    from dataclasses import replace

    from nodes.sd.vae_ops import encode_for_inpaint

    latent = encode_for_inpaint(vae, image, mask, 0, ctx)
    if not noise_mask:
        latent = replace(latent, noise_mask=None)
    return InpaintConditioning(positive=positive, negative=negative, latent=latent)


# ComfyUI's nodes.py (InpaintModelConditioning): `pixels` is our `image`; its one widget is noise_mask
register_comfy_class("InpaintModelConditioning", ComfyClass("InpaintModelConditioning", {"pixels": "image"},
                                                            ["positive", "negative", "latent"], widgets=("noise_mask",)))
