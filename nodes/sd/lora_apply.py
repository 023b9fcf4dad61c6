"""LoRA files -> low-rank weight deltas on a model's modules, applied for one call and restored exactly.

Formats (all read from the file's keys; nothing is guessed from the file name):
- kohya / sd-scripts: `lora_unet_<module>`, `lora_te_<module>` (SD 1.x/2.x), `lora_te1_` / `lora_te2_` (SDXL),
  each with `.lora_down.weight`, `.lora_up.weight` and optionally `.alpha`. UNet modules are named the diffusers
  way (SD 1.x trainers) or the LDM/SGM way (`input_blocks_4_1_...`, SDXL trainers); both resolve.
- diffusers / peft: `unet.<module>.lora_A.weight` / `.lora_B.weight`, `text_encoder.` / `text_encoder_2.`,
  with alpha and rank from the `lora_adapter_metadata` safetensors metadata when present; also the older
  diffusers layouts (`.lora.down/up`, `.lora_linear_layer.down/up`, attention processors `to_q_lora.down`).
- A missing alpha means alpha = rank (scale 1), as diffusers does for files saved without metadata.
- LyCORIS: LoCon convolutions with a Tucker core (`.lora_mid.weight`), LoHa (`.hada_w1_a`, `.hada_w1_b`,
  `.hada_w2_a`, `.hada_w2_b`, optional `.hada_t1` / `.hada_t2`), LoKr (`.lokr_w1` or `.lokr_w1_a/_b`, `.lokr_w2`
  or `.lokr_w2_a/_b`, optional `.lokr_t2`) and full weight differences (`.diff`), with LyCORIS' scales (LoHa
  alpha / rank; LoKr alpha / the factorised side's rank, 1 when neither side is factorised; `.diff` 1), as
  LyCORIS, peft's LoHa/LoKr and ComfyUI compute them.
- DoRA (`.dora_scale`, kohya/LyCORIS; `.lora_magnitude_vector`, peft): the patched weight W + delta is rescaled to
  the stored magnitude per output row (or per input column, LyCORIS' `wd_on_out=False`), as peft merges it; a
  strength s gives W + s * (that - W), as ComfyUI does. Bias differences are reported, not applied.

The delta of one module is `strength * alpha / rank * up @ down` (for 3x3 convolutions composed as peft does),
computed exactly as peft's `get_delta_weight` + diffusers' `fuse_lora(lora_scale=strength)`, so a patched model
equals diffusers' fused one bit for bit. Patching swaps each touched module's weight Parameter for a new one
(original + deltas); restoring swaps the original Parameter objects back, so nothing is ever subtracted and the
cached model returns to exactly its old state.
"""

from __future__ import annotations

import json
import math
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

TARGETS = ("unet", "text_encoder", "text_encoder_2")
TARGET_LABEL = {"unet": "UNet", "text_encoder": "text encoder", "text_encoder_2": "text encoder 2"}
METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY


class LoraError(ValueError):
    """A LoRA file that cannot be used; the message names the file."""


# ------------------------------------------------------------------------------------------------ reading

# key suffix -> role; the base (module) name is what precedes the suffix
_ROLE_RES = [
    (re.compile(r"^(.+)\.lora_down\.weight$"), "down"),
    (re.compile(r"^(.+)\.lora_up\.weight$"), "up"),
    (re.compile(r"^(.+)\.alpha$"), "alpha"),
    (re.compile(r"^(.+)\.lora_A(?:\.[\w-]+)?\.weight$"), "down"),
    (re.compile(r"^(.+)\.lora_B(?:\.[\w-]+)?\.weight$"), "up"),
    (re.compile(r"^(.+)\.lora_B(?:\.[\w-]+)?\.bias$"), "lora_bias"),  # peft's lora_bias: scaled like the weight
    (re.compile(r"^(.+)\.lora_linear_layer\.down\.weight$"), "down"),
    (re.compile(r"^(.+)\.lora_linear_layer\.up\.weight$"), "up"),
    (re.compile(r"^(.+)\.lora\.down\.weight$"), "down"),
    (re.compile(r"^(.+)\.lora\.up\.weight$"), "up"),
    (re.compile(r"^(.+)_lora\.down\.weight$"), "down"),  # attention processors: ...processor.to_q_lora.down.weight
    (re.compile(r"^(.+)_lora\.up\.weight$"), "up"),
]
# LyCORIS parts: key suffix -> part name (the base is what precedes the suffix)
_LYCORIS_RE = re.compile(r"^(.+)\.(hada_w1_a|hada_w1_b|hada_w2_a|hada_w2_b|hada_t1|hada_t2|lokr_w1|lokr_w1_a|lokr_w1_b|"
                         r"lokr_w2|lokr_w2_a|lokr_w2_b|lokr_t2|diff|diff_b|lora_mid|dora_scale|lora_magnitude_vector)"
                         r"(?:\.weight)?$")
