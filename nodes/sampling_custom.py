"""Custom sampling in parts, as ComfyUI's SamplerCustom family splits it: algorithm, sigma schedule,
guider and noise are separate nodes, combined by one sampling node. Same stage functions as `Sample`.

A SIGMAS value is either a `SigmaRecipe` (BasicScheduler: the scheduler computes the sigmas) or a `SigmaList`
(KarrasScheduler, ExponentialScheduler, ...: the sigmas themselves, sampled through diffusers'
`set_timesteps(sigmas=...)` for Euler and DPM++ 2S ancestral, or an adapter that rebuilds the other k-diffusion
schedulers' arrays: see nodes/sd/sigma_schedulers.py). Both carry the part to run, so SplitSigmas works on either."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Annotated

from pydantic import Field

from engine.node import NodeContext, NodeError, Outputs, Widget, node
from engine.types import CONDITIONING, GUIDER, LATENT, NOISE, SAMPLER_ALGO, SIGMAS, UNET
from nodes.sampling import Cfg, Denoise, Rescale, SchedulerName, Seed, Sigmas, Steps, run_sampler


@dataclass(frozen=True)
class SigmaRecipe:
    """A sigma schedule as the scheduler will compute it (spacing, steps, denoise), and the part of it to run:
    steps `start` up to `end` (None: to the last), as SplitSigmas cuts ComfyUI's sigma lists."""

    model_config: tuple
    sigmas: str
    steps: int
    denoise: float
    start: int = 0
    end: int | None = None

    @property
    def stop(self) -> int:
        return self.steps if self.end is None else min(self.end, self.steps)

    def part(self, start: int, end: int | None) -> "SigmaRecipe":
        return replace(self, start=start, end=end)

    def __loom_summary__(self) -> dict:
        return {"kind": "sigmas", "spacing": self.sigmas, "steps": self.steps, "denoise": self.denoise,
                "runs_steps": [self.start, self.stop]}


@dataclass(frozen=True)
class SigmaList:
    """An explicit sigma schedule, as ComfyUI's SIGMAS tensors are: N+1 sigmas for N steps (the last usually 0), exact
    floats; `source` names the node that made it. `start` / `end` are the part to run, as for a `SigmaRecipe`."""

    values: tuple[float, ...]
    source: str = "explicit"
    start: int = 0
    end: int | None = None

    @property
    def steps(self) -> int:
        return max(len(self.values) - 1, 0)

    @property
    def stop(self) -> int:
        return self.steps if self.end is None else min(self.end, self.steps)

    def part(self, start: int, end: int | None) -> "SigmaList":
        return replace(self, start=start, end=end)

    def visible(self) -> tuple[float, ...]:
        """The part's own sigmas (its steps + 1), the list ComfyUI's SplitSigmas would hand on."""
        return self.values[self.start:self.stop + 1]

    def __loom_summary__(self) -> dict:
        return {"kind": "sigmas", "source": self.source, "steps": self.steps, "runs_steps": [self.start, self.stop],
                "sigmas": [round(v, 6) for v in self.visible()[:50]]}


class SplitOutputs(Outputs):
    high_sigmas: SIGMAS
    low_sigmas: SIGMAS


@dataclass(frozen=True, eq=False)
class Guider:
    unet: object
    positive: object
    negative: object
    cfg: float
    guidance_rescale: float = 0.0


@node(category="sampling/custom", output_name="sampler")
def sampler_select(name: SchedulerName = "euler") -> SAMPLER_ALGO:
    """Pick a sampling algorithm (ComfyUI's KSamplerSelect)."""
    return name


@node(category="sampling/custom", output_name="sigmas")
def sigma_schedule(unet: UNET, sigmas: Sigmas = "default", steps: Steps = 20, denoise: Denoise = 1.0) -> SIGMAS:
    """Sigma spacing, steps and denoise for the model (ComfyUI's BasicScheduler)."""
    return SigmaRecipe(tuple(sorted(unet.scheduler_config.items())), sigmas, steps, denoise)


@node(category="sampling/custom")
def split_sigmas(sigmas: SIGMAS, step: Annotated[int, Field(0, ge=0, le=10000)] = 0) -> SplitOutputs:
    """Cut a schedule at a step: the high sigmas run steps before it, the low sigmas the rest (ComfyUI's
    SplitSigmas: sample the first part with one model or prompt, continue with add_noise off)."""
    cut = min(sigmas.start + step, sigmas.stop)
    return SplitOutputs(high_sigmas=sigmas.part(sigmas.start, cut), low_sigmas=sigmas.part(cut, sigmas.end))


