"""Diffusers <-> original LDM ("single file") key mapping for Stable Diffusion 1.x, 2.x and XL.

diffusers reads single files (``from_single_file``) but has no writer, and a "save checkpoint" node and the
test fixtures need one. The mapping is derived from the *structure* of the diffusers state dict (how many
levels, resnets per level, whether a level has attention), never from hard-coded sizes, so narrow test models
with the exact topology of the real ones convert the same way as the full-size models.

Text encoders are also mapped the other way (``text_encoder_from_ldm``): diffusers only reads them into
fixed-size configs, while our loader must read narrow ones whose sizes it infers from the shapes.

Layout written (prefixes):
    UNet                      model.diffusion_model.*
    VAE                       first_stage_model.*
    SD1 CLIP-L                cond_stage_model.transformer.text_model.*  (older files: without text_model.)
    SD2 OpenCLIP-H            cond_stage_model.model.*            (fused q/k/v ``in_proj``)
    SDXL CLIP-L / OpenCLIP-G  conditioner.embedders.0.transformer.text_model.* / conditioner.embedders.1.model.*
    SDXL refiner OpenCLIP-G   conditioner.embedders.0.model.*  (the refiner has no CLIP-L)

Inpainting models (``sd15-inpaint``, ``sd2-inpaint``, ``sdxl-inpaint``) use the layout of their base model; only
the UNet's first convolution is wider (9 input channels).

SD2 quirk: SD2 conditions on the *penultimate* OpenCLIP layer, so its diffusers text encoder has one layer less
than the original model (23 of 24). The writer appends an all-zero residual block, which is an exact identity
(zero LayerNorm weight -> zero input -> zero output + zero bias), so tools that count the blocks and take the
penultimate one see the same result; and an identity ``text_projection`` (SD2 never uses the pooled output).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_OPENCLIP_PREFIX = "conditioner.embedders.0.model."

#: safetensors metadata key under which ``save_single_file`` stores the diffusers configs as JSON
CONFIG_METADATA_KEY = "latentloom.config"

ARCHS = ("sd15", "sd15-inpaint", "sd2", "sd2-v", "sd2-inpaint", "sdxl", "sdxl-inpaint", "sdxl-refiner")

# (kind, prefix) of each text encoder, in pipeline order; kind is "clip" (HF/OpenAI layout) or "openclip"
TEXT_ENCODER_LAYOUT: dict[str, tuple[tuple[str, str], ...]] = {
    "sd15": (("clip", SD_CLIP_PREFIX),),
    "sd15-inpaint": (("clip", SD_CLIP_PREFIX),),
    "sd2": (("openclip", SD2_OPENCLIP_PREFIX),),
    "sd2-v": (("openclip", SD2_OPENCLIP_PREFIX),),
    "sd2-inpaint": (("openclip", SD2_OPENCLIP_PREFIX),),
    "sdxl": (("clip", SDXL_CLIP_PREFIX), ("openclip", SDXL_OPENCLIP_PREFIX)),
    "sdxl-inpaint": (("clip", SDXL_CLIP_PREFIX), ("openclip", SDXL_OPENCLIP_PREFIX)),
    "sdxl-refiner": (("openclip", SDXL_REFINER_OPENCLIP_PREFIX),),
}


def is_sd2(arch: str) -> bool:
    """SD2 is the one family whose diffusers text encoder drops the last original layer."""
    return arch in ("sd2", "sd2-v", "sd2-inpaint")


def text_encoder_names(arch: str) -> tuple[str, ...]:
    """The diffusers component names of ``arch``'s text encoders, in ``TEXT_ENCODER_LAYOUT`` order.

    The SDXL refiner's only encoder is OpenCLIP-G, which diffusers calls ``text_encoder_2`` (``text_encoder`` is
    absent), so its weights and configs share names with the base model's second encoder.
    """
    if arch == "sdxl-refiner":
        return ("text_encoder_2",)
    return ("text_encoder", "text_encoder_2")[: len(TEXT_ENCODER_LAYOUT[arch])]


# --------------------------------------------------------------------------------------------------- UNet

_UNET_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_RE_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$")
_RE_SAMPLER = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(downsamplers|upsamplers)\.0\.conv\.(.+)$")
_RE_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")


def _rename_first(rest: str, table: Mapping[str, str]) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def _count(keys: Sequence[str], pattern: str) -> int:
    """Number of distinct integers captured by ``pattern`` (one group) among ``keys``."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def unet_to_ldm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Diffusers ``UNet2DConditionModel`` state dict -> LDM ``diffusion_model`` keys (without prefix)."""
    keys = list(state)
    per_level = _count(keys, r"^down_blocks\.0\.resnets\.(\d+)\.")  # layers_per_block
    for lvl in range(_count(keys, r"^down_blocks\.(\d+)\.")):
        if _count(keys, rf"^down_blocks\.{lvl}\.resnets\.(\d+)\.") != per_level:
            raise ValueError("per-level layers_per_block is not representable in the LDM layout")
    up_attn = {int(m.group(1)) for k in keys if (m := re.match(r"^up_blocks\.(\d+)\.attentions\.", k))}
    stride = per_level + 1  # LDM numbers resnets+sampler of a down level consecutively; up levels have L+1 resnets

    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name: str | None = None
        head, _, param = key.rpartition(".")
        if head in _UNET_TOP:
            name = f"{_UNET_TOP[head]}.{param}"
        elif m := _RE_BLOCK.match(key):
            side, lvl, kind, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
            sub = "0" if kind == "resnets" else "1"
            rest = _rename_first(rest, _UNET_RESNET) if kind == "resnets" else rest
            idx = 1 + lvl * stride + j if side == "down_blocks" else lvl * stride + j
            blocks = "input_blocks" if side == "down_blocks" else "output_blocks"
            name = f"{blocks}.{idx}.{sub}.{rest}"
        elif m := _RE_SAMPLER.match(key):
            side, lvl, rest = m.group(1), int(m.group(2)), m.group(4)
            if side == "down_blocks":
                name = f"input_blocks.{(lvl + 1) * stride}.0.op.{rest}"
            else:
                slot = 2 if lvl in up_attn else 1
                name = f"output_blocks.{lvl * stride + per_level}.{slot}.conv.{rest}"
        elif m := _RE_MID.match(key):
            kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
            if kind == "resnets":
                name = f"middle_block.{0 if j == 0 else 2}.{_rename_first(rest, _UNET_RESNET)}"
            else:
                name = f"middle_block.1.{rest}"
        if name is None:
            raise KeyError(f"no LDM name for UNet key {key!r}")
        out[name] = value
    return out