_UNSUPPORTED = {  # key fragment -> what it is
    ".bias_indices": "sparse bias difference", ".bias_values": "sparse bias difference",
}
_LOHA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")


@dataclass(frozen=True, eq=False)
class LoraLayer:
    """One module's weights as stored in the file (tensors on the CPU, file dtype): a low-rank pair (`kind`
    "lora", with LoCon's Tucker core in `parts["lora_mid"]`), or LyCORIS' LoHa / LoKr / full-difference parts;
    `parts["bias"]` is a bias difference added as is (LyCORIS' `.diff_b`; kind "bias" when alone), `parts["lora_bias"]`
    peft's lora_B bias (scaled by alpha / rank, as peft scales the pair's output)."""

    key: str  # the base key in the file, for messages
    down: torch.Tensor | None  # [rank, in] or [rank, in, kh, kw] ("lora" only)
    up: torch.Tensor | None  # [out, rank] or [out, rank, 1, 1]
    alpha: float | None  # from an `.alpha` key; None: see the metadata, else alpha = rank
    kind: str = "lora"  # lora | loha | lokr | full
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        if self.kind == "lora":
            return int(self.down.shape[0])  # type: ignore[union-attr]
        if self.kind == "loha":
            return int(self.parts["hada_w1_b"].shape[0])
        if self.kind == "lokr":  # the factorised side's rank (w2 wins, as LyCORIS and ComfyUI read it)
            for side in ("lokr_w2_b", "lokr_w1_b"):
                if side in self.parts:
                    return int(self.parts[side].shape[0])
        return 0


@dataclass(frozen=True, eq=False)
class LoraFile:
    path: str
    layers: dict[str, LoraLayer]
    metadata: dict[str, Any]  # the parsed diffusers adapter metadata ({} when none)
    unsupported: dict[str, str]  # key -> why it is not applied
    orphans: tuple[str, ...]  # keys with a down but no up (or the reverse)
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return Path(self.path).name


