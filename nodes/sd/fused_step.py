"""Fast mode's fused denoise step: the scheduler update as tensor maths (mirroring diffusers' `step()` operation for
operation, so it can live inside one compiled graph with the UNet, ControlNets and CFG), which samplers it covers,
and the per-step constants read off diffusers' own schedule. Compiling and running it is `fast.py`'s job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

# diffusers scheduler class -> our fused update
FUSED_KINDS = {
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_a",
    "DDIMScheduler": "ddim",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
}

@dataclass(frozen=True)
class Recipe:
    """What the fused step computes; part of the cache key (each recipe is its own graph)."""

    kind: str  # euler | euler_a | ddim | dpmpp_2m
    prediction: str  # epsilon | v_prediction | sample
    cfg: bool
    rescale: bool
    noise: bool  # a fresh noise tensor per step (Euler a; DDIM with eta > 0)
    history: bool  # the previous data prediction is carried (DPM++ 2M)
    solver: str = "midpoint"  # DPM++ 2M second-order variant
    controls: tuple[tuple[str, int], ...] = ()  # per ControlNet: (rows it sees: both | pos | neg, latent channels)


def _x0_from_sigma(prediction: str, sample: torch.Tensor, e: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Euler / Euler a: the denoised estimate, as diffusers writes it (sample already float32)."""
    if prediction == "epsilon":
        return sample - sigma * e
    if prediction == "v_prediction":
        return e * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))
    return e


def update_euler(x: torch.Tensor, e: torch.Tensor, c: torch.Tensor, noise: Any, prev: Any,
                 prediction: str) -> tuple[torch.Tensor, Any]:
    """EulerDiscreteScheduler.step (s_churn = 0): c = [sigma, sigma_next]."""
    sample = x.to(torch.float32)
    sigma = c[0]
    pred_original_sample = _x0_from_sigma(prediction, sample, e, sigma)
    derivative = (sample - pred_original_sample) / sigma
    dt = c[1] - sigma
    prev_sample = sample + derivative * dt
    return prev_sample.to(e.dtype), prev


def update_euler_a(x: torch.Tensor, e: torch.Tensor, c: torch.Tensor, noise: torch.Tensor, prev: Any,
                   prediction: str) -> tuple[torch.Tensor, Any]:
    """EulerAncestralDiscreteScheduler.step: c = [sigma, sigma_next]; `noise` drawn as diffusers draws it."""
    sigma = c[0]
    sample = x.to(torch.float32)
    pred_original_sample = _x0_from_sigma(prediction, sample, e, sigma)
    sigma_from, sigma_to = c[0], c[1]
    sigma_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    derivative = (sample - pred_original_sample) / sigma
    dt = sigma_down - sigma
    prev_sample = sample + derivative * dt
    prev_sample = prev_sample + noise * sigma_up
    return prev_sample.to(e.dtype), prev


def update_ddim(x: torch.Tensor, e: torch.Tensor, c: torch.Tensor, noise: Any, prev: Any,
                prediction: str) -> tuple[torch.Tensor, Any]:
    """DDIMScheduler.step (no clipping/thresholding): c = [alpha_prod_t, alpha_prod_t_prev, eta]."""
    alpha_prod_t, alpha_prod_t_prev, eta = c[0], c[1], c[2]
    beta_prod_t = 1 - alpha_prod_t
    if prediction == "epsilon":
        pred_original_sample = (x - beta_prod_t ** (0.5) * e) / alpha_prod_t ** (0.5)
        pred_epsilon = e
    elif prediction == "sample":
        pred_original_sample = e
        pred_epsilon = (x - alpha_prod_t ** (0.5) * pred_original_sample) / beta_prod_t ** (0.5)
    else:
        pred_original_sample = (alpha_prod_t**0.5) * x - (beta_prod_t**0.5) * e
        pred_epsilon = (alpha_prod_t**0.5) * e + (beta_prod_t**0.5) * x
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    std_dev_t = eta * variance ** (0.5)
    pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * pred_epsilon
    prev_sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
    if noise is not None:
        prev_sample = prev_sample + std_dev_t * noise
    return prev_sample, prev


def _alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    alpha_t = 1 / ((sigma**2 + 1) ** 0.5)
    return alpha_t, sigma * alpha_t


