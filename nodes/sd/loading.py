"""Offline loading of Stable Diffusion checkpoints: diffusers folders and original single files.

Why this module exists: diffusers ships no configs, and ``from_single_file`` without a local ``config=`` goes to
the network. We ship configs-only folders (``configs/<arch>/``) and the CLIP BPE vocabulary
(``tokenizers/clip/``), detect the architecture from the checkpoint's keys and shapes, and infer the sizes of
narrow (test / embedded) models from the shapes, so nothing is ever downloaded. Detection, size inference and
the shipped configs live in ``detect.py``; this module reads files, builds the models and shares them.

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
from .detect import (  # noqa: E402  (detection and the shipped configs; the public names are re-exported here)
    _INPAINT_ARCH, ARCHS, CheckpointError, ModelNotFoundError, UnknownArchitectureError, _as_shapes, _infer_vae,
    _metadata_config, _prefix_summary, _resolve_prediction, _resolved_configs, component_configs, config_dir,
    detect_architecture, infer_config_overrides,
)

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
TOKENIZER_DIR = HERE / "tokenizers" / "clip"
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
