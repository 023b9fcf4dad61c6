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
    "dpmpp_2s_ancestral": SchedulerInfo("DPMPP2SAncestralScheduler", (), "DPM++ 2S ancestral"),
}

SCHEDULER_NAMES = ["model_default", *SCHEDULERS]

SIGMA_OPTIONS = {"default": None, "karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas", "beta": "use_beta_sigmas"}

# ComfyUI sampler_name -> ours; ComfyUI scheduler -> our sigma option (see README's table).
COMFY_SAMPLERS = {
    "euler": "euler", "euler_ancestral": "euler_a", "heun": "heun", "dpm_2": "dpm2", "dpm_2_ancestral": "dpm2_a",
    "lms": "lms", "dpmpp_2m": "dpmpp_2m", "dpmpp_2m_sde": "dpmpp_2m_sde", "dpmpp_2m_sde_gpu": "dpmpp_2m_sde",
    "dpmpp_3m_sde": "dpmpp_3m", "dpmpp_sde": "dpmpp_sde", "dpmpp_sde_gpu": "dpmpp_sde", "ddim": "ddim",
    "ddpm": "ddpm", "uni_pc": "unipc", "uni_pc_bh2": "unipc", "lcm": "lcm", "deis": "deis",
    "dpmpp_2s_ancestral": "dpmpp_2s_ancestral",
}
COMFY_SCHEDULERS = {"normal": "default", "simple": "default", "sgm_uniform": "default", "ddim_uniform": "default",
                    "karras": "karras", "exponential": "exponential", "beta": "beta"}


class SchedulerError(ValueError):
    pass


# scheduler classes of ours, with diffusers' interface (nodes/sd/sigma_schedulers.py)
OWN_SCHEDULER_CLASSES = ("DPMPP2SAncestralScheduler",)


# Schedulers that sample a given sigma list (ComfyUI's SIGMAS from KarrasScheduler, ExponentialScheduler, ...), each step's
# timestep derived by log-sigma interpolation over the training sigmas (as diffusers maps its own karras sigmas):
# - EulerDiscreteScheduler takes `set_timesteps(sigmas=...)` itself, as does our DPMPP2SAncestralScheduler
#   (nodes/sd/sigma_schedulers.py: ComfyUI's dpmpp_2s_ancestral, which diffusers lacks);
# - the other k-diffusion-family classes (EulerAncestral, Heun, KDPM2, KDPM2Ancestral, LMS, DPMSolverSDE) compute their
#   own sigmas only: `sigma_schedulers.set_sigma_list` lets each compute its schedule for N steps, then replaces its
#   sigmas, timesteps and every array it derives from them (Heun/DPM2/SDE interleaving, DPM2's midpoint sigmas and
#   timesteps, DPM2 ancestral's sigma_up/down, LMS's derivatives) as its own set_timesteps builds them; a list equal to
#   the class's own sigmas gives its own run (tests/nodes/test_sigma_samplers.py).
# A list that ends above 0 (FlipSigmas, a split part) gets its last step's second evaluation, as k-diffusion does.
# Refused: DDIM, DDPM, PNDM and LCM (integer timesteps indexing alphas_cumprod: no sigmas to replace); DPM++ 2M / 2M SDE /
# 3M, DPM single-step, UniPC and DEIS (not adapted yet: multistep solvers whose lower-order-final / final-sigma rules
# and timestep rounding are tied to their own schedule; no exactness test covers them).
# The ancestral / SDE ones (sigma_schedulers.NOISY) refuse a rising list (FlipSigmas unsampling): their fresh noise
# needs sigma_next < sigma.
SIGMA_LIST_CLASSES = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
                      "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "LMSDiscreteScheduler",
                      "DPMSolverSDEScheduler", "DPMPP2SAncestralScheduler")


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
    return class_name in SIGMA_LIST_CLASSES


def explicit_spec(name: str, model_config: dict, sigmas: tuple, seed_for_sde: int | None = None) -> ExplicitSigmasSpec:
    """The recipe for sampling `sigmas` with scheduler `name`; fails naming the schedulers that can."""
    spec = make_spec(name, model_config, max(len(sigmas) - 1, 1), 1.0, "default", seed_for_sde=seed_for_sde)
    what = f"{name!r} ({spec.class_name})"
    if not takes_sigma_list(spec.class_name):
        able = [n for n, i in SCHEDULERS.items() if takes_sigma_list(i.class_name)]
        raise SchedulerError(f"scheduler {what} cannot sample a given sigma list (diffusers computes its own sigmas); "
                             f"schedulers that can: {', '.join(able)}")
    values = tuple(float(s) for s in sigmas)
    if spec.class_name != "EulerDiscreteScheduler":
        if len(values) < 2:
            raise SchedulerError(f"scheduler {what} needs a sigma list of at least two sigmas (one step)")
        if any(not v > 0 for v in values[:-1]):
            raise SchedulerError(f"scheduler {what} samples sigma lists whose sigmas are above 0 except the last; "
                                 f"this one has 0 at step {next(i for i, v in enumerate(values[:-1]) if not v > 0)}")
        from .sigma_schedulers import DISTINCT, NOISY

        repeated = [i for i in range(len(values) - 1) if values[i + 1] == values[i]]
        if repeated and spec.class_name in DISTINCT:
            able = [n for n, i in SCHEDULERS.items() if takes_sigma_list(i.class_name) and i.class_name not in DISTINCT]
            raise SchedulerError(f"scheduler {what} divides by the change of sigma between steps and cannot sample a "
                                 f"list that repeats sigma {values[repeated[0]]:g} (step {repeated[0]}); schedulers "
                                 f"that can: {', '.join(able)}")
        rising = [i for i in range(len(values) - 1) if values[i + 1] > values[i]]
        if rising and spec.class_name in NOISY:
            able = [n for n, i in SCHEDULERS.items() if takes_sigma_list(i.class_name) and i.class_name not in NOISY]
            raise SchedulerError(f"scheduler {what} adds fresh noise each step and cannot step up a rising sigma list "
                                 f"(step {rising[0]}: {values[rising[0]]:g} -> {values[rising[0] + 1]:g}; FlipSigmas "
                                 f"unsampling); schedulers that can: {', '.join(able)}")
    return ExplicitSigmasSpec(**{f.name: getattr(spec, f.name) for f in fields(SchedulerSpec)}, sigmas=values)


def training_sigmas(model_config: dict) -> tuple[float, ...]:
    """The model's sigma for each training timestep 0..T-1, sqrt((1 - alphas_cumprod) / alphas_cumprod), exactly as
    diffusers' Euler scheduler computes it (float32) to map sigmas to timesteps."""
    from .sigma_schedulers import training_sigma_table

    return tuple(float(s) for s in training_sigma_table(instantiate(make_spec("euler", model_config, 1))))


def scheduler_class(class_name: str) -> type:
    """A diffusers scheduler class by name, or one of ours (nodes/sd/sigma_schedulers.py)."""
    import diffusers

    if class_name in OWN_SCHEDULER_CLASSES:
        from .sigma_schedulers import OWN_SCHEDULERS

        return OWN_SCHEDULERS[class_name]
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
    sigma list is set whole (its parts are cut by the caller's start/end steps): through `set_timesteps(sigmas=...)`
    where the class takes it, else through its adapter (nodes/sd/sigma_schedulers.py).
    """
    sched = instantiate(spec)
    if isinstance(spec, ExplicitSigmasSpec):
        from .sigma_schedulers import set_sigma_list

        set_sigma_list(sched, spec.sigmas, device)
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
