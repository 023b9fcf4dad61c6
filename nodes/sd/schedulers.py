"""Scheduler names users know -> diffusers scheduler classes and options, and ComfyUI's names.

A1111/ComfyUI users pick a sampler ("dpmpp_2m") and a sigma spacing ("karras"); diffusers has one class
per algorithm with config flags. This table is the one place that maps between them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from .handles import SamplerState, SchedulerSpec


@dataclass(frozen=True)
class SchedulerInfo:
    class_name: str
    extra: tuple = ()  # config overrides
    label: str = ""


SCHEDULERS: dict[str, SchedulerInfo] = {
    "euler": SchedulerInfo("EulerDiscreteScheduler", (), "Euler"),
    "euler_a": SchedulerInfo("EulerAncestralDiscreteScheduler", (), "Euler ancestral"),
    "heun": SchedulerInfo("HeunDiscreteScheduler", (), "Heun (2 UNet calls per step)"),
    "dpm2": SchedulerInfo("KDPM2DiscreteScheduler", (), "DPM2 (2 UNet calls per step)"),
    "dpm2_a": SchedulerInfo("KDPM2AncestralDiscreteScheduler", (), "DPM2 ancestral"),
    "dpmpp_2m": SchedulerInfo("DPMSolverMultistepScheduler", (("algorithm_type", "dpmsolver++"), ("solver_order", 2)), "DPM++ 2M"),
    "dpmpp_2m_sde": SchedulerInfo("DPMSolverMultistepScheduler", (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2)), "DPM++ 2M SDE"),
    "dpmpp_3m": SchedulerInfo("DPMSolverMultistepScheduler", (("algorithm_type", "dpmsolver++"), ("solver_order", 3)), "DPM++ 3M"),
    "dpmpp_sde": SchedulerInfo("DPMSolverSDEScheduler", (), "DPM++ SDE (2 UNet calls per step)"),
    "dpm_single": SchedulerInfo("DPMSolverSinglestepScheduler", (), "DPM single-step"),
    "lms": SchedulerInfo("LMSDiscreteScheduler", (), "LMS"),
    "ddim": SchedulerInfo("DDIMScheduler", (), "DDIM"),
    "ddpm": SchedulerInfo("DDPMScheduler", (), "DDPM"),
    "pndm": SchedulerInfo("PNDMScheduler", (("skip_prk_steps", True),), "PNDM (PLMS)"),
    "unipc": SchedulerInfo("UniPCMultistepScheduler", (), "UniPC"),
    "deis": SchedulerInfo("DEISMultistepScheduler", (), "DEIS"),
    "lcm": SchedulerInfo("LCMScheduler", (), "LCM"),
}

SCHEDULER_NAMES = ["model_default", *SCHEDULERS]

SIGMA_OPTIONS = {"default": None, "karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas", "beta": "use_beta_sigmas"}

# ComfyUI sampler_name -> ours; ComfyUI scheduler -> our sigma option (see README's table).
COMFY_SAMPLERS = {
    "euler": "euler", "euler_ancestral": "euler_a", "heun": "heun", "dpm_2": "dpm2", "dpm_2_ancestral": "dpm2_a",
    "lms": "lms", "dpmpp_2m": "dpmpp_2m", "dpmpp_2m_sde": "dpmpp_2m_sde", "dpmpp_2m_sde_gpu": "dpmpp_2m_sde",
    "dpmpp_3m_sde": "dpmpp_3m", "dpmpp_sde": "dpmpp_sde", "dpmpp_sde_gpu": "dpmpp_sde", "ddim": "ddim",
    "ddpm": "ddpm", "uni_pc": "unipc", "uni_pc_bh2": "unipc", "lcm": "lcm", "deis": "deis",
}
COMFY_SCHEDULERS = {"normal": "default", "simple": "default", "sgm_uniform": "default", "ddim_uniform": "default",
                    "karras": "karras", "exponential": "exponential", "beta": "beta"}


class SchedulerError(ValueError):
    pass


# Schedulers that sample a given sigma list (ComfyUI's SIGMAS from KarrasScheduler, ExponentialScheduler, ...). In
# diffusers 0.42.1 only EulerDiscreteScheduler takes `set_timesteps(sigmas=...)` for these models' sigmas (it derives
# each step's timestep by log-sigma interpolation over the training sigmas, as for its own karras sigmas). UniPC takes
# `sigmas=` only with `use_flow_sigmas` (flow-matching models); Heun, DPM++ 2M/single-step, DDPM and LCM take only
# `timesteps=` (their sigmas are re-derived from timesteps, rounded to integers or interpolated linearly in sigma, so a
# given sigma list would not be sampled as given); EulerAncestral, LMS, DPM2, DPM++ SDE, DEIS, DDIM and PNDM take neither.
SIGMA_LIST_CLASSES = ("EulerDiscreteScheduler",)


@dataclass(frozen=True)
class ExplicitSigmasSpec(SchedulerSpec):
    """A scheduler recipe run on a given sigma list instead of the one it would compute: N+1 sigmas for N steps
    (the last usually 0), exact floats."""

    sigmas: tuple = ()

    def __loom_summary__(self) -> dict[str, Any]:
        out = super().__loom_summary__()
        out["sigmas"] = [round(s, 6) for s in self.sigmas[:50]]
        return out


def takes_sigma_list(class_name: str) -> bool:
    import inspect

    cls = scheduler_class(class_name)
    return class_name in SIGMA_LIST_CLASSES and "sigmas" in inspect.signature(cls.set_timesteps).parameters


def explicit_spec(name: str, model_config: dict, sigmas: tuple, seed_for_sde: int | None = None) -> ExplicitSigmasSpec:
    """The recipe for sampling `sigmas` with scheduler `name`; fails naming the schedulers that can."""
    spec = make_spec(name, model_config, max(len(sigmas) - 1, 1), 1.0, "default", seed_for_sde=seed_for_sde)
    if not takes_sigma_list(spec.class_name):
        able = [n for n, i in SCHEDULERS.items() if takes_sigma_list(i.class_name)]
        what = f"{name!r} ({spec.class_name})"
        raise SchedulerError(f"scheduler {what} cannot sample a given sigma list (diffusers computes its own sigmas); "
                             f"schedulers that can: {', '.join(able)}")
    return ExplicitSigmasSpec(**{f.name: getattr(spec, f.name) for f in fields(SchedulerSpec)},
                              sigmas=tuple(float(s) for s in sigmas))


def training_sigmas(model_config: dict) -> tuple[float, ...]:
    """The model's sigma for each training timestep 0..T-1, sqrt((1 - alphas_cumprod) / alphas_cumprod), exactly as
    diffusers' Euler scheduler computes it (float32) to map sigmas to timesteps."""
    sched = instantiate(make_spec("euler", model_config, 1))
    ac = sched.alphas_cumprod
    return tuple(float(s) for s in (((1 - ac) / ac) ** 0.5).numpy())


