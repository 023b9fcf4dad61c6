"""Textual inversion: embedding files -> virtual token ids and vectors for one encode.

Where embeddings come from (both live in `TextEncoderHandle.embeddings`):
- `EmbeddingFolder`: the models' `embeddings/` folders, attached by the checkpoint loader. A prompt calls a file
  by `embedding:name` (ComfyUI's syntax; `name` is the path relative to the folder, with or without extension).
- `Embedding`: one file attached by the `LoadEmbedding` node. Besides `embedding:name`, the prompt may use its
  token: the token stored in the file (diffusers `{token: tensor}`, A1111's `name`) or the one set on the node.
  Tokens match anywhere in the text, as a tokenizer's added tokens do.

File formats: diffusers `{token: tensor}` (.safetensors or .bin), A1111 `.pt` (`string_to_param`, read with
`torch.load(weights_only=True)`), A1111 `emb_params` .safetensors, SDXL `{clip_l, clip_g}` .safetensors.
A multi-vector embedding becomes consecutive virtual ids, exactly where diffusers' `maybe_convert_prompt` puts
`<t> <t>_1 <t>_2 ...`. Virtual ids follow the encoder's vocabulary (vocab_size, vocab_size + 1, ...); the
tokenizer is never changed (see `prompting.SplicedText`), and `embeddings.with_virtual_tokens` extends the
embedding table for one encode only.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.node import NodeError

EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth", ".sft")
_EMBED_RE = re.compile(r"embedding:([^\s,()\[\]:]+)")
_WIDTH_LABEL = {768: "SD 1.x / CLIP-L", 1024: "SD 2.x / OpenCLIP-H", 1280: "SDXL / OpenCLIP-G"}


class EmbeddingError(ValueError):
    pass


def _width_label(width: int) -> str:
    return f"{width} wide" + (f", {_WIDTH_LABEL[width]}" if width in _WIDTH_LABEL else "")


@dataclass(frozen=True, eq=False)
class Embedding:
    """Learned vectors from one file: {"": [n, width]} or SDXL's {"clip_l": ..., "clip_g": ...}."""

    name: str
    path: str
    vectors: dict[str, torch.Tensor]
    tokens: tuple[str, ...] = ()
    format: str = ""

    @property
    def count(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    def widths(self) -> dict[str, int]:
        return {k: int(v.shape[-1]) for k, v in self.vectors.items()}

    def with_token(self, token: str) -> "Embedding":
        return Embedding(self.name, self.path, self.vectors, (token,), self.format)

    def for_encoder(self, index: int, n_encoders: int, width: int, family: str) -> torch.Tensor:
        """The vectors for encoder `index`; wrong widths name both sides."""
        from .handles import family_label

        v = self.vectors
        if "clip_l" in v or "clip_g" in v:
            if n_encoders == 2:
                key = ("clip_l", "clip_g")[index]
                chosen = v.get(key)
            else:  # an SDXL embedding on a one-encoder model: CLIP-L fits SD 1.x, OpenCLIP-G the SDXL refiner
                chosen = next((t for t in v.values() if t.shape[-1] == width), None)
                key = "clip_g" if family == "sdxl-refiner" else "clip_l"
            if chosen is None or chosen.shape[-1] != width:
                have = ", ".join(f"{k} {t.shape[-1]}" for k, t in v.items())
                raise EmbeddingError(f"embedding {self.name!r} holds {have} vectors but text encoder {index + 1} of "
                                     f"this {family_label(family)} model is {width} wide (needs {key} {width})")
            return chosen
        t = v[""]
        if t.shape[-1] != width:
            extra = " (an SDXL embedding needs clip_l and clip_g vectors)" if n_encoders == 2 else ""
            raise EmbeddingError(f"embedding {self.name!r} has vectors {_width_label(int(t.shape[-1]))}, but text encoder "
                                 f"{index + 1} of this {family_label(family)} model is {_width_label(width)}{extra}")
        return t

    def __repr__(self) -> str:
        widths = "+".join(str(w) for w in self.widths().values())
        toks = f", tokens {list(self.tokens)}" if self.tokens else ""
        return f"Embedding {self.name} ({self.count} vectors x {widths}{toks})"


@dataclass(frozen=True, eq=False)
class EmbeddingFolder:
    """The embeddings folders: `embedding:name` looks the file up here."""

    folders: tuple[str, ...]

    def find(self, name: str) -> Path | None:
        for root in self.folders:
            base = Path(root)
            try:
                cand = (base / name).resolve()
                cand.relative_to(base.resolve())
            except (ValueError, OSError):
                continue  # a name that climbs out of the folder is never looked up
            if cand.is_file():
                return cand
            for suffix in EMBEDDING_SUFFIXES:
                p = cand.with_name(cand.name + suffix)
                if p.is_file():
                    return p
        return None

    def names(self) -> list[str]:
        out: list[str] = []
        for root in self.folders:
            base = Path(root)
            if base.is_dir():
                out += sorted(p.relative_to(base).with_suffix("").as_posix() for p in base.rglob("*")
                              if p.suffix.lower() in EMBEDDING_SUFFIXES)
        return out

    def __repr__(self) -> str:
        return f"EmbeddingFolder({', '.join(self.folders)})"


def embedding_folder(settings: Any) -> EmbeddingFolder | None:
    if settings is None or not hasattr(settings, "model_folders"):
        return None
    return EmbeddingFolder(tuple(str(p) for p in settings.model_folders("embeddings")))


# ------------------------------------------------------------------------------------------------ reading

_cache: OrderedDict[tuple, Embedding] = OrderedDict()
_lock = threading.Lock()
CACHE_SIZE = 64


def _as_matrix(t: Any, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.ndim not in (1, 2) or not t.is_floating_point():
        raise EmbeddingError(f"{what}: expected a float [vectors, width] tensor, found "
                             f"{getattr(t, 'shape', type(t).__name__)}")
    t = t.detach().to(torch.float32)
    return t[None] if t.ndim == 1 else t


def parse_embedding(data: dict, name: str, path: str = "<memory>") -> Embedding:
    """Recognise the format from the keys."""
    if "string_to_param" in data:  # A1111 .pt
        params = data["string_to_param"]
        if not isinstance(params, dict) or not params:
            raise EmbeddingError(f"embedding {name!r}: string_to_param is empty")
        vec = _as_matrix(next(iter(params.values())), f"embedding {name!r}")
        tok = data.get("name")
        return Embedding(name, path, {"": vec}, (str(tok),) if isinstance(tok, str) and tok else (), "a1111-pt")
    if "emb_params" in data:  # A1111 safetensors
        return Embedding(name, path, {"": _as_matrix(data["emb_params"], f"embedding {name!r}")}, (), "a1111-safetensors")
    if "clip_l" in data or "clip_g" in data:  # SDXL
        vecs = {k: _as_matrix(data[k], f"embedding {name!r} {k}") for k in ("clip_l", "clip_g") if k in data}
        counts = {v.shape[0] for v in vecs.values()}
        if len(counts) != 1:
            raise EmbeddingError(f"embedding {name!r}: clip_l and clip_g hold different numbers of vectors")
        return Embedding(name, path, vecs, (), "sdxl")
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1:  # diffusers {token: tensor}
        tok, vec = next(iter(tensors.items()))
        return Embedding(name, path, {"": _as_matrix(vec, f"embedding {name!r}")}, (str(tok),), "diffusers")
    raise EmbeddingError(f"{Path(path).name} is not a textual-inversion embedding (keys: {sorted(data)[:8]}); expected "
                         "{token: tensor}, string_to_param, emb_params or clip_l/clip_g")


def read_embedding(path: str | Path, name: str | None = None) -> Embedding:
    """Read an embedding file (cached by path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, name)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    label = name or p.stem
    try:
        if p.suffix.lower() in (".safetensors", ".sft"):
            from safetensors.torch import load_file

            data = load_file(str(p))
        else:
            data = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EmbeddingError(f"embedding {p.name} could not be read: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise EmbeddingError(f"embedding {p.name}: expected a dict of tensors, found {type(data).__name__}")
    emb = parse_embedding(data, label, str(p))
    with _lock:
        _cache[key] = emb
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return emb


# ------------------------------------------------------------------------------------------------ prompts


def _strip_ext(name: str) -> str:
    for suffix in EMBEDDING_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _find(name: str, te: Any) -> Embedding | None:
    """An attached embedding called `name`, else the file `name` in the embeddings folders."""
    for e in te.embeddings:
        if isinstance(e, Embedding) and e.name in (name, _strip_ext(name)):
            return e
    for e in te.embeddings:
        if isinstance(e, EmbeddingFolder):
            p = e.find(name)
            if p is not None:
                return read_embedding(p, _strip_ext(name))
    return None


def _references(te: Any, text: str) -> list[tuple[str, Embedding]]:
    """(word in the prompt, embedding) for every distinct word that calls an embedding, in prompt order."""
    refs: dict[str, Embedding] = {}
    positions: dict[str, int] = {}
    for m in _EMBED_RE.finditer(text):
        raw = m.group(1)
        found = None
        for cand in dict.fromkeys((raw, raw.rstrip(".;!?'\""))):
            if cand:
                found = _find(cand, te)
                if found is not None:
                    word = "embedding:" + cand
                    break
        if found is None:
            folder = next((e for e in te.embeddings if isinstance(e, EmbeddingFolder)), None)
            attached = [e.name for e in te.embeddings if isinstance(e, Embedding)]
            have = (folder.names() if folder else []) + attached
            where = f"in {', '.join(folder.folders)}" if folder else "attached to this text encoder (use LoadEmbedding)"
            raise EmbeddingError(f"the prompt uses embedding:{raw} but no such embedding is {where}; "
                                 f"available: {sorted(set(have))[:30] or 'none'}")
        refs.setdefault(word, found)
        positions.setdefault(word, m.start())
    for e in te.embeddings:
        if isinstance(e, Embedding):
            for tok in e.tokens:
                pos = text.find(tok)
                if tok and pos >= 0 and tok not in refs:
                    refs[tok] = e
                    positions[tok] = pos
    return sorted(refs.items(), key=lambda kv: positions[kv[0]])


def _table_rows(encoder: Any) -> int:
    return int(encoder.get_input_embeddings().weight.shape[0])


def _width(encoder: Any) -> int:
    return int(encoder.get_input_embeddings().weight.shape[1])


def check_embedding(te: Any, emb: Embedding) -> None:
    """Raise EmbeddingError if `emb` does not fit every encoder of `te`."""
    n = len(te.encoders)
    for i, enc in enumerate(te.encoders):
        emb.for_encoder(i, n, _width(enc), te.family)


def expand_with_embeddings(te: Any, text: str) -> tuple[list[Any], list[dict[int, torch.Tensor]]]:
    """Per tokenizer, the prompt with the words that call embeddings mapped to virtual ids; per encoder, the
    vectors of those ids."""
    from .prompting import SplicedText

    n = len(te.tokenizers)
    try:
        refs = _references(te, text)
        if not refs:
            return [text] * n, [{} for _ in range(n)]
        pieces: list[Any] = []
        virtual: list[dict[int, torch.Tensor]] = []
        for i, enc in enumerate(te.encoders):
            base, width = _table_rows(enc), _width(enc)
            ids_of: dict[int, tuple[int, ...]] = {}  # id(embedding) -> its virtual ids
            vectors: dict[int, torch.Tensor] = {}
            words: dict[str, tuple[int, ...]] = {}
            for word, emb in refs:
                if id(emb) not in ids_of:
                    vecs = emb.for_encoder(i, len(te.encoders), width, te.family)
                    start = base + len(vectors)
                    ids_of[id(emb)] = tuple(range(start, start + vecs.shape[0]))
                    for j, vid in enumerate(ids_of[id(emb)]):
                        vectors[vid] = vecs[j]
                words[word] = ids_of[id(emb)]
            pieces.append(SplicedText(text, words))
            virtual.append(vectors)
    except EmbeddingError as exc:
        raise NodeError(str(exc)) from None
    return pieces, virtual