def update_dpmpp_2m(x: torch.Tensor, e: torch.Tensor, c: torch.Tensor, noise: Any, prev: torch.Tensor,
                    prediction: str, solver: str = "midpoint") -> tuple[torch.Tensor, torch.Tensor]:
    """DPMSolverMultistepScheduler.step, dpmsolver++ order 2: c = [sigma_prev, sigma, sigma_next, second_order].

    Returns (next sample, this step's data prediction, which is the next step's `prev`). Both orders are
    computed and `torch.where` picks one, so one graph serves the first, middle and last steps.
    """
    sigma_s1, sigma_s0, sigma_t = c[0], c[1], c[2]
    alpha_s0, sig_s0 = _alpha_sigma(sigma_s0)
    if prediction == "epsilon":
        m0 = (x - sig_s0 * e) / alpha_s0
    elif prediction == "v_prediction":
        m0 = alpha_s0 * x - sig_s0 * e
    else:
        m0 = e
    sample = x.to(torch.float32)
    alpha_t, sig_t = _alpha_sigma(sigma_t)
    alpha_s1, sig_s1 = _alpha_sigma(sigma_s1)
    lambda_t = torch.log(alpha_t) - torch.log(sig_t)
    lambda_s0 = torch.log(alpha_s0) - torch.log(sig_s0)
    lambda_s1 = torch.log(alpha_s1) - torch.log(sig_s1)
    h = lambda_t - lambda_s0
    first = (sig_t / sig_s0) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * m0
    h_0 = lambda_s0 - lambda_s1
    r0 = h_0 / h
    d0, d1 = m0, (1.0 / r0) * (m0 - prev)
    if solver == "heun":
        second = ((sig_t / sig_s0) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * d0
                  + (alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0)) * d1)
    else:
        second = ((sig_t / sig_s0) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * d0
                  - 0.5 * (alpha_t * (torch.exp(-h) - 1.0)) * d1)
    out = torch.where(c[3] > 0, second, first)
    return out.to(m0.dtype), m0


def _guide(out: torch.Tensor, cfg: torch.Tensor, rescale: torch.Tensor, use_cfg: bool,
           use_rescale: bool) -> torch.Tensor:
    """denoise.apply_guidance, on tensors."""
    if not use_cfg:
        return out
    uncond, cond = out.chunk(2)
    guided = uncond + cfg * (cond - uncond)
    if use_rescale:
        dims = list(range(1, cond.ndim))
        std_cond = cond.std(dim=dims, keepdim=True)
        std_cfg = guided.std(dim=dims, keepdim=True)
        guided = rescale * (guided * (std_cond / std_cfg)) + (1 - rescale) * guided
    return guided


def scheduler_update(recipe: Recipe) -> Callable[..., tuple[torch.Tensor, Any]]:
    """(x, guided prediction, step constants, noise, prev) -> (next x, next prev) for the recipe."""
    kind, prediction, solver = recipe.kind, recipe.prediction, recipe.solver
    if kind == "euler":
        return lambda x, e, c, noise, prev: update_euler(x, e, c, noise, prev, prediction)
    if kind == "euler_a":
        return lambda x, e, c, noise, prev: update_euler_a(x, e, c, noise, prev, prediction)
    if kind == "ddim":
        return lambda x, e, c, noise, prev: update_ddim(x, e, c, noise, prev, prediction)
    return lambda x, e, c, noise, prev: update_dpmpp_2m(x, e, c, noise, prev, prediction, solver)


