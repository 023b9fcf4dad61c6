"""ControlNet nodes: load, apply (to one conditioning, or to positive + negative with a step range), and the
preprocessors that need no weights (Canny, threshold/scribble, soft edges) plus fitting a control image to the
latent size. ImageInvert (nodes/image.py) turns black-on-white drawings into the white-on-black maps ControlNets
expect.

Applying a ControlNet only attaches a hint (model, image, strength, step range, resize mode) to the conditioning;
the sampler runs the ControlNet at each step (one-node Sample and the open DenoiseLoop alike; in a loop body an
Apply node works on the LoopInput's conditioning).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from pydantic import Field

from engine.node import Choices, NodeContext, NodeError, Outputs, Widget, node
from engine.types import CONDITIONING, CONTROL_NET, IMAGE, LATENT, VAE
from nodes.impl.models import list_models, model_fingerprint, resolve_model

ControlStrength = Annotated[float, Field(1.0, ge=-10.0, le=10.0, description="how strongly the ControlNet steers (0 = off)"),
                            Widget(step=0.01)]
Percent = Annotated[float, Field(ge=0.0, le=1.0), Widget(step=0.01, slider=True)]
Resize = Annotated[Literal["crop", "stretch", "pad"], Field(
    "crop", description="a control image of another size than the image being generated is resized to it: "
                        "crop = cover then cut the overflow (keeps proportions), stretch = exact size, "
                        "pad = fit inside then pad with black")]


def _controlnets(settings) -> list[str]:
    return list_models(settings, "controlnet")


@node(category="loaders", output_name="control_net", fingerprint=model_fingerprint("controlnet"))
def load_control_net(name: Annotated[str, Choices(_controlnets)], ctx: NodeContext) -> CONTROL_NET:
    """Load a ControlNet from models/controlnet: a diffusers folder, or a single file in the original layout
    (config read from the weights' shapes, nothing downloaded). Canny, depth, normal, pose, M-LSD, HED,
    segmentation and scribble ControlNets share one architecture and all load here."""
    from nodes.sd.controlnet import ControlNetError, load_controlnet

    path = resolve_model(ctx.settings, "controlnet", name)
    try:
        return load_controlnet(path)
    except ControlNetError as exc:
        raise NodeError(str(exc)) from None


def _hint(cn, image, strength: float, start: float, end: float, resize: str, by_noise_level: bool = False):
    from nodes.sd.controlnet import Hint

    if image.ndim != 4:
        raise NodeError(f"the control image must be an IMAGE batch [B,H,W,C], got shape {list(image.shape)}")
    return Hint(controlnet=cn, image=image, strength=float(strength), start=float(start), end=float(end), resize=resize,
                by_noise_level=by_noise_level)


@node(category="conditioning/control", output_name="conditioning")
def apply_control_net(conditioning: CONDITIONING, control_net: CONTROL_NET, image: IMAGE,
                      strength: ControlStrength = 1.0, resize: Resize = "crop") -> CONDITIONING:
    """Steer sampling with a ControlNet and a control image (e.g. Canny edges), on this conditioning only
    (connect it to the positive prompt; the negative side then gets no control)."""
    from nodes.sd.controlnet import check_conditioning

    check_conditioning(control_net, conditioning)
    hint = _hint(control_net, image, strength, 0.0, 1.0, resize)
    return _with_hint(conditioning, hint)


def _with_hint(conditioning, hint):
    """The conditioning with one more ControlNet hint, on every prompt of a combined conditioning."""
    from nodes.sd.denoise import conditioning_parts, joined

    return joined([replace(p, controls=p.controls + (hint,)) for p in conditioning_parts(conditioning)])


class ControlledConditioning(Outputs):
    positive: CONDITIONING
    negative: CONDITIONING


@node(category="conditioning/control")
def apply_control_net_advanced(positive: CONDITIONING, negative: CONDITIONING, control_net: CONTROL_NET, image: IMAGE,
                               strength: ControlStrength = 1.0, start_percent: Percent = 0.0,
                               end_percent: Percent = 1.0, resize: Resize = "crop",
                               percent_of: Annotated[Literal["steps", "noise levels"], Widget(advanced=True)] = "steps",
                               ) -> ControlledConditioning:
    """Apply a ControlNet to both sides of guidance (as diffusers' ControlNet pipeline does), only between
    start_percent and end_percent of the steps (diffusers' control_guidance_start/end) or, with `percent_of`
    "noise levels", of the model's noise levels as ComfyUI counts them. Chain several to stack ControlNets."""
    from nodes.sd.controlnet import check_conditioning

    check_conditioning(control_net, positive, "positive conditioning")
    check_conditioning(control_net, negative, "negative conditioning")
    hint = _hint(control_net, image, strength, start_percent, end_percent, resize, percent_of == "noise levels")
    return ControlledConditioning(positive=_with_hint(positive, hint), negative=_with_hint(negative, hint))


# ---------------------------------------------------------------------------------------------- preprocessors

Threshold = Annotated[int, Field(ge=0, le=255), Widget(step=1)]
Level = Annotated[float, Field(0.5, ge=0.0, le=1.0), Widget(step=0.01, slider=True)]
Invert = Annotated[bool, Field(True, description="white lines on black from a dark drawing on light paper")]
Blur = Annotated[float, Field(1.0, ge=0.0, le=8.0, description="Gaussian blur sigma before the gradient (0 = none)"), Widget(step=0.1)]
Gain = Annotated[float, Field(1.0, ge=0.1, le=10.0, description="brightness of the edges"), Widget(step=0.1)]


@node(category="conditioning/control/preprocessors", name="Canny", output_name="image")
def canny(image: IMAGE, low_threshold: Threshold = 100, high_threshold: Threshold = 200) -> IMAGE:
    """Canny edge map (OpenCV on the RGB image, as the ControlNet paper's annotator): white edges on black."""
    import cv2
    import numpy as np
    import torch

    if low_threshold > high_threshold:
        raise NodeError(f"low_threshold ({low_threshold}) must not exceed high_threshold ({high_threshold})")
    arr = (image[..., :3].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    edges = np.stack([cv2.Canny(np.ascontiguousarray(a), low_threshold, high_threshold) for a in arr])
    t = torch.from_numpy(edges.astype(np.float32) / 255.0)
    return t[..., None].repeat(1, 1, 1, 3).contiguous()


def _luma(image):
    if image.shape[-1] >= 3:
        return 0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]
    return image[..., 0]


@node(category="conditioning/control/preprocessors", name="ImageThreshold", display_name="Scribble / Threshold",
      output_name="image")
def image_threshold(image: IMAGE, threshold: Level = 0.5, invert: Invert = True) -> IMAGE:
    """Black-and-white map by brightness: a scribble (drawn dark on light) becomes the white-on-black map a
    scribble ControlNet takes; with invert off, bright areas become white."""
    dark = _luma(image) < threshold
    mask = dark if invert else ~dark
    return mask.to(image.dtype)[..., None].repeat(1, 1, 1, 3).contiguous()


@node(category="conditioning/control/preprocessors", name="SoftEdge", output_name="image")
def soft_edge(image: IMAGE, blur: Blur = 1.0, gain: Gain = 1.0) -> IMAGE:
    """Soft edges (Sobel gradient magnitude of the brightness, normalised per image): the kind of map HED /
    soft-edge ControlNets take, without a network."""
    import torch
    import torch.nn.functional as F

    y = _luma(image.float())[:, None]
    if blur > 0:
        from nodes.impl.transform import gaussian_blur

        radius = max(1, int(round(3 * blur)))
        y = gaussian_blur(y.permute(0, 2, 3, 1), radius, blur).permute(0, 3, 1, 2)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    k = torch.stack([kx, kx.t()])[:, None]
    g = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k)
    mag = g.pow(2).sum(1).sqrt()
    peak = mag.flatten(1).amax(1).clamp_min(1e-8)[:, None, None]
    out = (mag / peak * gain).clamp(0, 1)
    return out[..., None].repeat(1, 1, 1, 3).to(image.dtype).contiguous()


@node(category="conditioning/control/preprocessors", output_name="image")
def control_net_resize(image: IMAGE, latent: LATENT, mode: Resize = "crop",
                       method: Literal["bilinear", "bicubic", "nearest", "area", "lanczos"] = "bilinear",
                       control_net: CONTROL_NET | None = None, vae: VAE | None = None) -> IMAGE:
    """Fit a control image to the size of the image the latent becomes: latent size x the ControlNet's (else
    the VAE's, else 8) downscale factor, by crop, stretch or pad. (Apply nodes also fit images themselves.)"""
    from nodes.sd.controlnet import fit_image

    factor = control_net.downscale if control_net is not None else (vae.downscale if vae is not None else 8)
    h, w = latent.samples.shape[-2:]
    return fit_image(image, int(h) * factor, int(w) * factor, mode, method)