@node(category="sampling/custom")
def split_sigmas_denoise(sigmas: SIGMAS, denoise: Annotated[float, Field(1.0, ge=0.0, le=1.0), Widget(step=0.01)] = 1.0
                         ) -> SplitOutputs:
    """Cut a schedule so the low sigmas are its last `denoise` fraction of steps (ComfyUI's SplitSigmasDenoise)."""
    count = sigmas.stop - sigmas.start
    cut = sigmas.stop - round(count * denoise)
    return SplitOutputs(high_sigmas=sigmas.part(sigmas.start, cut), low_sigmas=sigmas.part(cut, sigmas.end))


# ---------------------------------------------------------------------------------------------------
# Sigma lists (ComfyUI's comfy_extras/nodes_custom_sampler.py generators, formulas of comfy/k_diffusion/sampling.py)
# ---------------------------------------------------------------------------------------------------

ListSteps = Annotated[int, Field(20, ge=1, le=10000)]
SigmaMax = Annotated[float, Field(14.614642, ge=0.0, le=5000.0, description="the first (highest) sigma"),
                     Widget(step=0.01, advanced=True)]
SigmaMin = Annotated[float, Field(0.0291675, ge=0.0, le=5000.0, description="the last sigma before 0"),
                     Widget(step=0.01, advanced=True)]


def _linspace(a: float, b: float, n: int) -> list[float]:
    """n evenly spaced values from a to b, both included (torch.linspace; n = 1: [a])."""
    if n == 1:
        return [a]
    return [a + (b - a) * i / (n - 1) for i in range(n - 1)] + [b]


def _sigma_list(values, source: str) -> SigmaList:
    values = tuple(float(v) for v in values)
    bad = [v for v in values if not math.isfinite(v) or v < 0]
    if bad:
        raise NodeError(f"these settings give sigma {bad[0]!r}: every sigma must be a finite number >= 0")
    return SigmaList(values, source)


def _logs(sigma_max: float, sigma_min: float, what: str) -> tuple[float, float]:
    if sigma_max <= 0 or sigma_min <= 0:
        raise NodeError(f"{what} spaces sigmas in log sigma: sigma_max and sigma_min must be above 0")
    return math.log(sigma_max), math.log(sigma_min)


