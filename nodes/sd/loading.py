"""Offline loading of Stable Diffusion checkpoints: diffusers folders and original single files.

Why this module exists: diffusers ships no configs, and ``from_single_file`` without a local ``config=`` goes to
the network. We ship configs-only folders (``configs/<arch>/``) and the CLIP BPE vocabulary
(``tokenizers/clip/``), detect the architecture from the checkpoint's keys and shapes, and infer the sizes of
narrow (test / embedded) models from the shapes, so nothing is ever downloaded.

Architectures: ``sd15``, ``sd15-inpaint`` (9 UNet input channels), ``sd2`` (512, epsilon), ``sd2-v`` (768,
v-prediction), ``sd2-inpaint`` (512, epsilon, 9 channels), ``sdxl`` (base), ``sdxl-inpaint`` (9 channels) and
``sdxl-refiner`` (OpenCLIP-G only, as ``text_encoder_2``; its UNet takes an aesthetic score instead of the target
size in its time ids). Anything else - other input channel counts (depth, instruct-pix2pix), other conditioners -
raises ``UnknownArchitectureError`` naming the key prefixes and UNet facts that were found.

Prediction type (epsilon vs v) cannot be read from weights. It is decided, first match wins, by:
  1. the ``prediction_type`` argument;
  2. file metadata: our ``latentloom.config`` (scheduler, arch), ``modelspec.prediction_type`` /
     ``modelspec.architecture`` (SAI model spec), kohya's ``ss_v_parameterization``;
  3. an A1111-style sidecar ``<name>.yaml`` with ``parameterization: "v"``;
  4. SD2 (4 channels) only: the file name (``768`` -> v; ``512`` or ``base`` -> epsilon);
  5. the default: SD2 -> v-prediction (the 768 models, SD 2.0/2.1, are v and the common ones), others (SD2
     inpainting included, which is the 512 epsilon model) -> the shipped scheduler config (epsilon).
For diffusers folders the folder's scheduler config answers step 2.

Sizes that the weights do not tell (attention heads, ``sample_size``, VAE ``scaling_factor``, scheduler) come
from the shipped config, from ``latentloom.config`` metadata if the file has it (``ldm_convert.save_single_file``
writes it), else from a guess (heads: head width 64 when possible).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach the network, whatever a library decides to do

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from . import ldm_convert as lc  # noqa: E402

__all__ = [
    "ARCHS", "CheckpointError", "ModelNotFoundError", "UnknownArchitectureError", "LoadedCheckpoint",
    "config_dir", "component_configs", "write_config_folder", "make_tokenizer", "read_state_dict",
    "read_keys_and_shapes", "detect_architecture", "infer_config_overrides", "load_checkpoint", "load_vae",
    "clear_cache",
]


class _DropEmptyFp32Warning(logging.Filter):
    """diffusers' ``from_single_file(torch_dtype=...)`` warns about an *empty* list of fp32 modules: noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


logging.getLogger("diffusers.models.modeling_utils").addFilter(_DropEmptyFp32Warning())

HERE = Path(__file__).resolve().parent
CONFIG_ROOT = HERE / "configs"
TOKENIZER_DIR = HERE / "tokenizers" / "clip"
ARCHS: tuple[str, ...] = lc.ARCHS
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
TEXT_ENCODER_NAMES = ("text_encoder", "text_encoder_2")
TOKENIZER_NAMES = ("tokenizer", "tokenizer_2")
# pipeline options read from model_index.json and passed on by ``LoadedCheckpoint.pipeline`` where accepted
_PIPELINE_OPTIONS = ("requires_aesthetics_score", "force_zeros_for_empty_prompt")
_PAD_TOKEN = {"clip": "<|endoftext|>", "openclip": "!"}  # OpenCLIP pads with "!" (id 0)
_SUPPORTED_PIPELINES = {
    "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline",
    "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline",
}


# ------------------------------------------------------------------------------------------------ errors

class CheckpointError(Exception):
    """A checkpoint could not be loaded; the message says what was found."""


class ModelNotFoundError(CheckpointError, FileNotFoundError):
    """A model file or folder (or a part of one) is missing; the message lists what the folder holds."""


class UnknownArchitectureError(CheckpointError, ValueError):
    """The weights are not one of ``ARCHS``; the message names the prefixes and sizes that were found."""


def _listing(folder: Path, limit: int = 40) -> str:
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError:
        return "(unreadable)"
    if not entries:
        return "(empty)"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _not_found(path: Path, what: str = "model") -> ModelNotFoundError:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return ModelNotFoundError(f"{what} not found: {path}; {folder} holds: {_listing(folder)}")


# ------------------------------------------------------------------------------------------------ result