# ---------------------------------------------------------------------------------------------------- VAE

_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_RE_VAE_ATTN = re.compile(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$")


def vae_to_ldm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Diffusers ``AutoencoderKL`` state dict -> LDM ``first_stage_model`` keys (without prefix).

    The decoder's up levels are numbered in reverse in LDM, and the mid-block attention is stored as 1x1 convs.
    """
    keys = list(state)
    n_up = _count(keys, r"^decoder\.up_blocks\.(\d+)\.")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name: str | None = None
        if key.startswith(("quant_conv.", "post_quant_conv.")) or re.match(r"^(encoder|decoder)\.(conv_in|conv_out)\.", key):
            name = key
        elif m := re.match(r"^(encoder|decoder)\.conv_norm_out\.(.+)$", key):
            name = f"{m.group(1)}.norm_out.{m.group(2)}"
        elif m := re.match(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", key):
            name = f"encoder.down.{m.group(1)}.block.{m.group(2)}.{_rename_first(m.group(3), _VAE_RESNET)}"
        elif m := re.match(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$", key):
            name = f"encoder.down.{m.group(1)}.downsample.conv.{m.group(2)}"
        elif m := re.match(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", key):
            lvl = n_up - 1 - int(m.group(1))
            name = f"decoder.up.{lvl}.block.{m.group(2)}.{_rename_first(m.group(3), _VAE_RESNET)}"
        elif m := re.match(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$", key):
            name = f"decoder.up.{n_up - 1 - int(m.group(1))}.upsample.conv.{m.group(2)}"
        elif m := re.match(r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)$", key):
            name = f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{_rename_first(m.group(3), _VAE_RESNET)}"
        elif m := _RE_VAE_ATTN.match(key):
            name = f"{m.group(1)}.mid.attn_1.{_VAE_ATTN[m.group(2)]}.{m.group(3)}"
            if m.group(3) == "weight" and value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)
        if name is None:
            raise KeyError(f"no LDM name for VAE key {key!r}")
        out[name] = value
    return out


# ------------------------------------------------------------------------------------------ text encoders

_OPENCLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_RE_HF_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_RE_OPENCLIP_LAYER = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$")
_RE_OPENCLIP_FUSED = re.compile(r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$")


def _flat_clip(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """HF CLIP keys without the ``text_model.`` wrapper (transformers 5 ``CLIPTextModel`` is already flat)."""
    return {k.removeprefix("text_model."): v for k, v in state.items()}


def clip_to_ldm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """HF ``CLIPTextModel`` -> OpenAI/HF layout as stored in LDM files (``text_model.*``); drops projection."""
    return {f"text_model.{k}": v for k, v in _flat_clip(state).items() if k != "text_projection.weight"}


def openclip_to_ldm(state: Mapping[str, Tensor], *, identity_tail: bool = False) -> dict[str, Tensor]:
    """HF CLIP text model -> OpenCLIP layout (fused ``in_proj``, ``text_projection`` stored as ``x @ P``).

    ``identity_tail`` appends the SD2 identity block and identity projection (see module docstring).
    """
    flat = _flat_clip(state)
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    n_layers = 0
    for key, value in flat.items():
        if key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.removeprefix("final_layer_norm.")] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        elif m := _RE_HF_LAYER.match(key):
            i, mod, param = int(m.group(1)), m.group(2), m.group(3)
            n_layers = max(n_layers, i + 1)
            if mod in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((i, param), {})[mod[-6]] = value
            elif mod in _OPENCLIP_LAYER:
                out[f"transformer.resblocks.{i}.{_OPENCLIP_LAYER[mod]}.{param}"] = value
            else:
                raise KeyError(f"no OpenCLIP name for text-encoder key {key!r}")
        else:
            raise KeyError(f"no OpenCLIP name for text-encoder key {key!r}")
    for (i, param), parts in qkv.items():
        out[f"transformer.resblocks.{i}.attn.in_proj_{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    if identity_tail:
        template = {k.split(".", 3)[3]: v for k, v in out.items() if k.startswith("transformer.resblocks.0.")}
        for suffix, value in template.items():
            out[f"transformer.resblocks.{n_layers}.{suffix}"] = torch.zeros_like(value)
        if "text_projection" not in out:
            width = out["token_embedding.weight"].shape[1]
            out["text_projection"] = torch.eye(width, dtype=out["token_embedding.weight"].dtype)
    return out


def text_encoder_from_ldm(
    state: Mapping[str, Tensor], kind: str, prefix: str, *, num_layers: int | None = None
) -> dict[str, Tensor]:
    """LDM text-encoder keys under ``prefix`` -> flat HF CLIP keys (no ``text_model.``).

    ``num_layers`` keeps only the first layers (SD2 drops its last OpenCLIP block). Unknown keys (e.g.
    ``logit_scale``, ``position_ids``, the SD2 projection when not wanted) are left out; the caller loads strictly.
    """
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    out: dict[str, Tensor] = {}
    if kind == "clip":
        for key, value in sub.items():
            key = key.removeprefix("text_model.")
            if key.endswith("position_ids"):
                continue
            m = _RE_HF_LAYER.match(key)
            if m and num_layers is not None and int(m.group(1)) >= num_layers:
                continue
            out[key] = value
        return out
    if kind != "openclip":
        raise ValueError(f"unknown text encoder kind {kind!r}")
    inverse = {v: k for k, v in _OPENCLIP_LAYER.items()}
    for key, value in sub.items():
        if key == "token_embedding.weight":
            out["embeddings.token_embedding.weight"] = value
        elif key == "positional_embedding":
            out["embeddings.position_embedding.weight"] = value
        elif key.startswith("ln_final."):
            out["final_layer_norm." + key.removeprefix("ln_final.")] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif m := _RE_OPENCLIP_FUSED.match(key):
            i, param = int(m.group(1)), m.group(2)
            if num_layers is None or i < num_layers:
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"encoder.layers.{i}.self_attn.{name}.{param}"] = part.contiguous()
        elif m := _RE_OPENCLIP_LAYER.match(key):
            i, mod, param = int(m.group(1)), m.group(2), m.group(3)
            if (num_layers is None or i < num_layers) and mod in inverse:
                out[f"encoder.layers.{i}.{inverse[mod]}.{param}"] = value
    return out


# ------------------------------------------------------------------------------------------------- whole

def _state(module_or_state: nn.Module | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    return module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state


def to_single_file_state_dict(
    unet: nn.Module | Mapping[str, Tensor],
    vae: nn.Module | Mapping[str, Tensor],
    text_encoders: Sequence[nn.Module | Mapping[str, Tensor]],
    arch: str,
) -> dict[str, Tensor]:
    """Whole pipeline (modules or their state dicts) -> one original-layout state dict for ``arch``."""
    if arch not in TEXT_ENCODER_LAYOUT:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    layout = TEXT_ENCODER_LAYOUT[arch]
    if len(text_encoders) != len(layout):
        raise ValueError(f"{arch} has {len(layout)} text encoder(s), got {len(text_encoders)}")
    out: dict[str, Tensor] = {}
    out.update({UNET_PREFIX + k: v for k, v in unet_to_ldm(_state(unet)).items()})
    out.update({VAE_PREFIX + k: v for k, v in vae_to_ldm(_state(vae)).items()})
    for (kind, prefix), encoder in zip(layout, text_encoders):
        state = _state(encoder)
        if kind == "clip":
            converted = clip_to_ldm(state)
        else:
            converted = openclip_to_ldm(state, identity_tail=is_sd2(arch))
        out.update({prefix + k: v for k, v in converted.items()})
    return out


def _public_config(module: Any) -> dict[str, Any]:
    cfg = getattr(module, "config", None)
    if cfg is None:
        return {}
    data = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    drop = {"transformers_version", "torch_dtype", "dtype", "architectures", "output_hidden_states",
            "output_attentions", "return_dict", "id2label", "label2id"}
    return {k: v for k, v in data.items() if not k.startswith("_") and k not in drop and _jsonable(v)}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def config_metadata(unet: Any, vae: Any, text_encoders: Sequence[Any], scheduler_config: Mapping[str, Any] | None,
                    arch: str) -> dict[str, str]:
    """safetensors metadata carrying what the weights cannot say (heads, scaling factor, scheduler...)."""
    config: dict[str, Any] = {"format": 1, "arch": arch, "unet": _public_config(unet), "vae": _public_config(vae)}
    for name, encoder in zip(text_encoder_names(arch), text_encoders):
        config[name] = _public_config(encoder)
    if scheduler_config:
        config["scheduler"] = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    return {CONFIG_METADATA_KEY: json.dumps(config, sort_keys=True)}


def save_single_file(
    path: str | Path,
    unet: nn.Module,
    vae: nn.Module,
    text_encoders: Sequence[nn.Module],
    arch: str,
    *,
    scheduler_config: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    with_config: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write an original-layout ``.safetensors`` checkpoint; by default embeds the configs as metadata."""
    from safetensors.torch import save_file

    state = to_single_file_state_dict(unet, vae, text_encoders, arch)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in state.items()}
    meta = dict(metadata or {})
    if with_config:
        meta.update(config_metadata(unet, vae, text_encoders, scheduler_config, arch))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta or None)
    return path
