"""Model-based image upscaling (ComfyUI's UpscaleModelLoader + ImageUpscaleWithModel): ESRGAN / Real-ESRGAN
RRDBNet and Real-ESRGAN Compact models from models/upscale_models, run in overlapping tiles.

The architectures, their detection from the weights and the tiled run live in nodes/impl/upscale_arch.py (imported
when a node runs, so listing the nodes stays free of torch).
"""

from __future__ import annotations

from typing import Annotated

from engine.compat.comfy import ComfyClass, register_comfy_class
from engine.node import Choices, NodeContext, NodeError, node
from engine.types import IMAGE, UPSCALE_MODEL
from nodes.impl.models import list_models, model_fingerprint, resolve_model

KIND = "upscale_models"


def _upscale_models(settings) -> list[str]:
    return list_models(settings, KIND)


@node(category="loaders", name="LoadUpscaleModel", display_name="Load Upscale Model", output_name="upscale_model",
      fingerprint=model_fingerprint(KIND))
def load_upscale_model(name: Annotated[str, Choices(_upscale_models)], ctx: NodeContext) -> UPSCALE_MODEL:
    """Load an image upscaling model from models/upscale_models (.pth, .safetensors): ESRGAN and Real-ESRGAN
    RRDBNet models (RealESRGAN_x4plus, _x2plus, _anime_6B, 4x-UltraSharp and other old-layout ESRGAN files) and
    Real-ESRGAN Compact models (realesr-general-x4v3, realesr-animevideov3). The architecture and scale are read
    from the weights."""
    from nodes.impl.upscale_arch import UpscaleArchError, load_upscale_model as load

    path = resolve_model(ctx.settings, KIND, name)
    if path.is_dir():
        raise NodeError(f"upscale model {name!r} is a folder; pick a .pth or .safetensors file")
    try:
        return load(path)
    except UpscaleArchError as exc:
        raise NodeError(f"upscale model {name!r}: {exc}") from None


@node(category="image/upscaling", name="ImageUpscaleWithModel", display_name="Upscale Image (using Model)")
def image_upscale_with_model(upscale_model: UPSCALE_MODEL, image: IMAGE, ctx: NodeContext) -> IMAGE:
    """Upscale images by the model's factor (x4 for RealESRGAN_x4plus) as ComfyUI does: 512 px tiles overlapping
    by 32 px and blended with feathered edges, smaller tiles after an out-of-memory error, the result clamped to
    0..1. An alpha channel is resized bilinearly. Runs in fp16 on a GPU, fp32 on the CPU."""
    from nodes.impl.upscale_arch import UpscaleArchError, upscale_image

    if image.ndim != 4:
        raise NodeError(f"image: expected [batch, height, width, channels], got shape {list(image.shape)}")
    devices = ctx.settings.devices() if ctx.settings is not None else _cpu_devices()
    try:
        return upscale_image(upscale_model, image, devices, progress=lambda i, n: ctx.progress(i, n), warn=ctx.warn)
    except UpscaleArchError as exc:
        raise NodeError(f"upscale_model: {exc}") from None


def _cpu_devices():
    from engine.devices import DeviceManager

    return DeviceManager("cpu")


# ComfyUI's UpscaleModelLoader (comfy_extras/nodes_upscale_model.py) takes `model_name`, its one widget. Its
# ImageUpscaleWithModel is our node of the same name and inputs (no widgets); registered too, so a prompt translated
# without a registry (`loom run` on an API prompt) reaches it.
register_comfy_class("UpscaleModelLoader", ComfyClass("LoadUpscaleModel", {"model_name": "name"}, ["upscale_model"],
                                                      widgets=("model_name",)))
register_comfy_class("ImageUpscaleWithModel", ComfyClass("ImageUpscaleWithModel", {}, ["image"]))
