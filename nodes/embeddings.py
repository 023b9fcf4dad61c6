"""Textual-inversion embeddings.

Prompts call an embedding from models/embeddings with `embedding:name` (as in ComfyUI) and no extra node: the
checkpoint loader's text encoder knows the embeddings folder. `LoadEmbedding` attaches one file explicitly, so
that its own token (e.g. `<cat-toy>`, or one you choose) also works in prompts, and so that a changed file is
noticed by the cache. The cached text encoder is never modified: the vectors exist only during one encode.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from pydantic import Field

from engine.node import Choices, NodeContext, NodeError, node
from engine.types import TEXT_ENCODER
from nodes.impl.models import list_models, model_fingerprint, resolve_model


def _embeddings(settings) -> list[str]:
    return list_models(settings, "embeddings")


@node(category="conditioning", output_name="text_encoder", fingerprint=model_fingerprint("embeddings"))
def load_embedding(
    text_encoder: TEXT_ENCODER,
    name: Annotated[str, Choices(_embeddings)],
    ctx: NodeContext,
    token: Annotated[str, Field("", description="a word that calls it in prompts (empty: the file's own token); "
                                                "`embedding:name` always works")] = "",
) -> TEXT_ENCODER:
    """Attach a textual-inversion embedding (diffusers, A1111 .pt / emb_params, SDXL clip_l+clip_g) to a text
    encoder; prompts then use it by `embedding:name` or by its token. Multi-vector embeddings are supported."""
    from nodes.sd.ti import EmbeddingError, check_embedding, read_embedding

    path = resolve_model(ctx.settings, "embeddings", name)
    stem = name
    for suffix in (".safetensors", ".pt", ".bin", ".pth", ".sft"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    try:
        emb = read_embedding(path, stem)
        if token.strip():
            emb = emb.with_token(token.strip())
        check_embedding(text_encoder, emb)
    except EmbeddingError as exc:
        raise NodeError(str(exc)) from None
    return replace(text_encoder, embeddings=text_encoder.embeddings + (emb,))
