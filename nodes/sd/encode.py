"""Text -> tokens -> conditioning: 77-token windows through the text encoder(s), clip skip, weights.

SD 1.x/2.x use one CLIP text encoder's last hidden state (after its final layer norm); SDXL
concatenates the penultimate hidden states of two encoders and takes the pooled projection of the
second, as diffusers' pipelines do; the SDXL refiner does the same with its one encoder (OpenCLIP-G,
diffusers' `text_encoder_2`). With no weighting syntax and <= 75 tokens, the result equals the
pipeline's `encode_prompt` exactly. Textual-inversion vectors ride along with the tokens as "virtual"
ids past the vocabulary, which `with_virtual_tokens` makes real for the duration of one encode.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.node import NodeError

from .handles import Conditioning, TextEncoderHandle, family_label
from .prompting import TokenWindows, tokenize


@dataclass(frozen=True, eq=False)
class Tokens:
    """Token windows for each of a text encoder's tokenizers, plus the vectors of virtual tokens."""

    text: str
    family: str
    windows: tuple[TokenWindows, ...]
    virtual: tuple[dict[int, torch.Tensor], ...] = ()  # per encoder: virtual id -> embedding vector
    notes: tuple[str, ...] = field(default=())

    def __loom_summary__(self) -> dict[str, Any]:
        return {"kind": "value", "family": family_label(self.family), "text": self.text,
                "windows": [len(w) for w in self.windows], "ids": [w.ids[0][:20] for w in self.windows],
                "weighted": any(w.weighted for w in self.windows), "embedding_tokens": sum(len(v) for v in self.virtual)}


def tokenize_prompt(te: TextEncoderHandle, text: str) -> Tokens:
    return tokenize_prompts(te, [text] * len(te.tokenizers))


def tokenize_prompts(te: TextEncoderHandle, texts: list[str]) -> Tokens:
    """One prompt per tokenizer (SDXL: CLIP-L's first, OpenCLIP-G's second, as diffusers' `prompt` and
    `prompt_2`); long prompts get the same number of 77-token windows on every encoder."""
    from .embeddings import expand_embeddings

    if len(texts) != len(te.tokenizers):
        raise NodeError(f"{len(texts)} prompts for a text encoder with {len(te.tokenizers)} tokenizers")
    expanded = {text: expand_embeddings(te, text) for text in dict.fromkeys(texts)}
    pieces = [expanded[text][0][i] for i, text in enumerate(texts)]
    virtual = [expanded[text][1][i] for i, text in enumerate(texts)]
    windows = [tokenize(tok, pieces[i]) for i, tok in enumerate(te.tokenizers)]
    n = max(len(w) for w in windows)
    if any(len(w) != n for w in windows):
        windows = [tokenize(tok, pieces[i], windows_min=n) for i, tok in enumerate(te.tokenizers)]
    label = texts[0] if len(set(texts)) == 1 else " | ".join(texts)
    return Tokens(text=label, family=te.family, windows=tuple(windows), virtual=tuple(virtual))


def _final_norm(encoder: Any) -> Any:
    norm = getattr(encoder, "final_layer_norm", None)
    if norm is None and hasattr(encoder, "text_model"):
        norm = encoder.text_model.final_layer_norm
    return norm


def _apply_weights(z: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """A1111's emphasis: scale token embeddings by their weights, then restore the original mean."""
    w = torch.tensor(weights, dtype=z.dtype, device=z.device)[None, :, None]
    original_mean = z.mean()
    z = z * w
    return z * (original_mean / z.mean())


def encode_tokens(te: TextEncoderHandle, tokens: Tokens, devices: Any, clip_skip: int = 0) -> Conditioning:
    if tokens.family != te.family:
        raise NodeError(f"these tokens were made for {family_label(tokens.family)}, the text encoder is {family_label(te.family)}")
    if len(te.encoders) not in (1, 2):
        raise NodeError(f"a text encoder handle with {len(te.encoders)} encoders is not supported")
    refiner = te.family == "sdxl-refiner"  # one encoder, used the SDXL way (penultimate layer + pooled)
    sdxl = len(te.encoders) == 2 or refiner
    pooled_index = len(te.encoders) - 1  # the pooled projection comes from the last (OpenCLIP-G) encoder
    targets = ("text_encoder_2",) if refiner else ("text_encoder", "text_encoder_2")  # LoRA file prefixes
    outs: list[torch.Tensor] = []
    pooled: torch.Tensor | None = None
    from .embeddings import with_virtual_tokens
    from .lora import patched_weights

    with ExitStack() as stack:
        placed = []
        for idx, enc in enumerate(te.encoders):
            model = stack.enter_context(devices.use(enc))
            if tokens.virtual and tokens.virtual[idx]:
                stack.enter_context(with_virtual_tokens(model, tokens.virtual[idx]))
            if te.patches:
                stack.enter_context(patched_weights(model, te.patches, target=targets[idx]))
            placed.append(model)
        for idx, (model, win) in enumerate(zip(placed, tokens.windows)):
            per_window = []
            for w_i, (ids, weights) in enumerate(zip(win.ids, win.weights)):
                ids_t = torch.tensor([ids], device=devices.device)
                if sdxl:
                    out = model(ids_t, output_hidden_states=True)
                    z = out.hidden_states[-(clip_skip + 2)]
                    if idx == pooled_index and w_i == 0:
                        pooled = out[0]
                elif clip_skip <= 0:
                    z = model(ids_t)[0]
                else:
                    out = model(ids_t, output_hidden_states=True)
                    z = _final_norm(model)(out.hidden_states[-(clip_skip + 1)])
                if win.weighted:
                    z = _apply_weights(z, weights)
                per_window.append(z)
            outs.append(torch.cat(per_window, dim=1))
        dtype = next(placed[-1].parameters()).dtype
    embeds = torch.cat(outs, dim=-1) if sdxl else outs[0]
    return Conditioning(embeds=embeds.to(dtype), family=te.family, pooled=pooled.to(dtype) if pooled is not None else None)


def encode_text(te: TextEncoderHandle, text: str, devices: Any, clip_skip: int = 0) -> Conditioning:
    return encode_tokens(te, tokenize_prompt(te, text), devices, clip_skip)


def encode_text_sdxl(te: TextEncoderHandle, text_g: str, text_l: str, devices: Any, clip_skip: int = 0) -> Conditioning:
    """SDXL with a prompt per encoder: `text_l` for CLIP-L, `text_g` for OpenCLIP-G (which also gives the pooled
    embedding); an empty `text_l` means `text_g` for both. The refiner has OpenCLIP-G only: `text_g`."""
    if te.family == "sdxl-refiner":
        texts = [text_g]
    elif len(te.encoders) == 2:
        texts = [text_l or text_g, text_g]
    else:
        raise NodeError(f"this node is for SDXL text encoders (two prompts: CLIP-L and OpenCLIP-G); the text encoder "
                        f"is {family_label(te.family)}: use EncodeText")
    return encode_tokens(te, tokenize_prompts(te, texts), devices, clip_skip)
