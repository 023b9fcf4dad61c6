"""ControlNet residuals for one denoise step, from the hints attached to the conditioning."""

from __future__ import annotations

from typing import Any, Callable


def control_for_step(positive: Any, negative: Any, state: Any, step: int, devices: Any) -> Callable | None:
    """A function computing (down, mid) residuals for this step, or None when no ControlNet applies."""
    if not positive.controls and not (negative is not None and negative.controls):
        return None
    from .controlnet import residuals_for_step

    return residuals_for_step(positive, negative, state, step, devices)
