"""Apply a handle's patches (LoRA weights, forward hooks such as FreeU) to a shared model for one call, then undo them.

Cached models are shared by every workflow in the process; a patch that outlived its call would
silently change someone else's picture. So patches are applied inside a `with` block and undone in
its `finally`, even when the call raises.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Iterator


@contextmanager
def applied(handle: Any, devices: Any) -> Iterator[Any]:
    """The handle's model on the compute device with the handle's patches and hooks applied, for the block."""
    with devices.use(handle.model) as model:
        patches = getattr(handle, "patches", ())
        hooks = getattr(handle, "hooks", ())
        if not patches and not hooks:
            yield model
            return
        from .lora import patched_weights
        from .unet_hooks import installed

        weights = patched_weights(model, patches, target="unet") if patches else nullcontext()
        with weights, installed(model, hooks):
            yield model
