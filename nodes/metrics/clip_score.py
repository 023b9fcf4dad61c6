"""CLIP score (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image Captioning").

score(image, prompt) = scale * max(cos(E_img, E_txt), 0) with scale = 100, the convention of
torchmetrics' `CLIPScore` (the paper uses w = 2.5). Text-to-image prompt adherence, higher is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .clip_model import ClipBundle, broadcast_texts, encode_images, encode_texts, normalise, truncation_notes


@dataclass
class ClipScoreResult:
    """Per-image scores and their mean.

    scores: scale * max(cos, 0) per image (the paper's per-pair clipping).
    cosine: the raw cosine per image.
    mean: mean of `scores`.
    mean_of_raw: max(scale * mean(cos), 0), what torchmetrics' CLIPScore.compute() reports
      (it clips the mean, not each pair; equal to `mean` when no cosine is negative).
    """

    scores: torch.Tensor
    cosine: torch.Tensor
    mean: float
    mean_of_raw: float
    notes: list[str] = field(default_factory=list)


def clip_score(
    images: object,
    prompts: str | Sequence[str],
    clip: ClipBundle,
    scale: float = 100.0,
    prefix: str = "",
    batch_size: int = 32,
    match_pil: bool = True,
) -> ClipScoreResult:
    """CLIP score of each image against its prompt (one prompt, or one per image).

    images: float tensor [N,H,W,3] in 0..1, uint8 tensor/array, PIL image(s) or a list of them.
    prefix: text put before every prompt; the paper used "A photo depicts " (torchmetrics: none).
    """
    image_features = encode_images(clip, images, batch_size=batch_size, match_pil=match_pil)
    texts = [prefix + p for p in broadcast_texts(prompts, len(image_features), "prompts")]
    text_features = encode_texts(clip, texts)
    cosine = (normalise(image_features) * normalise(text_features)).sum(dim=-1)
    scores = scale * cosine.clamp(min=0)
    notes = list(clip.notes) + truncation_notes(clip, texts)
    negative = int((cosine < 0).sum())
    if negative:
        notes.append(f"{negative} of {len(cosine)} pairs had a negative cosine and score 0")
    return ClipScoreResult(
        scores=scores,
        cosine=cosine,
        mean=float(scores.mean()),
        mean_of_raw=max(float(scale * cosine.mean()), 0.0),
        notes=notes,
    )
