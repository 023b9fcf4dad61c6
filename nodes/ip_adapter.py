"""IP-Adapter nodes (Ye et al. 2023): image prompts. Load an adapter from models/ipadapter and a CLIP vision encoder
from models/clip_vision, then ApplyIPAdapter encodes an image once and attaches its image tokens to a conditioning.

As with ControlNet hints, nothing touches the UNet here: the sampler (Sample, DenoiseLoop, PredictNoise, fast mode)
gives each UNet call the tokens of its rows and installs the adapter's attention for that call only (the uncond rows
of guidance get the tokens of a blank image, as diffusers' IP-Adapter pipelines do). The picture equals diffusers'
`pipe.load_ip_adapter(...)` + `set_ip_adapter_scale(weight)` + `ip_adapter_image=...` (see nodes/sd/ip_adapter.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from pydantic import Field

from engine.compat.comfy import ComfyClass, register_comfy_class
from engine.node import Choices, NodeContext, NodeError, Widget, node
from engine.types import CONDITIONING, IMAGE, socket_type
from nodes.impl.models import list_models, model_fingerprint, resolve_model

IP_ADAPTER = socket_type("IP_ADAPTER", "#7e57c2", "An IP-Adapter (image prompt adapter) handle.")
CLIP_VISION = socket_type("CLIP_VISION", "#a1887f", "A CLIP vision encoder handle (the image encoder of IP-Adapters).")

ADAPTERS, ENCODERS = "ipadapter", "clip_vision"  # model folders (ComfyUI's names)

Weight = Annotated[float, Field(1.0, ge=-1.0, le=5.0, description="how strongly the image steers (diffusers' "
                                                                  "ip_adapter scale; 0 = off)"), Widget(step=0.01)]
Percent = Annotated[float, Field(ge=0.0, le=1.0), Widget(step=0.01, slider=True)]


def _adapters(settings) -> list[str]:
    return list_models(settings, ADAPTERS)


def _encoders(settings) -> list[str]:
    return list_models(settings, ENCODERS)


@node(category="loaders", name="LoadIPAdapter", display_name="Load IP-Adapter", output_name="ip_adapter",
      fingerprint=model_fingerprint(ADAPTERS))
def load_ip_adapter(name: Annotated[str, Choices(_adapters)], ctx: NodeContext) -> IP_ADAPTER:
    """Load an IP-Adapter from models/ipadapter (h94's single files, .safetensors or .bin): the basic adapter
    (ip-adapter_sd15, ip-adapter_sdxl_vit-h: 4 image tokens), plus (ip-adapter-plus*, 16 tokens from a resampler) and
    full face. SD 1.x or SDXL is read from the weights. FaceID adapters are not supported."""
    from nodes.sd.ip_adapter import IPAdapterError, load_ip_adapter as load

    path = resolve_model(ctx.settings, ADAPTERS, name)
    try:
        return load(path)
    except IPAdapterError as exc:
        raise NodeError(f"IP-Adapter {name!r}: {exc}") from None


@node(category="loaders", name="LoadCLIPVision", display_name="Load CLIP Vision", output_name="clip_vision",
      fingerprint=model_fingerprint(ENCODERS))
def load_clip_vision(name: Annotated[str, Choices(_encoders)], ctx: NodeContext) -> CLIP_VISION:
    """Load a CLIP vision encoder from models/clip_vision: a transformers folder (config.json + weights, e.g. h94's
    models/image_encoder) or one .safetensors file in the transformers layout (its config is read from the shapes).
    IP-Adapters need the encoder they were trained with: ViT-H/14 for most, ViT-bigG/14 for ip-adapter_sdxl."""
    from nodes.sd.ip_adapter import IPAdapterError, load_clip_vision as load

    path = resolve_model(ctx.settings, ENCODERS, name)
    try:
        return load(path)
    except IPAdapterError as exc:
        raise NodeError(f"CLIP vision {name!r}: {exc}") from None


@node(category="conditioning/ip_adapter", name="ApplyIPAdapter", display_name="Apply IP-Adapter",
      output_name="conditioning")
def apply_ip_adapter(conditioning: CONDITIONING, ip_adapter: IP_ADAPTER, clip_vision: CLIP_VISION, image: IMAGE,
                     ctx: NodeContext, weight: Weight = 1.0, start_percent: Percent = 0.0, end_percent: Percent = 1.0,
                     image_negative: IMAGE | None = None,
                     percent_of: Annotated[Literal["steps", "noise levels"], Widget(advanced=True)] = "steps",
                     ) -> CONDITIONING:
    """Prompt with an image (IP-Adapter): connect the positive prompt. The image is encoded once (CLIP vision, the
    adapter's projection; several images in the batch are used together, their tokens side by side); at every
    step between start_percent and end_percent of the steps (or, with `percent_of` "noise levels", of the model's
    noise levels as ComfyUI_IPAdapter_plus counts them) the UNet attends to it with `weight`. Under guidance the
    negative side sees a blank image (diffusers' zero embedding), or `image_negative`. On the negative prompt it
    works the other way round (an image to steer away from). Chain several for several images or adapters."""
    from nodes.sd.denoise import conditioning_parts, joined
    from nodes.sd.ip_adapter import ImagePrompt, check_conditioning, encode_image_prompt

    if end_percent < start_percent:
        raise NodeError(f"end_percent ({end_percent}) is before start_percent ({start_percent})")
    if image.ndim != 4 or image.shape[0] == 0:
        raise NodeError(f"image: expected an IMAGE batch [B,H,W,C], got shape {list(image.shape)}")
    check_conditioning(ip_adapter, conditioning)
    tokens, blank = encode_image_prompt(ip_adapter, clip_vision, image, ctx.settings.devices(), image_negative)
    prompt = ImagePrompt(adapter=ip_adapter, tokens=tokens, opposite=blank, weight=float(weight),
                         start=float(start_percent), end=float(end_percent), by_noise_level=percent_of == "noise levels",
                         images=int(image.shape[0]))
    return joined([replace(p, image_prompts=p.image_prompts + (prompt,)) for p in conditioning_parts(conditioning)])


# ComfyUI: CLIPVisionLoader is core (comfy nodes.py), IPAdapterModelLoader is ComfyUI_IPAdapter_plus's. Its apply
# nodes patch the MODEL, ours the conditioning, so they have no one-to-one translation.
register_comfy_class("CLIPVisionLoader", ComfyClass("LoadCLIPVision", {"clip_name": "name"}, ["clip_vision"],
                                                    widgets=("clip_name",)))
register_comfy_class("IPAdapterModelLoader", ComfyClass("LoadIPAdapter", {"ipadapter_file": "name"}, ["ip_adapter"],
                                                        widgets=("ipadapter_file",)))
