"""Tiny, deterministic Stable Diffusion models for the whole test suite (seconds, not minutes).

Two kinds:
- ``make_tiny_*``: small diffusers folders (``save_pretrained`` + safetensors, tokenizer included) with the
  sizes from NOTES-diffusers.md, for running pipelines and nodes quickly.
- ``make_narrow_single_file``: the *exact topology* of a real architecture (levels, resnets per level,
  transformer depth, text-encoder depth) with narrow widths, written in the original single-file layout by our
  own writer, for the single-file code paths.

Every 1-D parameter (norm weights and biases) gets a small seeded perturbation on top of the library's seeded
init, so no two tensors are equal (LayerNorm weights would otherwise all be 1): a swapped key in a conversion
shows up as a difference.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from nodes.sd import ldm_convert as lc  # noqa: E402
from nodes.sd.loading import TEXT_ENCODER_NAMES, component_configs, make_tokenizer  # noqa: E402

Overrides = Mapping[str, Mapping[str, Any]]

# --- tiny diffusers folders (NOTES: UNet 0.8M, VAE 1.0M, CLIP 1.6M params) -------------------------------
_TINY_VAE = {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "sample_size": 64}
_TINY_CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
TINY_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "sd15": {
        "unet": {"sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32,
                 "attention_head_dim": 8, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]},
        "vae": _TINY_VAE,
        "text_encoder": _TINY_CLIP,
    },
    "sd2-v": {
        "unet": {"sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32,
                 "attention_head_dim": [2, 4], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "use_linear_projection": True},
        "vae": _TINY_VAE,
        "text_encoder": {**_TINY_CLIP, "hidden_act": "gelu", "projection_dim": 32},
    },
    "sdxl": {
        "unet": {"sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 96,
                 "attention_head_dim": [2, 4], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                 "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "transformer_layers_per_block": [1, 2],
                 "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + 64},
        "vae": {**_TINY_VAE, "sample_size": 64},
        "text_encoder": _TINY_CLIP,  # width 32; the second encoder is wider (as 768 vs 1280): context 32 + 64
        "text_encoder_2": {**_TINY_CLIP, "hidden_size": 64, "hidden_act": "gelu", "projection_dim": 64},
    },
}
TINY_OVERRIDES["sdxl-refiner"] = {
    # OpenCLIP-G only (width 64 here): context 64, add-embedding 5 time ids x 8 + pooled 64 (refiner: 5 x 256 + 1280)
    "unet": {"sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 64,
             "attention_head_dim": [2, 4], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "transformer_layers_per_block": [1, 2],
             "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 5 * 8 + 64},
    "vae": {**_TINY_VAE, "sample_size": 64},
    "text_encoder_2": TINY_OVERRIDES["sdxl"]["text_encoder_2"],
}


def _nine_channels(overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {**overrides, "unet": {**overrides["unet"], "in_channels": 9}}


TINY_OVERRIDES["sd15-inpaint"] = _nine_channels(TINY_OVERRIDES["sd15"])
TINY_OVERRIDES["sd2-inpaint"] = _nine_channels(TINY_OVERRIDES["sd2-v"])
TINY_OVERRIDES["sdxl-inpaint"] = _nine_channels(TINY_OVERRIDES["sdxl"])

# --- narrow single files: real topology, narrow widths; heads chosen as the loader guesses them -------------
# Channel ratios as in the real models (1:2:4:4), so the same resnets need a shortcut conv and the key sets match.
_NARROW_VAE = {"block_out_channels": [32, 64, 128, 128], "layers_per_block": 2, "sample_size": 64}
_NARROW_CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}
NARROW_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "sd15": {
        "unet": {"block_out_channels": [32, 64, 128, 128], "cross_attention_dim": 32, "attention_head_dim": 8,
                 "sample_size": 8},
        "vae": _NARROW_VAE,
        "text_encoder": _NARROW_CLIP,  # 12 layers, as CLIP-L
    },
    "sd2": {
        "unet": {"block_out_channels": [32, 64, 128, 128], "cross_attention_dim": 32, "attention_head_dim": [4, 1, 2, 2],
                 "sample_size": 8},
        "vae": _NARROW_VAE,
        "text_encoder": _NARROW_CLIP,  # 23 layers (+1 identity block in the file), as SD2's OpenCLIP-H
    },
    "sdxl": {
        # 16 channels with 16 groups keep SDXL's 1:2:4 ratio cheaply (10 transformer blocks at the last level)
        "unet": {"block_out_channels": [16, 32, 64], "norm_num_groups": 16, "cross_attention_dim": 96,
                 "attention_head_dim": [2, 4, 1],
                 "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + 64, "sample_size": 8},
        "vae": _NARROW_VAE,
        "text_encoder": _NARROW_CLIP,  # 12 layers, width 32
        # 32 layers, as OpenCLIP-G; wider than the first encoder as in SDXL (diffusers tells them apart by width)
        "text_encoder_2": {**_NARROW_CLIP, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 1,
                           "projection_dim": 64},
    },
}
NARROW_OVERRIDES["sdxl-refiner"] = {
    # 4 levels 1:2:4:4 as 384/768/1536/1536, attention (4 blocks deep) at levels 1-2 and in the middle
    "unet": {"block_out_channels": [16, 32, 64, 64], "norm_num_groups": 16, "cross_attention_dim": 64,
             "attention_head_dim": [2, 4, 1, 1], "addition_time_embed_dim": 8,
             "projection_class_embeddings_input_dim": 5 * 8 + 64, "sample_size": 8},
    "vae": _NARROW_VAE,
    "text_encoder_2": NARROW_OVERRIDES["sdxl"]["text_encoder_2"],  # 32 layers, as OpenCLIP-G
}
NARROW_OVERRIDES["sd2-v"] = NARROW_OVERRIDES["sd2"]
NARROW_OVERRIDES["sd15-inpaint"] = _nine_channels(NARROW_OVERRIDES["sd15"])
NARROW_OVERRIDES["sd2-inpaint"] = _nine_channels(NARROW_OVERRIDES["sd2"])
NARROW_OVERRIDES["sdxl-inpaint"] = _nine_channels(NARROW_OVERRIDES["sdxl"])


def configs_with(arch: str, overrides: Overrides) -> dict[str, dict[str, Any]]:
    """The shipped configs of ``arch`` with per-component overrides applied."""
    configs = component_configs(arch)
    for comp, extra in overrides.items():
        configs[comp].update(extra)
    return configs


def _perturb(module: nn.Module, generator: torch.Generator, scale: float = 0.02) -> None:
    """Make norm weights/biases (init 1 and 0) distinct; weight matrices are already random (and big)."""
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype), alpha=scale)


def build_models(arch: str, overrides: Overrides, seed: int = 0) -> tuple[nn.Module, nn.Module, tuple[nn.Module, ...]]:
    """(unet, vae, text_encoders) for ``arch`` + ``overrides``, deterministic from ``seed``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    configs = configs_with(arch, overrides)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config({k: v for k, v in configs["unet"].items() if not k.startswith("_")})
        vae = AutoencoderKL.from_config({k: v for k, v in configs["vae"].items() if not k.startswith("_")})
        encoders = []
        for name in TEXT_ENCODER_NAMES:
            if name in configs:
                cfg = configs[name]
                cls = CLIPTextModelWithProjection if "WithProjection" in str(cfg["architectures"]) else CLIPTextModel
                encoders.append(cls(CLIPTextConfig.from_dict(cfg)))
    for module in (unet, vae, *encoders):
        _perturb(module, generator)
        module.eval()
    return unet, vae, tuple(encoders)


