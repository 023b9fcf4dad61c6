"""Changes to what a UNet computes, not to its weights, applied for one call: FreeU (Si et al. 2023).

FreeU rescales the decoder: at each decoder (up-block) resnet it amplifies half the channels of the backbone
features and damps the low frequencies of the skip connection joined to them. Which resnet gets which factor
follows the official code and ComfyUI: by the backbone's channel count, 4x the UNet's base width -> (b1, s1),
2x -> (b2, s2), at every resnet. diffusers' `enable_freeu` picks by up-block index instead (first block b1,
second b2), which gives other pictures on SD 1.5 and SDXL, so this is our own hook.

A hook is a small frozen description on the UNet handle (hashable, so fast mode keys its compiled graphs on
it). `installed()` registers forward pre-hooks on the decoder resnets for the duration of a call and removes
them in its `finally`, so the cached model never keeps them.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

_ACTIVE: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


class HookError(ValueError):
    """A hook that cannot apply to this model (its message names the model part)."""


def fourier_filter(x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
    """Multiply the lowest frequencies of each feature map (a 2*threshold square around DC, after fftshift) by
    `scale`; computed in float32, returned in x's dtype."""
    h, w = x.shape[-2:]
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    mask = torch.ones((h, w), dtype=torch.float32, device=x.device)
    ch, cw = h // 2, w // 2
    mask[max(ch - threshold, 0):ch + threshold, max(cw - threshold, 0):cw + threshold] = scale
    freq = torch.fft.ifftshift(freq * mask, dim=(-2, -1))
    return torch.fft.ifftn(freq, dim=(-2, -1)).real.to(x.dtype)


def backbone_factor(h: torch.Tensor, b: float, version: int) -> Any:
    """FreeU's backbone factor: `b` (v1), or 1 + (b - 1) x the channel-mean map normalised to 0..1 per image
    (v2: strongest where the features are)."""
    if version == 1:
        return b
    mean = h.mean(1, keepdim=True)
    flat = mean.flatten(1)
    lo = flat.amin(1).view(-1, 1, 1, 1)
    span = (flat.amax(1).view(-1, 1, 1, 1) - lo).clamp_min(torch.finfo(h.dtype).tiny)
    return (b - 1) * ((mean - lo) / span) + 1


def decoder_resnets(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, int]]:
    """(name, resnet, backbone channels) for every decoder resnet: its input is cat([backbone, skip]).

    The backbone of a block's first resnet comes from the block below (the mid block for the first up block),
    later ones from the previous resnet of the same block."""
    cfg = getattr(model, "config", None)
    blocks = getattr(model, "up_blocks", None)
    if cfg is None or blocks is None or not getattr(cfg, "block_out_channels", None):
        raise HookError(f"{type(model).__name__} has no UNet decoder (up_blocks) to apply FreeU to")
    prev = int(cfg.block_out_channels[-1])
    out = []
    for i, block in enumerate(blocks):
        resnets = getattr(block, "resnets", None) or []
        for j, resnet in enumerate(resnets):
            backbone = prev if j == 0 else int(resnets[j - 1].out_channels)
            if not 0 < backbone < int(resnet.in_channels):
                raise HookError(f"up_blocks.{i}.resnets.{j} takes {resnet.in_channels} channels, which is not "
                                f"{backbone} backbone channels plus a skip connection")
            out.append((f"up_blocks.{i}.resnets.{j}", resnet, backbone))
        if resnets:
            prev = int(resnets[-1].out_channels)
    return out


@dataclass(frozen=True)
class FreeU:
    """FreeU's four factors: b1/b2 amplify the backbone, s1/s2 scale the skips' low frequencies, at the decoder
    levels with 4x / 2x the base width; `version` 2 weights the amplification by where the features are."""

    b1: float
    b2: float
    s1: float
    s2: float
    version: int = 1

    def plan(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, int, float, float]]:
        """(name, resnet, backbone channels, b, s) for each decoder resnet FreeU changes."""
        base = int(model.config.block_out_channels[0])
        scales = {4 * base: (self.b1, self.s1), 2 * base: (self.b2, self.s2)}
        return [(name, r, c, *scales[c]) for name, r, c in decoder_resnets(model) if c in scales]

    def install(self, model: torch.nn.Module) -> list[Any]:
        return [resnet.register_forward_pre_hook(_freeu_pre_hook(c, b, s, self.version))
                for _, resnet, c, b, s in self.plan(model)]

    def __repr__(self) -> str:
        return f"FreeU v{self.version} (b1={self.b1:g}, b2={self.b2:g}, s1={self.s1:g}, s2={self.s2:g})"


def freeu_inputs(x: torch.Tensor, backbone: int, b: float, s: float, version: int) -> torch.Tensor:
    """A decoder resnet's input cat([backbone, skip]) as FreeU changes it."""
    h, skip = x[:, :backbone], x[:, backbone:]
    half = backbone // 2
    boosted = h[:, :half] * backbone_factor(h, b, version)
    return torch.cat([boosted.to(h.dtype), h[:, half:], fourier_filter(skip, 1, s)], dim=1)


def _freeu_pre_hook(backbone: int, b: float, s: float, version: int) -> Callable:
    def hook(module: torch.nn.Module, args: tuple) -> tuple:
        return (freeu_inputs(args[0], backbone, b, s, version), *args[1:])

    return hook


@contextmanager
def installed(model: torch.nn.Module, hooks: tuple) -> Iterator[None]:
    """The hooks registered on `model` for the block, removed afterwards even when the block raises."""
    if not hooks:
        yield
        return
    removers: list[Any] = []
    try:
        for hook in hooks:
            removers.extend(hook.install(model))
        _ACTIVE[model] = hooks
        yield
    finally:
        _ACTIVE.pop(model, None)
        for r in removers:
            r.remove()


def active_hooks(model: torch.nn.Module) -> tuple:
    """The hooks installed on `model` right now (part of fast mode's compile keys)."""
    return _ACTIVE.get(model, ())