@node(category="sampling/custom", output_name="sigmas")
def karras_scheduler(steps: ListSteps = 20, sigma_max: SigmaMax = 14.614642, sigma_min: SigmaMin = 0.0291675,
                     rho: Annotated[float, Field(7.0, gt=0.0, le=100.0), Widget(step=0.01, advanced=True)] = 7.0
                     ) -> SIGMAS:
    """Karras et al. (2022) sigmas: (max^(1/rho) + i/(steps-1) (min^(1/rho) - max^(1/rho)))^rho, then 0 (ComfyUI's
    KarrasScheduler). The defaults are SD 1.x's sigma range."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _sigma_list([(hi + r * (lo - hi)) ** rho for r in _linspace(0.0, 1.0, steps)] + [0.0], "karras")


@node(category="sampling/custom", output_name="sigmas")
def exponential_scheduler(steps: ListSteps = 20, sigma_max: SigmaMax = 14.614642, sigma_min: SigmaMin = 0.0291675
                          ) -> SIGMAS:
    """Sigmas evenly spaced in log sigma from sigma_max to sigma_min, then 0 (ComfyUI's ExponentialScheduler)."""
    hi, lo = _logs(sigma_max, sigma_min, "ExponentialScheduler")
    return _sigma_list([math.exp(x) for x in _linspace(hi, lo, steps)] + [0.0], "exponential")


@node(category="sampling/custom", output_name="sigmas")
def polyexponential_scheduler(steps: ListSteps = 20, sigma_max: SigmaMax = 14.614642, sigma_min: SigmaMin = 0.0291675,
                              rho: Annotated[float, Field(1.0, ge=0.0, le=100.0), Widget(step=0.01, advanced=True)] = 1.0
                              ) -> SIGMAS:
    """Log sigma a polynomial of the ramp: exp(r^rho (log max - log min) + log min), r from 1 down to 0, then 0
    (ComfyUI's PolyexponentialScheduler; rho 1 is the exponential schedule)."""
    hi, lo = _logs(sigma_max, sigma_min, "PolyexponentialScheduler")
    return _sigma_list([math.exp(r ** rho * (hi - lo) + lo) for r in _linspace(1.0, 0.0, steps)] + [0.0],
                       "polyexponential")


@node(category="sampling/custom", name="VPScheduler", output_name="sigmas")
def vp_scheduler(steps: ListSteps = 20,
                 beta_d: Annotated[float, Field(19.9, ge=0.0, le=5000.0), Widget(step=0.01, advanced=True)] = 19.9,
                 beta_min: Annotated[float, Field(0.1, ge=0.0, le=5000.0), Widget(step=0.01, advanced=True)] = 0.1,
                 eps_s: Annotated[float, Field(0.001, ge=0.0, le=1.0), Widget(step=0.0001, advanced=True)] = 0.001
                 ) -> SIGMAS:
    """The continuous VP schedule: sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), t from 1 down to eps_s, then 0
    (ComfyUI's VPScheduler; its defaults start far above SD's highest training sigma)."""
    try:
        values = [math.sqrt(math.expm1(beta_d * t ** 2 / 2 + beta_min * t)) for t in _linspace(1.0, eps_s, steps)]
    except OverflowError:
        raise NodeError("beta_d and beta_min this large give an infinite sigma") from None
    return _sigma_list(values + [0.0], "vp")


@node(category="sampling/custom", name="SDTurboScheduler", output_name="sigmas")
def sd_turbo_scheduler(unet: UNET, steps: Annotated[int, Field(1, ge=1, le=10)] = 1, denoise: Denoise = 1.0) -> SIGMAS:
    """SD-Turbo's schedule: the model's training sigmas at timesteps 999, 899, ... 99, `steps` of them from the
    (10 - int(10 denoise))-th on, then 0 (ComfyUI's SDTurboScheduler)."""
    from nodes.sd.schedulers import SchedulerError, training_sigmas

    try:
        table = training_sigmas(unet.scheduler_config)
    except SchedulerError as exc:
        raise NodeError(str(exc)) from None
    first = 10 - int(10 * denoise)
    timesteps = [t * 100 - 1 for t in range(10, 0, -1)][first:first + steps]
    return _sigma_list([table[min(t, len(table) - 1)] for t in timesteps] + [0.0], "sd_turbo")


def _values(sigmas) -> tuple[float, ...]:
    """The sigmas a SIGMAS value stands for, its part only. A recipe's are the ones Euler computes for it (so a
    sampler of sigma lists then samples the same schedule)."""
    if isinstance(sigmas, SigmaList):
        return sigmas.visible()
    import torch

    from nodes.sd.schedulers import SchedulerError, make_spec, set_timesteps

    try:
        spec = make_spec("euler", dict(sigmas.model_config), sigmas.steps, sigmas.denoise, sigmas.sigmas)
    except SchedulerError as exc:
        raise NodeError(str(exc)) from None
    sched, _, t_start = set_timesteps(spec, torch.device("cpu"))
    full = tuple(float(v) for v in sched.sigmas[t_start * sched.order:])
    return full[sigmas.start:sigmas.stop + 1]


@node(category="sampling/custom", output_name="sigmas")
def flip_sigmas(sigmas: SIGMAS) -> SIGMAS:
    """Reverse the schedule, a first sigma of 0 made 0.0001, to sample from low noise to high (ComfyUI's FlipSigmas:
    unsampling a latent back to noise; sample it with add_noise off)."""
    values = list(_values(sigmas))[::-1]
    if values and values[0] == 0:
        values[0] = 0.0001
    return _sigma_list(values, "flipped")


@node(category="sampling/custom", output_name="sigmas")
def set_first_sigma(sigmas: SIGMAS, sigma: Annotated[float, Field(136.0, ge=0.0, le=20000.0), Widget(step=0.001)] = 136.0
                    ) -> SIGMAS:
    """Replace the schedule's first sigma (ComfyUI's SetFirstSigma)."""
    values = list(_values(sigmas))
    if not values:
        raise NodeError("the schedule is empty: it has no first sigma to set")
    values[0] = sigma
    return _sigma_list(values, "set_first_sigma")


@node(category="sampling/custom", output_name="noise")
def disable_noise() -> NOISE:
    """No noise: the sampler takes the latent as already noisy (continue a partly denoised latent; ComfyUI's
    DisableNoise for SamplerCustomAdvanced)."""
    from nodes.sd.handles import NoiseSpec

    return NoiseSpec(seed=0, add=False)


@node(category="sampling/custom", name="CFGGuider", output_name="guider")
def cfg_guider(unet: UNET, positive: CONDITIONING, negative: CONDITIONING, cfg: Cfg = 7.5,
               guidance_rescale: Rescale = 0.0) -> GUIDER:
    """A model with its positive/negative conditioning and guidance scale (ComfyUI's CFGGuider)."""
    return Guider(unet, positive, negative, cfg, guidance_rescale)


def _spec(sampler: str, recipe: SigmaRecipe, seed: int):
    from nodes.sd.schedulers import SchedulerError, make_spec

    try:
        return make_spec(sampler, dict(recipe.model_config), recipe.steps, recipe.denoise, recipe.sigmas, seed_for_sde=seed)
    except SchedulerError as exc:
        raise NodeError(str(exc)) from None


@node(category="sampling/custom", output_name="latent")
def sample_parts(unet: UNET, positive: CONDITIONING, latent: LATENT, sampler: SAMPLER_ALGO, sigmas: SIGMAS,
                 ctx: NodeContext, negative: CONDITIONING | None = None, seed: Seed = 0, cfg: Cfg = 7.5,
                 add_noise: bool = True) -> LATENT:
    """Denoise with a separately chosen algorithm and sigma schedule (ComfyUI's SamplerCustom); `add_noise` off
    takes the latent as already noisy at the schedule's first sigma (the low half of a SplitSigmas)."""
    from nodes.sd.handles import NoiseSpec

    return _run(unet, positive, negative, latent, NoiseSpec(seed, add=add_noise), sampler, sigmas, cfg, 0.0, ctx)


@node(category="sampling/custom", output_name="latent")
def sample_guided(noise: NOISE, guider: GUIDER, sampler: SAMPLER_ALGO, sigmas: SIGMAS, latent: LATENT,
                  ctx: NodeContext) -> LATENT:
    """Denoise from noise, guider, algorithm and sigma schedule (ComfyUI's SamplerCustomAdvanced)."""
    g = guider
    return _run(g.unet, g.positive, g.negative, latent, noise, sampler, sigmas, g.cfg, g.guidance_rescale, ctx)


def _list_spec(sampler: str, unet, sigmas: SigmaList, noise, latent):
    """The recipe for sampling a sigma list: a scheduler that can (nodes/sd/schedulers.py), every step from a sigma above 0, and
    no noise added to an empty (or masked) latent unless the part starts at the list's highest sigma: those start
    from pure noise at `init_noise_sigma`, which diffusers takes from the highest sigma."""
    from nodes.sd.schedulers import SchedulerError, explicit_spec

    try:
        spec = explicit_spec(sampler, unet.scheduler_config, sigmas.values, seed_for_sde=noise.seed)
    except SchedulerError as exc:
        raise NodeError(str(exc)) from None
    v = sigmas.values
    for i in range(sigmas.start, sigmas.stop):
        if v[i] <= 0:
            raise NodeError(f"the sigma list has sigma 0 at step {i}: a step cannot start from sigma 0 "
                            "(only the last sigma may be 0)")
    if noise.add and v[sigmas.start] < max(v):
        import torch

        masked = getattr(latent, "noise_mask", None) is not None or getattr(latent, "inpaint", None) is not None
        if masked or (sigmas.start == 0 and torch.count_nonzero(latent.samples) == 0):
            raise NodeError(f"this part of the sigma list starts at sigma {v[sigmas.start]:g}, below the list's highest "
                            f"{max(v):g}: from an empty or masked latent the sampler would start from noise at the "
                            "highest sigma. Sample a non-empty, unmasked latent, or turn add_noise off (DisableNoise)")
    return spec


def _run(unet, positive, negative, latent, noise, sampler: str, sigmas: SigmaRecipe | SigmaList, cfg: float,
         rescale: float, ctx: NodeContext):
    """Sample the schedule's part; an empty part (a split at an end) returns the latent as it is."""
    if sigmas.start >= sigmas.stop:
        return latent
    if isinstance(sigmas, SigmaList):
        spec = _list_spec(sampler, unet, sigmas, noise, latent)
    else:
        spec = _spec(sampler, sigmas, noise.seed)
    return run_sampler(unet, positive, negative, latent, noise, spec, cfg, rescale, ctx,
                       start_step=sigmas.start, end_step=sigmas.end)
