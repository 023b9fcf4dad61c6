"""Small PIL/tensor helpers shared by the grid and the schedule plot (no matplotlib, no torchvision)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, TypeAlias

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Font: TypeAlias = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=16)
def load_font(size: int) -> Font:
    """PIL's bundled default font at `size` px (FreeType-backed since Pillow 10.1), so no font file ships."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font only
        return ImageFont.load_default()


def text_size(draw: ImageDraw.ImageDraw, text: str, font: Font) -> tuple[int, int]:
    """Width and height of one line as drawn (bbox-based, so it works for bitmap and FreeType fonts)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def line_height(font: Font) -> int:
    """A line pitch that fits ascenders and descenders, independent of the text drawn."""
    left, top, right, bottom = font.getbbox("Hg|y")
    return int(bottom) + max(2, int(bottom) // 5)


def wrap_text(draw: ImageDraw.ImageDraw, text: str, font: Font, max_width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `max_width` px; words longer than a line are broken; overflow ends in an ellipsis."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        current = ""
        for word in paragraph.split(" "):
            candidate = word if not current else f"{current} {word}"
            if draw.textlength(candidate, font=font) <= max_width:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = word
            while draw.textlength(current, font=font) > max_width and len(current) > 1:
                cut = len(current) - 1
                while cut > 1 and draw.textlength(current[:cut], font=font) > max_width:
                    cut -= 1
                lines.append(current[:cut])
                current = current[cut:]
        lines.append(current)
    if len(lines) > max_lines:
        kept = lines[:max_lines]
        last = kept[-1]
        while last and draw.textlength(last + "…", font=font) > max_width:
            last = last[:-1]
        kept[-1] = last + "…"
        lines = kept
    return lines


def to_pil_list(images: Any) -> list[Image.Image]:
    """Images as RGB PIL images: a float tensor/array [N,H,W,C] or [H,W,C] in 0..1, uint8 arrays, or PIL images."""
    if isinstance(images, Image.Image):
        return [images.convert("RGB")]
    if hasattr(images, "detach"):  # torch tensor without importing torch here
        images = images.detach().cpu().float().numpy() if images.dtype.is_floating_point else images.cpu().numpy()
    if isinstance(images, np.ndarray):
        arrays = [images] if images.ndim == 3 else list(images)
    elif isinstance(images, Sequence):
        out: list[Image.Image] = []
        for item in images:
            out.extend(to_pil_list(item))
        return out
    else:
        raise TypeError(f"expected images as a tensor, array or PIL images, got {type(images).__name__}")
    result = []
    for array in arrays:
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
            raise ValueError(f"expected images shaped [H,W,C] with C in 1/3/4, got {tuple(array.shape)}")
        if array.dtype != np.uint8:
            array = np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        if array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
        result.append(Image.fromarray(np.ascontiguousarray(array[..., :3])))
    return result
