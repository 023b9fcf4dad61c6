"""Model definitions and diffusers-folder export for loom-shapes.

Sizes (full): text encoder 3.3M params (97% of it the 49,408-token embedding table the real CLIP tokenizer
needs), VAE 0.95M (64x64 -> 16x16x4), UNet 8.75M, ControlNet ~4M. fp16 pipeline folder ~27.5 MB (< 30 MB).
The UNet has one resnet per level and cross-attention at every level: on a GPU a step's cost is mostly kernel
launches, so a shallow-and-wide UNet gets more optimizer steps per second than a deep-and-narrow one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data as D

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIP_TOKENIZER_DIR = REPO_ROOT / "nodes" / "sd" / "tokenizers" / "clip"
MODEL_MAX_LENGTH = 77
# "a red circle" with the SD1.x CLIP vocabulary; guards against a tokenizer built wrongly (transformers 5.x
# ignores `vocab_file=`/`merges_file=` keyword arguments and silently builds an empty vocabulary).
TOKENIZER_PROBE = ("a red circle", [49406, 320, 736, 7117, 49407])

PIPELINE_DIR = "loom-shapes"
CONTROLNET_DIR = "loom-shapes-canny"


@dataclass(frozen=True)
class ModelSizes:
    """Architecture knobs; `FULL` is the shipped model, `TINY` is for tests (seconds on a CPU)."""

    text_width: int
    text_layers: int
    text_heads: int
    vae_channels: tuple[int, ...]
    vae_groups: int
    unet_channels: tuple[int, ...]
    unet_layers: int
    unet_groups: int
    head_dim: int
    cond_channels: tuple[int, ...]  # ControlNet conditioning embedding; one entry per VAE level


FULL = ModelSizes(text_width=64, text_layers=3, text_heads=4, vae_channels=(32, 64, 64), vae_groups=16,
                  unet_channels=(64, 128, 160), unet_layers=1, unet_groups=32, head_dim=32,
                  cond_channels=(16, 32, 64))
TINY = ModelSizes(text_width=32, text_layers=1, text_heads=2, vae_channels=(8, 16, 16), vae_groups=4,
                  unet_channels=(16, 32), unet_layers=1, unet_groups=8, head_dim=16, cond_channels=(8, 8, 16))


def latent_size(sizes: ModelSizes) -> int:
    return D.IMAGE_SIZE // 2 ** (len(sizes.vae_channels) - 1)


def build_vae(sizes: ModelSizes):
    from diffusers import AutoencoderKL

    n = len(sizes.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=sizes.vae_channels,
                         layers_per_block=1, latent_channels=4, norm_num_groups=sizes.vae_groups,
                         sample_size=D.IMAGE_SIZE, scaling_factor=1.0)


def build_text_encoder(sizes: ModelSizes):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=sizes.text_width, intermediate_size=4 * sizes.text_width,
                         num_hidden_layers=sizes.text_layers, num_attention_heads=sizes.text_heads,
                         max_position_embeddings=MODEL_MAX_LENGTH, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=sizes.text_width)
    return CLIPTextModel(cfg)


def build_unet(sizes: ModelSizes):
    from diffusers import UNet2DConditionModel

    n = len(sizes.unet_channels)
    return UNet2DConditionModel(
        sample_size=latent_size(sizes), in_channels=4, out_channels=4, block_out_channels=sizes.unet_channels,
        layers_per_block=sizes.unet_layers, down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n, cross_attention_dim=sizes.text_width,
        # diffusers' legacy naming: `attention_head_dim` is the number of heads per block.
        attention_head_dim=tuple(max(1, c // sizes.head_dim) for c in sizes.unet_channels),
        norm_num_groups=sizes.unet_groups)


def build_controlnet(unet, sizes: ModelSizes):
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=sizes.cond_channels)


def noise_scheduler_kwargs() -> dict[str, object]:
    """Training noise schedule: SD's scaled-linear betas rescaled to zero terminal SNR, v-prediction.

    Zero terminal SNR makes the first sampling step see pure noise, as in training, so the prompt (not
    leftover low-frequency signal) decides colours and layout; v-prediction keeps that step learnable.
    """
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="v_prediction", rescale_betas_zero_snr=True, clip_sample=False)


def build_train_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**noise_scheduler_kwargs())


def build_sampler():
    """The shipped sampler: DDIM with trailing spacing (the sampler that starts at t=999 with zero SNR)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**noise_scheduler_kwargs(), timestep_spacing="trailing", set_alpha_to_one=True,
                         steps_offset=1)  # unused by trailing spacing; 1 keeps the SD pipeline from warning


