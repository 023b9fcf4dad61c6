"""ControlNet (Zhang et al. 2023): loading, the compatibility check, and the residuals of one denoise step.

Loading: a diffusers folder (`config.json` + weights), or a single file in the original layout
(`control_model.input_blocks...`, `zero_convs`, `input_hint_block`, `middle_block_out`; .safetensors, or .pth/.ckpt
through `torch.load(weights_only=True)`), or a single file with diffusers key names. A single file's config is
read from its shapes (block widths, levels, attention depth, text width, hint-encoder widths) on top of the
shipped SD 1.x / 2.x / XL UNet config; nothing is downloaded. All ControlNet kinds of the paper (canny, depth,
normal, pose, M-LSD, HED, segmentation, scribble) share this architecture, so they load the same way.

At sampling time `residuals_for_step` turns the hints attached to the conditionings into one function that the
UNet call uses. The UNet input is the [uncond, cond] batch: a hint attached to both conditionings (as
ApplyControlNetAdvanced does) runs on the whole batch, exactly as diffusers' ControlNet pipeline; a hint on the
positive only runs on the cond half (the uncond half gets nothing), one on the negative only on the uncond half.
Several hints add up in order, as diffusers' MultiControlNetModel. A hint is off at step i when
`i / steps < start or (i + 1) / steps > end` (diffusers' control_guidance_start/end); an off hint contributes
exactly zero, so it is skipped.
"""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from engine.node import NodeError

from .handles import Conditioning, ControlHint, family_label

RESIZE_MODES = ("crop", "stretch", "pad")
CONFIG_METADATA_KEY = "latentloom.config"


class ControlNetError(ValueError):
    pass


@dataclass(frozen=True, eq=False)
class Hint(ControlHint):
    """A ControlHint that also says how a control image of another size is fitted (the node's option)."""

    resize: str = "crop"


@dataclass(frozen=True, eq=False)
class ControlNetHandle:
    model: torch.nn.Module
    source: str = ""
    layout: str = ""  # "diffusers folder", "original single file", "diffusers single file"

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def is_sdxl(self) -> bool:
        return getattr(self.config, "addition_embed_type", None) == "text_time"

    @property
    def text_width(self) -> int:
        return int(self.config.cross_attention_dim)

    @property
    def downscale(self) -> int:
        """Control-image pixels per latent pixel (the hint encoder's strided convolutions)."""
        return 2 ** (len(self.config.conditioning_embedding_out_channels) - 1)

    @property
    def in_channels(self) -> int:
        return int(self.config.in_channels)

    def describe(self) -> str:
        w = self.text_width
        if self.is_sdxl:
            kind = "SDXL"
        else:
            kind = {768: "SD 1.x", 1024: "SD 2.x"}.get(w, "a custom model")
        return f"{kind} (text width {w}{', pooled + size conditioning' if self.is_sdxl else ''})"

    def __loom_summary__(self) -> dict[str, Any]:
        p = next(self.model.parameters(), None)
        return {"kind": "handle", "model": "ControlNet", "source": self.source, "layout": self.layout,
                "for": self.describe(), "downscale": self.downscale,
                "parameters": sum(q.numel() for q in self.model.parameters()),
                "dtype": str(p.dtype).replace("torch.", "") if p is not None else None}

    def __loom_nbytes__(self) -> int:
        return 256


# ------------------------------------------------------------------------------------------------ checks


def check_conditioning(cn: ControlNetHandle, cond: Conditioning, what: str = "conditioning") -> None:
    """A ControlNet only works with the UNet family it was trained for: compare text width and SDXL-ness."""
    width = int(cond.embeds.shape[-1])
    sdxl = cond.pooled is not None
    if width != cn.text_width or sdxl != cn.is_sdxl:
        cond_kind = f"{family_label(cond.family)} (text width {width}{', pooled' if sdxl else ''})"
        raise NodeError(f"ControlNet {cn.source} is for {cn.describe()}, but the {what} is {cond_kind}: "
                        "use a ControlNet made for the checkpoint's model family")


# ------------------------------------------------------------------------------------------------ layouts


