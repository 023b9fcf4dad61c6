"""Conditioning arithmetic: join two prompts' embeddings (concat) or interpolate between them (average), as
ComfyUI's ConditioningConcat and ConditioningAverage do. Both keep the first input's other settings (sizes,
ControlNet hints)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from pydantic import Field

from engine.node import NodeError, Widget, node
from engine.types import CONDITIONING, MASK


def _compatible(to, src, what: str) -> None:
    from nodes.sd.handles import family_label

    if to.family != src.family or to.embeds.shape[-1] != src.embeds.shape[-1]:
        raise NodeError(f"{what}: conditioning_from is {family_label(src.family)} (width {src.embeds.shape[-1]}), "
                        f"conditioning_to is {family_label(to.family)} (width {to.embeds.shape[-1]}); encode both "
                        "with the same text encoder")


@node(category="conditioning", output_name="conditioning")
def conditioning_concat(conditioning_to: CONDITIONING, conditioning_from: CONDITIONING) -> CONDITIONING:
    """The two token sequences one after the other (each prompt keeps its own 77-token windows; the pooled
    embedding is conditioning_to's)."""
    import torch

    _compatible(conditioning_to, conditioning_from, "ConditioningConcat")
    src = conditioning_from.embeds.to(conditioning_to.embeds)
    if src.shape[0] != conditioning_to.embeds.shape[0]:
        src = src[:1].expand(conditioning_to.embeds.shape[0], -1, -1)
    return replace(conditioning_to, embeds=torch.cat([conditioning_to.embeds, src], dim=1))


@node(category="conditioning", output_name="conditioning")
def conditioning_average(conditioning_to: CONDITIONING, conditioning_from: CONDITIONING,
                         conditioning_to_strength: Annotated[float, Field(1.0, ge=0.0, le=1.0), Widget(step=0.01)] = 1.0,
                         ) -> CONDITIONING:
    """to * strength + from * (1 - strength), token by token (conditioning_from cut or zero-padded to
    conditioning_to's length); the pooled embeddings likewise."""
    import torch

    _compatible(conditioning_to, conditioning_from, "ConditioningAverage")
    t1 = conditioning_to.embeds
    t0 = conditioning_from.embeds.to(t1)[:, :t1.shape[1]]
    if t0.shape[1] < t1.shape[1]:
        t0 = torch.cat([t0, torch.zeros(t0.shape[0], t1.shape[1] - t0.shape[1], t0.shape[2], dtype=t0.dtype, device=t0.device)], dim=1)
    s = conditioning_to_strength
    pooled = conditioning_to.pooled
    if pooled is not None and conditioning_from.pooled is not None:
        pooled = pooled * s + conditioning_from.pooled.to(pooled) * (1 - s)
    elif conditioning_from.pooled is not None:
        pooled = conditioning_from.pooled
    return replace(conditioning_to, embeds=t1 * s + t0 * (1 - s), pooled=pooled)


@node(category="conditioning", output_name="conditioning")
def conditioning_combine(conditioning_1: CONDITIONING, conditioning_2: CONDITIONING) -> CONDITIONING:
    """Both prompts at once: at every step the sampler predicts the noise for each and averages the predictions
    (ComfyUI's Conditioning (Combine); unlike ConditioningAverage, which mixes the embeddings)."""
    from nodes.sd.denoise import conditioning_parts, joined

    _compatible(conditioning_1, conditioning_2, "ConditioningCombine")
    return joined(conditioning_parts(conditioning_1) + conditioning_parts(conditioning_2))


Fraction = Annotated[float, Field(ge=0.0, le=1.0), Widget(step=0.001)]


@node(category="conditioning", output_name="conditioning")
def conditioning_set_timestep_range(conditioning: CONDITIONING, start: Fraction = 0.0, end: Fraction = 1.0) -> CONDITIONING:
    """Use this prompt only from `start` to `end`; with ConditioningCombine, switch prompts part-way (e.g. composition
    from one prompt, details from another). As in ComfyUI these are fractions of the model's noise levels, not of the
    steps: start p means timestep (1 - p) x 999, so Karras-spaced steps switch later than evenly spaced ones."""
    from nodes.sd.denoise import with_every_part

    if end < start:
        raise NodeError(f"end ({end}) is before start ({start})")
    return with_every_part(conditioning, start=start, end=end)


@node(category="conditioning", output_name="conditioning")
def conditioning_set_mask(conditioning: CONDITIONING, mask: MASK,
                          strength: Annotated[float, Field(1.0, ge=0.0, le=10.0), Widget(step=0.01)] = 1.0,
                          set_cond_area: Literal["default", "mask bounds"] = "default") -> CONDITIONING:
    """Make this prompt count only where the mask is (regional prompting): combine it with others
    (ConditioningCombine) and each pixel's noise prediction is the mix of the prompts by their masks x strengths.
    "mask bounds" runs the model on the box around the mask only (at least 8 latent pixels), as ComfyUI does: the
    prompt then describes that region rather than the whole picture."""
    from nodes.sd.denoise import with_every_part

    if mask.ndim not in (2, 3):
        raise NodeError(f"mask must be [H, W] or [B, H, W], got shape {list(mask.shape)}")
    return with_every_part(conditioning, mask=mask if mask.ndim == 3 else mask[None], strength=strength,
                           mask_bounds=set_cond_area == "mask bounds")


Pixels = Annotated[int, Field(ge=0, le=16384, multiple_of=8, description="pixels; a multiple of 8")]
Strength = Annotated[float, Field(1.0, ge=0.0, le=10.0), Widget(step=0.01)]


@node(category="conditioning", output_name="conditioning")
def conditioning_set_area(conditioning: CONDITIONING, width: Pixels = 64, height: Pixels = 64, x: Pixels = 0,
                          y: Pixels = 0, strength: Strength = 1.0) -> CONDITIONING:
    """Make this prompt describe only a rectangle of the image (regional prompting): the model sees just that part
    of the latents for it, and its prediction is faded in over 8 latent pixels at the rectangle's inner edges.
    Combine it with a prompt for the whole image (ConditioningCombine)."""
    from nodes.sd.denoise import with_every_part

    if width == 0 or height == 0:
        raise NodeError("width and height must be at least 8 pixels")
    # one area per prompt, as ComfyUI: a pixel area replaces a fractional one
    return with_every_part(conditioning, area=(x, y, width, height), area_fraction=None, strength=strength)


Share = Annotated[float, Field(ge=0.0, le=1.0, description="a fraction of the image's width or height"), Widget(step=0.01)]


@node(category="conditioning", output_name="conditioning")
def conditioning_set_area_percentage(conditioning: CONDITIONING, width: Share = 1.0, height: Share = 1.0,
                                     x: Share = 0.0, y: Share = 0.0, strength: Strength = 1.0) -> CONDITIONING:
    """ConditioningSetArea with the rectangle in fractions of the image, so one graph fits every size: at sampling,
    as ComfyUI, width and height become max(1, round(f x latent size)), x and y round(f x latent size)."""
    from nodes.sd.denoise import with_every_part

    return with_every_part(conditioning, area=None, area_fraction=(x, y, width, height), strength=strength)


@node(category="conditioning", output_name="conditioning")
def conditioning_set_area_strength(conditioning: CONDITIONING, strength: Strength = 1.0) -> CONDITIONING:
    """Set how strongly this prompt counts where prompts are mixed (ConditioningCombine), keeping its area or mask.
    One strength serves areas and masks here, where ComfyUI multiplies an area strength by a mask strength."""
    from nodes.sd.denoise import with_every_part

    return with_every_part(conditioning, strength=strength)