def make_step(recipe: Recipe) -> Callable[..., tuple[torch.Tensor, Any]]:
    """The whole denoise step as one function of tensors (compiled and captured as one graph)."""
    update = scheduler_update(recipe)
    scale_input = recipe.kind in ("euler", "euler_a")
    use_cfg, use_rescale, controls = recipe.cfg, recipe.rescale, recipe.controls

    def fused_step(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor, embeds: torch.Tensor,
                   text_embeds: Any, time_ids: Any, inpaint: Any, cfg: torch.Tensor, rescale: torch.Tensor,
                   noise: Any, prev: Any, controlnets: tuple = (), hints: tuple = (),
                   strengths: Any = None) -> tuple[torch.Tensor, Any]:
        model_in = torch.cat([x] * 2) if use_cfg else x
        if scale_input:  # Euler's scale_model_input
            model_in = model_in / ((c[0] ** 2 + 1) ** 0.5)
        if inpaint is not None:
            model_in = torch.cat([model_in, inpaint], dim=1)
        added = {"text_embeds": text_embeds, "time_ids": time_ids} if text_embeds is not None else None
        residuals = {}
        if controls:
            residuals = dict(zip(("down_block_additional_residuals", "mid_block_additional_residual"),
                                 _control_residuals(controls, controlnets, hints, strengths, model_in, t, embeds,
                                                    added, use_cfg)))
        out = unet(model_in, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False,
                   **residuals)[0]
        return update(x, _guide(out, cfg, rescale, use_cfg, use_rescale), c, noise, prev)

    return fused_step