def controlnet_ldm_names(state_keys: list[str]) -> dict[str, str]:
    """diffusers ControlNetModel key -> original (LDM) key, for every key of `state_keys`."""
    from .ldm_convert import unet_to_ldm

    unet_like = [k for k in state_keys if not k.startswith(("controlnet_down_blocks.", "controlnet_mid_block.",
                                                            "controlnet_cond_embedding."))]
    mapping = {diff: ldm for ldm, diff in unet_to_ldm({k: k for k in unet_like}).items()}
    n_blocks = len({k.split(".")[2] for k in state_keys if k.startswith("controlnet_cond_embedding.blocks.")})
    for k in state_keys:
        head, _, param = k.rpartition(".")
        if m := re.match(r"^controlnet_down_blocks\.(\d+)$", head):
            mapping[k] = f"zero_convs.{m.group(1)}.0.{param}"
        elif head == "controlnet_mid_block":
            mapping[k] = f"middle_block_out.0.{param}"
        elif head == "controlnet_cond_embedding.conv_in":
            mapping[k] = f"input_hint_block.0.{param}"
        elif m := re.match(r"^controlnet_cond_embedding\.blocks\.(\d+)$", head):
            mapping[k] = f"input_hint_block.{2 * (int(m.group(1)) + 1)}.{param}"
        elif head == "controlnet_cond_embedding.conv_out":
            mapping[k] = f"input_hint_block.{2 * (n_blocks + 1)}.{param}"
    missing = [k for k in state_keys if k not in mapping]
    if missing:
        raise ControlNetError(f"no original-layout name for {missing[:5]}")
    return mapping


def controlnet_to_ldm(model: torch.nn.Module, prefix: str = "control_model.") -> dict[str, torch.Tensor]:
    """A diffusers ControlNetModel's weights in the original single-file layout (for tests and export)."""
    state = model.state_dict()
    names = controlnet_ldm_names(list(state))
    return {prefix + names[k]: v for k, v in state.items()}


def _hint_channels(shapes: Mapping[str, tuple]) -> list[int]:
    idx = sorted(int(m.group(1)) for k, s in shapes.items()
                 if (m := re.match(r"^input_hint_block\.(\d+)\.weight$", k)) and len(s) == 4)
    if len(idx) < 2 or len(idx) % 2:
        raise ControlNetError(f"unexpected hint-encoder layout (convolutions at {idx})")
    convs = idx[:-1]  # the last one is the zero conv into the UNet width
    out = [shapes[f"input_hint_block.{convs[0]}.weight"][0]]
    out += [shapes[f"input_hint_block.{convs[j]}.weight"][0] for j in range(2, len(convs), 2)]
    return [int(c) for c in out]


def _metadata_config(metadata: Mapping[str, str] | None) -> dict[str, Any]:
    raw = (metadata or {}).get(CONFIG_METADATA_KEY)
    if not raw:
        return {}
    try:
        cfg = json.loads(raw)
    except ValueError:
        return {}
    cfg = cfg.get("controlnet", cfg) if isinstance(cfg, dict) else {}
    return {k: v for k, v in cfg.items() if not k.startswith("_")} if isinstance(cfg, dict) else {}


def _controlnet_params() -> set[str]:
    import inspect

    from diffusers import ControlNetModel

    return set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}


