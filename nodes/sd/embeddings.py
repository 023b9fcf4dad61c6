"""Textual inversion: `embedding:name` in a prompt -> virtual token ids carrying the learned vectors.

The tokenizer never changes. For one encode, `with_virtual_tokens` appends the vectors to the text
encoder's token-embedding table and removes them afterwards, so the cached encoder is left as it was.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator

import torch

_EMBED_RE = re.compile(r"embedding:([^\s,()\[\]:]+)")


def expand_embeddings(te: Any, text: str) -> tuple[list[str], list[dict[int, torch.Tensor]]]:
    """Per tokenizer: the prompt text to tokenize and the virtual-id vectors it refers to.

    Without embeddings on the handle (and no `embedding:` in the text, which then fails with a clear message),
    the text is returned unchanged (and no virtual ids exist).
    """
    n = len(te.tokenizers)
    if not te.embeddings and "embedding:" not in text:
        return [text] * n, [{} for _ in range(n)]
    from .ti import expand_with_embeddings

    return expand_with_embeddings(te, text)


@contextmanager
def with_virtual_tokens(model: Any, vectors: dict[int, torch.Tensor]) -> Iterator[None]:
    emb = model.get_input_embeddings()
    old_weight = emb.weight
    base = old_weight.shape[0]
    ids = sorted(vectors)
    if ids != list(range(base, base + len(ids))):
        raise ValueError(f"virtual token ids must follow the vocabulary ({base}..), got {ids[:5]}")
    extra = torch.stack([vectors[i].to(old_weight.device, old_weight.dtype) for i in ids])
    emb.weight = torch.nn.Parameter(torch.cat([old_weight.detach(), extra]), requires_grad=False)
    emb.num_embeddings = base + len(ids)
    try:
        yield
    finally:
        emb.weight = old_weight
        emb.num_embeddings = base