@dataclass(eq=False)
class LoadedCheckpoint:
    """Everything a pipeline needs, loaded once and shared (treat the modules as read-only)."""

    arch: str
    unet: nn.Module
    vae: nn.Module
    text_encoders: tuple[nn.Module, ...]
    tokenizers: tuple[Any, ...]
    scheduler_config: dict[str, Any]
    prediction_type: str
    source: Path
    pipeline_class: str = "StableDiffusionPipeline"
    notes: list[str] = field(default_factory=list)  # how undecidable things were decided
    pipeline_options: dict[str, Any] = field(default_factory=dict)  # e.g. the refiner's requires_aesthetics_score

    @property
    def text_encoder_names(self) -> tuple[str, ...]:
        """Diffusers component names of ``text_encoders`` (the SDXL refiner's one encoder is ``text_encoder_2``)."""
        return lc.text_encoder_names(self.arch)

    def make_scheduler(self) -> Any:
        """A fresh scheduler from ``scheduler_config`` (schedulers hold state, so never share one)."""
        import diffusers

        cfg = dict(self.scheduler_config)
        return getattr(diffusers, cfg.pop("_class_name", "PNDMScheduler")).from_config(cfg)

    def pipeline(self, scheduler: Any = None) -> Any:
        """A diffusers pipeline over the shared modules (handy for tests and reference runs)."""
        import inspect

        import diffusers

        cls = getattr(diffusers, self.pipeline_class)
        parts: dict[str, Any] = {"unet": self.unet, "vae": self.vae, "scheduler": scheduler or self.make_scheduler()}
        if "XL" in self.pipeline_class:  # absent encoders (the refiner's text_encoder) are passed as None
            parts.update({name: None for name in (*TEXT_ENCODER_NAMES, *TOKENIZER_NAMES)})
        for name, module, tok in zip(self.text_encoder_names, self.text_encoders, self.tokenizers):
            parts[name] = module
            parts[name.replace("text_encoder", "tokenizer")] = tok
        if "XL" not in self.pipeline_class:
            parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        accepted = inspect.signature(cls.__init__).parameters
        parts.update({k: v for k, v in self.pipeline_options.items() if k in accepted})
        return cls(**parts)


# ----------------------------------------------------------------------------------------------- configs

def config_dir(arch: str) -> Path:
    """The shipped configs-only diffusers folder for ``arch`` (usable as ``from_single_file(config=...)``)."""
    if arch not in ARCHS:
        raise UnknownArchitectureError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    return CONFIG_ROOT / arch


def component_configs(arch: str) -> dict[str, dict[str, Any]]:
    """Fresh copies of the shipped configs: ``model_index``, ``unet``, ``vae``, ``text_encoder[_2]``, ``scheduler``."""
    root = config_dir(arch)
    out = {"model_index": json.loads((root / "model_index.json").read_text())}
    for sub in ("unet", "vae", *TEXT_ENCODER_NAMES):
        if (root / sub / "config.json").is_file():
            out[sub] = json.loads((root / sub / "config.json").read_text())
    out["scheduler"] = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    return out


