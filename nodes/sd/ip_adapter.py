"""IP-Adapter (Ye et al. 2023): image prompts through decoupled cross-attention, as diffusers' IP-Adapter pipelines.

An IP-Adapter adds, at every cross-attention layer of the UNet, a second attention over a few "image tokens"
with its own key/value projections: out = attn(q, K_text, V_text) + weight x attn(q, to_k_ip(img), to_v_ip(img)).
The image tokens come from a CLIP vision encoder and the adapter's image projection: the basic adapter maps the
projected image embedding to 4 tokens (linear + layer norm); "plus" runs a Perceiver resampler over the encoder's
penultimate hidden states (16 tokens); "full face" maps every hidden state (257 tokens). FaceID adapters (InsightFace
embeddings, LoRA weights) are refused.

Where things live:
- Loading (`load_ip_adapter`, `load_clip_vision`): the h94 single-file layout (`{"image_proj": ..., "ip_adapter":
  {"1.to_k_ip.weight", ...}}` in a .bin/.pt read with `torch.load(weights_only=True)`, or flattened `image_proj.*` /
  `ip_adapter.*` in a .safetensors); kind, token count and widths are read from the shapes. CLIP vision: a
  transformers folder or a single file in the transformers layout (config inferred from the shapes).
- Encoding (`encode_image_prompt`, at the ApplyIPAdapter node, once): diffusers' CLIPImageProcessor steps on our
  IMAGE tensors (`clip_pixels`), the encoder, then the adapter's projection of [blank, image] in one batch, where
  the blank is diffusers' negative: a zero image embedding (basic) or the hidden states of an all-zero pixel input.
- The result is an `ImagePrompt` on the conditioning (`Conditioning.image_prompts`): this side's tokens, the tokens
  the other side of guidance gets, the weight and the step window.
- Sampling (`prompts_for_call` + `installed_for_call`, called by `denoise.predict_noise`): the image tokens for
  exactly the rows of that UNet call, row by row as the text embeds: under guidance the uncond rows get the
  positive's blank tokens and the cond rows its image tokens (an image prompt on the negative conditioning works
  the other way round: a negative image prompt). The adapter's attention is installed on the UNet's cross-attention
  layers (our `IPAttnProcessor`, diffusers' IPAdapterAttnProcessor2_0 numerics) for that call only and the
  original processors are put back in a `finally`; the tokens reach the processors as the UNet call's
  `cross_attention_kwargs`, so they are real inputs of the call (and of a compiled one in fast mode).

Layer order follows diffusers' `_convert_ip_adapter_attn_to_diffusers`: the UNet's attention layers in
`attn_processors` order, every one but the self-attention (`attn1`) counting, take keys 1, 3, 5, ...
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from engine.node import NodeError

from .handles import Conditioning, family_label

CONFIG_METADATA_KEY = "latentloom.config"  # a single-file CLIP vision model may carry its config here
KINDS = {"basic": "IP-Adapter", "plus": "IP-Adapter Plus", "full": "IP-Adapter Full Face"}
# (cross-attention layers, context width) of the UNets the published adapters were made for
_FAMILIES = {(16, 768): "SD 1.x", (16, 1024): "SD 2.x", (70, 2048): "SDXL"}


class IPAdapterError(ValueError):
    """A file that is not an IP-Adapter / CLIP vision model, or one we do not support (the message says which)."""


# ------------------------------------------------------------------------------------------------ handles


class _LayerKV(nn.Module):
    """One cross-attention layer's image key/value projections (bias-free, as diffusers' to_k_ip / to_v_ip)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        super().__init__()
        self.to_k_ip = nn.Linear(k.shape[1], k.shape[0], bias=False)
        self.to_v_ip = nn.Linear(v.shape[1], v.shape[0], bias=False)
        with torch.no_grad():
            self.to_k_ip.weight.copy_(k)
            self.to_v_ip.weight.copy_(v)


