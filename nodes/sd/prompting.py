"""Prompt text -> weighted token windows, the way A1111 and ComfyUI users expect.

- Weights: `(word:1.3)` sets a weight, `(word)` multiplies by 1.1, `[word]` divides by 1.1, nesting
  multiplies, `\\(` is a literal parenthesis.
- Long prompts: the tokens are split into windows of 75, each wrapped in BOS/EOS and padded to 77, and
  encoded separately; the embeddings are concatenated along the sequence axis.
A prompt with no weighting syntax and at most 75 tokens gives exactly the single window diffusers uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

WINDOW = 77
CHUNK = WINDOW - 2

_TOKEN_RE = re.compile(r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|]|[^\\()\[\]:]+|:")


def parse_weights(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs."""
    out: list[list] = []
    round_stack: list[int] = []
    square_stack: list[int] = []

    def scale(start: int, factor: float) -> None:
        for run in out[start:]:
            run[1] *= factor

    for m in _TOKEN_RE.finditer(text):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith("\\") and len(tok) == 2:
            out.append([tok[1], 1.0])
        elif tok == "(":
            round_stack.append(len(out))
        elif tok == "[":
            square_stack.append(len(out))
        elif weight is not None and round_stack:
            scale(round_stack.pop(), float(weight))
        elif tok == ")" and round_stack:
            scale(round_stack.pop(), 1.1)
        elif tok == "]" and square_stack:
            scale(square_stack.pop(), 1 / 1.1)
        elif weight is not None:  # ":1.2)" without an opening bracket: literal text
            out.append([tok, 1.0])
        else:
            out.append([tok, 1.0])
    for start in round_stack:
        scale(start, 1.1)
    for start in square_stack:
        scale(start, 1 / 1.1)
    merged: list[tuple[str, float]] = []
    for t, w in out:
        if merged and merged[-1][1] == w:
            merged[-1] = (merged[-1][0] + t, w)
        else:
            merged.append((t, w))
    return merged or [("", 1.0)]


def has_weighting(text: str) -> bool:
    return any(c in text for c in "()[]")


@dataclass(frozen=True)
class TokenWindows:
    """Token ids [n_windows, 77] and per-token weights, for one tokenizer."""

    ids: list[list[int]]
    weights: list[list[float]]
    weighted: bool

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class SplicedText:
    """Prompt text in which some words stand for fixed token ids (textual-inversion vectors, see ti.py).

    `tokenize` cuts those words out of each run of text, tokenizes the rest as usual and splices the ids in,
    so the shared tokenizer is never changed (a tokenizer with added tokens splits the text the same way).
    """

    text: str
    words: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


def _token_ids(tokenizer, text: str, words: Mapping[str, tuple[int, ...]] | None) -> list[int]:
    if not words:
        return tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
    rx = re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))
    ids: list[int] = []
    pos = 0
    for m in rx.finditer(text):
        if text[pos:m.start()].strip():
            ids.extend(tokenizer(text[pos:m.start()], add_special_tokens=False, truncation=False)["input_ids"])
        ids.extend(words[m.group(0)])
        pos = m.end()
    if text[pos:].strip():
        ids.extend(tokenizer(text[pos:], add_special_tokens=False, truncation=False)["input_ids"])
    return ids


def tokenize(tokenizer, text: "str | SplicedText", windows_min: int = 1) -> TokenWindows:
    """Tokenize into 77-token windows (BOS + 75 + EOS, padded with the tokenizer's pad token)."""
    words = None
    if isinstance(text, SplicedText):
        text, words = text.text, text.words
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    weighted = has_weighting(text)
    if not weighted:
        runs = [(text, 1.0)]
    else:
        runs = parse_weights(text)
    ids: list[int] = []
    weights: list[float] = []
    for chunk_text, w in runs:
        toks = _token_ids(tokenizer, chunk_text, words)
        ids.extend(toks)
        weights.extend([w] * len(toks))
    win_ids, win_w = [], []
    for start in range(0, max(len(ids), 1), CHUNK):
        part, pw = ids[start:start + CHUNK], weights[start:start + CHUNK]
        n_pad = CHUNK - len(part)
        win_ids.append([bos] + part + [eos] + [pad] * n_pad)
        win_w.append([1.0] + pw + [1.0] + [1.0] * n_pad)
    while len(win_ids) < windows_min:
        win_ids.append([bos, eos] + [pad] * (WINDOW - 2))
        win_w.append([1.0] * WINDOW)
    return TokenWindows(win_ids, win_w, weighted)