def infer_ldm_config(shapes: Mapping[str, tuple], metadata: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """(arch, ControlNetModel config) from original-layout keys (without the `control_model.` prefix)."""
    from . import detect, loading
    from . import ldm_convert as lc

    if "input_blocks.0.0.weight" not in shapes or "input_hint_block.0.weight" not in shapes:
        raise ControlNetError("not a ControlNet in the original layout (no input_blocks / input_hint_block)")
    prefixed = {lc.UNET_PREFIX + k: tuple(v) for k, v in shapes.items()}
    facts = detect._unet_facts(prefixed)
    if "label_emb.0.0.weight" in shapes:
        arch = "sdxl"
    elif facts.get("linear_proj") or facts.get("context_dim") == 1024:
        arch = "sd2"
    else:
        arch = "sd15"
    base = loading.component_configs(arch)["unet"]
    unet_facts, guesses = detect._infer_unet(prefixed, base)
    cfg = {k: v for k, v in base.items() if not k.startswith("_")}
    cfg.update(guesses)
    cfg.update(_metadata_config(metadata))
    cfg.update(unet_facts)
    cfg["conditioning_embedding_out_channels"] = _hint_channels(shapes)
    cfg["conditioning_channels"] = int(shapes["input_hint_block.0.weight"][1])
    allowed = _controlnet_params()
    return arch, {k: v for k, v in cfg.items() if k in allowed}


def _infer_diffusers_config(shapes: Mapping[str, tuple], metadata: Mapping[str, str] | None) -> dict[str, Any]:
    """Config of a single file with diffusers key names, from its shapes."""
    from . import detect, loading

    levels = len({k.split(".")[1] for k in shapes if k.startswith("down_blocks.")})
    per_level = len({k.split(".")[3] for k in shapes if k.startswith("down_blocks.0.resnets.")})
    channels = [int(shapes[f"down_blocks.{i}.resnets.0.conv2.weight"][0]) for i in range(levels)]
    down, layers = [], []
    for i in range(levels):
        n = len({k.split(".")[5] for k in shapes if k.startswith(f"down_blocks.{i}.attentions.0.transformer_blocks.")})
        down.append("CrossAttnDownBlock2D" if n else "DownBlock2D")
        layers.append(max(n, 1))
    ctx = next((int(v[1]) for k, v in sorted(shapes.items()) if k.endswith("attn2.to_k.weight")), None)
    proj = next((v for k, v in sorted(shapes.items()) if k.endswith("proj_in.weight")), None)
    sdxl = "add_embedding.linear_1.weight" in shapes
    arch = "sdxl" if sdxl else ("sd2" if (proj is not None and len(proj) == 2) or ctx == 1024 else "sd15")
    base = loading.component_configs(arch)["unet"]
    cfg = {k: v for k, v in base.items() if not k.startswith("_")}
    cfg["attention_head_dim"] = detect._guess_unet_heads(channels, base.get("attention_head_dim"))
    cfg.update(_metadata_config(metadata))
    cfg.update(block_out_channels=channels, layers_per_block=per_level, down_block_types=down,
               transformer_layers_per_block=layers if any(n > 1 for n in layers) else 1,
               in_channels=int(shapes["conv_in.weight"][1]))
    if ctx is not None:
        cfg["cross_attention_dim"] = ctx
    if proj is not None:
        cfg["use_linear_projection"] = len(proj) == 2
    if sdxl:
        cfg["projection_class_embeddings_input_dim"] = int(shapes["add_embedding.linear_1.weight"][1])
    n_blocks = len({k.split(".")[2] for k in shapes if k.startswith("controlnet_cond_embedding.blocks.")})
    hint = [int(shapes["controlnet_cond_embedding.conv_in.weight"][0])]
    hint += [int(shapes[f"controlnet_cond_embedding.blocks.{j}.weight"][0]) for j in range(1, n_blocks, 2)]
    cfg["conditioning_embedding_out_channels"] = hint
    cfg["conditioning_channels"] = int(shapes["controlnet_cond_embedding.conv_in.weight"][1])
    allowed = _controlnet_params()
    return {k: v for k, v in cfg.items() if k in allowed}


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from . import loading

    try:
        return loading.read_state_dict(path)
    except loading.CheckpointError as exc:
        raise ControlNetError(str(exc)) from None


def _load_single_file(path: Path) -> tuple[torch.nn.Module, str]:
    from diffusers import ControlNetModel

    state, metadata = _read(path)
    for prefix in ("control_model.", "model.control_model."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if "controlnet_cond_embedding.conv_in.weight" in state:
        layout = "diffusers single file"
        cfg = _infer_diffusers_config(shapes, metadata)
        model = ControlNetModel.from_config(cfg)
        converted = state
    elif "input_hint_block.0.weight" in state:
        layout = "original single file"
        _, cfg = infer_ldm_config(shapes, metadata)
        model = ControlNetModel.from_config(cfg)
        names = controlnet_ldm_names(list(model.state_dict()))
        missing = [ldm for ldm in names.values() if ldm not in state]
        if missing:
            raise ControlNetError(f"{path.name}: the inferred ControlNet needs keys the file lacks: {missing[:5]}")
        converted = {diff: state[ldm] for diff, ldm in names.items()}
    else:
        if any(k.startswith(("model.diffusion_model.", "first_stage_model.")) for k in state):
            raise ControlNetError(f"{path.name} is a Stable Diffusion checkpoint, not a ControlNet "
                                  "(put it in models/checkpoints)")
        raise ControlNetError(f"{path.name} is not a ControlNet: no control_model.* / input_hint_block / "
                              f"controlnet_cond_embedding keys (first keys: {sorted(state)[:5]})")
    own = model.state_dict()
    bad = [k for k, v in converted.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        raise ControlNetError(f"{path.name}: shapes do not fit the inferred config at {bad[:3]} "
                              f"({[tuple(converted[k].shape) for k in bad[:3]]} vs {[tuple(own[k].shape) for k in bad[:3]]}); "
                              f"add a '{CONFIG_METADATA_KEY}' metadata entry with the config")
    result = model.load_state_dict({k: v.to(torch.float32) for k, v in converted.items()}, strict=False)
    if result.missing_keys:
        raise ControlNetError(f"{path.name}: missing weights {result.missing_keys[:5]}")
    return model, layout


def _load_folder(folder: Path) -> torch.nn.Module:
    from diffusers import ControlNetModel

    if not (folder / "config.json").is_file():
        raise ControlNetError(f"{folder.name} is a folder without config.json (not a diffusers ControlNet)")
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("_class_name") not in (None, "ControlNetModel"):
        raise ControlNetError(f"{folder.name} holds a {cfg.get('_class_name')}, not a ControlNetModel")
    return ControlNetModel.from_pretrained(str(folder), torch_dtype=torch.float32, local_files_only=True)


def load_controlnet(path: str | Path) -> ControlNetHandle:
    """A ControlNet handle for a diffusers folder or a single file, shared with earlier loads of that file."""
    from . import loading

    p = Path(path)
    if not p.exists():
        raise ControlNetError(f"{p} does not exist")

    def load() -> ControlNetHandle:
        if p.is_dir():
            model, layout = _load_folder(p), "diffusers folder"
        else:
            model, layout = _load_single_file(p)
        model.eval().requires_grad_(False)
        return ControlNetHandle(model=model, source=p.name, layout=layout)

    return loading._cached(loading._cache_key("controlnet", p.resolve()), load)


# ------------------------------------------------------------------------------------------------ images


def fit_image(image: torch.Tensor, height: int, width: int, mode: str, method: str = "bilinear") -> torch.Tensor:
    """[B,H,W,C] -> [B,height,width,C]: `stretch` to the size, `crop` (cover, then cut the overflow centred),
    or `pad` (fit inside, then pad with black, centred)."""
    from nodes.impl.transform import resize_image

    h, w = image.shape[1:3]
    if (h, w) == (height, width):
        return image
    if mode == "stretch":
        return resize_image(image, width, height, method, "disabled")
    if mode == "crop":
        return resize_image(image, width, height, method, "center")
    if mode == "pad":
        scale = min(width / w, height / h)
        nw, nh = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
        inner = resize_image(image, nw, nh, method, "disabled")
        out = torch.zeros((image.shape[0], height, width, image.shape[3]), dtype=image.dtype)
        y0, x0 = (height - nh) // 2, (width - nw) // 2
        out[:, y0:y0 + nh, x0:x0 + nw] = inner
        return out
    raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")


_prepared: "weakref.WeakKeyDictionary[ControlHint, dict]" = weakref.WeakKeyDictionary()


def prepared_image(hint: ControlHint, height: int, width: int, batch: int, device: Any, dtype: Any) -> torch.Tensor:
    """The hint's image as the ControlNet takes it: [batch, 3, height, width] in 0..1 on the device (cached)."""
    key = (height, width, batch, str(device), dtype)
    per_hint = _prepared.setdefault(hint, {})
    hit = per_hint.get(key)
    if hit is not None:
        return hit
    img = hint.image
    if img.ndim == 3:
        img = img[None]
    if img.shape[-1] == 1:
        img = img.repeat(1, 1, 1, 3)
    elif img.shape[-1] == 4:
        img = img[..., :3]
    img = fit_image(img.float().cpu(), height, width, getattr(hint, "resize", "crop"))
    x = img.permute(0, 3, 1, 2).contiguous().to(torch.float32)
    if x.shape[0] == 1:
        x = x.repeat_interleave(batch, dim=0)
    elif x.shape[0] != batch:
        reps = -(-batch // x.shape[0])
        x = x.repeat(reps, 1, 1, 1)[:batch]
    x = x.to(device=device, dtype=dtype)
    per_hint.clear()  # one size per hint is enough
    per_hint[key] = x
    return x


# ------------------------------------------------------------------------------------------------ residuals


def keep_factor(hint: ControlHint, step: int, total: int, state: Any = None) -> float:
    """0 outside the hint's [start, end], else 1: of the steps (diffusers' controlnet_keep), or with
    `by_noise_level` of the noise levels at this step's timestep (ComfyUI's rule, needs the sampler `state`)."""
    if hint.by_noise_level and state is not None and step < len(state.timesteps):
        from .denoise import in_noise_range

        trained = int(getattr(state.scheduler.config, "num_train_timesteps", 1000) or 1000)
        return float(in_noise_range(hint.start, hint.end, state.timesteps[step], trained))
    if total <= 0:
        return 1.0
    return 1.0 - float(step / total < hint.start or (step + 1) / total > hint.end)


def _same(a: ControlHint, b: ControlHint) -> bool:
    return a is b or (a.controlnet is b.controlnet and a.image is b.image and a.strength == b.strength
                      and a.start == b.start and a.end == b.end and a.by_noise_level == b.by_noise_level
                      and getattr(a, "resize", None) == getattr(b, "resize", None))


def plan_hints(positive: Conditioning, negative: Conditioning | None) -> list[tuple[ControlHint, str]]:
    """(hint, side) in order: side 'both', 'pos' (cond half) or 'neg' (uncond half)."""
    neg = list(negative.controls) if negative is not None else []
    plan: list[tuple[ControlHint, str]] = []
    for h in positive.controls:
        match = next((i for i, n in enumerate(neg) if _same(h, n)), None)
        if match is not None:
            neg.pop(match)
            plan.append((h, "both"))
        else:
            plan.append((h, "pos"))
    plan += [(h, "neg") for h in neg]
    return plan


def residuals_for_step(positive: Conditioning, negative: Conditioning | None, state: Any, step: int,
                       devices: Any) -> Callable | None:
    """A function (model_in, t, embeds, added_cond_kwargs, use_cfg) -> (down residuals, mid residual)."""
    total = int(getattr(state, "total", 0) or len(state.timesteps))
    active = [(h, side, keep_factor(h, step, total, state)) for h, side in plan_hints(positive, negative)]
    active = [(h, side, k) for h, side, k in active if k != 0.0 and h.strength != 0.0]
    if not active:
        return None

    def run(model_in: torch.Tensor, t: Any, embeds: torch.Tensor, added: dict | None, use_cfg: bool):
        n = model_in.shape[0]
        half = n // 2
        down_sum: list[torch.Tensor] | None = None
        mid_sum: torch.Tensor | None = None
        for hint, side, keep in active:
            if not use_cfg:
                if side == "neg":
                    continue
                rows = slice(None)
            else:
                rows = {"both": slice(None), "pos": slice(half, None), "neg": slice(0, half)}[side]
            down, mid = _one(hint, model_in[rows], t, embeds[rows],
                             {k: v[rows] for k, v in added.items()} if added else None,
                             both=use_cfg and side == "both", scale=hint.strength * keep, devices=devices)
            if use_cfg and side != "both":
                z = [torch.zeros_like(d) for d in down]
                down = [torch.cat([d, zz]) if side == "neg" else torch.cat([zz, d]) for d, zz in zip(down, z)]
                zm = torch.zeros_like(mid)
                mid = torch.cat([mid, zm]) if side == "neg" else torch.cat([zm, mid])
            if down_sum is None:
                down_sum, mid_sum = list(down), mid
            else:
                down_sum = [a + b for a, b in zip(down_sum, down)]
                mid_sum = mid_sum + mid
        if down_sum is None:
            return None, None
        return down_sum, mid_sum

    return run


def check_hint(cn: ControlNetHandle, text_width: int, sdxl: bool, channels: int) -> None:
    """The ControlNet fits the UNet being sampled (text width, SDXL conditioning, latent channels)."""
    if text_width != cn.text_width:
        raise NodeError(f"ControlNet {cn.source} is for {cn.describe()}, but the UNet is being run with text width "
                        f"{text_width}: use a ControlNet made for the checkpoint's model family")
    if cn.is_sdxl and not sdxl:
        raise NodeError(f"ControlNet {cn.source} is for {cn.describe()}, but the UNet being sampled is not SDXL")
    if channels < cn.in_channels:
        raise NodeError(f"ControlNet {cn.source} takes {cn.in_channels} latent channels, the UNet input has {channels}")


def _one(hint: ControlHint, x: torch.Tensor, t: Any, embeds: torch.Tensor, added: dict | None, both: bool,
         scale: float, devices: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
    cn: ControlNetHandle = hint.controlnet
    check_hint(cn, embeds.shape[-1], bool(added), x.shape[1])
    x = x[:, :cn.in_channels]
    rows = x.shape[0] // 2 if both else x.shape[0]
    height, width = x.shape[-2] * cn.downscale, x.shape[-1] * cn.downscale
    image = prepared_image(hint, height, width, rows, x.device, x.dtype)
    if both:
        image = torch.cat([image] * 2)
    guess = bool(getattr(cn.config, "global_pool_conditions", False))
    with devices.use(cn.model) as model, torch.no_grad():
        down, mid = model(x, t, encoder_hidden_states=embeds, controlnet_cond=image, conditioning_scale=scale,
                          guess_mode=guess, added_cond_kwargs=added, return_dict=False)
    return list(down), mid
