"""Scheduler names users know -> diffusers scheduler classes and options, and ComfyUI's names.

A1111/ComfyUI users pick a sampler ("dpmpp_2m") and a sigma spacing ("karras"); diffusers has one class
per algorithm with config flags. This table is the one place that maps between them.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    Returns (scheduler, timesteps, t_start) exactly as diffusers' img2img pipeline computes them.
    """
    sched = instantiate(spec)
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
