"""The denoise loop's stages as plain functions: prepare, predict noise, guidance, scheduler step.

Both the open loop (a loop node whose body graph wires the stage nodes) and the one-node `Sample` call
exactly these functions in the same order, so they give the same picture; and the order of operations
follows diffusers' pipelines step for step, so both equal `StableDiffusionPipeline` bit for bit in fp32.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from engine.node import NodeError

from .handles import (Conditioning, Latent, NoisePrediction, NoiseSpec, SamplerState, SchedulerSpec, UNetHandle, VFrame,
                      family_label, latent_space)
from .schedulers import set_timesteps, step_kwargs


def check_family(what: str, family: str | None, model_family: str, model_what: str, latent: bool = False) -> None:
    if latent:
        same = latent_space(family) == latent_space(model_family)
    else:
        same = family == model_family
    if family and model_family and not same:
        raise NodeError(f"{what} was made for {family_label(family)} but the {model_what} is {family_label(model_family)}: "
                        "latents and conditioning only work with the model family that made them")


def prepare(unet: UNetHandle, latent: Latent, noise: NoiseSpec, spec: SchedulerSpec, devices: Any,
            start_step: int = 0, add_noise: bool = True) -> tuple[SamplerState, torch.Tensor]:
    """Fresh scheduler + timesteps, and the starting latents, as the diffusers pipelines compute them.

    An all-zero latent (EmptyLatent) or an inpainting latent at full denoise starts from pure noise
    (`noise * init_noise_sigma`, txt2img); any other latent is noised to the first timestep (img2img).
    `start_step` skips the first steps of the schedule and `add_noise=False` takes the latent as already
    noisy (ComfyUI's KSamplerAdvanced, for base -> refiner hand-overs).
    """
    check_family("the latent", latent.family, unet.family, "UNet", latent=True)
    device, dtype = devices.device, devices.dtype
    sched, timesteps, t_start = set_timesteps(spec, device)
    if start_step > 0:
        skip = start_step * sched.order
        timesteps = timesteps[skip:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(t_start * sched.order + skip)
    if len(timesteps) == 0:
        raise NodeError(f"{spec.steps} steps at denoise {spec.denoise} leave no step to run; raise steps or denoise")
    samples = latent.samples.to(device=device, dtype=dtype)
    g = noise.generator()
    noise_t = torch.randn(samples.shape, generator=g, dtype=dtype, device="cpu").to(device)
    empty = torch.count_nonzero(latent.samples) == 0 and start_step == 0
    if not add_noise or not noise.add:
        x = samples
    elif empty or (spec.denoise >= 1.0 and (latent.noise_mask is not None or latent.inpaint is not None)):
        # diffusers' txt2img and inpainting pipelines start from pure noise at full strength
        x = noise_t * sched.init_noise_sigma
    else:
        x = sched.add_noise(samples, noise_t, timesteps[:1].repeat(samples.shape[0]))
    h, w = samples.shape[-2:]
    state = SamplerState(
        scheduler=sched, timesteps=timesteps, generator=g, spec=spec, device=device, dtype=dtype,
        step_kwargs=step_kwargs(sched, g, spec.eta), total=len(timesteps), image_size=(h * latent.downscale, w * latent.downscale),
    )
    inpaint_unet = latent.inpaint is not None and unet.in_channels == samples.shape[1] + latent.inpaint.shape[1]
    if inpaint_unet:
        state.inpaint = latent.inpaint.to(device=device, dtype=dtype)
    elif unet.in_channels != samples.shape[1]:
        raise NodeError(f"the UNet takes {unet.in_channels} input channels but the latent has {samples.shape[1]}"
                        + (" (an inpainting UNet needs the latent from VAEEncodeForInpaint)" if unet.in_channels == 9 else ""))
    elif latent.noise_mask is not None:
        state.init_latents = samples
        state.noise = noise_t
        state.noise_mask = _mask_to_latent(latent.noise_mask, samples).to(device=device, dtype=dtype)
    return state, x


def prepare_range(unet: UNetHandle, latent: Latent, noise: NoiseSpec, spec: SchedulerSpec, devices: Any,
                  start_step: int = 0, end_step: int | None = None, add_noise: bool = True) -> tuple[SamplerState, torch.Tensor]:
    """`prepare`, then stop after `end_step` (the remaining noise is left in the latents)."""
    state, x = prepare(unet, latent, noise, spec, devices, start_step=start_step, add_noise=add_noise)
    if end_step is not None and end_step > start_step:
        state.timesteps = state.timesteps[: (end_step - start_step) * state.scheduler.order]
        state.total = len(state.timesteps)
    return state, x


def _mask_to_latent(mask: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    m = mask
    if m.ndim == 3:
        m = m[:, None]
    m = torch.nn.functional.interpolate(m.float(), size=samples.shape[-2:], mode="nearest")
    if m.shape[0] != samples.shape[0]:
        m = m.repeat(math.ceil(samples.shape[0] / m.shape[0]), 1, 1, 1)[: samples.shape[0]]
    return m


def _lcm_repeat(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditionings of different lengths (long prompts) are repeated to a common length (as ComfyUI)."""
    la, lb = a.shape[1], b.shape[1]
    if la == lb:
        return a, b
    n = la * lb // math.gcd(la, lb)
    return a.repeat(1, n // la, 1), b.repeat(1, n // lb, 1)


def _batch(t: torch.Tensor, n: int) -> torch.Tensor:
    if t.shape[0] == n:
        return t
    if n % t.shape[0]:
        raise NodeError(f"conditioning batch {t.shape[0]} does not divide latent batch {n}")
    reps = n // t.shape[0]
    return t.repeat_interleave(reps, dim=0) if t.shape[0] > 1 else t.repeat(n, *([1] * (t.ndim - 1)))


# diffusers' SDXL img2img/inpaint defaults for a refiner's aesthetic-score time id
AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5


def _time_ids(c: Conditioning, image_size: tuple[int, int], dtype: torch.dtype, count: int = 6,
              default_score: float = AESTHETIC_SCORE) -> torch.Tensor:
    """SDXL's time ids: (original h, w, crop top, left, target h, w), or for the refiner (5 ids) the aesthetic
    score in place of the target size, as diffusers' `_get_add_time_ids` builds them."""
    original = c.original_size or image_size
    if count == 5:
        score = c.aesthetic_score if c.aesthetic_score is not None else default_score
        return torch.tensor([[*original, *c.crop_coords, score]], dtype=dtype)
    target = c.target_size or image_size
    return torch.tensor([[*original, *c.crop_coords, *target]], dtype=dtype)


def model_conditioning(unet: Any, positive: Any, negative: Any, state: Any, batch: int,
                       use_cfg: bool) -> tuple[torch.Tensor, Any, Any]:
    """(embeds, pooled text embeds, time ids) for the UNet: [negative, positive] with guidance, repeated
    to the latent batch; SDXL adds its pooled embeddings and size/crop time ids. Fixed for a whole run."""
    check_family("the positive conditioning", positive.family, unet.family, "UNet")
    if negative is not None:
        check_family("the negative conditioning", negative.family, unet.family, "UNet")
    dtype = state.dtype
    if use_cfg:
        neg_e, pos_e = _lcm_repeat(negative.embeds, positive.embeds)
        embeds = torch.cat([_batch(neg_e, batch), _batch(pos_e, batch)])
    else:
        embeds = _batch(positive.embeds, batch)
    embeds = embeds.to(device=state.device, dtype=dtype)
    if not unet.is_sdxl:
        return embeds, None, None
    if positive.pooled is None or (use_cfg and negative.pooled is None):
        raise NodeError("an SDXL UNet needs SDXL conditioning (pooled text embeddings); encode the prompt with an SDXL text encoder")
    count = unet.time_id_count(int(positive.pooled.shape[-1]))
    if count not in (5, 6):
        raise NodeError(f"the UNet's added conditioning does not fit pooled text embeddings {positive.pooled.shape[-1]} "
                        "wide with 5 or 6 time ids; encode the prompt with this model's own text encoder")
    pos_ids = _time_ids(positive, state.image_size, dtype, count, AESTHETIC_SCORE)
    if use_cfg:
        text_embeds = torch.cat([_batch(negative.pooled, batch), _batch(positive.pooled, batch)])
        neg_ids = _time_ids(negative, state.image_size, dtype, count, NEGATIVE_AESTHETIC_SCORE)
        time_ids = torch.cat([_batch(neg_ids, batch), _batch(pos_ids, batch)])
    else:
        text_embeds, time_ids = _batch(positive.pooled, batch), _batch(pos_ids, batch)
    return embeds, text_embeds.to(state.device, dtype), time_ids.to(state.device)



def conditioning_parts(c: Conditioning) -> list[Conditioning]:
    """The prompts a (possibly combined) conditioning stands for, each on its own."""
    return [replace(c, combined=())] + list(c.combined) if c.combined else [c]


def joined(parts: list[Conditioning]) -> Conditioning:
    """One conditioning standing for `parts` (the inverse of `conditioning_parts`)."""
    first, *rest = parts
    return replace(first, combined=tuple(rest))


def with_every_part(c: Conditioning, **changes: Any) -> Conditioning:
    """`c` with `changes` made to every prompt it stands for."""
    return joined([replace(p, **changes) for p in conditioning_parts(c)])


def is_combined(c: Conditioning | None) -> bool:
    """More than one prompt, or a prompt limited to part of the steps or of the image: predicted prompt by prompt."""
    return c is not None and (bool(c.combined) or c.start > 0.0 or c.end < 1.0 or c.mask is not None
                              or c.strength != 1.0 or c.area is not None or c.area_fraction is not None)


AREA_FEATHER = 8  # latent pixels faded in at an area's inner edges (ComfyUI's)


def _region(c: Conditioning, latents: torch.Tensor, down: int) -> tuple[slice, slice] | None:
    """The latent rows and columns of a prompt's area (None: the whole image). A fractional area is rounded to
    the latents' size as ComfyUI rounds it: sizes max(1, round(f x size)), offsets round(f x size)."""
    H, W = latents.shape[-2:]
    if c.mask is not None and c.mask_bounds:  # ComfyUI's "mask bounds": the box around the mask, at least 8 latent pixels
        hit = _mask_at(c, latents).abs().amax(dim=(0, 1)) > 0
        rows, cols = hit.any(1).nonzero().flatten(), hit.any(0).nonzero().flatten()
        if len(rows) == 0:  # an empty mask: the smallest area (it adds nothing anyway)
            x, y, w, h = 0, 0, 8, 8
        else:
            y, x = int(rows[0]), int(cols[0])
            h, w = max(8, int(rows[-1]) - y + 1), max(8, int(cols[-1]) - x + 1)
    elif c.area_fraction is not None:
        fx, fy, fw, fh = c.area_fraction
        x, y, w, h = round(fx * W), round(fy * H), max(1, round(fw * W)), max(1, round(fh * H))
    elif c.area is not None:
        x, y, w, h = (v // down for v in c.area)
    else:
        return None
    x, y = min(x, W - 1), min(y, H - 1)
    return slice(y, min(H, y + max(1, h))), slice(x, min(W, x + max(1, w)))


def _feather(weight: torch.Tensor, rows: slice, cols: slice, full: tuple[int, int]) -> torch.Tensor:
    """ComfyUI's area fade: the inner edges of an area (those not on the image border) ramp up over 8 pixels."""
    h, w = weight.shape[-2:]
    for t in range(AREA_FEATHER):
        f = (t + 1) / AREA_FEATHER
        if rows.start != 0:
            weight[..., t:t + 1, :] *= f
        if rows.stop < full[0]:
            weight[..., h - 1 - t:h - t, :] *= f
        if cols.start != 0:
            weight[..., :, t:t + 1] *= f
        if cols.stop < full[1]:
            weight[..., :, w - 1 - t:w - t] *= f
    return weight


def _mask_at(c: Conditioning, like: torch.Tensor) -> torch.Tensor:
    """A prompt's mask at the latents' size and batch, [B, 1, h, w] (bilinear, as ComfyUI)."""
    m = c.mask if c.mask.ndim == 3 else c.mask[..., 0]
    m = torch.nn.functional.interpolate(m[:, None].float().to(like.device), size=like.shape[-2:], mode="bilinear",
                                        align_corners=False)
    if m.shape[0] != like.shape[0]:
        m = m.repeat(math.ceil(like.shape[0] / m.shape[0]), 1, 1, 1)[: like.shape[0]]
    return m


def _weight(c: Conditioning, like: torch.Tensor) -> torch.Tensor:
    """Where and how much a prompt counts, at the latents' size: its mask times its strength."""
    if c.mask is None:
        return torch.full((like.shape[0], 1, *like.shape[-2:]), float(c.strength), dtype=torch.float32, device=like.device)
    return _mask_at(c, like) * float(c.strength)


def in_noise_range(start: float, end: float, t: Any, num_train_timesteps: int = 1000) -> bool:
    """ComfyUI's rule for start/end percentages: fractions of the model's noise levels, not of the steps. Start p
    means timestep (1 - p) x 999 (ComfyUI compares the equivalent sigmas, which rise with t), so the range holds
    while (1 - end) x 999 <= t <= (1 - start) x 999; start 0 and end 1 are open ends."""
    if start <= 0.0 and end >= 1.0:
        return True
    top = float(num_train_timesteps - 1)
    tv = float(t)
    return (start <= 0.0 or tv <= (1.0 - start) * top + 1e-4) and (end >= 1.0 or tv >= (1.0 - end) * top - 1e-4)


def active_at(c: Conditioning, t: torch.Tensor, num_train_timesteps: int = 1000) -> bool:
    """Whether a prompt limited to [start, end] (ConditioningSetTimestepRange) takes part at timestep `t`."""
    return in_noise_range(c.start, c.end, t, num_train_timesteps)


def _predict_parts(unet: UNetHandle, latents: torch.Tensor, t: torch.Tensor, positive: Conditioning,
                   negative: Conditioning | None, state: SamplerState, devices: Any, step: int,
                   runner: Any) -> NoisePrediction:
    """ComfyUI's combined conditioning: each side's noise prediction is the weighted mean of its prompts'
    predictions, over the prompts active at this step, each weighted per pixel by its mask times its strength
    (1 everywhere without a mask); where no prompt counts, zero. Each prompt runs alone, with its own ControlNets."""
    from .control import control_for_step
    from .ip_adapter import alone

    trained = int(getattr(state.scheduler.config, "num_train_timesteps", 1000) or 1000)
    down = max(1, state.image_size[0] // latents.shape[-2]) if state.image_size[0] else 8

    def side(c: Conditioning, other: Conditioning | None) -> torch.Tensor:
        num: torch.Tensor | None = None
        den: torch.Tensor | None = None
        for part in conditioning_parts(c):
            if not active_at(part, t, trained):
                continue
            # IP-Adapter: a prompt run alone keeps its image prompts and takes the other side's, mirrored, as its rows
            # of a guided batch would (so the uncond run sees the positive's blank-image tokens)
            single = replace(part, start=0.0, end=1.0, mask=None, mask_bounds=False, strength=1.0, area=None,
                             area_fraction=None, image_prompts=alone(part, other))
            region = _region(part, latents, down)
            x_in, part_state = latents, state
            if region is not None:  # the model sees the area only (SDXL's size conditioning: the area's size)
                x_in = latents[..., region[0], region[1]]
                part_state = replace(state, image_size=(x_in.shape[-2] * down, x_in.shape[-1] * down),
                                     inpaint=state.inpaint[..., region[0], region[1]] if state.inpaint is not None else None)
            control = control_for_step(single, None, part_state, step, devices)
            eps = predict_noise(unet, x_in, t, single, None, part_state, devices, guidance=False, control=control,
                                runner=runner, step=step).cond
            w = _weight(part, latents)  # mask x strength over the whole image
            if region is not None:  # ComfyUI fades an area's inner edges in unless a mask says where it counts
                w = w[..., region[0], region[1]].clone()
                if part.mask is None:
                    w = _feather(w, region[0], region[1], tuple(latents.shape[-2:]))
                full_eps = torch.zeros((*eps.shape[:2], *latents.shape[-2:]), dtype=eps.dtype, device=eps.device)
                full_w = torch.zeros((w.shape[0], 1, *latents.shape[-2:]), dtype=w.dtype, device=w.device)
                full_eps[..., region[0], region[1]] = eps
                full_w[..., region[0], region[1]] = w
                eps, w = full_eps, full_w
            num = eps * w if num is None else num + eps * w
            den = w if den is None else den + w
        if num is None:
            return torch.zeros_like(latents)
        return (num / (den + 1e-37)).to(latents.dtype)

    return NoisePrediction(cond=side(positive, negative),
                           uncond=side(negative, positive) if negative is not None else None)


def predict_noise(unet: UNetHandle, latents: torch.Tensor, t: torch.Tensor, positive: Conditioning,
                  negative: Conditioning | None, state: SamplerState, devices: Any, guidance: bool = True,
                  control: Any = None, runner: Any = None, step: int = 0) -> NoisePrediction:
    """One UNet evaluation on the [uncond, cond] batch (or cond alone without guidance); `step` is the index in
    the schedule (combined or step-limited prompts are predicted one by one, see `_predict_parts`).

    `runner` (fast mode) maps the placed model to the callable that runs it (a compiled one)."""
    if is_combined(positive) or (guidance and is_combined(negative)):
        pred = _predict_parts(unet, latents, t, positive, negative if guidance else None, state, devices, step, runner)
        return _with_v_frame(pred, unet, latents, t, state)
    use_cfg = guidance and negative is not None
    b = latents.shape[0]
    embeds, text_embeds, time_ids = model_conditioning(unet, positive, negative if use_cfg else None, state, b, use_cfg)
    if negative is not None and not use_cfg:
        check_family("the negative conditioning", negative.family, unet.family, "UNet")
    model_in = torch.cat([latents] * 2) if use_cfg else latents
    model_in = state.scheduler.scale_model_input(model_in, t)
    if state.inpaint is not None:
        extra = torch.cat([state.inpaint] * 2) if use_cfg else state.inpaint
        model_in = torch.cat([model_in, _batch(extra, model_in.shape[0])], dim=1)
    added = None if text_embeds is None else {"text_embeds": text_embeds, "time_ids": time_ids}
    down, mid = None, None
    if control is not None:
        down, mid = control(model_in, t, embeds, added, use_cfg)
    from .ip_adapter import installed_for_call, prompts_for_call
    from .patching import applied

    # IP-Adapter image prompts: the tokens of this call's rows (as the embeds: [uncond, cond] under guidance), given to
    # attention installed on the UNet for this call only (`extra` holds the call's cross_attention_kwargs, or is empty)
    prompts = prompts_for_call(positive, negative if use_cfg else None, state, step, b)
    with applied(unet, devices) as model, installed_for_call(model, prompts, devices, unet.family) as extra:
        call = model if runner is None else runner(model)
        out = call(model_in, t, encoder_hidden_states=embeds, added_cond_kwargs=added,
                   down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False,
                   **extra)[0]
    if use_cfg:
        uncond, cond = out.chunk(2)
        return _with_v_frame(NoisePrediction(cond=cond, uncond=uncond), unet, latents, t, state)
    return NoisePrediction(cond=out)


def vp_coefficients(scheduler: Any, t: torch.Tensor) -> tuple[float, float]:
    """(alpha_t, sigma_t) of the training schedule at timestep t, interpolating log sigma between integer steps
    (as diffusers maps Karras sigmas to timesteps, and as ComfyUI maps them back)."""
    ac = scheduler.alphas_cumprod.double()
    log_sigmas = (((1 - ac) / ac) ** 0.5).log()
    tv = min(max(float(t), 0.0), float(len(ac) - 1))
    lo = int(tv)
    hi = min(lo + 1, len(ac) - 1)
    w = tv - lo
    s = float(((1 - w) * log_sigmas[lo] + w * log_sigmas[hi]).exp())
    return 1.0 / (1.0 + s * s) ** 0.5, s / (1.0 + s * s) ** 0.5


def _with_v_frame(pred: NoisePrediction, unet: UNetHandle, latents: torch.Tensor, t: torch.Tensor,
                  state: SamplerState) -> NoisePrediction:
    """Attach what RescaleCFG needs (the UNet handle asks for it) to a guided prediction."""
    if not unet.cfg_rescale or pred.uncond is None:
        return pred
    alpha, sigma = vp_coefficients(state.scheduler, t)
    sample = state.scheduler.scale_model_input(latents, t)
    pred.v_frame = VFrame(float(unet.cfg_rescale), sample, alpha, sigma, unet.prediction_type)
    return pred


def apply_guidance(pred: NoisePrediction, cfg: float, rescale: float = 0.0) -> NoisePrediction:
    """Classifier-free guidance, with guidance rescale (Lin et al. 2023) against over-exposure.

    `rescale` works on the model's output (diffusers' guidance_rescale); a UNet patched with RescaleCFG (the
    prediction carries a `v_frame`) first gets ComfyUI's version, which guides and rescales in v space. For
    v-prediction models the two are the same."""
    if pred.uncond is None:
        return NoisePrediction(cond=pred.cond, guided=pred.cond)
    frame = pred.v_frame
    if frame is not None:
        cond, uncond = frame.to_v(pred.cond), frame.to_v(pred.uncond)
        guided = frame.from_v(_rescaled(cond, uncond + cfg * (cond - uncond), frame.multiplier))
    else:
        guided = pred.uncond + cfg * (pred.cond - pred.uncond)
    if rescale > 0:
        guided = _rescaled(pred.cond, guided, rescale)
    return NoisePrediction(cond=pred.cond, uncond=pred.uncond, guided=guided, v_frame=frame)


def _rescaled(cond: torch.Tensor, guided: torch.Tensor, amount: float) -> torch.Tensor:
    """The guided prediction scaled to the conditional one's standard deviation (per image), mixed by `amount`."""
    dims = list(range(1, cond.ndim))
    std_cond = cond.std(dim=dims, keepdim=True)
    std_cfg = guided.std(dim=dims, keepdim=True)
    return amount * (guided * (std_cond / std_cfg)) + (1 - amount) * guided


def scheduler_step(state: SamplerState, pred: NoisePrediction, t: torch.Tensor, latents: torch.Tensor, index: int) -> torch.Tensor:
    """One scheduler step; with a noise mask, the unmasked area is reset to the (re-noised) original."""
    out = state.scheduler.step(pred.result(), t, latents, **state.step_kwargs, return_dict=False)[0]
    if state.noise_mask is not None:
        proper = state.init_latents
        if index < len(state.timesteps) - 1:
            proper = state.scheduler.add_noise(proper, state.noise, state.timesteps[index + 1:index + 2])
        out = (1 - state.noise_mask) * proper + state.noise_mask * out
    return out


def uses_cfg(cfg: float, negative: Conditioning | None) -> bool:
    """Guidance runs only when it changes something (diffusers: guidance_scale > 1)."""
    return negative is not None and cfg > 1.0
