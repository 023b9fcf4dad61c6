"""Image upscaling models (ComfyUI's upscale_models): the architectures in plain torch, their detection from a
state dict, loading, and the tiled run.

Architectures (written here from the published designs; no spandrel / basicsr, which need torchvision):

- RRDBNet, ESRGAN's generator (Wang et al. 2018) as Real-ESRGAN extends it: `conv_first`, `num_block` RRDBs of
  three residual dense blocks (5 convs, growth `num_grow_ch`, residuals scaled by 0.2), `conv_body` added back to
  the trunk, `n` stages of (nearest x2, conv, LeakyReLU 0.2), `conv_hr`, `conv_last`. Real-ESRGAN's x2 and x1
  models pixel-unshuffle the input first (by 2 and 4) and keep two x2 stages, so their net scale is 2 and 1.
  Three key layouts are read; the other two are converted to BasicSR's before loading:
    * BasicSR / Real-ESRGAN: `conv_first`, `body.N.rdb1.conv1`, `conv_body`, `conv_up1`, `conv_up2`, `conv_hr`,
      `conv_last` (RealESRGAN_x4plus, _x2plus, _anime_6B);
    * old ESRGAN (one nn.Sequential): `model.0` (conv_first), `model.1.sub.N.RDB1.conv1.0` (the RRDBs),
      `model.1.sub.<num_block>` (conv_body), `model.3`, `model.6`, ... (the up convs, every third index),
      then HR conv and last conv two and four indices after the last up conv (4x-UltraSharp and most community
      ESRGAN models);
    * ESRGAN's later repository / BSRGAN: `conv_first`, `RRDB_trunk.N.RDB1.conv1`, `trunk_conv`, `upconv1`,
      `HRconv`, `conv_last`.
  Detected: num_feat (conv_first's outputs), num_grow_ch (rdb1.conv1's outputs), num_block (the body indices),
  the x2 stages (the up convs), the pixel-unshuffle factor (conv_first's inputs = 4x or 16x conv_last's
  outputs), hence scale = 2 ** stages / unshuffle.
- SRVGGNetCompact, Real-ESRGAN's compact model (realesr-general-x4v3, realesr-animevideov3): `body.0` conv,
  PReLU, `num_conv` x (conv, PReLU), last conv to out * scale^2 channels, pixel shuffle, plus the input
  upsampled (nearest) by the scale. Keys `body.<even>` convs and `body.<odd>.weight` PReLU slopes; num_conv and
  the scale come from the last index and the last conv's outputs.

Files: `.safetensors` / `.sft` through safetensors, anything else only through `torch.load(weights_only=True)`;
BasicSR's `params_ema` / `params` wrappers and a `module.` prefix (DataParallel) are removed.

Running: `upscale_image` follows ComfyUI's ImageUpscaleWithModel (comfy_extras/nodes_upscale_model.py with
comfy.utils.tiled_scale): 512 px tiles overlapping by 32 px, each tile's output weighted by a linear feather of
`overlap * scale` px on all four sides and the sum divided by the summed weights; an image that fits one tile
runs whole; on out-of-memory the tile is halved and the image redone (not below 128 px); the output is clamped
to 0..1. An alpha channel is upscaled bilinearly beside the model, as ComfyUI does.
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

TILE_SIZE = 512  # ComfyUI's ImageUpscaleWithModel
TILE_OVERLAP = 32
MIN_TILE_SIZE = 128  # halving the tile on out-of-memory stops below this

SUPPORTED = ("ESRGAN / Real-ESRGAN RRDBNet (BasicSR keys conv_first, body.N.rdb1.conv1, conv_body, conv_up1; old ESRGAN "
             "keys model.0, model.1.sub.N.RDB1.conv1.0; ESRGAN/BSRGAN keys RRDB_trunk.N.RDB1.conv1, trunk_conv, upconv1)",
             "Real-ESRGAN Compact SRVGGNetCompact (body.N conv and PReLU, pixel shuffle)")

OOM_ERRORS: tuple[type[BaseException], ...] = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


class UpscaleArchError(ValueError):
    """A file that is not a supported upscale model, or that cannot be read; the message says what was found."""


# ------------------------------------------------------------------------------------------------ architectures


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each fed every earlier feature map; the fifth's output, scaled by 0.2, is added to the input."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        for i in range(4):
            self.add_module(f"conv{i + 1}", nn.Conv2d(num_feat + i * num_grow_ch, num_grow_ch, 3, 1, 1))
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(_lrelu(conv(torch.cat(feats, 1))))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual in residual: three dense blocks in a row, their result scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """ESRGAN's generator with BasicSR's parameter names; `unshuffle` > 1 is Real-ESRGAN's x2 / x1 variant."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, num_feat: int = 64, num_block: int = 23, num_grow_ch: int = 32,
                 num_upsample: int = 2, unshuffle: int = 1) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.num_upsample = num_upsample
        self.conv_first = nn.Conv2d(in_ch * unshuffle * unshuffle, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        for i in range(num_upsample):
            self.add_module(f"conv_up{i + 1}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.unshuffle > 1:
            x = _pad_to_multiple(x, self.unshuffle)
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(self.num_upsample):
            conv = getattr(self, f"conv_up{i + 1}")
            feat = _lrelu(conv(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        out = self.conv_last(_lrelu(self.conv_hr(feat)))
        scale = 2 ** self.num_upsample // self.unshuffle
        return out[..., : h * scale, : w * scale]


def _pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Pad right and bottom to a multiple of `m` (pixel-unshuffle needs it), mirrored where the image allows it."""
    ph, pw = -x.shape[-2] % m, -x.shape[-1] % m
    if not ph and not pw:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact net: a plain conv + PReLU stack at input resolution, a pixel shuffle, plus the input
    upsampled (nearest), so the convs learn the residual."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, num_feat: int = 64, num_conv: int = 16, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, out_ch * scale * scale, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = F.pixel_shuffle(out, self.scale)
        return out + F.interpolate(x, scale_factor=float(self.scale), mode="nearest")


# ------------------------------------------------------------------------------------------------ detection


@dataclass(frozen=True)
class UpscaleConfig:
    """What the weights say about a model: enough to build it."""

    arch: str  # "RRDBNet" | "SRVGGNetCompact"
    layout: str  # the key layout the file used
    scale: int
    in_channels: int
    out_channels: int
    num_feat: int
    num_block: int = 0  # RRDBNet: RRDBs; SRVGGNetCompact: body convs (num_conv)
    num_grow_ch: int = 0
    num_upsample: int = 0
    unshuffle: int = 1

    @property
    def label(self) -> str:
        if self.arch == "RRDBNet":
            kind = "Real-ESRGAN" if self.unshuffle > 1 else "ESRGAN"
            return f"{kind} RRDBNet x{self.scale} ({self.num_feat} features, {self.num_block} blocks)"
        return f"Real-ESRGAN Compact x{self.scale} ({self.num_feat} features, {self.num_block} convs)"

    def build(self) -> nn.Module:
        if self.arch == "RRDBNet":
            return RRDBNet(self.in_channels, self.out_channels, self.num_feat, self.num_block, self.num_grow_ch,
                           self.num_upsample, self.unshuffle)
        return SRVGGNetCompact(self.in_channels, self.out_channels, self.num_feat, self.num_block, self.scale)


_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_OLD_TRUNK_END = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_TRUNK_RDB = re.compile(r"^RRDB_trunk\.(\d+)\.RDB([123])\.conv([1-5])\.(weight|bias)$")
_NEW_BODY = re.compile(r"^body\.(\d+)\.")
_NEW_UP = re.compile(r"^conv_up(\d+)\.")


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file: BasicSR's `params_ema` (preferred) / `params`, or a `state_dict` wrapper,
    removed; a `module.` prefix on every key (DataParallel) removed."""
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in ("params_ema", "params", "state_dict", "model_state_dict")
                      if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise UpscaleArchError(f"holds a {type(obj).__name__}, not a state dict")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def old_esrgan_to_basicsr(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old ESRGAN keys (`model.0`, `model.1.sub.N.RDB1.conv1.0`, ...) -> BasicSR's (`conv_first`, `body.N.rdb1.conv1`)."""
    blocks = {int(m.group(1)) for k in state if (m := _OLD_RDB.match(k))}
    if not blocks:
        raise UpscaleArchError("old ESRGAN layout without RRDB blocks (model.1.sub.N.RDB1...)")
    num_block = max(blocks) + 1
    tops = sorted({int(m.group(1)) for k in state if (m := _OLD_TOP.match(k))})
    last = tops[-1] if tops else -1
    stages, rest = divmod(last - 4, 3)
    expected = [0] + [3 * (i + 1) for i in range(stages)] + [3 * stages + 2, 3 * stages + 4] if last >= 4 else []
    if rest or tops != expected:
        raise UpscaleArchError(f"old ESRGAN layout with unexpected top-level layers model.{tops} (expected model.0, "
                               "model.3, model.6, ... for the x2 stages, then HR and last conv)")
    top_names = {0: "conv_first", 3 * stages + 2: "conv_hr", 3 * stages + 4: "conv_last"}
    top_names.update({3 * (i + 1): f"conv_up{i + 1}" for i in range(stages)})
    def rename(k: str) -> str | None:
        if m := _OLD_RDB.match(k):
            return f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"
        if (m := _OLD_TRUNK_END.match(k)) and int(m.group(1)) == num_block:
            return f"conv_body.{m.group(2)}"
        if m := _OLD_TOP.match(k):
            return f"{top_names[int(m.group(1))]}.{m.group(2)}"
        return None

    return _renamed(state, rename, "old ESRGAN layout")


def _renamed(state: Mapping[str, torch.Tensor], rename, layout: str) -> dict[str, torch.Tensor]:
    """`state` with every key renamed by `rename` (None: a key that fits no layer, reported)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in state.items():
        new = rename(k)
        if new is None:
            unknown.append(k)
        else:
            out[new] = v
    if unknown:
        raise UpscaleArchError(f"{layout} with keys that fit no layer: {unknown[:5]}")
    return out


def basicsr_to_old_esrgan(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reverse of `old_esrgan_to_basicsr` (for tests and export): BasicSR RRDBNet keys -> old ESRGAN keys."""
    num_block = len({m.group(1) for k in state if (m := _NEW_BODY.match(k))})
    stages = len({m.group(1) for k in state if (m := _NEW_UP.match(k))})
    names = {"conv_first": "model.0", "conv_body": f"model.1.sub.{num_block}",
             "conv_hr": f"model.{3 * stages + 2}", "conv_last": f"model.{3 * stages + 4}"}
    names.update({f"conv_up{i + 1}": f"model.{3 * (i + 1)}" for i in range(stages)})
    out = {}
    for k, v in state.items():
        head, _, param = k.rpartition(".")
        if m := re.match(r"^body\.(\d+)\.rdb([123])\.conv([1-5])$", head):
            out[f"model.1.sub.{m.group(1)}.RDB{m.group(2)}.conv{m.group(3)}.0.{param}"] = v
        else:
            out[f"{names[head]}.{param}"] = v
    return out


def _trunk_to_basicsr(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renames = {"trunk_conv": "conv_body", "HRconv": "conv_hr", "conv_first": "conv_first", "conv_last": "conv_last"}

    def rename(k: str) -> str | None:
        head, _, param = k.rpartition(".")
        if m := _TRUNK_RDB.match(k):
            return f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"
        if m := re.match(r"^upconv(\d+)$", head):
            return f"conv_up{m.group(1)}.{param}"
        return f"{renames[head]}.{param}" if head in renames else None

    return _renamed(state, rename, "ESRGAN RRDB_trunk layout")


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    t = state.get(key)
    if t is None:
        raise UpscaleArchError(f"{key} is missing")
    return tuple(t.shape)


def _rrdb_config(state: Mapping[str, torch.Tensor], layout: str) -> UpscaleConfig:
    first, last = _shape(state, "conv_first.weight"), _shape(state, "conv_last.weight")
    grow = _shape(state, "body.0.rdb1.conv1.weight")
    if len(first) != 4 or len(last) != 4 or len(grow) != 4:
        raise UpscaleArchError(f"RRDBNet convs are not 2-d convolutions (conv_first {list(first)})")
    blocks = sorted({int(m.group(1)) for k in state if (m := _NEW_BODY.match(k))})
    if blocks != list(range(len(blocks))):
        raise UpscaleArchError(f"RRDBNet body blocks are not numbered 0..N-1: {blocks[:10]}")
    ups = sorted({int(m.group(1)) for k in state if (m := _NEW_UP.match(k))})
    if ups != list(range(1, len(ups) + 1)):
        raise UpscaleArchError(f"RRDBNet up convs are not numbered 1..N: conv_up{ups}")
    num_feat, raw_in = first[0], first[1]
    out_ch = last[0]
    unshuffle = 1
    if raw_in == out_ch * 4:
        unshuffle = 2
    elif raw_in == out_ch * 16:
        unshuffle = 4
    in_ch = raw_in // (unshuffle * unshuffle)
    if 2 ** len(ups) % unshuffle:
        raise UpscaleArchError(f"RRDBNet with {len(ups)} x2 stages and a pixel-unshuffle by {unshuffle}: not an "
                               "integer scale")
    return UpscaleConfig("RRDBNet", layout, 2 ** len(ups) // unshuffle, in_ch, out_ch, num_feat, len(blocks),
                         grow[0], len(ups), unshuffle)


def _compact_config(state: Mapping[str, torch.Tensor]) -> UpscaleConfig:
    indices = sorted({int(m.group(1)) for k in state if (m := re.match(r"^body\.(\d+)\.", k))})
    highest = indices[-1]
    if highest % 2 or highest < 2 or indices != list(range(highest + 1)):
        raise UpscaleArchError(f"SRVGGNetCompact body layers are not conv/PReLU pairs ending in a conv: body.{indices[:12]}")
    first = _shape(state, "body.0.weight")
    slope = _shape(state, "body.1.weight")
    last = _shape(state, f"body.{highest}.weight")
    if len(first) != 4 or len(last) != 4 or slope != (first[0],):
        raise UpscaleArchError(f"SRVGGNetCompact shapes do not fit (body.0 {list(first)}, body.1 {list(slope)})")
    in_ch, num_feat = first[1], first[0]
    ratio, rem = divmod(last[0], in_ch)
    scale = math.isqrt(ratio) if not rem else 0
    if not scale or scale * scale != ratio:
        raise UpscaleArchError(f"SRVGGNetCompact last conv has {last[0]} outputs for {in_ch} input channels: "
                               "not channels x scale^2")
    return UpscaleConfig("SRVGGNetCompact", "Real-ESRGAN Compact", scale, in_ch, in_ch, num_feat, (highest - 2) // 2)


def detect(state: Mapping[str, torch.Tensor]) -> tuple[UpscaleConfig, dict[str, torch.Tensor]]:
    """The architecture and sizes of a state dict, and the state dict in the key layout of our module."""
    keys = set(state)
    if any(".conv1x1." in k for k in keys):
        raise UpscaleArchError("ESRGAN+ (RRDB blocks with conv1x1 layers) is not supported")
    if "model.0.weight" in keys and "model.1.sub.0.RDB1.conv1.0.weight" in keys:
        new = old_esrgan_to_basicsr(state)
        return _rrdb_config(new, "old ESRGAN"), new
    if {"conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight"} <= keys:
        new = _trunk_to_basicsr(state)
        return _rrdb_config(new, "ESRGAN RRDB_trunk"), new
    if {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_last.weight"} <= keys:
        return _rrdb_config(state, "BasicSR"), dict(state)
    if {"body.0.weight", "body.1.weight"} <= keys and "conv_first.weight" not in keys:
        return _compact_config(state), dict(state)
    first = sorted(keys)[:8]
    raise UpscaleArchError(f"unknown architecture (first keys: {first}{' ...' if len(keys) > 8 else ''}); "
                           f"supported: {'; '.join(SUPPORTED)}")


def build_model(state: Mapping[str, torch.Tensor]) -> tuple[nn.Module, UpscaleConfig]:
    """Detect, build and load the weights (strict: every layer must be filled, nothing may be left over)."""
    config, converted = detect(state)
    model = config.build()
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        detail = str(exc).split("\n\t")
        raise UpscaleArchError(f"looks like {config.label}, but its weights do not fit: "
                               f"{'; '.join(d.strip() for d in detail[1:4]) or detail[0]}") from None
    return model.eval().requires_grad_(False), config


# ------------------------------------------------------------------------------------------------ files


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A file's tensors; `.pth` / `.pt` / `.ckpt` / `.bin` only through torch.load(weights_only=True)."""
    try:
        if path.suffix.lower() in (".safetensors", ".sft"):
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles with code in them, truncated files, not a model at all
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UpscaleArchError(f"cannot be read as weights ({type(exc).__name__}: {msg[:300]})") from None
    state = unwrap_state_dict(obj)
    if not state:
        raise UpscaleArchError("holds no tensors")
    return state


@dataclass(frozen=True, eq=False)
class UpscaleModel:
    """An upscale model (the shared, cached module) with what the weights say about it."""

    model: nn.Module
    config: UpscaleConfig
    source: str = ""

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def arch(self) -> str:
        return self.config.arch

    @property
    def supports_half(self) -> bool:
        return True  # both architectures run in fp16 (Real-ESRGAN's own inference default) and bf16

    def __loom_summary__(self) -> dict[str, Any]:
        p = next(self.model.parameters(), None)
        c = self.config
        return {"kind": "handle", "model": "UpscaleModel", "arch": c.arch, "label": c.label, "layout": c.layout,
                "scale": c.scale, "source": self.source, "in_channels": c.in_channels, "out_channels": c.out_channels,
                "parameters": sum(q.numel() for q in self.model.parameters()),
                "dtype": str(p.dtype).replace("torch.", "") if p is not None else None,
                "device": str(p.device) if p is not None else None}

    def __loom_nbytes__(self) -> int:  # the module lives in the model cache below, not the output cache
        return 256


KEEP_RECENT = 2  # strong references besides the weak ones: a just-released model is not read again at once
_lock = threading.Lock()
_shared: "weakref.WeakValueDictionary[tuple, UpscaleModel]" = weakref.WeakValueDictionary()
_recent: "OrderedDict[tuple, UpscaleModel]" = OrderedDict()


def load_upscale_model(path: str | Path) -> UpscaleModel:
    """The model of a file, shared with earlier loads of the same file (keyed by path, size and mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _lock:
        hit = _shared.get(key)
    if hit is None:
        model, config = build_model(read_state_dict(p))
        hit = UpscaleModel(model=model, config=config, source=p.name)
    with _lock:
        hit = _shared.setdefault(key, hit)
        _recent[key] = hit
        _recent.move_to_end(key)
        while len(_recent) > KEEP_RECENT:
            _recent.popitem(last=False)
    return hit


def clear_cache() -> None:
    with _lock:
        _shared.clear()
        _recent.clear()


# ------------------------------------------------------------------------------------------------ tiled run


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile offsets along one side, as ComfyUI's tiled_scale: one tile if it fits, else every `tile - overlap`
    px while the tile still reaches past the last `overlap` px (the last tiles may be short)."""
    if size <= tile:
        return [0]
    return list(range(0, size - overlap, tile - overlap))


def count_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def _feather(length: int, feather: int) -> torch.Tensor:
    """ComfyUI's tile weight along one side: rows t and length-1-t are multiplied by (t+1)/feather for t < feather
    (both factors where a short tile's ramps meet); no ramp when the feather is not shorter than the tile."""
    if feather >= length:
        return torch.ones(length)
    i = torch.arange(length, dtype=torch.float32)
    return ((i + 1) / feather).clamp(max=1.0) * ((length - i) / feather).clamp(max=1.0)


@torch.no_grad()  # not inference_mode: the IMAGE it returns must stay usable by any later node
def tiled_scale(x: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor], scale: int, tile: int = TILE_SIZE,
                overlap: int = TILE_OVERLAP, out_channels: int = 3,
                on_tile: Callable[[], None] | None = None) -> torch.Tensor:
    """[B,C,H,W] -> [B,out_channels,H*scale,W*scale] float32 on the CPU, `run` called per tile ([1,C,h,w] on the
    CPU -> [1,out,h*scale,w*scale]) and the tiles blended as ComfyUI's comfy.utils.tiled_scale does."""
    b, _, h, w = x.shape
    output = torch.empty(b, out_channels, h * scale, w * scale)
    feather = round(overlap * scale)
    for n in range(b):
        s = x[n:n + 1]
        if h <= tile and w <= tile:
            output[n:n + 1] = run(s).float().cpu()
            if on_tile is not None:
                on_tile()
            continue
        out = output[n:n + 1].zero_()
        weight = torch.zeros(1, 1, h * scale, w * scale)
        for y in tile_starts(h, tile, overlap):
            for x0 in tile_starts(w, tile, overlap):
                th, tw = min(tile, h - y), min(tile, w - x0)
                ps = run(s[:, :, y:y + th, x0:x0 + tw]).float().cpu()
                oh, ow = ps.shape[-2:]
                mask = _feather(oh, feather)[:, None] * _feather(ow, feather)[None, :]
                oy, ox = y * scale, x0 * scale
                oh, ow = min(oh, out.shape[-2] - oy), min(ow, out.shape[-1] - ox)
                out[..., oy:oy + oh, ox:ox + ow] += ps[..., :oh, :ow] * mask[:oh, :ow]
                weight[..., oy:oy + oh, ox:ox + ow] += mask[:oh, :ow]
                if on_tile is not None:
                    on_tile()
        out.div_(weight)
    return output


def compute_dtype(handle: UpscaleModel, devices: Any) -> torch.dtype:
    """fp32 on the CPU; on a GPU the device manager's dtype (fp16 by default) where the architecture allows it."""
    if getattr(devices.device, "type", str(devices.device)) == "cpu":
        return torch.float32
    return devices.dtype if handle.supports_half else torch.float32


def _empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def upscale_image(handle: UpscaleModel, image: torch.Tensor, devices: Any, *, dtype: torch.dtype | None = None,
                  tile: int | None = None, overlap: int | None = None, min_tile: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  warn: Callable[[str], None] | None = None) -> torch.Tensor:
    """IMAGE [B,H,W,C] in 0..1 -> IMAGE [B,H*s,W*s,C'] clamped to 0..1, as ComfyUI's ImageUpscaleWithModel.

    `devices` is the engine's DeviceManager (anything with `.device`, `.dtype` and a `use(module, dtype)` context
    manager). An alpha channel (C = model channels + 1) is upscaled bilinearly beside the model; a grey image is
    repeated to the model's channels. Out of memory: the tile is halved and the image redone, down to `min_tile`.
    A half-precision run that produces inf / NaN is redone in fp32 (with a warning).
    """
    tile = TILE_SIZE if tile is None else tile
    overlap = TILE_OVERLAP if overlap is None else overlap
    min_tile = MIN_TILE_SIZE if min_tile is None else min_tile
    cfg = handle.config
    c = image.shape[-1]
    alpha = None
    if c == cfg.in_channels + 1:
        image, alpha = image[..., :cfg.in_channels], image[..., cfg.in_channels:]
    elif c == 1 and cfg.in_channels > 1:
        image = image.expand(*image.shape[:-1], cfg.in_channels)
    elif c != cfg.in_channels:
        raise UpscaleArchError(f"{handle.source} takes {cfg.in_channels}-channel images, this one has {c} channels")
    x = image.movedim(-1, 1).float().cpu().contiguous()
    want = dtype if dtype is not None else compute_dtype(handle, devices)

    def attempt(run_dtype: torch.dtype) -> torch.Tensor:
        size = tile
        with devices.use(handle.model, run_dtype) as model:
            device = next(model.parameters()).device

            def run(t: torch.Tensor) -> torch.Tensor:
                return model(t.to(device=device, dtype=run_dtype))

            while True:
                total = x.shape[0] * count_tiles(x.shape[2], x.shape[3], size, overlap)
                done = [0]

                def on_tile() -> None:
                    done[0] += 1
                    if progress is not None:
                        progress(done[0], total)

                try:
                    return tiled_scale(x, run, cfg.scale, size, overlap, cfg.out_channels, on_tile)
                except OOM_ERRORS:
                    _empty_cache()
                    if size // 2 < min_tile:
                        raise
                    size //= 2
                    if warn is not None:
                        warn(f"out of memory with {size * 2} px tiles; trying {size} px tiles")

    out = attempt(want)
    if want != torch.float32 and not torch.isfinite(out).all():
        if warn is not None:
            warn(f"{handle.source} overflowed in {str(want).replace('torch.', '')}; upscaled again in fp32")
        out = attempt(torch.float32)
    out = out.clamp_(0.0, 1.0)
    if alpha is not None:
        a = F.interpolate(alpha.movedim(-1, 1).float().cpu(), size=out.shape[-2:], mode="bilinear", align_corners=False)
        out = torch.cat((out, a.clamp(0.0, 1.0)), dim=1)
    return out.movedim(1, -1).contiguous()
