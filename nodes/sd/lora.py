"""LoRA patches applied to shared weights for one call and restored afterwards (see patching.py)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def patched_weights(model: Any, patches: tuple, target: str) -> Iterator[None]:
    """Add each patch's low-rank delta to the matching weights of `model`; restore them on exit."""
    from .lora_apply import apply_patches

    restore = apply_patches(model, patches, target)
    try:
        yield
    finally:
        restore()