_file_cache: OrderedDict[tuple, LoraFile] = OrderedDict()
_file_lock = threading.Lock()
FILE_CACHE_SIZE = 8


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(str(path)), meta
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise LoraError(f"LoRA {path.name}: expected a state dict, found {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, {}


def parse_lora(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, path: str = "<memory>") -> LoraFile:
    """Group a LoRA state dict into per-module (down, up, alpha) layers."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    unsupported: dict[str, str] = {}
    lycoris: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        why = next((w for frag, w in _UNSUPPORTED.items() if frag in key), None)
        if why is not None:
            unsupported[key] = why
            continue
        m = _LYCORIS_RE.match(key)
        if m:
            part = m.group(2)
            if part == "diff_b":
                part = "bias"
            if part in ("dora_scale", "lora_magnitude_vector"):
                # peft's magnitude is per output channel whatever its shape ([out] or [1, out, 1, 1]); kohya's
                # dora_scale says its axis by its shape ([out, 1, ...], or [1, in, ...] for LyCORIS' wd_on_out=False)
                part, value = "dora", value.flatten() if part == "lora_magnitude_vector" else value
            lycoris.setdefault(m.group(1), {})[part] = value
            continue
        for rx, role in _ROLE_RES:
            m = rx.match(key)
            if m:
                parts.setdefault(m.group(1), {})[role] = value
                break
        else:
            unsupported[key] = "not a LoRA weight"
    layers: dict[str, LoraLayer] = {}
    orphans: list[str] = []
    for base, p in parts.items():
        extra = lycoris.pop(base, {})
        alpha = float(p["alpha"].item()) if "alpha" in p else None
        if "down" in p and "up" in p:
            own = {k: extra.pop(k) for k in ("lora_mid", "dora", "bias") if k in extra}  # a .diff_b beside a LoRA
            if "lora_bias" in p:
                own["lora_bias"] = p["lora_bias"]
            layers[base] = LoraLayer(key=base, down=p["down"], up=p["up"], alpha=alpha, parts=own)
        elif "down" in p or "up" in p or "lora_bias" in p:
            orphans.append(base)
        if extra:
            lycoris[base] = {**extra, "alpha": p["alpha"]} if "alpha" in p else extra
    for base, p in lycoris.items():
        alpha = float(p["alpha"].item()) if "alpha" in p else None
        dora = p.get("dora")
        layer = _lycoris_layer(base, {k: v for k, v in p.items() if k not in ("alpha", "dora")}, alpha)
        if layer is None:
            unsupported.update({f"{base}.{k}": "incomplete LyCORIS layer" if k != "dora" else "DoRA magnitude without its LoRA"
                                for k in p if k != "alpha"})
        else:
            if dora is not None:
                layer.parts["dora"] = dora
            layers[base] = layer
    meta: dict[str, Any] = {}
    raw = (metadata or {}).get(METADATA_KEY)
    if raw:
        try:
            meta = json.loads(raw)
        except ValueError:
            meta = {}
    return LoraFile(path=path, layers=layers, metadata=meta, unsupported=unsupported, orphans=tuple(orphans))


def _lycoris_layer(base: str, p: dict[str, torch.Tensor], alpha: float | None) -> LoraLayer | None:
    """LoHa, LoKr or a full difference from its parts; None when parts are missing."""
    if not p:
        return None
    if any(k.startswith("hada_") for k in p):
        if not all(k in p for k in _LOHA) or (("hada_t1" in p) != ("hada_t2" in p)):
            return None
        return LoraLayer(key=base, down=None, up=None, alpha=alpha, kind="loha", parts=p)
    if any(k.startswith("lokr_") for k in p):
        w1 = "lokr_w1" in p or ("lokr_w1_a" in p and "lokr_w1_b" in p)
        w2 = "lokr_w2" in p or ("lokr_w2_a" in p and "lokr_w2_b" in p)
        if not (w1 and w2):
            return None
        return LoraLayer(key=base, down=None, up=None, alpha=alpha, kind="lokr", parts=p)
    if "diff" in p and set(p) <= {"diff", "bias"}:
        return LoraLayer(key=base, down=None, up=None, alpha=None, kind="full", parts=p)
    if set(p) == {"bias"}:
        return LoraLayer(key=base, down=None, up=None, alpha=None, kind="bias", parts=p)
    return None


def read_lora(path: str | Path) -> LoraFile:
    """Parse a LoRA file once per (path, size, mtime); later calls return the cached parse."""
    import time

    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _file_lock:
        hit = _file_cache.get(key)
        if hit is not None:
            _file_cache.move_to_end(key)
            return hit
    t0 = time.perf_counter()
    try:
        tensors, meta = _read_tensors(p)
    except LoraError:
        raise
    except Exception as exc:  # a corrupt file or a pickle that weights_only refuses
        raise LoraError(f"LoRA {p.name} could not be read: {type(exc).__name__}: {exc}") from None
    parsed = parse_lora(tensors, meta, str(p))
    parsed = LoraFile(**{**parsed.__dict__, "seconds": time.perf_counter() - t0})
    with _file_lock:
        _file_cache[key] = parsed
        while len(_file_cache) > FILE_CACHE_SIZE:
            _file_cache.popitem(last=False)
    return parsed


def clear_file_cache() -> None:
    with _file_lock:
        _file_cache.clear()


# ------------------------------------------------------------------------------------------------ mapping


def locate(base: str) -> tuple[str | None, str, str]:
    """(target, style, name) of a file's base key: style 'flat' (kohya underscores) or 'dotted'."""
    for prefix, target in (("lora_unet_", "unet"), ("lora_te2_", "text_encoder_2"), ("lora_te1_", "text_encoder"),
                           ("lora_te_", "text_encoder")):
        if base.startswith(prefix):
            return target, "flat", base[len(prefix):]
    name = base.removeprefix("base_model.model.")
    for prefix, target in (("unet.", "unet"), ("text_encoder_2.", "text_encoder_2"), ("text_encoder.", "text_encoder"),
                           ("te2.", "text_encoder_2"), ("te1.", "text_encoder"), ("te.", "text_encoder")):
        if name.startswith(prefix):
            return target, "dotted", name[len(prefix):]
    if name.startswith(("down_blocks.", "up_blocks.", "mid_block.", "conv_in", "conv_out", "time_embedding.")):
        return "unet", "dotted", name
    if name.startswith(("text_model.", "encoder.layers.")):
        return "text_encoder", "dotted", name
    return None, "dotted", name


def _normalise_dotted(name: str) -> str:
    """Older diffusers layouts name the attention processor, not the projection."""
    if ".processor." in name:
        name = name.replace(".processor.", ".")
        if name.endswith(".to_out"):
            name += ".0"
    return name


_index_cache: "weakref.WeakKeyDictionary[torch.nn.Module, dict[str, dict[str, str]]]" = weakref.WeakKeyDictionary()


def _patchable(module: torch.nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return isinstance(w, torch.nn.Parameter) and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))