def _scheduler(config: Mapping[str, Any]) -> Any:
    import diffusers

    cfg = dict(config)
    return getattr(diffusers, cfg.pop("_class_name")).from_config(cfg)


def _save_folder(arch: str, folder: str | Path, seed: int) -> Path:
    import diffusers

    folder = Path(folder)
    overrides = TINY_OVERRIDES[arch]
    configs = configs_with(arch, overrides)
    unet, vae, encoders = build_models(arch, overrides, seed)
    parts: dict[str, Any] = {"unet": unet, "vae": vae, "scheduler": _scheduler(configs["scheduler"])}
    index = configs["model_index"]
    xl = "XL" in index["_class_name"]
    if xl:  # the refiner has no text_encoder / tokenizer
        parts.update(text_encoder=None, tokenizer=None, **{k: index[k] for k in (
            "requires_aesthetics_score", "force_zeros_for_empty_prompt") if k in index})
    for name, encoder, (kind, _) in zip(lc.text_encoder_names(arch), encoders, lc.TEXT_ENCODER_LAYOUT[arch]):
        parts[name] = encoder
        parts[name.replace("text_encoder", "tokenizer")] = make_tokenizer(kind, encoder.config.max_position_embeddings)
    if not xl:
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = getattr(diffusers, index["_class_name"])(**parts)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def make_tiny_sd15(folder: str | Path, seed: int = 0) -> Path:
    """Tiny SD1.x diffusers folder: UNet (32,64) sample 8, 4-level VAE, CLIP width 32 (2 layers), PNDM eps."""
    return _save_folder("sd15", folder, seed)


