"""Custom sampling in parts, as ComfyUI's SamplerCustom family splits it: algorithm, sigma schedule,
guider and noise are separate nodes, combined by one sampling node. Same stage functions as `Sample`."""

from __future__ import annotations

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


def _run(unet, positive, negative, latent, noise, sampler: str, sigmas: SigmaRecipe, cfg: float, rescale: float,
         ctx: NodeContext):
    """Sample the recipe's part of its schedule; an empty part (a split at an end) returns the latent as it is."""
    if sigmas.start >= sigmas.stop:
        return latent
    return run_sampler(unet, positive, negative, latent, noise, _spec(sampler, sigmas, noise.seed), cfg, rescale, ctx,
                       start_step=sigmas.start, end_step=sigmas.end)