def module_index(model: torch.nn.Module, target: str) -> dict[str, dict[str, str]]:
    """{'flat': {alias: module name}, 'dotted': {alias: module name}} for the Linear/Conv2d modules of `model`."""
    hit = _index_cache.get(model)
    if hit is not None:
        return hit
    names = [n for n, m in model.named_modules() if n and _patchable(m)]
    flat: dict[str, str] = {}
    dotted: dict[str, str] = {}
    for n in names:
        dotted.setdefault(n, n)
        flat.setdefault(n.replace(".", "_"), n)
        if target != "unet":
            if n.startswith("text_model."):
                short = n[len("text_model."):]
                dotted.setdefault(short, n)
                flat.setdefault(short.replace(".", "_"), n)
            else:
                dotted.setdefault("text_model." + n, n)
                flat.setdefault("text_model_" + n.replace(".", "_"), n)
    if target == "unet":
        try:  # SDXL trainers (kohya sd-scripts) name UNet modules the LDM/SGM way
            from .ldm_convert import unet_to_ldm

            params = {f"{n}.weight": n for n in names}
            others = {k: k for k in model.state_dict() if k not in params}
            for ldm_key, value in unet_to_ldm({**others, **params}).items():
                if value in names:
                    ldm_name = ldm_key[: -len(".weight")]
                    flat.setdefault(ldm_name.replace(".", "_"), value)
                    dotted.setdefault(ldm_name, value)
        except (KeyError, ValueError):
            pass
    index = {"flat": flat, "dotted": dotted}
    _index_cache[model] = index
    return index


def _meta_for(meta: dict[str, Any], target: str) -> dict[str, Any]:
    pre = target + "."
    return {k[len(pre):]: v for k, v in meta.items() if k.startswith(pre)}


def _pattern_value(patterns: dict[str, Any], names: Iterable[str]) -> Any:
    """peft's get_pattern_key: the first pattern key matching `(.*\\.)?key$` on the module name."""
    for key, value in patterns.items():
        for n in names:
            try:
                if re.match(rf"(.*\.)?({key})$", n):
                    return value
            except re.error:
                if n == key or n.endswith("." + key):
                    return value
    return None


def layer_scale(layer: LoraLayer, target: str, module_name: str, meta: dict[str, Any]) -> float:
    """alpha / rank for one module, as peft computes `scaling` (rsLoRA: alpha / sqrt(rank)); LyCORIS' rules for
    its kinds."""
    if layer.kind in ("full", "bias"):
        return 1.0
    if layer.kind == "lokr":
        return layer.alpha / layer.rank if layer.alpha is not None and layer.rank else 1.0
    if layer.kind == "loha":
        return (layer.alpha if layer.alpha is not None else layer.rank) / layer.rank
    rank = layer.rank
    alpha: float | None = layer.alpha
    use_rslora = False
    tmeta = _meta_for(meta, target) if meta else {}
    if tmeta:
        names = [module_name, "text_model." + module_name] if target != "unet" else [module_name]
        r = _pattern_value(tmeta.get("rank_pattern") or {}, names)
        rank = int(r) if r is not None else int(tmeta.get("r", rank))
        if alpha is None:
            a = _pattern_value(tmeta.get("alpha_pattern") or {}, names)
            alpha = a if a is not None else tmeta.get("lora_alpha")
        use_rslora = bool(tmeta.get("use_rslora", False))
    if alpha is None:
        alpha = rank
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


@dataclass(frozen=True, eq=False)
class ResolvedLayer:
    module: str  # module name in the model
    layer: LoraLayer
    scale: float  # alpha / rank (strength applied at patch time)


