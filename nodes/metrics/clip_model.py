"""Loading a local transformers CLIP model and preparing its inputs with torch only.

Shared by CLIP score and CLIP directional similarity. The image preprocessing mirrors what
transformers' (PIL-backend) `CLIPImageProcessor` does with the settings in the model's
`preprocessor_config.json` (shortest-edge resize, centre crop, rescale, normalise), so scores agree
with `CLIPProcessor`-based tools such as torchmetrics without needing torchvision.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# OpenAI CLIP normalisation, the transformers default when a config leaves it out.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json + merges.txt")
# Every OpenAI-vocabulary CLIP tokenizer is this one; used when a model folder carries no tokenizer.
BUNDLED_TOKENIZER = Path(__file__).resolve().parent.parent / "sd" / "tokenizers" / "clip"
_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class ClipModelNotFound(FileNotFoundError):
    """A CLIP model folder, or a file it needs, is missing."""


@dataclass(frozen=True)
class ClipPreprocess:
    """The image-processor settings that matter for scoring (defaults: OpenAI CLIP ViT at 224)."""

    shortest_edge: int | None = 224
    resize_hw: tuple[int, int] | None = None  # used when the config gives {"height","width"} instead
    crop_hw: tuple[int, int] | None = (224, 224)
    resample: str = "bicubic"
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ClipPreprocess:
        """Read a `preprocessor_config.json` dict (old int sizes and new dict sizes both)."""
        size = cfg.get("size", {"shortest_edge": 224})
        shortest, resize_hw = None, None
        if isinstance(size, int):
            shortest = size
        elif "shortest_edge" in size:
            shortest = int(size["shortest_edge"])
        elif "height" in size and "width" in size:
            resize_hw = (int(size["height"]), int(size["width"]))
        else:
            raise ValueError(f"unsupported image processor size {size!r}")
        crop = cfg.get("crop_size", {"height": 224, "width": 224})
        crop_hw = (int(crop), int(crop)) if isinstance(crop, int) else (int(crop["height"]), int(crop["width"]))
        resample = cfg.get("resample", 3)
        resample_name = _PIL_FILTERS.get(int(resample), "bicubic") if isinstance(resample, int) else str(resample)
        mean = cfg.get("image_mean", OPENAI_CLIP_MEAN)
        std = cfg.get("image_std", OPENAI_CLIP_STD)
        mean = (float(mean),) * 3 if isinstance(mean, (int, float)) else tuple(float(v) for v in mean)
        std = (float(std),) * 3 if isinstance(std, (int, float)) else tuple(float(v) for v in std)
        return cls(
            shortest_edge=shortest,
            resize_hw=resize_hw,
            crop_hw=crop_hw,
            resample=resample_name,
            do_resize=bool(cfg.get("do_resize", True)),
            do_center_crop=bool(cfg.get("do_center_crop", True)),
            do_rescale=bool(cfg.get("do_rescale", True)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            do_normalize=bool(cfg.get("do_normalize", True)),
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
        )


@dataclass
class ClipBundle:
    """A CLIP model with the tokenizer and image settings that belong to it."""

    model: Any  # transformers.CLIPModel (or anything with get_image_features/get_text_features)
    tokenizer: Any
    preprocess: ClipPreprocess
    max_length: int = 77
    folder: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def find_clip_folder(name_or_path: str | os.PathLike[str], models_dir: str | os.PathLike[str] = "models") -> Path:
    """Resolve `name` to `models/clip/<name>` (or take an existing folder path) and check its files."""
    candidate = Path(name_or_path)
    folder = candidate if candidate.is_dir() else Path(models_dir) / "clip" / str(name_or_path)
    expected = (
        "config.json, one of "
        + ", ".join(WEIGHT_FILES)
        + ", preprocessor_config.json and a tokenizer ("
        + " or ".join(TOKENIZER_FILES)
        + "); e.g. the files of the Hugging Face repo openai/clip-vit-large-patch14"
    )
    if not folder.is_dir():
        raise ClipModelNotFound(
            f"CLIP model folder not found: {folder}. Put a transformers CLIPModel folder there "
            f"(models/clip/<name>/ holding {expected})."
        )
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise ClipModelNotFound(f"CLIP model folder {folder} lacks {', '.join(missing)}; it must hold {expected}.")
    return folder


def _load_tokenizer(folder: Path, notes: list[str]) -> Any:
    from transformers import CLIPTokenizer

    if (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file():
        return CLIPTokenizer.from_pretrained(str(folder))
    notes.append(f"{folder} has no tokenizer files; used the bundled OpenAI CLIP tokenizer ({BUNDLED_TOKENIZER})")
    return CLIPTokenizer(
        vocab_file=str(BUNDLED_TOKENIZER / "vocab.json"),
        merges_file=str(BUNDLED_TOKENIZER / "merges.txt"),
        model_max_length=77,
    )


def load_clip(
    name_or_path: str | os.PathLike[str],
    models_dir: str | os.PathLike[str] = "models",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ClipBundle:
    """Load `models/clip/<name>` (a transformers CLIPModel folder) offline, with its tokenizer and image settings."""
    from transformers import CLIPModel

    folder = find_clip_folder(name_or_path, models_dir)
    notes: list[str] = []
    model = CLIPModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype).to(device).eval()
    tokenizer = _load_tokenizer(folder, notes)
    pre_file = folder / "preprocessor_config.json"
    if pre_file.is_file():
        preprocess = ClipPreprocess.from_config(json.loads(pre_file.read_text(encoding="utf-8")))
    else:
        side = int(model.config.vision_config.image_size)
        preprocess = ClipPreprocess(shortest_edge=side, crop_hw=(side, side))
        notes.append(f"{pre_file} missing; used OpenAI CLIP preprocessing at {side}px")
    positions = int(model.config.text_config.max_position_embeddings)
    max_length = min(int(getattr(tokenizer, "model_max_length", positions) or positions), positions)
    return ClipBundle(model, tokenizer, preprocess, max_length=max_length, folder=folder, notes=notes)


# ----------------------------------------------------------------------------------------------- images


def images_to_uint8_range(images: object) -> list[torch.Tensor]:
    """Images as a list of float [3,H,W] tensors in 0..255.

    Accepts a float tensor [N,H,W,C] / [H,W,C] in 0..1 (the engine's IMAGE), uint8 tensors/arrays,
    PIL images, or a list of any of these. Alpha is dropped, grey is repeated to RGB.
    """
    from PIL import Image

    if isinstance(images, Image.Image):
        array = np.asarray(images.convert("RGB"), dtype=np.uint8)
        return [torch.from_numpy(array.copy()).permute(2, 0, 1).float()]
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(images, torch.Tensor):
        batch = images if images.ndim == 4 else images.unsqueeze(0)
        if batch.ndim != 4 or batch.shape[-1] not in (1, 3, 4):
            raise ValueError(f"expected images shaped [N,H,W,C] (C = 1, 3 or 4), got {tuple(images.shape)}")
        if batch.shape[-1] == 1:
            batch = batch.expand(-1, -1, -1, 3)
        batch = batch[..., :3].detach().cpu()
        scaled = batch.float() if batch.dtype == torch.uint8 else batch.float() * 255.0
        return list(scaled.permute(0, 3, 1, 2).contiguous())
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        out: list[torch.Tensor] = []
        for item in images:
            out.extend(images_to_uint8_range(item))
        return out
    raise TypeError(f"expected images as a tensor, array or PIL images, got {type(images).__name__}")


def _resize_axis(x: torch.Tensor, size: tuple[int, int], mode: str, match_pil: bool) -> torch.Tensor:
    """One antialiased resize; in PIL mode the result is rounded to 8 bits as PIL's uint8 images are."""
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "nearest":
        y = F.interpolate(x, size=size, mode="nearest-exact")
    else:
        y = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
    return y.round().clamp(0, 255) if match_pil else y


def _resize(x: torch.Tensor, size: tuple[int, int], resample: str, match_pil: bool) -> torch.Tensor:
    mode = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}.get(resample, "bicubic")
    if not match_pil:
        return _resize_axis(x, size, mode, False)
    # PIL resamples horizontally, stores 8-bit, then vertically: two passes reproduce it to +-1 level.
    x = _resize_axis(x, (x.shape[-2], size[1]), mode, True)
    return _resize_axis(x, size, mode, True)