def scheduler_class(class_name: str) -> type:
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if cls is None:
        raise SchedulerError(f"diffusers has no scheduler {class_name!r}")
    return cls


def make_spec(name: str, model_config: dict, steps: int, denoise: float = 1.0, sigmas: str = "default",
              eta: float = 0.0, seed_for_sde: int | None = None) -> SchedulerSpec:
    """Build the recipe; unsupported combinations fail here, naming what is possible."""
    base = dict(model_config)
    model_class = base.pop("_class_name", "PNDMScheduler")
    base.pop("_diffusers_version", None)
    if name == "model_default":
        class_name, extra = model_class, ()
    elif name in SCHEDULERS:
        info = SCHEDULERS[name]
        class_name, extra = info.class_name, info.extra
    else:
        raise SchedulerError(f"unknown scheduler {name!r}; supported: {', '.join(SCHEDULER_NAMES)}")
    cls = scheduler_class(class_name)
    cfg = dict(base)
    cfg.update(dict(extra))
    flag = SIGMA_OPTIONS.get(sigmas, "missing")
    if flag == "missing":
        raise SchedulerError(f"unknown sigma option {sigmas!r}; supported: {', '.join(SIGMA_OPTIONS)}")
    if flag is not None:
        accepted = _config_keys(cls)
        if flag not in accepted:
            able = [n for n, i in SCHEDULERS.items() if flag in _config_keys(scheduler_class(i.class_name))]
            raise SchedulerError(f"scheduler {name!r} has no {sigmas} sigmas; schedulers that do: {', '.join(able)}")
        cfg[flag] = True
    if cfg.get("rescale_betas_zero_snr") and "rescale_betas_zero_snr" not in _config_keys(cls):
        able = [n for n, i in SCHEDULERS.items() if "rescale_betas_zero_snr" in _config_keys(scheduler_class(i.class_name))]
        raise SchedulerError(f"scheduler {name!r} cannot sample a zero-terminal-SNR model (ModelSamplingDiscrete zsnr); "
                             f"schedulers that can: {', '.join(able)}")
    if class_name == "DPMSolverSDEScheduler" and seed_for_sde is not None:
        cfg["noise_sampler_seed"] = seed_for_sde
    return SchedulerSpec(name=name, class_name=class_name, config=tuple(sorted(cfg.items(), key=lambda kv: kv[0])),
                         steps=steps, denoise=denoise, eta=eta)


def _config_keys(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


def instantiate(spec: SchedulerSpec) -> Any:
    cls = scheduler_class(spec.class_name)
    keys = _config_keys(cls)
    cfg = {k: v for k, v in spec.config_dict().items() if k in keys or k.startswith("_")}
    return cls.from_config(cfg)


def set_timesteps(spec: SchedulerSpec, device: torch.device) -> tuple[Any, torch.Tensor, int]:
    """A fresh scheduler with its timesteps set; for denoise < 1, only the tail (img2img strength).

    Returns (scheduler, timesteps, t_start) exactly as diffusers' img2img pipeline computes them. An explicit
    sigma list goes to `set_timesteps(sigmas=...)` whole (its parts are cut by the caller's start/end steps).
    """
    sched = instantiate(spec)
    if isinstance(spec, ExplicitSigmasSpec):
        sched.set_timesteps(sigmas=list(spec.sigmas), device=device)
        if hasattr(sched, "set_begin_index"):  # steps by position: clamped timesteps may repeat
            sched.set_begin_index(0)
        return sched, sched.timesteps, 0
    sched.set_timesteps(spec.steps, device=device)
    timesteps = sched.timesteps
    t_start = 0
    if spec.denoise < 1.0:
        init = min(int(spec.steps * spec.denoise), spec.steps)
        t_start = max(spec.steps - init, 0)
        timesteps = timesteps[t_start * sched.order:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(t_start * sched.order)
    return sched, timesteps, t_start


def step_kwargs(scheduler: Any, generator: torch.Generator, eta: float) -> dict:
    """Pass eta / generator to `step()` only where its signature takes them (as diffusers does)."""
    import inspect

    params = set(inspect.signature(scheduler.step).parameters)
    kw: dict = {}
    if "eta" in params:
        kw["eta"] = eta
    if "generator" in params:
        kw["generator"] = generator
    return kw


def describe_state(state: SamplerState) -> str:
    return f"{type(state.scheduler).__name__} with {len(state.timesteps)} steps"
