"""Pixel helpers for the image nodes: conversions between tensors and PIL, safe file paths, PNG writing.

IMAGE tensors are float32 [batch, height, width, channels] in 0..1 (ComfyUI's layout, so converted
workflows and custom nodes agree); MASK tensors are float32 [batch, height, width].
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin

from .files import IMAGE_SUFFIXES, UnsafePath, list_images, safe_join  # noqa: F401  (re-exported)


# 16-bit greyscale PNGs, PGMs and TIFFs open in these modes; "I" (32-bit) is what older Pillows gave 16-bit
# PNGs, so it is read on the same 0..65535 scale (larger values clip to 1).
HIGH_BIT_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _high_bit_grey_to_tensor(img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """A 16-bit greyscale image at full precision: value / 65535 in all three channels.

    Pillow's own conversion to RGB clips these values at 255 (nearly every pixel white). A tRNS chunk
    (one transparent grey value) gives the mask, since such images have no alpha channel.
    """
    raw = np.asarray(img)
    grey = np.clip(raw.astype(np.float32) / 65535.0, 0.0, 1.0)
    image = torch.from_numpy(np.repeat(grey[..., None], 3, axis=-1))[None]
    key = img.info.get("transparency")
    if isinstance(key, int):
        mask = torch.from_numpy((raw == key).astype(np.float32))[None]
    else:
        mask = torch.zeros((1, raw.shape[0], raw.shape[1]), dtype=torch.float32)
    return image, mask


def _png_colour_depth(head: bytes) -> int | None:
    """The bit depth of a PNG with colour (RGB or RGBA), from its IHDR chunk; None for anything else."""
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    depth, colour_type = head[24], head[25]
    return depth if colour_type in (2, 6) else None


def _sixteen_bit_colour_png(data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """A 16-bit RGB(A) PNG at full precision (value / 65535), decoded by OpenCV: Pillow keeps only the high byte."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3 or arr.dtype != np.uint16:
        raise OSError("OpenCV could not decode this 16-bit PNG")
    x = arr.astype(np.float32) / 65535.0
    rgb = x[..., [2, 1, 0]]  # OpenCV gives BGR(A)
    image = torch.from_numpy(np.ascontiguousarray(rgb))[None]
    if arr.shape[-1] == 4:
        mask = 1.0 - torch.from_numpy(np.ascontiguousarray(x[..., 3]))[None]
    else:
        mask = torch.zeros((1, arr.shape[0], arr.shape[1]), dtype=torch.float32)
    return image, mask


def read_image_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """An image file -> (IMAGE [1,H,W,3], MASK [1,H,W]) at the file's precision (16-bit colour PNGs included);
    raises OSError / UnidentifiedImageError for what cannot be read."""
    with open(path, "rb") as f:
        head = f.read(26)
        if _png_colour_depth(head) == 16:
            return _sixteen_bit_colour_png(head + f.read())
    with Image.open(path) as img:
        return pil_to_tensor(img)


def pil_to_tensor(img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """One PIL image -> (IMAGE [1,H,W,3], MASK [1,H,W]); the mask is 1 - alpha (painted-out = change).

    16-bit greyscale images keep their precision (value / 65535). 16-bit colour PNGs have no Pillow mode at full
    precision: `read_image_file` decodes those with OpenCV.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in HIGH_BIT_GREY:
        return _high_bit_grey_to_tensor(img)
    rgba = img.convert("RGBA")
    arr = np.asarray(rgba, dtype=np.float32) / 255.0
    image = torch.from_numpy(arr[..., :3].copy())[None]
    if "A" in img.getbands() or "transparency" in img.info:  # palette / grey images carry alpha as `transparency`
        mask = 1.0 - torch.from_numpy(arr[..., 3].copy())[None]
    else:
        mask = torch.zeros((1, arr.shape[0], arr.shape[1]), dtype=torch.float32)
    return image, mask


def tensor_to_pils(images: torch.Tensor) -> list[Image.Image]:
    arr = (images.detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    out = []
    for a in arr:
        if a.shape[-1] == 1:
            a = a[..., 0]
        out.append(Image.fromarray(a))
    return out


def png_info(workflow: dict | None, prompt: dict | None, extra: dict[str, Any] | None = None) -> PngImagePlugin.PngInfo:
    """Text chunks as ComfyUI writes them, so either tool can load the workflow back from the PNG."""
    info = PngImagePlugin.PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    if workflow is not None:
        info.add_text("workflow", json.dumps(workflow))
    for k, v in (extra or {}).items():
        info.add_text(k, v if isinstance(v, str) else json.dumps(v))
    return info


def atomic_save_png(img: Image.Image, path: Path, pnginfo: PngImagePlugin.PngInfo | None, compress_level: int = 4,
                    overwrite: bool = True) -> None:
    """Write to a temporary file in the same folder, then rename: a file is complete or absent.

    With `overwrite=False` an existing `path` is never replaced (FileExistsError): the final step is a
    hard link, which fails atomically when the name is taken (two processes saving with one counter).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format="PNG", pnginfo=pnginfo, compress_level=compress_level)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name appears
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: check, then rename (a small race remains)
                if path.exists():
                    raise FileExistsError(str(path)) from None
                os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


_COUNTER_RE = re.compile(r"_(\d{5})_\.png$")


def next_counter(folder: Path, stem: str) -> int:
    """The next free counter for `stem_00001_.png`-style names (ComfyUI's naming)."""
    best = 0
    if folder.is_dir():
        for p in folder.glob(f"{glob_escape(stem)}_*_.png"):
            m = _COUNTER_RE.search(p.name)
            if m and p.name[: -len(m.group(0))] == stem:
                best = max(best, int(m.group(1)))
    return best + 1


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)