@dataclass
class Resolution:
    """What a LoRA file matched in the given models."""

    parts: dict[str, tuple[ResolvedLayer, ...]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)  # file keys for a requested target that matched nothing
    mismatched: list[str] = field(default_factory=list)  # matched a module of another shape
    ignored: list[str] = field(default_factory=list)  # keys for targets not requested (e.g. text encoder, model-only)

    @property
    def matched(self) -> int:
        return sum(len(v) for v in self.parts.values())


def _expected_shape(layer: LoraLayer) -> tuple[int, ...]:
    if layer.kind == "bias":
        return tuple(layer.parts["bias"].shape)
    if layer.kind != "lora":
        return tuple(_lycoris_delta(layer, 1.0, torch.device("meta")).shape)
    out, inp = int(layer.up.shape[0]), int(layer.down.shape[1])  # type: ignore[union-attr]
    mid = layer.parts.get("lora_mid")
    return (out, inp, *(mid.shape[2:] if mid is not None else layer.down.shape[2:]))  # type: ignore[union-attr]


def _bias_parts(layer: LoraLayer) -> list[tuple[torch.Tensor, bool]]:
    """(bias difference, scaled by the LoRA's alpha / rank?) pairs of a layer."""
    return [(layer.parts[k], k == "lora_bias") for k in ("bias", "lora_bias") if k in layer.parts]


def _bias_fits(layer: LoraLayer, module: torch.nn.Module) -> bool:
    bias = getattr(module, "bias", None)
    return all(bias is not None and d.numel() == bias.numel() for d, _ in _bias_parts(layer))


def _shape_fits(layer: LoraLayer, weight: torch.Tensor) -> bool:
    if layer.kind == "bias":
        return True
    if layer.kind != "lora":  # LyCORIS deltas come out flat or 4-D: the same numbers in the weight's shape
        try:
            exp = _expected_shape(layer)
        except RuntimeError:  # parts that do not compose
            return False
        return exp[0] == weight.shape[0] and math.prod(exp) == weight.numel()
    if layer.up.shape[1] != layer.down.shape[0]:  # type: ignore[union-attr]
        return False
    exp = _expected_shape(layer)
    if tuple(weight.shape) == exp:
        return True
    # a 1x1 conv pair on a Linear, or a Linear pair on a 1x1 conv: same numbers
    return weight.shape[0] == exp[0] and weight.shape[1] == exp[1] and math.prod(weight.shape) == exp[0] * exp[1] \
        and math.prod(exp) == exp[0] * exp[1]


def resolve(lora: LoraFile, models: dict[str, torch.nn.Module]) -> Resolution:
    """Match the file's layers to modules of `models` ({target: module}); targets not given are ignored."""
    res = Resolution()
    parts: dict[str, list[ResolvedLayer]] = {}
    for base, layer in lora.layers.items():
        target, style, name = locate(base)
        if target is None:
            # bare keys: try every given model (a peft state dict of a single model carries no prefix)
            cands = [t for t in models if _lookup(models[t], t, "dotted", name) is not None]
            target = cands[0] if cands else next(iter(models), None)
            if target is None or not cands:
                res.unmatched.append(base)
                continue
        if target not in models:
            res.ignored.append(base)
            continue
        model = models[target]
        module_name = _lookup(model, target, style, name)
        if module_name is None:
            res.unmatched.append(base)
            continue
        module = model.get_submodule(module_name)
        weight = module.weight
        if not _shape_fits(layer, weight):
            res.mismatched.append(f"{base} {list(_expected_shape(layer))} vs {module_name} {list(weight.shape)}")
            continue
        if not _bias_fits(layer, module):
            have = list(module.bias.shape) if getattr(module, "bias", None) is not None else "no bias"
            res.mismatched.append(f"{base} bias {[list(d.shape) for d, _ in _bias_parts(layer)]} vs {module_name} {have}")
            continue
        parts.setdefault(target, []).append(ResolvedLayer(module_name, layer, layer_scale(layer, target, module_name, lora.metadata)))
    res.parts = {t: tuple(v) for t, v in parts.items()}
    return res


def _lookup(model: torch.nn.Module, target: str, style: str, name: str) -> str | None:
    index = module_index(model, target)
    if style == "flat":
        return index["flat"].get(name)
    return index["dotted"].get(_normalise_dotted(name)) or index["dotted"].get(name)