@dataclass(frozen=True, eq=False)
class IPAdapterHandle:
    """A loaded IP-Adapter: the image projection and, per cross-attention layer, the image key/value weights."""

    image_proj: nn.Module
    layers: nn.ModuleList  # _LayerKV per cross-attention layer, in the UNet's attention order
    kind: str  # "basic" | "plus" | "full"
    embed_width: int  # the CLIP output it takes: projected image embeds (basic) or hidden states (plus, full)
    tokens_per_image: int | None  # None: one per CLIP hidden state (full face)
    source: str = ""

    @property
    def width(self) -> int:
        """The context width of the UNet it was made for (its image tokens are this wide)."""
        return int(self.layers[0].to_k_ip.in_features)

    @property
    def uses_hidden_states(self) -> bool:
        return self.kind != "basic"

    def describe(self) -> str:
        n, w = len(self.layers), self.width
        family = _FAMILIES.get((n, w))
        return f"{family or 'an unknown model family'} ({n} cross-attention layers, context width {w})"

    def __loom_summary__(self) -> dict[str, Any]:
        p = next(self.image_proj.parameters(), None)
        return {"kind": "handle", "model": KINDS.get(self.kind, self.kind), "source": self.source,
                "for": self.describe(), "tokens_per_image": self.tokens_per_image,
                "clip_input": f"{'hidden states' if self.uses_hidden_states else 'image embeds'} {self.embed_width} wide",
                "parameters": sum(q.numel() for m in (self.image_proj, self.layers) for q in m.parameters()),
                "dtype": str(p.dtype).replace("torch.", "") if p is not None else None}

    def __loom_nbytes__(self) -> int:
        return 256


@dataclass(frozen=True, eq=False)
class ClipVisionHandle:
    """A CLIP vision encoder (transformers' CLIPVisionModelWithProjection)."""

    model: nn.Module
    source: str = ""
    has_projection: bool = True
    layout: str = ""

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def projection_dim(self) -> int | None:
        return int(self.model.config.projection_dim) if self.has_projection else None

    def __loom_summary__(self) -> dict[str, Any]:
        return {"kind": "handle", "model": "CLIP vision", "source": self.source, "layout": self.layout,
                "image_size": self.image_size, "hidden_size": self.hidden_size,
                "projection_dim": self.projection_dim,
                "parameters": sum(p.numel() for p in self.model.parameters())}

    def __loom_nbytes__(self) -> int:
        return 256


@dataclass(frozen=True, eq=False)
class ImagePrompt:
    """An IP-Adapter image prompt attached to a conditioning: `tokens` for this conditioning's rows of a UNet call,
    `opposite` for the other side's rows under guidance (the blank image's, for an image prompt on the positive)."""

    adapter: IPAdapterHandle
    tokens: torch.Tensor  # [images x tokens per image, context width]
    opposite: torch.Tensor  # the same shape
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    by_noise_level: bool = False  # start/end of the noise levels (ComfyUI), else of the steps (diffusers, InvokeAI)
    images: int = 1

    def mirrored(self) -> "ImagePrompt":
        """The prompt as the other side of guidance sees it."""
        return replace(self, tokens=self.opposite, opposite=self.tokens)

    def __repr__(self) -> str:
        return (f"ImagePrompt({self.adapter.source}, {self.images} image(s), {tuple(self.tokens.shape)}, "
                f"weight {self.weight:g}, {self.start:g}..{self.end:g})")


# ------------------------------------------------------------------------------------------------ loading


