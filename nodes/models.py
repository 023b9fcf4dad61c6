"""Model loading nodes: checkpoints (diffusers folders and single files) and standalone VAEs."""

from __future__ import annotations

from typing import Annotated, Literal

from engine.node import Choices, NodeContext, NodeError, Outputs, node
from engine.types import TEXT_ENCODER, UNET, VAE
from nodes.impl.models import list_models, model_fingerprint, resolve_model


def _checkpoints(settings) -> list[str]:
    return list_models(settings, "checkpoints")


def _vaes(settings) -> list[str]:
    return list_models(settings, "vae")


class CheckpointOutputs(Outputs):
    unet: UNET
    text_encoder: TEXT_ENCODER
    vae: VAE


@node(category="loaders", fingerprint=model_fingerprint("checkpoints"))
def load_checkpoint(
    name: Annotated[str, Choices(_checkpoints)],
    ctx: NodeContext,
    prediction_type: Literal["auto", "epsilon", "v_prediction"] = "auto",
) -> CheckpointOutputs:
    """Load a Stable Diffusion checkpoint (SD 1.x, 2.x, XL, their inpainting models, the XL refiner) from
    models/checkpoints: a diffusers folder or a single .safetensors file. The architecture is detected from the
    weights; nothing is downloaded."""
    from nodes.sd.models import load_checkpoint_handles

    path = resolve_model(ctx.settings, "checkpoints", name)
    unet, te, vae = load_checkpoint_handles(path, None if prediction_type == "auto" else prediction_type, ctx)
    return CheckpointOutputs(unet=unet, text_encoder=te, vae=vae)


@node(category="loaders", name="LoadVAE", fingerprint=model_fingerprint("vae"))
def load_vae(name: Annotated[str, Choices(_vaes)], ctx: NodeContext,
             family: Literal["auto", "sd15", "sd2", "sdxl"] = "auto") -> VAE:
    """Load a standalone VAE from models/vae (single file or diffusers folder), e.g. a fixed-fp16 SDXL VAE."""
    from nodes.sd.models import load_vae_handle

    path = resolve_model(ctx.settings, "vae", name)
    try:
        return load_vae_handle(path, None if family == "auto" else family)
    except FileNotFoundError as exc:
        raise NodeError(str(exc)) from None
