"""Checkpoints -> handles: the bridge between the loader (loading.py) and the typed values nodes pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.node import NodeError

from .handles import TextEncoderHandle, UNetHandle, VAEHandle

ARCH_FAMILY = {"sd15": "sd15", "sd15-inpaint": "sd15", "sd2": "sd2", "sd2-v": "sd2", "sd2-inpaint": "sd2",
               "sdxl": "sdxl", "sdxl-inpaint": "sdxl", "sdxl-refiner": "sdxl-refiner"}


def family_of(arch: str, path: Path) -> str:
    """The latent/text family: the architecture's, unless the model folder declares its own
    (`"_loom_family"` in model_index.json, e.g. loom-shapes, whose VAE makes its own latent space)."""
    index = path / "model_index.json"
    if index.is_file():
        try:
            declared = json.loads(index.read_text()).get("_loom_family")
        except (OSError, ValueError):
            declared = None
        if declared:
            return str(declared)
    return ARCH_FAMILY.get(arch, arch)


def load_checkpoint_handles(path: Path, prediction_type: str | None, ctx: Any) -> tuple[UNetHandle, TextEncoderHandle, VAEHandle]:
    from . import loading

    try:
        ck = loading.load_checkpoint(path, prediction_type=prediction_type)
    except loading.CheckpointError as exc:
        raise NodeError(str(exc)) from None
    for module in (ck.unet, ck.vae, *ck.text_encoders):
        # inference only: without this every sampled latent would carry an autograd graph of all its steps
        module.requires_grad_(False).eval()
    family = family_of(ck.arch, path)
    sched_cfg = dict(ck.scheduler_config)
    sched_cfg["prediction_type"] = ck.prediction_type
    unet = UNetHandle(model=ck.unet, family=family, prediction_type=ck.prediction_type,
                      scheduler_config=sched_cfg, source=str(path.name), arch=ck.arch)
    from .ti import embedding_folder  # `embedding:name` in prompts finds files in models/embeddings

    folder = embedding_folder(getattr(ctx, "settings", None))
    te = TextEncoderHandle(tokenizers=tuple(ck.tokenizers), encoders=tuple(ck.text_encoders), family=family,
                           source=path.name, embeddings=(folder,) if folder is not None else ())
    # the refiner's VAE is SDXL's: its latents (EmptyLatent, VAEEncode) are SDXL latents, shared with the base
    vae = VAEHandle(model=ck.vae, family="sdxl" if family == "sdxl-refiner" else family, source=path.name)
    return unet, te, vae


def load_vae_handle(path: Path, family: str | None) -> VAEHandle:
    from . import loading

    try:
        model = loading.load_vae(path)
    except loading.CheckpointError as exc:
        raise NodeError(str(exc)) from None
    model.requires_grad_(False).eval()
    if family is None:
        family = "sdxl" if abs(float(model.config.scaling_factor) - 0.13025) < 1e-6 else "sd15"
    return VAEHandle(model=model, family=family, source=path.name)