def _center_crop(x: torch.Tensor, crop_hw: tuple[int, int]) -> torch.Tensor:
    """Centre crop; zero-pads first when the image is smaller than the crop (as transformers does)."""
    h, w = x.shape[-2:]
    ch, cw = crop_hw
    if h < ch or w < cw:
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        top, left = math.ceil(pad_h / 2), math.ceil(pad_w / 2)
        x = F.pad(x, (left, pad_w - left, top, pad_h - top))
        h, w = x.shape[-2:]
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def resized_hw(h: int, w: int, pre: ClipPreprocess) -> tuple[int, int]:
    """Target size of the resize step, with transformers' rounding (int() of the long side)."""
    if pre.resize_hw is not None:
        return pre.resize_hw
    assert pre.shortest_edge is not None
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = pre.shortest_edge, int(pre.shortest_edge * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def preprocess_images(images: object, pre: ClipPreprocess, match_pil: bool = True) -> torch.Tensor:
    """Images -> CLIP pixel_values [N,3,h,w] (float32) following `pre`.

    match_pil=True quantises to 8 bits and resamples in two 8-bit passes as the PIL-backed
    transformers processor does (agreement to about one grey level on a few pixels); False keeps
    full float precision (a cleaner signal, slightly different numbers).
    """
    out = []
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(3, 1, 1)
    for img in images_to_uint8_range(images):
        x = img.round().clamp(0, 255) if match_pil else img
        x = x.unsqueeze(0)
        if pre.do_resize:
            x = _resize(x, resized_hw(x.shape[-2], x.shape[-1], pre), pre.resample, match_pil)
        if pre.do_center_crop and pre.crop_hw is not None:
            x = _center_crop(x, pre.crop_hw)
        x = x[0]
        if pre.do_rescale:
            x = x * pre.rescale_factor
        if pre.do_normalize:
            x = (x - mean) / std
        out.append(x.float())
    if not out:
        raise ValueError("no images given")
    shapes = {tuple(t.shape) for t in out}
    if len(shapes) != 1:
        raise ValueError(f"preprocessed images differ in size {sorted(shapes)}; enable centre crop in the config")
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------- encoders


def _features(output: Any) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output is the projected embedding; 4.x a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        pooled = output[0]
    return pooled


@torch.no_grad()
def encode_images(bundle: ClipBundle, images: object, batch_size: int = 32, match_pil: bool = True) -> torch.Tensor:
    """Projected CLIP image embeddings [N,D] (float32, not normalised)."""
    pixels = preprocess_images(images, bundle.preprocess, match_pil=match_pil)
    device = bundle.device
    dtype = next(bundle.model.parameters()).dtype
    chunks = [
        _features(bundle.model.get_image_features(pixel_values=pixels[i : i + batch_size].to(device, dtype)))
        for i in range(0, len(pixels), batch_size)
    ]
    return torch.cat(chunks).float().cpu()


def count_tokens(bundle: ClipBundle, texts: Sequence[str]) -> list[int]:
    """Token counts including start/end tokens, before truncation (to report truncated prompts)."""
    return [len(ids) for ids in bundle.tokenizer(list(texts), truncation=False)["input_ids"]]


@torch.no_grad()
def encode_texts(bundle: ClipBundle, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Projected CLIP text embeddings [N,D] (float32, not normalised); long prompts keep their end token."""
    if isinstance(texts, str):
        texts = [texts]
    device = bundle.device
    chunks = []
    for i in range(0, len(texts), batch_size):
        tokens = bundle.tokenizer(
            list(texts[i : i + batch_size]),
            padding=True,
            truncation=True,
            max_length=bundle.max_length,
            return_tensors="pt",
        )
        out = bundle.model.get_text_features(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        )
        chunks.append(_features(out))
    return torch.cat(chunks).float().cpu()


def broadcast_texts(texts: str | Sequence[str], n: int, what: str) -> list[str]:
    """One text per item: a single text (or a one-element list) is repeated for all n."""
    if isinstance(texts, str):
        return [texts] * n
    texts = list(texts)
    if len(texts) == 1 and n > 1:
        return texts * n
    if len(texts) != n:
        raise ValueError(f"got {n} images but {len(texts)} {what}; give one per image or a single one for all")
    return texts


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Unit-length rows (CLIP embeddings are compared by cosine)."""
    return x / x.norm(p=2, dim=-1, keepdim=True)


def truncation_notes(bundle: ClipBundle, texts: Sequence[str], label: str = "prompt") -> list[str]:
    """One note per text longer than the model's context."""
    notes = []
    for i, n in enumerate(count_tokens(bundle, texts)):
        if n > bundle.max_length:
            notes.append(f"{label} {i} has {n} tokens; truncated to {bundle.max_length} (end token kept)")
    return notes