def _control_residuals(controls: tuple, controlnets: tuple, hints: tuple, strengths: torch.Tensor,
                       model_in: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, added: Any,
                       use_cfg: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """controlnet.residuals_for_step inside the graph: every ControlNet on its rows of the batch, scaled by its
    strength for this step (0 outside its start/end window: it still runs, adding exact zeros), summed."""
    half = model_in.shape[0] // 2
    down_sum: list[torch.Tensor] | None = None
    mid_sum: Any = None
    for j, (side, channels) in enumerate(controls):
        rows = slice(None) if not use_cfg or side == "both" else slice(half, None) if side == "pos" else slice(0, half)
        extra = {k: v[rows] for k, v in added.items()} if added is not None else None
        down, mid = controlnets[j](model_in[rows, :channels], t, encoder_hidden_states=embeds[rows],
                                   controlnet_cond=hints[j], conditioning_scale=1.0, guess_mode=False,
                                   added_cond_kwargs=extra, return_dict=False)
        scale = strengths[j]
        down, mid = [d * scale for d in down], mid * scale
        if use_cfg and side != "both":  # the other half of the batch gets nothing from this one
            pad = lambda r: torch.cat([r, torch.zeros_like(r)] if side == "neg" else [torch.zeros_like(r), r])  # noqa: E731
            down, mid = [pad(d) for d in down], pad(mid)
        if down_sum is None:
            down_sum, mid_sum = list(down), mid
        else:
            down_sum = [a + b for a, b in zip(down_sum, down)]
            mid_sum = mid_sum + mid
    assert down_sum is not None
    return down_sum, mid_sum


@dataclass
class FusedControls:
    """The ControlNets of one sampling run, ready for the fused step: their handles (placed for the whole loop),
    hint images on the device, and each step's strengths ([steps, controlnets], float32)."""

    plan: tuple[tuple[str, int], ...]
    handles: list[Any]
    hints: tuple[torch.Tensor, ...]
    strengths: torch.Tensor


def fused_controls(positive: Any, neg: Any, state: Any, x: torch.Tensor, embeds_width: int, sdxl: bool,
                   channels: int, use_cfg: bool) -> tuple[FusedControls | None, str]:
    """The run's ControlNets for the fused step, or (None, why not). A ControlNet that does not fit the UNet
    raises the default path's error (controlnet.check_hint)."""
    from .controlnet import check_hint, keep_factor, plan_hints, prepared_image

    plan = [(h, side) for h, side in plan_hints(positive, neg) if h.strength != 0.0 and (use_cfg or side != "neg")]
    if not plan:
        return None, ""
    n = len(state.timesteps)
    total = int(getattr(state, "total", 0) or n)
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    parts, handles, hints, strengths = [], [], [], []
    for hint, side in plan:
        cn = hint.controlnet
        check_hint(cn, embeds_width, sdxl, channels)
        if getattr(cn.config, "global_pool_conditions", False):
            return None, "guess-mode ControlNet"
        image = prepared_image(hint, h * cn.downscale, w * cn.downscale, b, x.device, x.dtype)
        hints.append(torch.cat([image] * 2) if use_cfg and side == "both" else image)
        parts.append((side, int(cn.in_channels)))
        handles.append(cn)
        strengths.append([float(hint.strength) * keep_factor(hint, i, total, state) for i in range(n)])
    table = torch.tensor(strengths, dtype=torch.float32).T.contiguous()
    return FusedControls(tuple(parts), handles, tuple(hints), table), ""


def fused_recipe(state: Any, use_cfg: bool, rescale: float) -> tuple[Recipe | None, str]:
    """The fused step for this sampler, or (None, why not)."""
    sched = state.scheduler
    name = type(sched).__name__
    kind = FUSED_KINDS.get(name)
    if kind is None:
        return None, f"{name} has no fused step"
    if state.noise_mask is not None:
        return None, "noise-mask inpainting blends outside the step"
    cfg = sched.config
    prediction = cfg.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction", "sample") or (kind == "euler_a" and prediction == "sample"):
        return None, f"prediction type {prediction}"
    if cfg.get("thresholding", False):
        return None, "thresholding"
    solver = "midpoint"
    noise = kind == "euler_a"
    if kind == "ddim":
        if cfg.get("clip_sample", False):
            return None, "DDIM clip_sample"
        noise = float(state.step_kwargs.get("eta", 0.0) or 0.0) > 0
    if kind == "dpmpp_2m":
        if (cfg.get("algorithm_type") != "dpmsolver++" or int(cfg.get("solver_order", 2)) != 2
                or cfg.get("variance_type") is not None or cfg.get("use_flow_sigmas", False)):
            return None, "only DPM++ 2M (dpmsolver++, order 2) is fused"
        solver = cfg.get("solver_type", "midpoint")
        if solver not in ("midpoint", "heun"):
            return None, f"solver type {solver}"
    if int(getattr(sched, "order", 1)) != 1:
        return None, "multi-evaluation step"
    return Recipe(kind=kind, prediction=prediction, cfg=use_cfg, rescale=use_cfg and rescale > 0, noise=noise,
                  history=kind == "dpmpp_2m", solver=solver), ""


def _start_index(sched: Any, first_t: torch.Tensor) -> int:
    """The scheduler's step index at our first step, as `_init_step_index` would set it."""
    begin = getattr(sched, "begin_index", None)
    if begin is not None:
        return int(begin)
    return int(sched.index_for_timestep(first_t))


def step_constants(recipe: Recipe, state: Any) -> torch.Tensor:
    """[steps, k]: each step's scheduler constants, read off diffusers' schedule (CPU), in the schedule's own
    dtype (so the in-graph scalar maths rounds as diffusers' does)."""
    sched, timesteps = state.scheduler, state.timesteps
    n = len(timesteps)
    rows: list[list[torch.Tensor]] = []
    dtype = torch.float32
    if recipe.kind in ("euler", "euler_a", "dpmpp_2m"):
        sigmas = sched.sigmas.detach().to("cpu")
        dtype = sigmas.dtype
        start = _start_index(sched, timesteps[0])
        total = len(sched.timesteps)
        conf = sched.config
        for j in range(n):
            idx = start + j
            if recipe.kind != "dpmpp_2m":
                rows.append([sigmas[idx], sigmas[idx + 1]])
                continue
            lower_final = idx == total - 1 and (conf.get("euler_at_final", False)
                                                or (conf.get("lower_order_final", True) and total < 15)
                                                or conf.get("final_sigmas_type", "zero") == "zero")
            second = 1.0 if (j >= 1 and not lower_final) else 0.0
            prev_sigma = sigmas[idx - 1] if j >= 1 else sigmas[idx]
            rows.append([prev_sigma, sigmas[idx], sigmas[idx + 1], torch.tensor(second)])
    else:  # ddim
        eta = float(state.step_kwargs.get("eta", 0.0) or 0.0)
        acp = sched.alphas_cumprod.detach().to("cpu", torch.float32)
        final = torch.as_tensor(sched.final_alpha_cumprod, dtype=torch.float32)
        step = sched.config.num_train_timesteps // sched.num_inference_steps
        for t in timesteps.tolist():
            ti = int(t)
            prev_t = ti - step
            rows.append([acp[ti], acp[prev_t] if prev_t >= 0 else final, torch.tensor(eta)])
    return torch.stack([torch.stack([torch.as_tensor(v, dtype=dtype) for v in r]) for r in rows])