def write_config_folder(arch: str, dest: str | Path, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write ``arch``'s configs with per-component ``overrides`` to ``dest`` (narrow models, tests)."""
    dest = Path(dest)
    configs = component_configs(arch)
    for comp, extra in (overrides or {}).items():
        configs[comp].update(extra)
    for comp, cfg in configs.items():
        target = {"model_index": dest / "model_index.json", "scheduler": dest / "scheduler" / "scheduler_config.json"}
        path = target.get(comp, dest / comp / "config.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cfg, indent=2) + "\n")
    return dest


def make_tokenizer(kind: str = "clip", model_max_length: int = 77) -> Any:
    """A CLIP BPE tokenizer from the shipped vocabulary; ``kind="openclip"`` pads with ``!`` like SD2/SDXL-G."""
    from transformers import CLIPTokenizer

    if kind not in _PAD_TOKEN:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    return CLIPTokenizer(
        str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt"),
        model_max_length=model_max_length, pad_token=_PAD_TOKEN[kind],
    )


# ------------------------------------------------------------------------------------------ reading files

Shapes = Mapping[str, Sequence[int]]


def _unwrap(obj: Any) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a state dict, found {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def _check_file(path: Path) -> None:
    if not path.exists():
        raise _not_found(path, "checkpoint")
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise CheckpointError(f"{path}: not a checkpoint file (expected {', '.join(SINGLE_FILE_SUFFIXES)})")


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a single file; pickles only through ``torch.load(weights_only=True)``."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(path)), metadata
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)  # old (non-zip) pickles cannot mmap
    return _unwrap(obj), {}


def read_keys_and_shapes(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Key -> shape and metadata without reading tensors (for safetensors; pickles are read whole)."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            return shapes, dict(f.metadata() or {})
    state, meta = read_state_dict(path)
    return {k: tuple(v.shape) for k, v in state.items()}, meta


def _as_shapes(keys_and_shapes: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in keys_and_shapes.items()}


# ------------------------------------------------------------------------------------------- detection

def _prefix(key: str) -> str:
    parts = key.split(".")
    n = 3 if parts[0] == "conditioner" else 2 if parts[0] in ("model", "cond_stage_model") else 1
    return ".".join(parts[:n])


def _prefix_summary(shapes: Shapes, limit: int = 8) -> str:
    counts: dict[str, int] = {}
    for k in shapes:
        counts[_prefix(k)] = counts.get(_prefix(k), 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{p} ({n})" for p, n in top[:limit])
    return text + (f", ... ({len(top) - limit} more)" if len(top) > limit else "") if top else "(no tensors)"


def _sub(shapes: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}


def _distinct(keys: Any, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def _unet_facts(shapes: Shapes) -> dict[str, Any]:
    """What the UNet weights say, for detection and for error messages."""
    u = _sub(shapes, lc.UNET_PREFIX)
    facts: dict[str, Any] = {}
    if "input_blocks.0.0.weight" in u:
        facts["in_channels"] = u["input_blocks.0.0.weight"][1]
    ctx = next((v[1] for k, v in sorted(u.items()) if k.endswith("attn2.to_k.weight")), None)
    if ctx is not None:
        facts["context_dim"] = ctx
    proj = next((v for k, v in sorted(u.items()) if k.endswith("proj_in.weight")), None)
    if proj is not None:
        facts["linear_proj"] = len(proj) == 2
    facts["adm"] = "label_emb.0.0.weight" in u
    return facts


def _text_kind(shapes: Shapes) -> str | None:
    keys = list(shapes)
    if any(k.startswith("conditioner.embedders.") for k in keys):
        has0 = any(k.startswith(lc.SDXL_CLIP_PREFIX) for k in keys)
        has1 = any(k.startswith(lc.SDXL_OPENCLIP_PREFIX) for k in keys)
        refiner = any(k.startswith(lc.SDXL_REFINER_OPENCLIP_PREFIX) for k in keys)
        if has0 and has1 and not refiner:
            return "sdxl"
        if refiner and not has0 and not has1:
            return "sdxl-refiner"
        return "sdxl-other"
    if any(k.startswith(lc.SD2_OPENCLIP_PREFIX) for k in keys):
        return "openclip"
    if any(k.startswith(lc.SD_CLIP_PREFIX) for k in keys):
        return "clip"
    return None


def _metadata_config(metadata: Mapping[str, str] | None) -> dict[str, Any]:
    raw = (metadata or {}).get(lc.CONFIG_METADATA_KEY)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _normalise_prediction(value: Any) -> str | None:
    text = str(value).strip().lower() if value is not None else ""
    return {"v": "v_prediction", "v_prediction": "v_prediction", "v-prediction": "v_prediction",
            "epsilon": "epsilon", "eps": "epsilon", "sample": "sample", "true": "v_prediction",
            "false": "epsilon"}.get(text)


def _prediction_hint(metadata: Mapping[str, str] | None, source: str | Path | None) -> tuple[str | None, str]:
    """Prediction type from metadata or a sidecar yaml; (None, "") when nothing says."""
    meta = metadata or {}
    ours = _metadata_config(meta)
    sched = ours.get("scheduler") if isinstance(ours.get("scheduler"), dict) else {}
    if (p := _normalise_prediction(sched.get("prediction_type"))) is not None:
        return p, f"{lc.CONFIG_METADATA_KEY} metadata"
    if ours.get("arch") in ("sd2", "sd2-v"):
        return ("v_prediction" if ours["arch"] == "sd2-v" else "epsilon"), f"{lc.CONFIG_METADATA_KEY} metadata"
    if (p := _normalise_prediction(meta.get("modelspec.prediction_type"))) is not None:
        return p, "modelspec.prediction_type metadata"
    spec_arch = meta.get("modelspec.architecture", "")
    if spec_arch.endswith("-v") or "-v/" in spec_arch:
        return "v_prediction", "modelspec.architecture metadata"
    if "ss_v_parameterization" in meta:
        return _normalise_prediction(meta["ss_v_parameterization"]) or "epsilon", "ss_v_parameterization metadata"
    if source is not None:
        yaml = Path(source).with_suffix(".yaml")
        if yaml.is_file():
            text = yaml.read_text(errors="replace")
            if re.search(r"parameterization:\s*[\"']?v[\"']?\s*$", text, re.M):
                return "v_prediction", f"sidecar {yaml.name}"
            return "epsilon", f"sidecar {yaml.name}"
    return None, ""


def _sd2_prediction(source: str | Path | None) -> tuple[str, str]:
    name = Path(source).name.lower() if source is not None else ""
    if re.search(r"(?<!\d)768(?!\d)", name):
        return "v_prediction", "file name says 768"
    if re.search(r"(?<!\d)512(?!\d)|base", name):
        return "epsilon", "file name says 512/base"
    return "v_prediction", "SD2 default (768 v-prediction)"


_INPAINT_ARCH = {"sd15": "sd15-inpaint", "sd2": "sd2-inpaint", "sdxl": "sdxl-inpaint"}  # 9-channel UNets


def _family(shapes: Shapes) -> str:
    facts = _unet_facts(shapes)
    text = _text_kind(shapes)
    in_ch, ctx, linear = facts.get("in_channels"), facts.get("context_dim"), facts.get("linear_proj")

    def unknown(why: str) -> UnknownArchitectureError:
        found = ", ".join(f"{k}={v}" for k, v in facts.items() if k != "adm" or v)
        return UnknownArchitectureError(
            f"not a supported Stable Diffusion checkpoint ({why}); key prefixes: {_prefix_summary(shapes)}; "
            f"UNet: {found or 'none'}; text encoder layout: {text or 'none'}; supported: {', '.join(ARCHS)}"
        )

    if in_ch is None:
        hint = ""
        if any(k.startswith(("encoder.", "decoder.")) for k in shapes):
            hint = " - this looks like a standalone VAE, use load_vae()"
        elif any(k.startswith(("down_blocks.", "conv_in.")) for k in shapes):
            hint = " - this looks like a diffusers component file, not a whole checkpoint"
        raise unknown("no UNet under model.diffusion_model." + hint)
    if text == "sdxl-other":
        embedders = sorted({".".join(k.split(".")[:4]) for k in shapes if k.startswith("conditioner.embedders.")})
        raise unknown(f"conditioner.embedders holds {', '.join(embedders)}: neither CLIP-L + OpenCLIP-G "
                      f"(embedders.0.transformer + embedders.1.model, SDXL) nor OpenCLIP-G alone "
                      f"(embedders.0.model, SDXL refiner)")
    if text == "sdxl-refiner" or (text is None and facts["adm"] and ctx == 1280):
        family = "sdxl-refiner"
    elif text == "sdxl" or (text is None and facts["adm"] and ctx == 2048):
        family = "sdxl"
    elif facts["adm"]:
        raise unknown("UNet has a class/label embedding (label_emb) that no supported model uses")
    elif text == "openclip" or (text is None and (linear or ctx == 1024)):
        family = "sd2"
    elif text == "clip" or text is None:
        family = "sd15"
    else:  # pragma: no cover - all text kinds handled above
        raise unknown("unrecognised text encoder")
    if in_ch == 4:
        return family
    if in_ch == 9 and family in _INPAINT_ARCH:
        return _INPAINT_ARCH[family]
    raise unknown(f"UNet has {in_ch} input channels on the {family} architecture; supported: 4, and 9 "
                  f"(inpainting) for {', '.join(_INPAINT_ARCH)}")


def detect_architecture(
    keys_and_shapes: Mapping[str, Any],
    *,
    prediction_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
    source: str | Path | None = None,
) -> str:
    """One of ``ARCHS`` (``sd15``, ``sd2-v``, ``sdxl-refiner``...) from a single file's keys and shapes.

    ``keys_and_shapes`` maps key -> shape (or tensor). SD2 epsilon vs v follows the order in the module docstring;
    ``source`` (the file path) enables the file-name and sidecar-yaml hints.
    """
    shapes = _as_shapes(keys_and_shapes)
    family = _family(shapes)
    if family != "sd2":
        return family
    return "sd2-v" if _resolve_prediction("sd2", prediction_type, metadata, source)[0] == "v_prediction" else "sd2"


def _resolve_prediction(family: str, explicit: str | None, metadata: Mapping[str, str] | None,
                        source: str | Path | None, default: str = "epsilon") -> tuple[str, str]:
    if explicit is not None:
        p = _normalise_prediction(explicit)
        if p is None:
            raise ValueError(f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {explicit!r}")
        return p, "prediction_type argument"
    hint, why = _prediction_hint(metadata, source)
    if hint is not None:
        return hint, why
    if family == "sd2":
        return _sd2_prediction(source)
    return default, "shipped scheduler config"


# ------------------------------------------------------------------------------------- size inference

def _guess_heads(width: int, default: int | None = None) -> int:
    """Heads cannot be read from weights: head width 64 when it fits, else the default, else >= 8 per head."""
    if width % 64 == 0:
        return width // 64
    if default and width % default == 0:
        return default
    return max((h for h in range(1, width + 1) if width % h == 0 and width // h >= 8), default=1)


def _guess_unet_heads(channels: Sequence[int], default: Any) -> Any:
    if isinstance(default, int) and all(c % default == 0 for c in channels):
        return default
    if isinstance(default, (list, tuple)) and len(default) == len(channels) and all(
        c % h == 0 for c, h in zip(channels, default)
    ):
        return list(default)
    return [_guess_heads(c) for c in channels]


def _transformer_depth(u: Shapes, layers: list[int], down: list[str], base: Mapping[str, Any]) -> int | list[int]:
    """``transformer_layers_per_block`` from the per-level depths (1 where a level has no attention).

    diffusers gives the mid block the *last* entry's depth, so a last level without attention (the SDXL
    refiner's, 4 deep in the middle) must carry the mid block's depth. The shipped value wins when it builds the
    same model (the refiner ships ``4``), else: per level, 1 where no attention, one int when all are equal.
    """
    mid = _distinct(u, r"^middle_block\.1\.transformer_blocks\.(\d+)\.")
    attn = [i for i, kind in enumerate(down) if kind.startswith("CrossAttn")]
    shipped = base.get("transformer_layers_per_block", 1)
    expanded = [shipped] * len(down) if isinstance(shipped, int) else list(shipped)
    if len(expanded) == len(down) and all(expanded[i] == layers[i] for i in attn) and (not mid or expanded[-1] == mid):
        return shipped
    depth = list(layers)
    if mid and not down[-1].startswith("CrossAttn"):
        depth[-1] = mid
    return depth[0] if len(set(depth)) == 1 else depth


def _infer_unet(shapes: Shapes, base: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    u = _sub(shapes, lc.UNET_PREFIX)
    if "input_blocks.0.0.weight" not in u:
        return {}, {}
    facts: dict[str, Any] = {"in_channels": u["input_blocks.0.0.weight"][1]}
    if "out.2.weight" in u:
        facts["out_channels"] = u["out.2.weight"][0]
    blocks = {int(k.split(".")[1]) for k in u if k.startswith("input_blocks.")}
    ops = sorted(i for i in blocks if f"input_blocks.{i}.0.op.weight" in u)
    per_level = ops[0] - 1 if ops else max(blocks)
    stride = per_level + 1
    channels, down, up, layers = [], [], [], []
    for lvl in range(len(ops) + 1):
        first = 1 + lvl * stride
        channels.append(u[f"input_blocks.{first}.0.out_layers.3.weight"][0])
        n = _distinct(u, rf"^input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\.")
        down.append("CrossAttnDownBlock2D" if n else "DownBlock2D")
        layers.append(max(n, 1))
        n_up = _distinct(u, rf"^output_blocks\.{lvl * stride}\.1\.transformer_blocks\.(\d+)\.")
        up.append("CrossAttnUpBlock2D" if n_up else "UpBlock2D")
    facts.update(block_out_channels=channels, layers_per_block=per_level, down_block_types=down,
                 up_block_types=up, transformer_layers_per_block=_transformer_depth(u, layers, down, base))
    unet = _unet_facts(shapes)
    if "context_dim" in unet:
        facts["cross_attention_dim"] = unet["context_dim"]
    if "linear_proj" in unet:
        facts["use_linear_projection"] = unet["linear_proj"]
    if "label_emb.0.0.weight" in u:
        facts["projection_class_embeddings_input_dim"] = u["label_emb.0.0.weight"][1]
    guesses = {"attention_head_dim": _guess_unet_heads(channels, base.get("attention_head_dim"))}
    return facts, guesses


def _infer_vae(shapes: Shapes, prefix: str) -> dict[str, Any]:
    v = _sub(shapes, prefix)
    if "encoder.conv_in.weight" not in v:
        return {}
    ldm = any(k.startswith("encoder.down.") for k in v)
    pattern = r"^encoder\.down\.(\d+)\." if ldm else r"^encoder\.down_blocks\.(\d+)\."
    levels = _distinct(v, pattern)
    if ldm:
        per_level = _distinct(v, r"^encoder\.down\.0\.block\.(\d+)\.")
        channels = [v[f"encoder.down.{i}.block.0.conv2.weight"][0] for i in range(levels)]
        attn = "encoder.mid.attn_1.q.weight" in v
    else:
        per_level = _distinct(v, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\.")
        channels = [v[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"][0] for i in range(levels)]
        attn = "encoder.mid_block.attentions.0.to_q.weight" in v
    return {
        "block_out_channels": channels, "layers_per_block": per_level,
        "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
        "in_channels": v["encoder.conv_in.weight"][1], "out_channels": v["decoder.conv_out.weight"][0],
        "latent_channels": v["encoder.conv_out.weight"][0] // 2,
        "use_quant_conv": "quant_conv.weight" in v, "use_post_quant_conv": "post_quant_conv.weight" in v,
        "mid_block_add_attention": attn,
    }


def _infer_text(shapes: Shapes, kind: str, prefix: str, drop_last: bool, base: Mapping[str, Any]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    t = _sub(shapes, prefix)
    if kind == "clip":
        t = {k.removeprefix("text_model."): s for k, s in t.items()}
        tok, pos = t.get("embeddings.token_embedding.weight"), t.get("embeddings.position_embedding.weight")
        n_layers = _distinct(t, r"^encoder\.layers\.(\d+)\.")
        fc1 = t.get("encoder.layers.0.mlp.fc1.weight")
    else:
        tok, pos = t.get("token_embedding.weight"), t.get("positional_embedding")
        n_layers = _distinct(t, r"^transformer\.resblocks\.(\d+)\.")
        fc1 = t.get("transformer.resblocks.0.mlp.c_fc.weight")
    if tok is None or pos is None or fc1 is None or n_layers == 0:
        return {}, {}
    facts = {"vocab_size": tok[0], "hidden_size": tok[1], "max_position_embeddings": pos[0],
             "intermediate_size": fc1[0], "num_hidden_layers": max(n_layers - 1, 1) if drop_last else n_layers}
    if kind == "openclip" and "text_projection" in t and "WithProjection" in str(base.get("architectures")):
        facts["projection_dim"] = t["text_projection"][1]
    return facts, {"num_attention_heads": _guess_heads(tok[1], base.get("num_attention_heads"))}


def _infer(shapes: Shapes, arch: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    base = component_configs(arch)
    facts: dict[str, dict[str, Any]] = {}
    guesses: dict[str, dict[str, Any]] = {}
    facts["unet"], guesses["unet"] = _infer_unet(shapes, base["unet"])
    facts["vae"] = _infer_vae(shapes, lc.VAE_PREFIX)
    for name, (kind, prefix) in zip(lc.text_encoder_names(arch), lc.TEXT_ENCODER_LAYOUT[arch]):
        drop_last = kind == "openclip" and lc.is_sd2(arch)
        facts[name], guesses[name] = _infer_text(shapes, kind, prefix, drop_last, base[name])
    # SDXL: the add-embedding input is n time ids x addition_time_embed_dim + the pooled text width, with 6 ids
    # (original size, crop, target size) for the base and inpainting models, 5 (aesthetic score for the target
    # size) for the refiner
    pooled = facts.get("text_encoder_2", {}).get("projection_dim")
    add_in = facts["unet"].get("projection_class_embeddings_input_dim")
    n_ids = {"sdxl": 6, "sdxl-inpaint": 6, "sdxl-refiner": 5}.get(arch)
    if n_ids and pooled and add_in and (add_in - pooled) > 0 and (add_in - pooled) % n_ids == 0:
        facts["unet"]["addition_time_embed_dim"] = (add_in - pooled) // n_ids
    return facts, guesses


def infer_config_overrides(keys_and_shapes: Mapping[str, Any], arch: str) -> dict[str, dict[str, Any]]:
    """Per-component config values read (or, for heads, guessed) from the shapes of a single file."""
    facts, guesses = _infer(_as_shapes(keys_and_shapes), arch)
    return {c: {**guesses.get(c, {}), **facts.get(c, {})} for c in facts}


def _resolved_configs(shapes: Shapes, arch: str, metadata: Mapping[str, str] | None) -> dict[str, dict[str, Any]]:
    """shipped config <- guesses <- file metadata <- facts from the shapes (facts always win)."""
    configs = component_configs(arch)
    facts, guesses = _infer(shapes, arch)
    meta = _metadata_config(metadata)
    for comp, cfg in configs.items():
        if comp == "model_index":
            continue
        cfg.update(guesses.get(comp, {}))
        cfg.update({k: v for k, v in meta.get(comp, {}).items() if not k.startswith("_")} if isinstance(
            meta.get(comp), dict) else {})
        cfg.update(facts.get(comp, {}))
    return configs


# ----------------------------------------------------------------------------------------------- models

def _model_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _build_text_encoder(cfg: Mapping[str, Any], state: Mapping[str, Tensor], kind: str, prefix: str,
                        dtype: torch.dtype, source: Path) -> nn.Module:
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights

    config = CLIPTextConfig.from_dict(dict(cfg))
    cls = CLIPTextModelWithProjection if "WithProjection" in str(cfg.get("architectures")) else CLIPTextModel
    with init_empty_weights(), no_init_weights():  # random init of meta tensors is slow and pointless
        model = cls(config)
    flat = lc.text_encoder_from_ldm(state, kind, prefix, num_layers=config.num_hidden_layers)
    expected = model.state_dict()
    wrapped = hasattr(model, "text_model")
    converted = {(f"text_model.{k}" if wrapped and k != "text_projection.weight" else k): v for k, v in flat.items()}
    converted = {k: v for k, v in converted.items() if k in expected}  # e.g. SD2's unused projection
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise CheckpointError(
            f"{source}: text encoder weights under {prefix!r} are incomplete; missing {len(missing)} of "
            f"{len(expected)}, e.g. {', '.join(missing[:5])}"
        )
    bad = [k for k, v in converted.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{source}: text encoder {k} has shape {tuple(converted[k].shape)}, "
                              f"config expects {tuple(expected[k].shape)}")
    model.load_state_dict(converted, strict=True, assign=True)
    return model.to(dtype).eval()


def _tokenizers_for(arch: str, text_encoders: Sequence[nn.Module]) -> tuple[Any, ...]:
    return tuple(
        make_tokenizer(kind, int(te.config.max_position_embeddings))
        for (kind, _), te in zip(lc.TEXT_ENCODER_LAYOUT[arch], text_encoders)
    )


def _load_single_file(path: Path, dtype: torch.dtype, device: str | torch.device,
                      prediction_type: str | None) -> LoadedCheckpoint:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    state, metadata = read_state_dict(path)
    shapes = _as_shapes(state)
    arch = detect_architecture(shapes, prediction_type=prediction_type, metadata=metadata, source=path)
    configs = _resolved_configs(shapes, arch, metadata)
    family = "sd2" if arch in ("sd2", "sd2-v") else arch  # SD2 inpainting is the 512 epsilon model
    pred, why = _resolve_prediction(family, prediction_type, metadata, path,
                                    default=configs["scheduler"].get("prediction_type", "epsilon"))
    configs["scheduler"]["prediction_type"] = pred
    missing = [what for what, prefix in (("UNet", lc.UNET_PREFIX), ("VAE", lc.VAE_PREFIX))
               if not any(k.startswith(prefix) for k in state)]
    missing += [f"text encoder ({prefix}*)" for _, prefix in lc.TEXT_ENCODER_LAYOUT[arch]
                if not any(k.startswith(prefix) for k in state)]
    if missing:
        raise CheckpointError(f"{path}: {arch} checkpoint without {', '.join(missing)}; key prefixes: "
                              f"{_prefix_summary(shapes)}")
    folder = str(config_dir(arch))
    common = {"config": folder, "local_files_only": True, "torch_dtype": dtype}
    unet = UNet2DConditionModel.from_single_file(state, subfolder="unet", **common, **_model_kwargs(configs["unet"]))
    vae = AutoencoderKL.from_single_file(state, subfolder="vae", **common, **_model_kwargs(configs["vae"]))
    encoders = tuple(
        _build_text_encoder(configs[name], state, kind, prefix, dtype, path)
        for name, (kind, prefix) in zip(lc.text_encoder_names(arch), lc.TEXT_ENCODER_LAYOUT[arch])
    )
    del state
    return LoadedCheckpoint(
        arch=arch, unet=unet.to(device).eval(), vae=vae.to(device).eval(),
        text_encoders=tuple(te.to(device) for te in encoders), tokenizers=_tokenizers_for(arch, encoders),
        scheduler_config=configs["scheduler"], prediction_type=pred, source=path,
        pipeline_class=configs["model_index"]["_class_name"], notes=[f"prediction type: {pred} ({why})"],
        pipeline_options=_pipeline_options(configs["model_index"]),
    )


def _pipeline_options(index: Mapping[str, Any]) -> dict[str, Any]:
    return {k: index[k] for k in _PIPELINE_OPTIONS if k in index}


def _variant(folder: Path, stem: str) -> str | None:
    """``fp16`` when a component folder only has ``<stem>.fp16.*`` weights."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if any(n in names for n in (f"{stem}.safetensors", f"{stem}.bin")):
        return None
    return next((n.split(".")[-2] for n in sorted(names) if n.startswith(stem + ".") and n.count(".") == 2), None)


def _require_component(folder: Path, name: str, config: str = "config.json") -> Path:
    sub = folder / name
    if not (sub / config).is_file():
        raise ModelNotFoundError(f"diffusers folder {folder} has no {name}/{config}; it holds: {_listing(folder)}"
                                 + (f"; {name}/ holds: {_listing(sub)}" if sub.is_dir() else ""))
    if config == "config.json" and not any(p.suffix in (".safetensors", ".bin") for p in sub.iterdir()):
        raise ModelNotFoundError(f"diffusers folder {folder}: {name}/ has a config but no weights; "
                                 f"{name}/ holds: {_listing(sub)}")
    return sub


def _folder_arch(index: Mapping[str, Any], unet_cfg: Mapping[str, Any], prediction: str, folder: Path) -> str:
    cls = str(index.get("_class_name"))
    if cls not in _SUPPORTED_PIPELINES:
        raise UnknownArchitectureError(f"{folder}: pipeline class {cls} is not supported; "
                                       f"supported: {', '.join(sorted(_SUPPORTED_PIPELINES))}")
    in_ch = unet_cfg.get("in_channels", 4)
    has_text_encoder = (index.get("text_encoder") or [None, None])[-1] is not None
    if "XL" in cls or unet_cfg.get("addition_embed_type") == "text_time":
        # the refiner has only text_encoder_2 (OpenCLIP-G) and conditions on an aesthetic score
        family = "sdxl" if has_text_encoder else "sdxl-refiner"
    elif unet_cfg.get("use_linear_projection") or unet_cfg.get("cross_attention_dim") == 1024:
        family = "sd2"
    else:
        family = "sd15"
    if in_ch == 9 and family in _INPAINT_ARCH:
        return _INPAINT_ARCH[family]
    if in_ch != 4:
        raise UnknownArchitectureError(f"{folder}: {cls} with a {in_ch}-channel UNet ({family} family) is not "
                                       f"supported; supported: 4, and 9 (inpainting) for {', '.join(_INPAINT_ARCH)}")
    if family == "sd2":
        return "sd2-v" if prediction == "v_prediction" else "sd2"
    return family


def _load_folder(folder: Path, dtype: torch.dtype, device: str | torch.device,
                 prediction_type: str | None) -> LoadedCheckpoint:
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    index = json.loads((folder / "model_index.json").read_text())
    _require_component(folder, "scheduler", "scheduler_config.json")
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    unet_dir = _require_component(folder, "unet")
    unet_cfg = json.loads((unet_dir / "config.json").read_text())
    pred, why = _resolve_prediction("folder", prediction_type, None, None,
                                    default=scheduler_config.get("prediction_type", "epsilon"))
    why = why if prediction_type is not None else "the folder's scheduler config"
    arch = _folder_arch(index, unet_cfg, pred, folder)
    scheduler_config["prediction_type"] = pred
    vae_dir = _require_component(folder, "vae")
    common = {"local_files_only": True, "torch_dtype": dtype}
    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet",
                                                variant=_variant(unet_dir, "diffusion_pytorch_model"), **common)
    vae = AutoencoderKL.from_pretrained(str(folder), subfolder="vae",
                                        variant=_variant(vae_dir, "diffusion_pytorch_model"), **common)
    encoders: list[nn.Module] = []
    tokenizers: list[Any] = []
    for name, (kind, _) in zip(lc.text_encoder_names(arch), lc.TEXT_ENCODER_LAYOUT[arch]):
        tok_name = name.replace("text_encoder", "tokenizer")
        entry = index.get(name) or [None, None]
        if entry[1] not in ("CLIPTextModel", "CLIPTextModelWithProjection"):
            raise UnknownArchitectureError(f"{folder}: {name} is {entry[1]}, expected a CLIP text model")
        sub = _require_component(folder, name)
        cls = getattr(transformers, entry[1])
        te = cls.from_pretrained(str(sub), local_files_only=True, variant=_variant(sub, "model"))
        te = te.to(dtype).eval()
        encoders.append(te)
        max_len = int(te.config.max_position_embeddings)
        tok_dir = folder / tok_name
        if tok_dir.is_dir() and any(tok_dir.glob("*.json")):
            tok = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
            if tok.model_max_length > max_len:  # bare vocab files give 1e30, which breaks pipelines
                tok.model_max_length = max_len
        else:
            tok = make_tokenizer(kind, max_len)
        tokenizers.append(tok)
    return LoadedCheckpoint(
        arch=arch, unet=unet.to(device).eval(), vae=vae.to(device).eval(),
        text_encoders=tuple(te.to(device) for te in encoders), tokenizers=tuple(tokenizers),
        scheduler_config=scheduler_config, prediction_type=pred, source=folder,
        pipeline_class=str(index["_class_name"]), notes=[f"prediction type: {pred} ({why})"],
        pipeline_options=_pipeline_options(index),
    )


# ------------------------------------------------------------------------------------------------ cache

T = TypeVar("T")
KEEP_RECENT = 2  # strong references kept besides the weak ones, so a just-released model is not reloaded
_lock = threading.Lock()
_key_locks: dict[tuple[Any, ...], threading.Lock] = {}
_shared: weakref.WeakValueDictionary[tuple[Any, ...], Any] = weakref.WeakValueDictionary()
_recent: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


def _fingerprint(path: Path) -> tuple[int, int]:
    if path.is_file():
        st = path.stat()
        return st.st_size, st.st_mtime_ns
    size, mtime = 0, 0
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            size, mtime = size + st.st_size, max(mtime, st.st_mtime_ns)
    return size, mtime


def _cache_key(kind: str, path: Path, *extra: Any) -> tuple[Any, ...]:
    return (kind, str(path), *_fingerprint(path), *(str(e) for e in extra))


def _remember(key: tuple[Any, ...], value: Any) -> None:
    _shared[key] = value
    _recent[key] = value
    _recent.move_to_end(key)
    while len(_recent) > KEEP_RECENT:
        _recent.popitem(last=False)


def _cached(key: tuple[Any, ...], load: Callable[[], T]) -> T:
    """Load once per key, also when two threads ask at the same time."""
    with _lock:
        if (hit := _shared.get(key)) is not None:
            _remember(key, hit)
            return hit
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _lock:
            if (hit := _shared.get(key)) is not None:
                return hit
        try:
            value = load()
            with _lock:
                _remember(key, value)
        finally:
            with _lock:
                _key_locks.pop(key, None)
        return value


def clear_cache() -> None:
    """Forget every shared model (they are freed once nobody else holds them)."""
    with _lock:
        _shared.clear()
        _recent.clear()


# ----------------------------------------------------------------------------------------------- public

def _existing(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise _not_found(p.absolute())
    return p.resolve()


def load_checkpoint(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    prediction_type: str | None = None,
) -> LoadedCheckpoint:
    """Load a diffusers folder (``model_index.json``) or a single file (.safetensors; .ckpt/.pt/.pth/.bin
    through ``torch.load(weights_only=True)``), offline, shared with earlier loads of the same file."""
    p = _existing(path)
    if p.is_dir():
        if not (p / "model_index.json").is_file():
            raise ModelNotFoundError(f"{p} is a folder without model_index.json (not a diffusers pipeline); "
                                     f"it holds: {_listing(p)}")
        loader = lambda: _load_folder(p, dtype, device, prediction_type)  # noqa: E731
    else:
        _check_file(p)
        loader = lambda: _load_single_file(p, dtype, device, prediction_type)  # noqa: E731
    return _cached(_cache_key("checkpoint", p, dtype, torch.device(device), prediction_type), loader)


def _vae_scaling(metadata: Mapping[str, str], path: Path, explicit: float | None) -> float | None:
    if explicit is not None:
        return float(explicit)
    vae_meta = _metadata_config(metadata).get("vae", {})
    if isinstance(vae_meta, dict) and "scaling_factor" in vae_meta:
        return float(vae_meta["scaling_factor"])
    if re.search(r"(?<![a-z])xl(?![a-z])|sdxl", path.name.lower()):
        return 0.13025
    return None


def _load_vae(p: Path, dtype: torch.dtype, device: str | torch.device, scaling_factor: float | None) -> nn.Module:
    from diffusers import AutoencoderKL

    if p.is_dir():
        if (p / "model_index.json").is_file():
            sub = _require_component(p, "vae")
        elif (p / "config.json").is_file():
            sub = p
        else:
            raise ModelNotFoundError(f"{p} is neither a diffusers pipeline nor a VAE folder (no model_index.json "
                                     f"or config.json); it holds: {_listing(p)}")
        extra = {} if scaling_factor is None else {"scaling_factor": scaling_factor}
        vae = AutoencoderKL.from_pretrained(str(sub), local_files_only=True, torch_dtype=dtype,
                                            variant=_variant(sub, "diffusion_pytorch_model"), **extra)
        return vae.to(device).eval()
    state, metadata = read_state_dict(p)
    shapes = _as_shapes(state)
    prefix = lc.VAE_PREFIX if any(k.startswith(lc.VAE_PREFIX) for k in state) else ""
    facts = _infer_vae(shapes, prefix)
    if not facts:
        raise UnknownArchitectureError(f"{p}: no VAE weights found (expected encoder.*/decoder.* or "
                                       f"first_stage_model.*); key prefixes: {_prefix_summary(shapes)}")
    cfg = component_configs("sd15")["vae"]
    meta_vae = _metadata_config(metadata).get("vae", {})
    cfg.update({k: v for k, v in meta_vae.items() if not k.startswith("_")} if isinstance(meta_vae, dict) else {})
    cfg.update(facts)
    if (scale := _vae_scaling(metadata, p, scaling_factor)) is not None:
        cfg["scaling_factor"] = scale
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    vae = AutoencoderKL.from_single_file(state, config=str(config_dir("sd15")), subfolder="vae",
                                         local_files_only=True, torch_dtype=dtype, **_model_kwargs(cfg))
    return vae.to(device).eval()


def load_vae(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    scaling_factor: float | None = None,
) -> nn.Module:
    """Load a standalone VAE: a single file (LDM or diffusers keys, or a whole checkpoint's
    ``first_stage_model.*``), a diffusers VAE folder, or a pipeline folder's ``vae/``.

    ``scaling_factor`` is not in the weights: argument > file metadata > "xl" in the file name (0.13025) >
    0.18215 (SD1/SD2).
    """
    p = _existing(path)
    return _cached(_cache_key("vae", p, dtype, torch.device(device), scaling_factor),
                   lambda: _load_vae(p, dtype, device, scaling_factor))
