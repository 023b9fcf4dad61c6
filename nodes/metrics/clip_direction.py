"""CLIP directional similarity (Gal et al. 2021, StyleGAN-NADA; used for instruction edits).

sim = cos(E_img(edited) - E_img(original), E_txt(edited caption) - E_txt(original caption)),
with every embedding L2-normalised first, as in the diffusers evaluation guide. It asks whether
the change in the image follows the change in the caption; 1 is perfect, 0 unrelated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .clip_model import ClipBundle, broadcast_texts, encode_images, encode_texts, normalise, truncation_notes


@dataclass
class DirectionalSimilarityResult:
    """Per-pair directional similarity and its mean."""

    similarities: torch.Tensor
    mean: float
    notes: list[str] = field(default_factory=list)


def clip_directional_similarity(
    original_images: object,
    edited_images: object,
    original_captions: str | Sequence[str],
    edited_captions: str | Sequence[str],
    clip: ClipBundle,
    batch_size: int = 32,
    match_pil: bool = True,
) -> DirectionalSimilarityResult:
    """Directional similarity per (original, edited) image pair; captions: one per pair or one for all."""
    img_a = normalise(encode_images(clip, original_images, batch_size=batch_size, match_pil=match_pil))
    img_b = normalise(encode_images(clip, edited_images, batch_size=batch_size, match_pil=match_pil))
    if img_a.shape != img_b.shape:
        raise ValueError(f"got {len(img_a)} original images but {len(img_b)} edited images")
    caps_a = broadcast_texts(original_captions, len(img_a), "original captions")
    caps_b = broadcast_texts(edited_captions, len(img_a), "edited captions")
    txt_a = normalise(encode_texts(clip, caps_a))
    txt_b = normalise(encode_texts(clip, caps_b))
    image_dir, text_dir = img_b - img_a, txt_b - txt_a
    sims = F.cosine_similarity(image_dir, text_dir, dim=-1)
    notes = list(clip.notes) + truncation_notes(clip, caps_a, "original caption")
    notes += truncation_notes(clip, caps_b, "edited caption")
    for name, direction in (("image", image_dir), ("caption", text_dir)):
        still = (direction.norm(dim=-1) < 1e-6).nonzero().flatten().tolist()
        if still:
            notes.append(f"pairs {still}: the {name} embedding did not change, so their similarity is 0 (undefined)")
    return DirectionalSimilarityResult(similarities=sims, mean=float(sims.mean()), notes=notes)
