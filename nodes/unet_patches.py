"""UNet patches that change the forward pass, guidance or sampling rather than the weights: FreeU, FreeU v2,
RescaleCFG, ModelSamplingDiscrete.

Like LoRA nodes, these return a new UNet handle with a small description attached; the node that runs the
model installs it for that call only (nodes/sd/unet_hooks.py), so the cached model is never changed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.compat.comfy import ComfyClass, register_comfy_class
from engine.node import NodeContext, NodeError, Widget, node
from engine.types import UNET


def _factor(default: float, what: str):
    return Annotated[float, Field(default, ge=0.0, le=10.0, description=what), Widget(step=0.01)]


B1 = "backbone factor at the deepest decoder level (4x the base width); > 1 strengthens structure"
B2 = "backbone factor at the next level (2x the base width)"
S1 = "low-frequency factor of the skip connections at the deepest level; < 1 damps detail noise"
S2 = "low-frequency factor of the skip connections at the next level"


def _freeu(unet, ctx: NodeContext, b1: float, b2: float, s1: float, s2: float, version: int):
    from nodes.sd.unet_hooks import FreeU, HookError

    hook = FreeU(float(b1), float(b2), float(s1), float(s2), version)
    try:
        plan = hook.plan(unet.model)
    except HookError as exc:
        raise NodeError(f"unet: {exc}") from None
    if not plan:
        base = int(unet.model.config.block_out_channels[0])
        ctx.warn(f"FreeU changes nothing on this UNet: no decoder resnet takes {4 * base} or {2 * base} backbone "
                 f"channels (4x / 2x its base width {base})")
    return unet.with_hook(hook)


@node(category="model_patches/unet", name="FreeU", output_name="unet")
def free_u(unet: UNET, ctx: NodeContext, b1: _factor(1.1, B1) = 1.1, b2: _factor(1.2, B2) = 1.2,
           s1: _factor(0.9, S1) = 0.9, s2: _factor(0.2, S2) = 0.2) -> UNET:
    """FreeU (Si et al. 2023): reweight the UNet decoder's backbone and skip features for free, at every step,
    as ComfyUI's FreeU and the official code do. Defaults are the paper's SD 1.x values (SDXL: 1.3/1.4/0.9/0.2)."""
    return _freeu(unet, ctx, b1, b2, s1, s2, 1)


@node(category="model_patches/unet", name="FreeUV2", output_name="unet")
def free_u_v2(unet: UNET, ctx: NodeContext, b1: _factor(1.3, B1) = 1.3, b2: _factor(1.4, B2) = 1.4,
              s1: _factor(0.9, S1) = 0.9, s2: _factor(0.2, S2) = 0.2) -> UNET:
    """FreeU v2: the backbone boost is weighted by where the features are (their channel mean, normalised per
    image), which keeps flat areas from washing out (ComfyUI's FreeU_V2)."""
    return _freeu(unet, ctx, b1, b2, s1, s2, 2)


@node(category="model_patches/unet", name="RescaleCFG", output_name="unet")
def rescale_cfg(unet: UNET, multiplier: Annotated[float, Field(0.7, ge=0.0, le=1.0), Widget(step=0.01)] = 0.7) -> UNET:
    """Guidance rescale as ComfyUI's RescaleCFG: guide in v space, scale the result to the conditional prediction's
    spread, mix by `multiplier` (Lin et al. 2023; for zero-terminal-SNR and v-prediction models). On a v-prediction
    model this is the sampler's guidance_rescale; on an epsilon model it differs, as in ComfyUI."""
    from dataclasses import replace

    if unet.prediction_type not in ("epsilon", "v_prediction"):
        raise NodeError(f"unet: RescaleCFG needs an epsilon or v-prediction model, this one predicts {unet.prediction_type}")
    return replace(unet, cfg_rescale=float(multiplier))


_PREDICTIONS = {"eps": "epsilon", "v_prediction": "v_prediction", "lcm": "epsilon", "x0": "sample"}


@node(category="model_patches/unet", name="ModelSamplingDiscrete", output_name="unet")
def model_sampling_discrete(unet: UNET, sampling: Literal["eps", "v_prediction", "lcm", "x0"] = "eps",
                            zsnr: bool = False) -> UNET:
    """Say what the model predicts (noise, v, or the clean image) and whether its schedule reaches pure noise
    (zero terminal SNR, Lin et al. 2023), when the checkpoint cannot tell: ComfyUI's ModelSamplingDiscrete.

    zsnr rescales the training betas (diffusers' rescale_betas_zero_snr; the last sigma becomes 4096, as in ComfyUI)
    and starts sampling at the last timestep ("trailing" spacing), so the first step sees pure noise. `lcm` is an
    epsilon model whose boundary condition the `lcm` scheduler applies (use it with that scheduler)."""
    from dataclasses import replace

    prediction = _PREDICTIONS[sampling]
    config = dict(unet.scheduler_config, prediction_type=prediction)
    config.pop("rescale_betas_zero_snr", None)
    if zsnr:
        config.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return replace(unet, prediction_type=prediction, scheduler_config=config)


# ComfyUI's comfy_extras/nodes_freelunch.py: widgets b1, b2, s1, s2 after the MODEL socket
_WIDGETS = ("b1", "b2", "s1", "s2")
register_comfy_class("FreeU", ComfyClass("FreeU", {"model": "unet"}, ["unet"], widgets=_WIDGETS))
register_comfy_class("FreeU_V2", ComfyClass("FreeUV2", {"model": "unet"}, ["unet"], widgets=_WIDGETS))
# comfy_extras/nodes_model_advanced.py


def _sampling_discrete(inputs: dict) -> dict:
    if inputs.get("sampling") == "img_to_img":
        raise ValueError("ModelSamplingDiscrete sampling 'img_to_img' (Lotus-style image-to-image models) is not "
                         "supported; supported: eps, v_prediction, lcm, x0")
    return inputs


register_comfy_class("RescaleCFG", ComfyClass("RescaleCFG", {"model": "unet"}, ["unet"], widgets=("multiplier",)))
register_comfy_class("ModelSamplingDiscrete", ComfyClass("ModelSamplingDiscrete", {"model": "unet"}, ["unet"],
                                                         convert=_sampling_discrete, widgets=("sampling", "zsnr")))
