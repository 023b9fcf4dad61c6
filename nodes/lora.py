"""LoRA nodes: patch a UNet (and a text encoder) with a file from models/loras.

The nodes never touch model weights. They read the file, match its layers to the model's modules (errors and
warnings appear here, on the LoRA node), and return new handles carrying a patch description; the node that
runs the model applies the patches for that call and restores the original weights afterwards, so a cached
base model is never left patched. Several LoRAs stack by chaining nodes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from pydantic import Field

from engine.node import Choices, NodeContext, NodeError, Outputs, Widget, node
from engine.types import TEXT_ENCODER, UNET
from nodes.impl.models import list_models, model_fingerprint, resolve_model

Strength = Annotated[float, Field(1.0, ge=-20.0, le=20.0, description="how strongly to apply it (negative inverts it)"), Widget(step=0.01)]


def _loras(settings) -> list[str]:
    return list_models(settings, "loras")


class LoraOutputs(Outputs):
    unet: UNET
    text_encoder: TEXT_ENCODER


def _load(ctx: NodeContext, name: str, unet, text_encoder, unet_strength: float, text_strength: float):
    from nodes.sd.lora_apply import LoraError, load_patches

    path = resolve_model(ctx.settings, "loras", name)
    if path.is_dir():
        raise NodeError(f"LoRA {name!r} is a folder; pick a .safetensors file")
    text_models = {}
    if text_encoder is not None:
        names = ("text_encoder", "text_encoder_2")
        text_models = {names[i]: enc for i, enc in enumerate(text_encoder.encoders[:2])}
    try:
        loaded = load_patches(path, unet.model if unet is not None else None, text_models, unet_strength, text_strength)
    except LoraError as exc:
        raise NodeError(str(exc)) from None
    if loaded.warning:
        ctx.warn(loaded.warning)
    new_unet = unet.with_patch(loaded.unet_patch) if unet is not None and loaded.unet_patch is not None else unet
    new_text = text_encoder
    if text_encoder is not None and loaded.text_patch is not None:
        new_text = replace(text_encoder, patches=text_encoder.patches + (loaded.text_patch,))
    return new_unet, new_text


@node(category="loaders", fingerprint=model_fingerprint("loras"))
def load_lora(
    unet: UNET,
    name: Annotated[str, Choices(_loras)],
    ctx: NodeContext,
    text_encoder: TEXT_ENCODER | None = None,
    unet_strength: Strength = 1.0,
    text_encoder_strength: Strength = 1.0,
) -> LoraOutputs:
    """Apply a LoRA from models/loras to the UNet and (when connected) the text encoder, each with its own
    strength. Chain several to stack them. kohya, diffusers/peft and SDXL files are recognised from their keys;
    layers that match nothing are reported as a warning, a file that matches nothing is an error."""
    new_unet, new_text = _load(ctx, name, unet, text_encoder, unet_strength, text_encoder_strength)
    return LoraOutputs(unet=new_unet, text_encoder=new_text)


@node(category="loaders", name="LoadLoraModelOnly", output_name="unet", fingerprint=model_fingerprint("loras"))
def load_lora_model_only(unet: UNET, name: Annotated[str, Choices(_loras)], ctx: NodeContext,
                         strength: Strength = 1.0) -> UNET:
    """Apply a LoRA to the UNet only (its text-encoder layers, if any, are left out)."""
    new_unet, _ = _load(ctx, name, unet, None, strength, 0.0)
    return new_unet