# ------------------------------------------------------------------------------------------------ the patch


@dataclass(frozen=True, eq=False)
class LoraPatch:
    """A LoRA applied with one strength to one handle: the resolved layers per target."""

    name: str
    path: str
    strength: float
    parts: dict[str, tuple[ResolvedLayer, ...]]

    def __repr__(self) -> str:
        n = {TARGET_LABEL[t]: len(v) for t, v in self.parts.items()}
        layers = ", ".join(f"{k} {v}" for k, v in n.items())
        return f"LoRA {self.name} x{self.strength:g} ({layers} layers)"


def _dora(weight: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """DoRA: `weight` (W + delta, fp32) rescaled so each output row's norm is the stored magnitude ([out] or
    [out, 1, ...]); a magnitude of shape [1, in, ...] (LyCORIS' wd_on_out=False) rescales input columns."""
    m = magnitude.to(device=weight.device, dtype=torch.float32)
    if m.numel() == weight.shape[0] and (m.ndim == 1 or m.shape[0] == weight.shape[0]):
        norm = weight.reshape(weight.shape[0], -1).norm(dim=1)
        shape = (weight.shape[0],) + (1,) * (weight.ndim - 1)
    elif m.numel() == weight.shape[1]:
        norm = weight.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)
        shape = (1, weight.shape[1]) + (1,) * (weight.ndim - 2)
    else:
        raise LoraError(f"a DoRA magnitude of shape {list(magnitude.shape)} does not fit a weight {list(weight.shape)}")
    return weight * (m.reshape(shape) / norm.reshape(shape))


def _cp(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """A Tucker (CP) rebuild: core [r, r, kh, kw] with wa [r, out] and wb [r, in] -> [out, in, kh, kw]."""
    return torch.einsum("i j k l, i p, j r -> p r k l", t, wa, wb)


def _lycoris_delta(layer: LoraLayer, scale: float, device: torch.device) -> torch.Tensor:
    """LoHa / LoKr / full difference as LyCORIS composes them (fp32; flat or 4-D, reshaped by the caller)."""
    p = {k: v.to(device=device, dtype=torch.float32) for k, v in layer.parts.items()}
    if layer.kind == "full":
        return p["diff"] * scale
    if layer.kind == "loha":
        if "hada_t1" in p:
            m1 = _cp(p["hada_t1"], p["hada_w1_a"], p["hada_w1_b"])
            m2 = _cp(p["hada_t2"], p["hada_w2_a"], p["hada_w2_b"])
        else:
            m1, m2 = p["hada_w1_a"] @ p["hada_w1_b"], p["hada_w2_a"] @ p["hada_w2_b"]
        return m1 * m2 * scale
    w1 = p["lokr_w1"] if "lokr_w1" in p else p["lokr_w1_a"] @ p["lokr_w1_b"]
    if "lokr_w2" in p:
        w2 = p["lokr_w2"]
    elif "lokr_t2" in p:
        w2 = _cp(p["lokr_t2"], p["lokr_w2_a"], p["lokr_w2_b"])
    else:
        w2 = p["lokr_w2_a"] @ p["lokr_w2_b"]
    if w2.ndim == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2.contiguous()) * scale


def delta_weight(weight: torch.Tensor, layer: LoraLayer, scale: float) -> torch.Tensor:
    """The delta for `weight` (fp32, on its device), computed the way peft's get_delta_weight does."""
    if layer.kind != "lora":
        return _lycoris_delta(layer, scale, weight.device).reshape(weight.shape)
    a = layer.down.to(device=weight.device, dtype=torch.float32)  # type: ignore[union-attr]
    b = layer.up.to(device=weight.device, dtype=torch.float32)  # type: ignore[union-attr]
    mid = layer.parts.get("lora_mid")
    if mid is not None:  # LoCon's Tucker core: down [r, in, 1, 1], mid [r, r, kh, kw], up [out, r, 1, 1]
        core = mid.to(device=weight.device, dtype=torch.float32)
        d = torch.einsum("o p, p q k l, q i -> o i k l", b.flatten(1), core, a.flatten(1)) * scale
        return d.reshape(weight.shape)
    if weight.ndim == 2:
        if a.ndim == 4:
            a, b = a.flatten(1), b.flatten(1)
        d = (b @ a) * scale
    elif weight.ndim == 4 and tuple(weight.shape[2:]) == (1, 1):
        if a.ndim == 2:
            a, b = a[:, :, None, None], b[:, :, None, None]
        d = (b.squeeze(3).squeeze(2) @ a.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3) * scale
    elif weight.ndim == 4:
        d = torch.nn.functional.conv2d(a.transpose(0, 1), b).transpose(0, 1) * scale
    else:
        raise LoraError(f"cannot patch a {weight.ndim}-D weight ({layer.key})")
    return d.reshape(weight.shape)


