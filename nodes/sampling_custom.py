"""Custom sampling in parts, as ComfyUI's SamplerCustom family splits it: algorithm, sigma schedule,
guider and noise are separate nodes, combined by one sampling node. Same stage functions as `Sample`."""

from __future__ import annotations

from dataclasses import dataclass
from engine.node import NodeContext, NodeError, node
from engine.types import CONDITIONING, GUIDER, LATENT, NOISE, SAMPLER_ALGO, SIGMAS, UNET
from nodes.sampling import Cfg, Denoise, Rescale, SchedulerName, Seed, Sigmas, Steps, run_sampler


@dataclass(frozen=True)
class SigmaRecipe:
    model_config: tuple
    sigmas: str
    steps: int
    denoise: float


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
    """Denoise with a separately chosen algorithm and sigma schedule (ComfyUI's SamplerCustom)."""
    from nodes.sd.handles import NoiseSpec

    if not add_noise:
        raise NodeError("add_noise = false (continuing from a partly denoised latent) is not supported yet; "
                        "use Sample with denoise < 1 instead")
    return run_sampler(unet, positive, negative, latent, NoiseSpec(seed), _spec(sampler, sigmas, seed), cfg, 0.0, ctx)


@node(category="sampling/custom", output_name="latent")
def sample_guided(noise: NOISE, guider: GUIDER, sampler: SAMPLER_ALGO, sigmas: SIGMAS, latent: LATENT,
                  ctx: NodeContext) -> LATENT:
    """Denoise from noise, guider, algorithm and sigma schedule (ComfyUI's SamplerCustomAdvanced)."""
    g = guider
    return run_sampler(g.unet, g.positive, g.negative, latent, noise, _spec(sampler, sigmas, noise.seed), g.cfg,
                       g.guidance_rescale, ctx)