def read_adapter(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(image_proj, ip_adapter) state dicts of an h94-layout file (.bin/.pt/.pth nested, or .safetensors flat)."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        flat: Mapping[str, Any] = load_file(str(path))
    elif suffix in (".bin", ".pt", ".pth", ".ckpt"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # not a pickle torch can read safely
            raise IPAdapterError(f"{path.name}: cannot read it ({type(exc).__name__}: {exc})") from None
        if not isinstance(obj, Mapping):
            raise IPAdapterError(f"{path.name}: expected a state dict, found {type(obj).__name__}")
        flat = obj
    else:
        raise IPAdapterError(f"{path.name}: not an IP-Adapter file (expected .safetensors, .bin, .pt or .pth)")
    proj: dict[str, torch.Tensor] = {}
    ip: dict[str, torch.Tensor] = {}
    for key, value in flat.items():
        if isinstance(value, Mapping) and key in ("image_proj", "ip_adapter"):
            (proj if key == "image_proj" else ip).update({k: v for k, v in value.items() if isinstance(v, torch.Tensor)})
        elif isinstance(value, torch.Tensor) and key.startswith("image_proj."):
            proj[key[len("image_proj."):]] = value
        elif isinstance(value, torch.Tensor) and key.startswith("ip_adapter."):
            ip[key[len("ip_adapter."):]] = value
    if not proj or not ip:
        raise IPAdapterError(f"{path.name} is not an IP-Adapter: it has no image_proj and ip_adapter weights "
                             f"(first keys: {sorted(flat)[:5]})")
    return proj, ip


_PLUS_ATTN = {"norm1": "ln0", "norm2": "ln1", "to_q": "attn.to_q", "to_out": "attn.to_out.0"}
_PLUS_FF = {"0": "ff.0", "1": "ff.1.net.0.proj", "3": "ff.1.net.2"}


def _plus_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The h94 Resampler's keys (layers.i.0: PerceiverAttention, layers.i.1: LayerNorm-Linear-GELU-Linear) as
    diffusers' IPAdapterPlusImageProjection names them; to_kv is split into to_k and to_v."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        m = re.fullmatch(r"layers\.(\d+)\.([01])\.(\w+)\.(weight|bias)", key)
        if m is None:  # latents, proj_in, proj_out, norm_out, or keys already in diffusers' layout
            out[key] = value
            continue
        i, part, name, param = m.groups()
        base = f"layers.{i}."
        if part == "0" and name == "to_kv":
            k, v = value.chunk(2, dim=0)
            out[base + f"attn.to_k.{param}"], out[base + f"attn.to_v.{param}"] = k, v
        elif part == "0" and name in _PLUS_ATTN:
            out[base + f"{_PLUS_ATTN[name]}.{param}"] = value
        elif part == "1" and name in _PLUS_FF:
            out[base + f"{_PLUS_FF[name]}.{param}"] = value
        else:
            out[key] = value
    return out


def _image_projection(sd: Mapping[str, torch.Tensor], name: str) -> tuple[nn.Module, str, int, int | None]:
    """(module, kind, CLIP width it takes, tokens per image) from the image_proj weights' names and shapes."""
    from diffusers.models.embeddings import ImageProjection, IPAdapterFullImageProjection, IPAdapterPlusImageProjection

    if "perceiver_resampler.proj_in.weight" in sd or ("norm.weight" in sd and "proj.0.weight" in sd):
        raise IPAdapterError(f"{name} is an IP-Adapter FaceID model: it needs InsightFace face embeddings and "
                             "LoRA weights, which are not supported (use a basic, plus or full-face IP-Adapter)")
    if "proj.weight" in sd and "norm.weight" in sd:  # basic: linear + layer norm -> N tokens
        width = int(sd["norm.weight"].shape[0])
        out_features, embed = (int(s) for s in sd["proj.weight"].shape)
        if out_features % width:
            raise IPAdapterError(f"{name}: image projection {out_features} wide is not a whole number of "
                                 f"{width}-wide tokens")
        tokens = out_features // width
        module = ImageProjection(image_embed_dim=embed, cross_attention_dim=width, num_image_text_embeds=tokens)
        converted = {k.replace("proj.", "image_embeds.", 1) if k.startswith("proj.") else k: v for k, v in sd.items()}
        kind = "basic"
    elif "proj.3.weight" in sd:  # full face: feed-forward + layer norm on every hidden state
        embed, width = int(sd["proj.0.weight"].shape[1]), int(sd["proj.3.weight"].shape[0])
        module = IPAdapterFullImageProjection(image_embed_dim=embed, cross_attention_dim=width)
        names = {"proj.0.": "ff.net.0.proj.", "proj.2.": "ff.net.2.", "proj.3.": "norm."}
        converted = {}
        for k, v in sd.items():
            prefix = next((p for p in names if k.startswith(p)), None)
            converted[names[prefix] + k[len(prefix):] if prefix else k] = v
        kind, tokens = "full", None
    elif "latents" in sd and "proj_in.weight" in sd:  # plus: Perceiver resampler over the hidden states
        converted = _plus_to_diffusers(sd)
        latents = sd["latents"]
        hidden = int(latents.shape[2])
        depth = len({k.split(".")[1] for k in converted if k.startswith("layers.")})
        q = converted.get("layers.0.attn.to_q.weight")
        ff = converted.get("layers.0.ff.1.net.0.proj.weight")
        if q is None or ff is None or depth == 0:
            raise IPAdapterError(f"{name}: unexpected resampler layout (first keys: {sorted(sd)[:6]})")
        if q.shape[0] % 64:
            raise IPAdapterError(f"{name}: resampler attention {q.shape[0]} wide is not a whole number of 64-wide heads")
        embed, width = int(sd["proj_in.weight"].shape[1]), int(sd["proj_out.weight"].shape[0])
        module = IPAdapterPlusImageProjection(embed_dims=embed, output_dims=width, hidden_dims=hidden, depth=depth,
                                              dim_head=64, heads=int(q.shape[0]) // 64, num_queries=int(latents.shape[1]),
                                              ffn_ratio=ff.shape[0] / hidden)
        kind, tokens = "plus", int(latents.shape[1])
    else:
        raise IPAdapterError(f"{name}: unknown IP-Adapter image projection (keys: {sorted(sd)[:6]}); supported: "
                             "basic (proj + norm), plus (resampler latents) and full face (proj.0-3)")
    own = module.state_dict()
    bad = [k for k, v in converted.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in converted]
    extra = [k for k in converted if k not in own]
    if bad or missing or extra:
        raise IPAdapterError(f"{name}: the image projection's weights do not fit a {KINDS[kind]} "
                             f"(wrong shapes {bad[:3]}, missing {missing[:3]}, unexpected {extra[:3]})")
    module.load_state_dict({k: v.to(torch.float32) for k, v in converted.items()})
    return module, kind, embed, tokens


def _attention_layers(ip: Mapping[str, torch.Tensor], name: str) -> nn.ModuleList:
    if any("_lora." in k for k in ip):
        raise IPAdapterError(f"{name} carries LoRA weights (an IP-Adapter FaceID model), which are not supported")
    ids = sorted(int(m.group(1)) for k in ip if (m := re.fullmatch(r"(\d+)\.to_k_ip\.weight", k)))
    if not ids or ids != list(range(1, 2 * len(ids), 2)):
        raise IPAdapterError(f"{name}: expected image key/value weights 1, 3, 5, ... (one per cross-attention "
                             f"layer), found {ids[:8]}")
    layers = []
    for i in ids:
        k, v = ip[f"{i}.to_k_ip.weight"], ip.get(f"{i}.to_v_ip.weight")
        if v is None or v.shape != k.shape or k.ndim != 2:
            raise IPAdapterError(f"{name}: layer {i}'s to_k_ip / to_v_ip weights are missing or differ in shape")
        layers.append(_LayerKV(k.to(torch.float32), v.to(torch.float32)))
    widths = {int(m.to_k_ip.in_features) for m in layers}
    if len(widths) != 1:
        raise IPAdapterError(f"{name}: the layers' image keys take different widths {sorted(widths)}")
    return nn.ModuleList(layers)


def load_ip_adapter(path: str | Path) -> IPAdapterHandle:
    """An IP-Adapter handle for an h94-layout file, shared with earlier loads of that file."""
    from . import loading

    p = Path(path)
    if not p.is_file():
        raise IPAdapterError(f"{p} is not a file (an IP-Adapter is one .safetensors or .bin file)")

    def load() -> IPAdapterHandle:
        proj_sd, ip_sd = read_adapter(p)
        module, kind, embed, tokens = _image_projection(proj_sd, p.name)
        layers = _attention_layers(ip_sd, p.name)
        out_width = int(module.norm_out.normalized_shape[0] if kind == "plus" else module.norm.normalized_shape[0])
        if out_width != int(layers[0].to_k_ip.in_features):
            raise IPAdapterError(f"{p.name}: the image projection makes {out_width}-wide tokens but the attention "
                                 f"layers take {layers[0].to_k_ip.in_features}")
        module.eval().requires_grad_(False)
        layers.eval().requires_grad_(False)
        return IPAdapterHandle(image_proj=module, layers=layers, kind=kind, embed_width=embed,
                               tokens_per_image=tokens, source=p.name)

    return loading._cached(loading._cache_key("ipadapter", p.resolve()), load)


# CLIP vision ---------------------------------------------------------------------------------------------

# Heads cannot be read from the weights; the published encoders: ViT-B/16 (768 wide, 12 heads), ViT-L/14 (1024, 16),
# ViT-H/14 (1280, 16), ViT-bigG/14 (1664, 16); others are taken as 64 wide per head.
_HEADS = {768: 12, 1024: 16, 1280: 16, 1664: 16}


def infer_clip_vision_config(shapes: Mapping[str, tuple], metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """CLIPVisionConfig values from transformers-layout keys (`vision_model.*`, `visual_projection.weight`)."""
    pre = "vision_model."
    patch = shapes[pre + "embeddings.patch_embedding.weight"]
    positions = int(shapes[pre + "embeddings.position_embedding.weight"][0])
    grid = round((positions - 1) ** 0.5)
    if grid * grid != positions - 1:
        raise IPAdapterError(f"{positions} position embeddings are not a square grid plus the class token")
    hidden = int(patch[0])
    layers = len({k.split(".")[3] for k in shapes if k.startswith(pre + "encoder.layers.")})
    heads = _HEADS.get(hidden, hidden // 64 if hidden % 64 == 0 else 1)
    cfg: dict[str, Any] = {
        "hidden_size": hidden, "patch_size": int(patch[-1]), "num_channels": int(patch[1]), "image_size": grid * int(patch[-1]),
        "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": int(shapes[pre + "encoder.layers.0.mlp.fc1.weight"][0]),
        # OpenAI's ViT-L/14 uses quick GELU; the LAION encoders (ViT-H, ViT-bigG) the exact one
        "hidden_act": "quick_gelu" if hidden == 1024 else "gelu",
    }
    if "visual_projection.weight" in shapes:
        cfg["projection_dim"] = int(shapes["visual_projection.weight"][0])
    raw = (metadata or {}).get(CONFIG_METADATA_KEY)
    if raw:
        try:
            extra = json.loads(raw)
        except ValueError:
            extra = {}
        if isinstance(extra, dict):
            cfg.update({k: v for k, v in extra.items() if not k.startswith("_")})
    return cfg


def _clip_single_file(path: Path) -> tuple[nn.Module, bool]:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from . import loading

    try:
        state, metadata = loading.read_state_dict(path)
    except loading.CheckpointError as exc:
        raise IPAdapterError(str(exc)) from None
    for prefix in ("clip_vision_model.", "model."):
        if any(k.startswith(prefix + "vision_model.") for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    if "vision_model.embeddings.patch_embedding.weight" not in state:
        if any(k.startswith("visual.") for k in state):
            raise IPAdapterError(f"{path.name} is an open_clip checkpoint (visual.*); convert it to the transformers "
                                 "layout (CLIPVisionModelWithProjection) or use a transformers folder")
        raise IPAdapterError(f"{path.name} is not a CLIP vision model (no vision_model.embeddings.patch_embedding; "
                             f"first keys: {sorted(state)[:5]})")
    cfg = infer_clip_vision_config({k: tuple(v.shape) for k, v in state.items()}, metadata)
    has_projection = "visual_projection.weight" in state
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg))
    own = model.state_dict()
    wanted = {k: v for k, v in state.items() if k in own}
    bad = [k for k, v in wanted.items() if tuple(own[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in wanted and not k.endswith("position_ids") and k != "visual_projection.weight"]
    if bad or missing:
        raise IPAdapterError(f"{path.name}: the weights do not fit the inferred CLIP vision config (shapes {bad[:3]}, "
                             f"missing {missing[:3]}); add a '{CONFIG_METADATA_KEY}' metadata entry with the config")
    model.load_state_dict({k: v.to(torch.float32) for k, v in wanted.items()}, strict=False)
    return model, has_projection


def _clip_folder(folder: Path) -> tuple[nn.Module, bool]:
    from transformers import CLIPVisionModelWithProjection

    if not (folder / "config.json").is_file():
        raise IPAdapterError(f"{folder.name} is a folder without config.json (not a transformers CLIP vision model)")
    try:
        model, info = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True,
                                                                    dtype=torch.float32, output_loading_info=True)
    except Exception as exc:
        raise IPAdapterError(f"{folder.name}: cannot load it as a CLIP vision model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    missing = [k for k in info.get("missing_keys", ()) if not k.endswith("position_ids")]
    has_projection = "visual_projection.weight" not in missing
    missing = [k for k in missing if k != "visual_projection.weight"]
    if missing:
        raise IPAdapterError(f"{folder.name}: the CLIP vision weights lack {missing[:5]}")
    return model, has_projection


def load_clip_vision(path: str | Path) -> ClipVisionHandle:
    """A CLIP vision handle for a transformers folder or a single file, shared with earlier loads of that path."""
    from . import loading

    p = Path(path)
    if not p.exists():
        raise IPAdapterError(f"{p} does not exist")

    def load() -> ClipVisionHandle:
        if p.is_dir():
            (model, proj), layout = _clip_folder(p), "transformers folder"
        else:
            (model, proj), layout = _clip_single_file(p), "single file"
        model.eval().requires_grad_(False)
        return ClipVisionHandle(model=model, source=p.name, has_projection=proj, layout=layout)

    return loading._cached(loading._cache_key("clip_vision", p.resolve()), load)


# ------------------------------------------------------------------------------------------------ checks


def check_clip(adapter: IPAdapterHandle, clip: ClipVisionHandle) -> None:
    """The encoder gives what the adapter's projection takes: image embeds (basic) or hidden states this wide."""
    if adapter.uses_hidden_states:
        got, what = clip.hidden_size, "hidden states"
    elif not clip.has_projection:
        raise NodeError(f"IP-Adapter {adapter.source} takes projected CLIP image embeddings {adapter.embed_width} wide, "
                        f"but CLIP vision model {clip.source} has no projection (visual_projection); use the image "
                        "encoder the adapter was trained with")
    else:
        got, what = int(clip.projection_dim or 0), "image embeddings"
    if got != adapter.embed_width:
        raise NodeError(f"IP-Adapter {adapter.source} takes CLIP {what} {adapter.embed_width} wide, but CLIP vision "
                        f"model {clip.source} gives {what} {got} wide: use the image encoder the adapter was trained "
                        "with (ViT-H/14 for most SD 1.5 and the *_vit-h SDXL adapters, ViT-bigG/14 for ip-adapter_sdxl)")


def check_conditioning(adapter: IPAdapterHandle, cond: Conditioning) -> None:
    """An adapter's tokens are as wide as the text context of the UNet family it was made for."""
    width = int(cond.embeds.shape[-1])
    if width != adapter.width:
        raise NodeError(f"IP-Adapter {adapter.source} is for {adapter.describe()}, but the conditioning is "
                        f"{family_label(cond.family)} (text width {width}): use an IP-Adapter made for the checkpoint's "
                        "model family")


_layers_cache: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()
_layers_lock = threading.Lock()


def cross_attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, attention) for every cross-attention layer, in the order IP-Adapter weights are numbered: diffusers'
    `attn_processors` order, every attention module but the self-attention (`attn1`) and motion modules."""
    with _layers_lock:
        hit = _layers_cache.get(model)
        if hit is not None:
            return hit
    layers = [(name, m) for name, m in model.named_modules()
              if hasattr(m, "set_processor") and hasattr(m, "processor") and name
              and not name.endswith("attn1") and "motion_modules" not in name]
    with _layers_lock:
        _layers_cache[model] = layers
    return layers


def check_unet(adapter: IPAdapterHandle, model: nn.Module, family: str | None = None) -> list[tuple[str, nn.Module]]:
    """The adapter has one key/value pair per cross-attention layer of this UNet, each of that layer's shape."""
    layers = cross_attention_layers(model)
    fits = len(layers) == len(adapter.layers) and all(
        tuple(kv.to_k_ip.weight.shape) == tuple(attn.to_k.weight.shape)
        and tuple(kv.to_v_ip.weight.shape) == tuple(attn.to_v.weight.shape)
        for kv, (_, attn) in zip(adapter.layers, layers))
    if not fits:
        width = int(layers[0][1].to_k.weight.shape[1]) if layers else 0
        raise NodeError(f"IP-Adapter {adapter.source} is for {adapter.describe()}, but the UNet is "
                        f"{family_label(family)} ({len(layers)} cross-attention layers, context width {width}): use an "
                        "IP-Adapter made for the checkpoint's model family")
    return layers


# ------------------------------------------------------------------------------------------------ images

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OPENAI_CLIP_MEAN / STD, CLIPImageProcessor's defaults
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(image: torch.Tensor, size: int) -> torch.Tensor:
    """IMAGE [B,H,W,C] in 0..1 -> CLIP pixel values [B,3,size,size] (float32), as CLIPImageProcessor computes them
    for the same picture as 8-bit RGB: resize the shortest side to `size` (bicubic, antialiased), centre crop,
    rescale by 1/255 (in float64, as transformers), normalise with CLIP's mean and std (in float32).

    The resize is Pillow's own on 8-bit pixels (the processor's PIL backend, what IP-Adapter was trained with): its
    fixed-point filter rounds to 8 bits between the two passes and picks their order itself, so only Pillow gives
    bit-identical pixels. transformers' torchvision backend (when torchvision is installed) resizes in float and
    differs from it by up to one 8-bit level in a few pixels."""
    import numpy as np
    from PIL import Image

    if image.ndim != 4:
        raise NodeError(f"image: expected [batch, height, width, channels], got shape {list(image.shape)}")
    rgb = image[..., :3] if image.shape[-1] >= 3 else image[..., :1].repeat(1, 1, 1, 3)
    u8 = (rgb.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    out = []
    for arr in u8:
        h, w = arr.shape[:2]
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(size * long / short)  # transformers' get_resize_output_image_size (shortest edge)
        new_h, new_w = (new_long, size) if w <= h else (size, new_long)
        pil = Image.fromarray(np.ascontiguousarray(arr))
        if (new_w, new_h) != (w, h):
            pil = pil.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.array(pil, dtype=np.uint8)).permute(2, 0, 1)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        out.append(x[:, top:top + size, left:left + size])
    x = torch.stack(out).to(torch.float64) * (1 / 255)  # transformers' rescale: float64, then float32
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32)[:, None, None]
    return ((x.to(torch.float32) - mean) / std).contiguous()


def encode_image_prompt(adapter: IPAdapterHandle, clip: ClipVisionHandle, image: torch.Tensor, devices: Any,
                        negative_image: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(image tokens, blank tokens), each [images x tokens per image, width], as diffusers' pipeline computes them:
    the encoder on all images at once; the blank is a zero image embedding (basic) or the hidden states of zero
    pixel values (plus, full face), unless a negative image is given; both projected in one [blank, image] batch."""
    check_clip(adapter, clip)
    pixels = clip_pixels(image, clip.image_size)
    neg_pixels = None
    if negative_image is not None:
        neg_pixels = clip_pixels(negative_image, clip.image_size)
        if neg_pixels.shape[0] == 1 and pixels.shape[0] > 1:
            neg_pixels = neg_pixels.repeat(pixels.shape[0], 1, 1, 1)
        elif neg_pixels.shape[0] != pixels.shape[0]:
            raise NodeError(f"image_negative: {neg_pixels.shape[0]} images for {pixels.shape[0]} images; give one "
                            "negative image or one per image")
    with torch.no_grad(), devices.use(clip.model) as encoder:
        p = next(encoder.parameters())
        x = pixels.to(device=p.device, dtype=p.dtype)

        def run(inputs: torch.Tensor) -> torch.Tensor:
            if adapter.uses_hidden_states:
                return encoder(inputs, output_hidden_states=True).hidden_states[-2]
            return encoder(inputs).image_embeds

        embeds = run(x)
        if neg_pixels is not None:
            blank = run(neg_pixels.to(device=p.device, dtype=p.dtype))
        elif adapter.uses_hidden_states:
            blank = run(torch.zeros_like(x))
        else:
            blank = torch.zeros_like(embeds)
    with torch.no_grad(), devices.use(adapter.image_proj) as proj:
        q = next(proj.parameters())
        both = proj(torch.cat([blank, embeds]).to(device=q.device, dtype=q.dtype))
    n = embeds.shape[0]
    width = both.shape[-1]
    return both[n:].reshape(-1, width), both[:n].reshape(-1, width)


# ------------------------------------------------------------------------------------------------ sampling


class IPAttnProcessor:
    """Cross-attention with IP-Adapter image attention added before the output projection: diffusers'
    IPAdapterAttnProcessor2_0 (same head split, same SDPA calls, weight applied to the attention's output), for
    one UNet call. The call's image tokens arrive as `ip_hidden_states` (from the UNet's cross_attention_kwargs):
    one (tokens [rows, n, width], weight) per image prompt, with this layer's key/value projections in `slots`."""

    def __init__(self, slots: tuple[tuple[nn.Module, nn.Module], ...]) -> None:
        self.slots = slots

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 ip_hidden_states: Any = None) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                          else encoder_hidden_states.shape)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:  # as AttnProcessor2_0 (None in SD UNets)
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                       is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        for (to_k_ip, to_v_ip), (tokens, weight) in zip(self.slots, ip_hidden_states or ()):
            ip_key = to_k_ip(tokens).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            ip_value = to_v_ip(tokens).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            ip = F.scaled_dot_product_attention(query, ip_key, ip_value, attn_mask=None, dropout_p=0.0, is_causal=False)
            ip = ip.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
            # diffusers' `scale * ip` with a Python float: computed in float32, rounded to the activations' dtype
            hidden_states = hidden_states + (weight * ip.float()).to(ip.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def active(prompt: ImagePrompt, state: Any, step: int) -> bool:
    """Whether a prompt takes part at this step: a non-zero weight, inside its window (ControlNet's rule: of the
    steps, `i / steps < start or (i + 1) / steps > end` is off; or of the noise levels, ComfyUI's)."""
    if prompt.weight == 0.0:
        return False
    if prompt.start <= 0.0 and prompt.end >= 1.0:
        return True
    from .controlnet import keep_factor

    total = int(getattr(state, "total", 0) or len(state.timesteps))
    return keep_factor(prompt, step, total, state) != 0.0  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class CallPrompts:
    """The image prompts of one UNet call: per prompt (slot) the adapter, the tokens of every row and the weight."""

    adapters: tuple[IPAdapterHandle, ...]
    tokens: tuple[torch.Tensor, ...]  # [rows, n, width] each
    weights: tuple[float, ...]


def _rows(t: torch.Tensor, batch: int) -> torch.Tensor:
    return t[None].expand(batch, *t.shape)


def prompts_for_call(positive: Conditioning, negative: Conditioning | None, state: Any, step: int,
                     batch: int) -> CallPrompts | None:
    """The image prompts active at `step`, with their tokens for the rows of the UNet call on `batch` latents:
    [uncond x batch, cond x batch] when `negative` is given (guidance), else cond x batch. A positive's prompt gives
    the cond rows its image tokens and the uncond rows its blank ones; a negative's prompt the other way round.
    None when no prompt applies (the UNet runs untouched)."""
    pos = [p for p in getattr(positive, "image_prompts", ()) if active(p, state, step)]
    neg = [q for q in getattr(negative, "image_prompts", ()) if active(q, state, step)] if negative is not None else []
    if not pos and not neg:
        return None
    adapters, tokens, weights = [], [], []
    device, dtype = state.device, state.dtype
    for p in pos + [q.mirrored() for q in neg]:  # as seen from the positive side
        if p.tokens.shape != p.opposite.shape:
            raise NodeError(f"IP-Adapter {p.adapter.source}: image and blank tokens differ in shape "
                            f"({tuple(p.tokens.shape)} vs {tuple(p.opposite.shape)})")
        cond = _rows(p.tokens, batch)
        rows = torch.cat([_rows(p.opposite, batch), cond]) if negative is not None else cond
        adapters.append(p.adapter)
        tokens.append(rows.to(device=device, dtype=dtype).contiguous())
        weights.append(float(p.weight))
    return CallPrompts(tuple(adapters), tuple(tokens), tuple(weights))


def alone(part: Conditioning, other: Conditioning | None) -> tuple:
    """The image prompts of a prompt predicted on its own (ConditioningCombine, areas, step ranges): its own, plus
    the other side's as its rows would see them in a guided batch (mirrored), so that each prompt's prediction
    equals its half of the batched one."""
    if other is None:
        return tuple(getattr(part, "image_prompts", ()))
    seen: dict[int, ImagePrompt] = {}
    for c in [replace(other, combined=())] + list(other.combined):
        for p in getattr(c, "image_prompts", ()):
            seen.setdefault(id(p), p)
    return tuple(getattr(part, "image_prompts", ())) + tuple(p.mirrored() for p in seen.values())


_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def active_key(model: nn.Module) -> tuple:
    """What the installed IP-Adapter attention changes in the traced graph (part of fast mode's compile keys):
    the adapters' key/value modules per slot, () when none is installed."""
    return _ACTIVE.get(model, ())


@contextmanager
def installed_for_call(model: nn.Module, prompts: CallPrompts | None, devices: Any,
                       family: str | None = None) -> Iterator[dict]:
    """Install the prompts' image attention on `model`'s cross-attention layers for the block; yields the UNet
    call's extra keyword arguments ({} without prompts). The original processors are restored in `finally`."""
    if prompts is None:
        yield {}
        return
    unique = {id(a): a for a in prompts.adapters}
    layers = [check_unet(adapter, model, family) for adapter in unique.values()][0]  # before anything changes
    with ExitStack() as stack:
        placed = {key: stack.enter_context(devices.use(a.layers)) for key, a in unique.items()}
        device = next(model.parameters()).device
        # float32 tensors, not Python floats: a compiled UNet (fast mode) takes a new weight without recompiling
        weights = [torch.tensor(w, dtype=torch.float32, device=device) for w in prompts.weights]
        saved: list[tuple[nn.Module, Any]] = []
        try:
            for i, (_, attn) in enumerate(layers):
                slots = tuple((placed[id(a)][i].to_k_ip, placed[id(a)][i].to_v_ip) for a in prompts.adapters)
                saved.append((attn, attn.processor))
                attn.set_processor(IPAttnProcessor(slots))
            _ACTIVE[model] = tuple(id(a.layers) for a in prompts.adapters)
            yield {"cross_attention_kwargs": {"ip_hidden_states": list(zip(prompts.tokens, weights))}}
        finally:
            _ACTIVE.pop(model, None)
            for attn, processor in reversed(saved):
                attn.set_processor(processor)


__all__ = [
    "CallPrompts", "ClipVisionHandle", "IPAdapterError", "IPAdapterHandle", "IPAttnProcessor", "ImagePrompt",
    "active", "active_key", "alone", "check_clip", "check_conditioning", "check_unet", "clip_pixels",
    "cross_attention_layers", "encode_image_prompt", "infer_clip_vision_config", "installed_for_call",
    "load_clip_vision", "load_ip_adapter", "prompts_for_call", "read_adapter",
]
