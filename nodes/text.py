"""Text nodes: tokenize, encode (clip skip, `(word:1.2)` weights, 77-token windows), SDXL sizes and the
refiner's aesthetic score."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from pydantic import Field

from engine.node import NodeContext, Widget, node
from engine.types import CONDITIONING, TEXT_ENCODER, TOKENS

ClipSkip = Annotated[int, Field(0, ge=0, le=11, description="skip the last N layers of the text encoder (0 = none; A1111's 'clip skip 2' is 1)")]


@node(category="conditioning", output_name="tokens")
def tokenize(text_encoder: TEXT_ENCODER, text: Annotated[str, Widget(multiline=True)] = "") -> TOKENS:
    """Split a prompt into 77-token windows for each tokenizer, with `(word:1.2)` weights."""
    from nodes.sd.encode import tokenize_prompt

    return tokenize_prompt(text_encoder, text)


@node(category="conditioning", output_name="conditioning")
def encode_tokens(text_encoder: TEXT_ENCODER, tokens: TOKENS, ctx: NodeContext, clip_skip: ClipSkip = 0) -> CONDITIONING:
    """Run the text encoder(s) over token windows; concatenates windows of long prompts."""
    from nodes.sd.encode import encode_tokens as run

    return run(text_encoder, tokens, ctx.settings.devices(), clip_skip or text_encoder.clip_skip)


@node(category="conditioning", output_name="conditioning")
def encode_text(text_encoder: TEXT_ENCODER, ctx: NodeContext, text: Annotated[str, Widget(multiline=True)] = "",
                clip_skip: ClipSkip = 0) -> CONDITIONING:
    """Tokenize and encode a prompt in one node (SD 1.x, 2.x, XL and the XL refiner)."""
    from nodes.sd.encode import encode_text as run

    return run(text_encoder, text, ctx.settings.devices(), clip_skip or text_encoder.clip_skip)


@node(category="conditioning", output_name="text_encoder")
def set_clip_skip(text_encoder: TEXT_ENCODER, clip_skip: ClipSkip = 1) -> TEXT_ENCODER:
    """Make every later encode with this text encoder skip the last N layers (ComfyUI's CLIPSetLastLayer)."""
    return replace(text_encoder, clip_skip=clip_skip)


Size = Annotated[int, Field(0, ge=0, le=16384, description="0 = the size being generated")]


AestheticScore = Annotated[float, Field(0.0, ge=0.0, le=10.0, description=(
    "SDXL refiner only (it replaces the target size): 0 = diffusers' default, 6.0 on a positive and 2.5 on a "
    "negative prompt")), Widget(step=0.1)]


@node(category="conditioning", name="SDXLSizeConditioning", output_name="conditioning")
def sdxl_size_conditioning(conditioning: CONDITIONING, original_width: Size = 0, original_height: Size = 0,
                           crop_left: Annotated[int, Field(0, ge=0, le=16384)] = 0,
                           crop_top: Annotated[int, Field(0, ge=0, le=16384)] = 0,
                           target_width: Size = 0, target_height: Size = 0,
                           aesthetic_score: AestheticScore = 0.0) -> CONDITIONING:
    """SDXL's micro-conditioning on image size and crop (Podell et al. 2023, section 2.2); the refiner
    conditions on an aesthetic score instead of the target size (its time ids: original size, crop, score)."""
    orig = (original_height, original_width) if original_width and original_height else None
    target = (target_height, target_width) if target_width and target_height else None
    return replace(conditioning, original_size=orig, crop_coords=(crop_top, crop_left), target_size=target,
                   aesthetic_score=aesthetic_score or None)


@node(category="conditioning", name="EncodeTextSDXL", output_name="conditioning")
def encode_text_sdxl(text_encoder: TEXT_ENCODER, ctx: NodeContext,
                     text_g: Annotated[str, Widget(multiline=True), Field(description="the OpenCLIP-G prompt (also the pooled embedding)")] = "",
                     text_l: Annotated[str, Widget(multiline=True), Field(description="the CLIP-L prompt; empty = text_g")] = "",
                     clip_skip: ClipSkip = 0, original_width: Size = 0, original_height: Size = 0,
                     crop_left: Annotated[int, Field(0, ge=0, le=16384)] = 0,
                     crop_top: Annotated[int, Field(0, ge=0, le=16384)] = 0,
                     target_width: Size = 0, target_height: Size = 0,
                     aesthetic_score: AestheticScore = 0.0) -> CONDITIONING:
    """SDXL's two text encoders with a prompt each (diffusers' prompt_2; ComfyUI's CLIPTextEncodeSDXL and, with
    the refiner, CLIPTextEncodeSDXLRefiner) and the size conditioning, in one node."""
    from nodes.sd.encode import encode_text_sdxl as run

    cond = run(text_encoder, text_g, text_l, ctx.settings.devices(), clip_skip or text_encoder.clip_skip)
    return sdxl_size_conditioning(cond, original_width, original_height, crop_left, crop_top, target_width,
                                  target_height, aesthetic_score)


@node(category="conditioning", output_name="conditioning")
def zero_conditioning(conditioning: CONDITIONING) -> CONDITIONING:
    """All-zero embeddings of the same shape (SDXL's negative for an empty prompt), for every prompt of a combined
    conditioning (ComfyUI's ConditioningZeroOut)."""
    import torch

    from nodes.sd.denoise import conditioning_parts, joined

    return joined([replace(p, embeds=torch.zeros_like(p.embeds),
                           pooled=torch.zeros_like(p.pooled) if p.pooled is not None else None)
                   for p in conditioning_parts(conditioning)])