@dataclass(eq=False)
class _Applied:
    """Patched Parameters for one (model, target, patches), reused while the originals are untouched; a slot is
    (module, "weight" or "bias")."""

    patches: tuple
    slots: list[tuple[torch.nn.Module, str]]
    originals: list[torch.nn.Parameter]
    patched: list[torch.nn.Parameter]
    stamps: list[tuple[int, int]]

    def add(self, module: torch.nn.Module, name: str, new: torch.Tensor) -> None:
        original = module._parameters[name]
        out = torch.empty_like(original, requires_grad=False)  # the original's layout (a transposed delta must not leak in)
        out.copy_(new)
        self.slots.append((module, name))
        self.originals.append(original)
        self.patched.append(torch.nn.Parameter(out, requires_grad=False))
        self.stamps.append(_stamp(original))


def _stamp(p: torch.Tensor) -> tuple[int, int]:
    # a move to another device or dtype gives new storage; an in-place change bumps the version counter
    return (p.data_ptr(), p._version)


# (id(model), target) -> (weakref to the model, _Applied); one entry per model and target, a few models at most
_applied_cache: OrderedDict[tuple[int, str], tuple[weakref.ref, _Applied]] = OrderedDict()
APPLIED_CACHE_SIZE = 4
_apply_lock = threading.RLock()


def _compute(model: torch.nn.Module, patches: tuple, target: str) -> _Applied:
    by_module: dict[str, list[tuple[ResolvedLayer, float]]] = OrderedDict()
    for patch in patches:
        for r in getattr(patch, "parts", {}).get(target, ()):
            by_module.setdefault(r.module, []).append((r, float(patch.strength)))
    entry = _Applied(patches=patches, slots=[], originals=[], patched=[], stamps=[])
    with torch.no_grad():
        for name, entries in by_module.items():
            module = model.get_submodule(name)
            biases = [(d, (r.scale if scaled else 1.0) * s) for r, s in entries for d, scaled in _bias_parts(r.layer)]
            if biases:  # peft scales a LoRA's bias like its weight; LyCORIS' diff_b is added at the strength
                b = module._parameters["bias"]
                new_b = b.detach().float()
                for d, scale in biases:
                    new_b = new_b + d.to(device=b.device, dtype=torch.float32).reshape(b.shape) * scale
                entry.add(module, "bias", new_b)
            entries = [(r, s) for r, s in entries if r.layer.kind != "bias"]
            if not entries:
                continue
            w = module._parameters["weight"]
            new = w.detach() if w.dtype == torch.float32 else w.detach().float()
            for r, strength in entries:
                magnitude = r.layer.parts.get("dora")
                if magnitude is not None:  # DoRA: not additive; applied to the weight as patched so far
                    calc = _dora(new + delta_weight(w, r.layer, r.scale), magnitude)
                    new = calc if strength == 1 else new + strength * (calc - new)
                    continue
                scale = r.scale
                if strength != 1:
                    scale *= strength  # peft's scale_layer(lora_scale), as diffusers' fuse_lora does
                new = new + delta_weight(w, r.layer, scale)
            entry.add(module, "weight", new)
    return entry


def _valid(entry: _Applied, patches: tuple) -> bool:
    if len(entry.patches) != len(patches) or any(a is not b for a, b in zip(entry.patches, patches)):
        return False
    for (module, name), orig, stamp in zip(entry.slots, entry.originals, entry.stamps):
        if module._parameters[name] is not orig or _stamp(orig) != stamp:
            return False
    return True


def _evict_stale() -> None:
    """Drop kept patched weights of models that are gone or whose weights moved (offloaded, re-cast)."""
    for key, (ref, entry) in list(_applied_cache.items()):
        if ref() is None or (entry.originals and _stamp(entry.originals[0]) != entry.stamps[0]):
            del _applied_cache[key]