def write_tokenizer(folder: Path) -> None:
    """Our CLIP vocabulary files plus a config pinning model_max_length=77 (no tokenizer.json: 2 MB saved)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(CLIP_TOKENIZER_DIR / name, folder / name)
    cfg = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MODEL_MAX_LENGTH,
           "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
           "unk_token": "<|endoftext|>", "do_lower_case": True, "clean_up_tokenization_spaces": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}, indent=2) + "\n")


def load_tokenizer(folder: Path | None = None):
    """CLIPTokenizer from a folder holding vocab.json + merges.txt; checked against a known encoding."""
    from transformers import CLIPTokenizer

    folder = Path(folder) if folder is not None else CLIP_TOKENIZER_DIR
    vocab, merges = str(folder / "vocab.json"), str(folder / "merges.txt")
    builders = (  # transformers versions differ in which of these builds the real vocabulary
        lambda: CLIPTokenizer.from_pretrained(str(folder), model_max_length=MODEL_MAX_LENGTH, local_files_only=True),
        lambda: CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MODEL_MAX_LENGTH),
        lambda: CLIPTokenizer(vocab_file=vocab, merges_file=merges, model_max_length=MODEL_MAX_LENGTH),
    )
    text, ids = TOKENIZER_PROBE
    seen = []
    for build in builders:
        try:
            tok = build()
            got = tok(text).input_ids
        except Exception as e:  # noqa: BLE001 - try the next constructor
            seen.append(repr(e))
            continue
        if got == ids:
            return tok
        seen.append(str(got))
    raise RuntimeError(f"no CLIPTokenizer from {folder} encodes {text!r} as {ids}: {seen}")


def caption_token_table(tokenizer) -> torch.Tensor:
    """(N_CAPTIONS + 1, 77) token ids for `data.all_captions()`, tokenized exactly as the SD pipeline does."""
    caps = D.all_captions()
    ids = tokenizer(caps, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True,
                    return_tensors="pt").input_ids
    return ids


def save_pipeline(folder: Path, vae, text_encoder, unet, tokenizer_dir: Path | None = None) -> None:
    """Write a StableDiffusionPipeline folder (fp16 safetensors, no safety checker) loadable offline."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = load_tokenizer(tokenizer_dir)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet,
                                   scheduler=build_sampler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    shutil.rmtree(tmp / "tokenizer", ignore_errors=True)
    write_tokenizer(tmp / "tokenizer")
    # transformers 5 loads a model in the dtype its config names, diffusers in fp32: a plain
    # `StableDiffusionPipeline.from_pretrained(folder)` would then mix an fp16 text encoder with an fp32 UNet
    # and fail. Weights stay fp16 on disk; the config asks for fp32 unless the caller passes a dtype.
    te_cfg = tmp / "text_encoder" / "config.json"
    cfg = json.loads(te_cfg.read_text())
    cfg["dtype"] = "float32"
    te_cfg.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    _replace_dir(tmp, folder)


def save_model(folder: Path, model) -> None:
    """save_pretrained through a temporary folder, so a crash never leaves a half-written model behind."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    _replace_dir(tmp, folder)


def _replace_dir(tmp: Path, folder: Path) -> None:
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def fp16_copy(model):
    """A half-precision CPU deep copy for export (the training model stays fp32 on its device)."""
    import copy

    return copy.deepcopy(model).to(device="cpu", dtype=torch.float16)