def make_tiny_sd2v(folder: str | Path, seed: int = 0) -> Path:
    """Tiny SD2.x-768-v diffusers folder: linear projections, OpenCLIP-style tokenizer (pad "!"), DDIM v."""
    return _save_folder("sd2-v", folder, seed)


def make_tiny_sdxl(folder: str | Path, seed: int = 0) -> Path:
    """Tiny SDXL diffusers folder: two text encoders (CLIP + projection), text_time add-embedding, Euler."""
    return _save_folder("sdxl", folder, seed)


def make_tiny_inpaint(folder: str | Path, seed: int = 0, arch: str = "sd15-inpaint") -> Path:
    """Tiny inpainting diffusers folder (UNet in_channels=9): ``sd15-inpaint``, ``sd2-inpaint`` or ``sdxl-inpaint``."""
    return _save_folder(arch, folder, seed)


def make_tiny_refiner(folder: str | Path, seed: int = 0) -> Path:
    """Tiny SDXL refiner diffusers folder: text_encoder_2 + tokenizer_2 only, 5 time ids (aesthetic score)."""
    return _save_folder("sdxl-refiner", folder, seed)


def make_narrow_single_file(path: str | Path, arch: str = "sd15", seed: int = 0, *, with_config: bool = True,
                            dtype: torch.dtype | None = None) -> Path:
    """A narrow ``arch`` model with the real topology, saved as an original-layout ``.safetensors``.

    ``with_config=False`` leaves out the ``latentloom.config`` metadata, so the loader must infer every size.
    """
    overrides = NARROW_OVERRIDES[arch]
    unet, vae, encoders = build_models(arch, overrides, seed)
    scheduler = configs_with(arch, overrides)["scheduler"]
    return lc.save_single_file(path, unet, vae, encoders, arch, scheduler_config=scheduler,
                               with_config=with_config, dtype=dtype)


def make_narrow_sd15_single_file(path: str | Path, seed: int = 0, *, with_config: bool = True) -> Path:
    """Narrow SD1.5-topology single file (UNet (32,64,128,128) x 2 resnets, VAE 4x2, CLIP width 32 x 12)."""
    return make_narrow_single_file(path, "sd15", seed, with_config=with_config)


def make_tiny_single_file(path: str | Path, arch: str = "sd15", seed: int = 0, *, with_config: bool = True) -> Path:
    """The same weights as ``make_tiny_<arch>(folder, seed)``, written as an original-layout single file."""
    overrides = TINY_OVERRIDES[arch]
    unet, vae, encoders = build_models(arch, overrides, seed)
    scheduler = configs_with(arch, overrides)["scheduler"]
    return lc.save_single_file(path, unet, vae, encoders, arch, scheduler_config=scheduler, with_config=with_config)


def full_size_shapes(arch: str, *, with_text: bool = True) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a real full-size ``arch`` single file, built on the meta device (no memory, ~1 s)."""
    return dict(_full_size_shapes(arch, with_text))


@functools.lru_cache(maxsize=None)
def _full_size_shapes(arch: str, with_text: bool) -> dict[str, tuple[int, ...]]:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    configs = component_configs(arch)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        texts = []
        for name in TEXT_ENCODER_NAMES:
            if name in configs:
                cls = CLIPTextModelWithProjection if "Projection" in configs[name]["architectures"][0] else CLIPTextModel
                texts.append(cls(CLIPTextConfig.from_dict(configs[name])))
    state = lc.to_single_file_state_dict(unet, vae, texts, arch)
    if not with_text:
        state = {k: v for k, v in state.items() if k.startswith((lc.UNET_PREFIX, lc.VAE_PREFIX))}
    return {k: tuple(v.shape) for k, v in state.items()}