def apply_patches(model: torch.nn.Module, patches: tuple, target: str) -> Callable[[], None]:
    """Swap in patched weights for `target`'s layers of every patch; returns the function that restores them.

    The patched Parameters are kept (one set per model and target) and reused by the next call with the same
    patches while the original weights are unchanged, so a sampling run pays for the deltas once, not per step.
    Swapping writes the module's parameter slot directly (the originals are Parameters too), which keeps the
    per-call cost to about a microsecond per layer.
    """
    with _apply_lock:
        _evict_stale()
        key = (id(model), target)
        hit = _applied_cache.get(key)
        entry = hit[1] if hit is not None and hit[0]() is model else None
        if entry is None or not _valid(entry, patches):
            _applied_cache.pop(key, None)
            entry = _compute(model, patches, target)
            _applied_cache[key] = (weakref.ref(model), entry)
            while len(_applied_cache) > APPLIED_CACHE_SIZE:
                _applied_cache.popitem(last=False)
        else:
            _applied_cache.move_to_end(key)
        for (module, name), p in zip(entry.slots, entry.patched):
            module._parameters[name] = p

    def restore() -> None:
        for (module, name), orig in zip(entry.slots, entry.originals):
            module._parameters[name] = orig

    return restore


def clear_applied_cache() -> None:
    """Drop the kept patched weights (e.g. to free memory)."""
    with _apply_lock:
        _applied_cache.clear()


# ------------------------------------------------------------------------------------------------ node helper


@dataclass
class LoraLoad:
    """What a LoRA node hands back: a patch per side (None when it has nothing to do) and what to report."""

    unet_patch: LoraPatch | None
    text_patch: LoraPatch | None
    warning: str | None
    resolution: Resolution
    read_seconds: float
    resolve_seconds: float


def _first(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def load_patches(path: str | Path, unet_model: torch.nn.Module | None, text_models: dict[str, torch.nn.Module],
                 unet_strength: float, text_strength: float) -> LoraLoad:
    """Read (cached) and match a LoRA file; raise LoraError when it matches nothing."""
    import time

    lora = read_lora(path)
    t0 = time.perf_counter()
    models: dict[str, torch.nn.Module] = {}
    if unet_model is not None:
        models["unet"] = unet_model
    models.update(text_models)
    res = resolve(lora, models)
    resolve_seconds = time.perf_counter() - t0
    name = Path(path).name
    wanted = " and ".join(dict.fromkeys("text encoder" if t != "unet" else "UNet" for t in models)) or "nothing"
    if res.matched == 0:
        if res.ignored and not res.unmatched and not res.mismatched:
            sides = sorted({TARGET_LABEL[locate(k)[0] or "unet"] for k in res.ignored})
            raise LoraError(f"LoRA {name} only has {' and '.join(sides)} layers ({len(res.ignored)}), and no "
                            f"{' or '.join(sides)} is connected; first keys: {_first(res.ignored)}")
        bad = res.unmatched + [k for k in lora.unsupported] + list(lora.orphans)
        detail = f"first unmatched keys: {_first(bad)}" if bad else "the file holds no LoRA weights"
        if res.mismatched:
            detail += f"; shape mismatches (a LoRA for another model?): {_first(res.mismatched, 3)}"
        raise LoraError(f"LoRA {name} matches nothing in the {wanted}: {detail}")
    skipped = res.unmatched + res.mismatched + [f"{k} ({why})" for k, why in lora.unsupported.items()] + \
        [f"{k} (down without up)" for k in lora.orphans]
    warning = None
    if skipped:
        total = res.matched + len(res.unmatched) + len(res.mismatched)
        counts = ", ".join(f"{TARGET_LABEL[t]} {len(v)}" for t, v in res.parts.items())
        warning = (f"LoRA {name}: applied {res.matched} of {total} layers ({counts}); {len(skipped)} keys not applied: "
                   f"{_first(skipped)}")
    unet_parts = {t: v for t, v in res.parts.items() if t == "unet"}
    text_parts = {t: v for t, v in res.parts.items() if t != "unet"}
    unet_patch = LoraPatch(name, str(path), float(unet_strength), unet_parts) if unet_parts and unet_strength != 0 else None
    text_patch = LoraPatch(name, str(path), float(text_strength), text_parts) if text_parts and text_strength != 0 else None
    return LoraLoad(unet_patch, text_patch, warning, res, lora.seconds, resolve_seconds)
