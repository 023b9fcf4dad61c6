"""Summaries and thumbnails of cached node outputs, so the editor can look inside any node of a run.

Works by duck typing and never imports torch: a tensor is anything with `shape`, `dtype` and `device`;
a value that knows how to show itself has `__loom_preview__()` (-> PIL image; LATENT values implement a
cheap latent -> RGB projection there) and/or `__loom_summary__()` (-> dict). IMAGE tensors follow the
[batch, height, width, channels] 0..1 layout, MASK tensors [batch, height, width].
"""

from __future__ import annotations

import inspect
import io
import math
from typing import Any

PRIMITIVES = (bool, int, float, str, type(None))
_MAX_VALUE_CHARS = 4096


class NoPreview(ValueError):
    """The value has nothing to draw (or the index is out of range)."""


def is_tensor(value: Any) -> bool:
    return all(hasattr(value, a) for a in ("shape", "dtype", "device")) and callable(getattr(value, "float", None))


def tensor_summary(t: Any) -> dict:
    """Shape, dtype, device and (for non-empty tensors) min/max/mean, computed in float32."""
    out: dict[str, Any] = {"shape": [int(s) for s in t.shape], "dtype": str(t.dtype).replace("torch.", ""),
                           "device": str(t.device), "min": None, "max": None, "mean": None}
    try:
        if t.numel() > 0:
            f = t.detach().float()
            out["min"], out["max"], out["mean"] = (_finite(f.min().item()), _finite(f.max().item()), _finite(f.mean().item()))
    except Exception:  # meta tensors, odd dtypes: the shape is still worth showing
        pass
    return out


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def kind_of(value: Any, socket_type: str) -> str:
    if socket_type == "LATENT":
        return "latent"
    if _image_like(value, socket_type):
        return "image"
    if is_tensor(value):
        return "tensor"
    if _jsonable(value):
        return "value"
    return "handle"


def _image_like(value: Any, socket_type: str) -> bool:
    if not is_tensor(value):
        return False
    if socket_type == "MASK":
        return len(value.shape) in (2, 3)
    return socket_type == "IMAGE" and len(value.shape) == 4 and int(value.shape[-1]) in (1, 3, 4)


def _jsonable(value: Any, depth: int = 0) -> bool:
    if isinstance(value, PRIMITIVES):
        return not (isinstance(value, float) and not math.isfinite(value))
    if depth > 3:
        return False
    if isinstance(value, (list, tuple)):
        return len(value) <= 256 and all(_jsonable(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return len(value) <= 256 and all(isinstance(k, str) and _jsonable(v, depth + 1) for k, v in value.items())
    return False


def describe(value: Any, socket_type: str) -> dict:
    """OutputPreview without `preview_url` (the API adds it): {type, kind, summary, value, previewable}."""
    kind = kind_of(value, socket_type)
    summary = None
    shown = None
    custom = getattr(value, "__loom_summary__", None)
    if callable(custom):
        try:
            summary = dict(custom())
        except Exception as exc:
            summary = {"error": f"{type(exc).__name__}: {exc}"}
    elif is_tensor(value):
        summary = tensor_summary(value)
    if kind == "value":
        shown = list(value) if isinstance(value, tuple) else value
        if isinstance(shown, str) and len(shown) > _MAX_VALUE_CHARS:
            shown = shown[:_MAX_VALUE_CHARS] + "..."
    elif kind == "handle" and summary is None:
        text = _safe_repr(value)
        summary = {"kind": "handle", "repr": text, "class": type(value).__name__}
    previewable = kind == "image" or callable(getattr(value, "__loom_preview__", None))
    return {"type": socket_type, "kind": kind, "summary": summary, "value": shown, "previewable": previewable}


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<{type(value).__name__}: repr failed: {exc}>"
    return text if len(text) <= 300 else text[:300] + "..."


def render(value: Any, socket_type: str, index: int = 0, size: int = 256):
    """A PIL image for one batch item of an output, scaled to fit in size x size."""
    img = _to_pil(value, socket_type, index)
    img = img.copy() if img.size[0] > size or img.size[1] > size else img
    img.thumbnail((size, size))
    return img


def _to_pil(value: Any, socket_type: str, index: int):
    from PIL import Image

    hook = getattr(value, "__loom_preview__", None)
    if callable(hook):
        takes_index = "index" in inspect.signature(hook).parameters
        img = hook(index=index) if takes_index else hook()
        if isinstance(img, (list, tuple)):
            if not 0 <= index < len(img):
                raise NoPreview(f"index {index} out of range (batch of {len(img)})")
            img = img[index]
        if not isinstance(img, Image.Image):
            raise NoPreview(f"{type(value).__name__}.__loom_preview__ gave no image")
        return img
    if not _image_like(value, socket_type):
        raise NoPreview(f"a {socket_type} value has no picture")
    import numpy as np

    t = value.detach()
    if len(t.shape) == 2:
        t = t[None]
    batch = int(t.shape[0])
    if not 0 <= index < batch:
        raise NoPreview(f"index {index} out of range (batch of {batch})")
    arr = t[index].float().clamp(0, 1).mul(255).round().to(dtype=_uint8(t)).cpu().numpy()
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Image.fromarray(np.ascontiguousarray(arr))


def _uint8(t: Any) -> Any:
    import torch  # only reached for real tensors, when torch is loaded anyway

    return torch.uint8


def png_bytes(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def jpeg_bytes(img: Any, size: int = 256, quality: int = 75) -> bytes:
    """A small JPEG of a live preview: a PIL image, or any value with `__loom_preview__()` (latents,
    which project themselves to RGB cheaply)."""
    make = getattr(img, "__loom_preview__", None)
    if callable(make):
        img = make()
    if img.size[0] < 64 and img.size[1] < 64:  # tiny latents: enlarge so the editor shows pixels, not a blur
        factor = max(1, 128 // max(img.size))
        img = img.resize((img.size[0] * factor, img.size[1] * factor), resample=0)
    if img.size[0] > size or img.size[1] > size:
        img = img.copy()
        img.thumbnail((size, size))
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
