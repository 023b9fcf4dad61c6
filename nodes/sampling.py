"""Sampling nodes: noise, scheduler, the open denoise loop and its stage nodes, and one-node `Sample`.

The denoise loop is an engine loop: `DenoiseLoop` prepares the scheduler and the starting latents, then
runs its body graph once per timestep. The default body is Modular Diffusers' denoiser trio,

    LoopInput -> PredictNoise (UNet, one step) -> Guidance (CFG) -> SchedulerStep -> LoopOutput

and users may open it and add nodes (a ControlNet, a different guidance). `Sample` runs the same stage
functions in plain Python and gives the same latents.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.node import NodeContext, Outputs, Widget, node
from engine.types import BOOLEAN, CONDITIONING, FLOAT, INT, LATENT, NOISE, NOISE_PRED, SAMPLER, SCHEDULER, TIMESTEP, UNET

SEED_MAX = 2**64 - 1

SchedulerName = Literal[
    "model_default", "euler", "euler_a", "heun", "dpm2", "dpm2_a", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m", "dpmpp_sde",
    "dpm_single", "lms", "ddim", "ddpm", "pndm", "unipc", "deis", "lcm", "dpmpp_2s_ancestral",
]
Sigmas = Literal["default", "karras", "exponential", "beta"]
Steps = Annotated[int, Field(20, ge=1, le=1000)]
Cfg = Annotated[float, Field(7.5, ge=0.0, le=100.0, description="classifier-free guidance scale (1 = off)"), Widget(step=0.1)]
Denoise = Annotated[float, Field(1.0, ge=0.0, le=1.0, description="1 = from pure noise; lower keeps more of the input latent (img2img)"), Widget(step=0.01, slider=True)]
Rescale = Annotated[float, Field(0.0, ge=0.0, le=1.0, description="guidance rescale against over-exposure (0 = off)"), Widget(step=0.05)]
Eta = Annotated[float, Field(0.0, ge=0.0, le=1.0, description="DDIM eta (0 = deterministic)"), Widget(step=0.05, advanced=True)]
Seed = Annotated[int, Field(0, ge=0, le=SEED_MAX), Widget(seed=True)]


@node(category="sampling", output_name="noise")
def noise(seed: Seed = 0) -> NOISE:
    """Seeded noise. It is drawn on the CPU when the latent shape is known, so a seed gives the same image on any device."""
    from nodes.sd.handles import NoiseSpec

    return NoiseSpec(seed=seed)


@node(category="sampling", output_name="scheduler")
def scheduler(unet: UNET, name: SchedulerName = "euler", steps: Steps = 20, denoise: Denoise = 1.0,
              sigmas: Sigmas = "default", eta: Eta = 0.0) -> SCHEDULER:
    """Choose the sampling algorithm, its sigma spacing, the number of steps and the denoise strength.
    Uses the model's own scheduler configuration (betas, prediction type)."""
    from engine.node import NodeError
    from nodes.sd.schedulers import SchedulerError, make_spec

    try:
        return make_spec(name, unet.scheduler_config, steps, denoise, sigmas, eta)
    except SchedulerError as exc:
        raise NodeError(str(exc)) from None


# ---------------------------------------------------------------------------------------------------
# The open loop: body inputs/outputs and the stage nodes of the default body
# ---------------------------------------------------------------------------------------------------


class DenoiseStepInputs(Outputs):
    unet: UNET
    positive: CONDITIONING
    negative: CONDITIONING
    latent: LATENT
    timestep: TIMESTEP
    step: INT
    sampler: SAMPLER
    cfg: FLOAT
    guidance_rescale: FLOAT
    guidance: BOOLEAN


class DenoiseStepOutputs(Outputs):
    latent: LATENT


def _link(node_id: str, output: str) -> dict:
    return {"node": node_id, "output": output}


DEFAULT_DENOISE_BODY = {
    "nodes": {
        "in": {"type": "LoopInput", "ui": {"pos": [0, 120]}},
        "predict": {"type": "PredictNoise", "inputs": {
            "unet": _link("in", "unet"), "latent": _link("in", "latent"), "timestep": _link("in", "timestep"),
            "sampler": _link("in", "sampler"), "positive": _link("in", "positive"), "negative": _link("in", "negative"),
            "guidance": _link("in", "guidance"), "step": _link("in", "step")}, "ui": {"pos": [300, 40]}},
        "guide": {"type": "Guidance", "inputs": {
            "prediction": _link("predict", "prediction"), "cfg": _link("in", "cfg"),
            "guidance_rescale": _link("in", "guidance_rescale")}, "ui": {"pos": [600, 40]}},
        "step": {"type": "SchedulerStep", "inputs": {
            "sampler": _link("in", "sampler"), "prediction": _link("guide", "prediction"),
            "timestep": _link("in", "timestep"), "latent": _link("in", "latent"), "step": _link("in", "step")},
            "ui": {"pos": [900, 120]}},
        "out": {"type": "LoopOutput", "inputs": {"latent": _link("step", "latent")}, "ui": {"pos": [1200, 120]}},
    }
}


def _preview_every(total: int) -> int:
    return max(1, total // 8)


@node(category="sampling", output_name="latent", loop=(DenoiseStepInputs, DenoiseStepOutputs, DEFAULT_DENOISE_BODY))
def denoise_loop(unet: UNET, positive: CONDITIONING, latent: LATENT, noise: NOISE, scheduler: SCHEDULER,
                 ctx: NodeContext, negative: CONDITIONING | None = None, cfg: Cfg = 7.5,
                 guidance_rescale: Rescale = 0.0) -> LATENT:
    """The denoise loop as an editable graph: its body runs once per timestep (open it to see or change
    the UNet prediction -> guidance -> scheduler step chain)."""
    from nodes.sd.denoise import prepare, uses_cfg

    if getattr(ctx.settings, "fast", False):  # fast mode: the default body runs as one compiled step
        from nodes.sd import fast

        if fast.is_default_body(ctx):
            return fast.sample(unet, positive, negative, latent, noise, scheduler, cfg, guidance_rescale, ctx)
        fast.route_notices(ctx)  # the body's compile notices are shown on this node
    state, x = prepare(unet, latent, noise, scheduler, ctx.settings.devices())
    guidance = uses_cfg(cfg, negative)
    current = latent.with_samples(x)
    every = _preview_every(state.total)
    for i, t in enumerate(state.timesteps):
        out = yield DenoiseStepInputs(unet=unet, positive=positive, negative=negative if negative is not None else positive,
                                      latent=current, timestep=t, step=i, sampler=state, cfg=cfg,
                                      guidance_rescale=guidance_rescale, guidance=guidance)
        current = out["latent"]
        ctx.progress(i + 1, state.total, preview=current if (i + 1) % every == 0 or i + 1 == state.total else None)
    return current.with_samples(current.samples.cpu())


@node(category="sampling/stages", output_name="prediction")
def predict_noise(unet: UNET, latent: LATENT, timestep: TIMESTEP, sampler: SAMPLER, positive: CONDITIONING,
                  ctx: NodeContext, negative: CONDITIONING | None = None, guidance: bool = True, step: int = 0) -> NOISE_PRED:
    """One UNet evaluation (the denoiser): on [negative, positive] when guidance is on, else positive only."""
    from nodes.sd.control import control_for_step
    from nodes.sd.denoise import predict_noise as run

    runner, control_devices = None, ctx.settings.devices()
    if getattr(ctx.settings, "fast", False):  # fast mode: the UNet and ControlNet calls are compiled
        from nodes.sd.fast import stage_hooks

        runner, control_devices = stage_hooks(ctx)
    control = control_for_step(positive, negative if guidance else None, sampler, step, control_devices)
    return run(unet, latent.samples, timestep, positive, negative if guidance else None, sampler,
               ctx.settings.devices(), guidance=guidance, control=control, runner=runner, step=step)


@node(category="sampling/stages", output_name="prediction")
def guidance(prediction: NOISE_PRED, cfg: Cfg = 7.5, guidance_rescale: Rescale = 0.0) -> NOISE_PRED:
    """Classifier-free guidance: uncond + cfg * (cond - uncond), with optional guidance rescale."""
    from nodes.sd.denoise import apply_guidance

    return apply_guidance(prediction, cfg, guidance_rescale)


@node(category="sampling/stages", output_name="latent")
def scheduler_step(sampler: SAMPLER, prediction: NOISE_PRED, timestep: TIMESTEP, latent: LATENT, step: int = 0) -> LATENT:
    """One scheduler step (the after-denoiser): the latents one timestep less noisy."""
    from nodes.sd.denoise import scheduler_step as run

    return latent.with_samples(run(sampler, prediction, timestep, latent.samples, step))


# ---------------------------------------------------------------------------------------------------
# One-node sampling
# ---------------------------------------------------------------------------------------------------


def run_sampler(unet, positive, negative, latent, noise_spec, spec, cfg, guidance_rescale, ctx: NodeContext,
                start_step: int = 0, end_step: int | None = None, add_noise: bool = True):
    """The whole loop in Python: the same stage functions, the same order as the loop body."""
    from nodes.sd.control import control_for_step
    from nodes.sd.denoise import apply_guidance, predict_noise as predict, prepare_range, scheduler_step as step_fn, uses_cfg

    if getattr(ctx.settings, "fast", False):  # fast mode: compiled, CUDA-graph sampling (nodes/sd/fast.py)
        from nodes.sd import fast

        return fast.sample(unet, positive, negative, latent, noise_spec, spec, cfg, guidance_rescale, ctx,
                           start_step=start_step, end_step=end_step, add_noise=add_noise)
    devices = ctx.settings.devices()
    state, x = prepare_range(unet, latent, noise_spec, spec, devices, start_step, end_step, add_noise)
    use_cfg = uses_cfg(cfg, negative)
    neg = negative if use_cfg else None
    every = _preview_every(state.total)
    for i, t in enumerate(state.timesteps):
        control = control_for_step(positive, neg, state, i, devices)
        pred = predict(unet, x, t, positive, neg, state, devices, guidance=use_cfg, control=control, step=i)
        pred = apply_guidance(pred, cfg, guidance_rescale)
        x = step_fn(state, pred, t, x, i)
        ctx.progress(i + 1, state.total, preview=latent.with_samples(x) if (i + 1) % every == 0 or i + 1 == state.total else None)
    return latent.with_samples(x.cpu())


@node(category="sampling", output_name="latent")
def sample(unet: UNET, positive: CONDITIONING, latent: LATENT, ctx: NodeContext, negative: CONDITIONING | None = None,
           seed: Seed = 0, steps: Steps = 20, cfg: Cfg = 7.5, scheduler: SchedulerName = "euler",
           sigmas: Sigmas = "default", denoise: Denoise = 1.0, guidance_rescale: Rescale = 0.0, eta: Eta = 0.0,
           start_step: Annotated[int, Field(0, ge=0, le=10000), Widget(advanced=True)] = 0,
           end_step: Annotated[int, Field(10000, ge=0, le=10000, description="stop after this step (leaves the rest of the noise)"), Widget(advanced=True)] = 10000,
           add_noise: Annotated[bool, Widget(advanced=True)] = True) -> LATENT:
    """Denoise in one node (the whole loop): the same result as Noise + Scheduler + DenoiseLoop.
    The advanced start/end steps and add_noise hand a partly denoised latent from one model to another."""
    from engine.node import NodeError
    from nodes.sd.handles import NoiseSpec
    from nodes.sd.schedulers import SchedulerError, make_spec

    try:
        spec = make_spec(scheduler, unet.scheduler_config, steps, denoise, sigmas, eta, seed_for_sde=seed)
    except SchedulerError as exc:
        raise NodeError(str(exc)) from None
    return run_sampler(unet, positive, negative, latent, NoiseSpec(seed), spec, cfg, guidance_rescale, ctx,
                       start_step=start_step, end_step=end_step if end_step < steps else None, add_noise=add_noise)


@node(category="sampling", output_name="latent")
def sample_custom(unet: UNET, positive: CONDITIONING, latent: LATENT, noise: NOISE, scheduler: SCHEDULER,
                  ctx: NodeContext, negative: CONDITIONING | None = None, cfg: Cfg = 7.5, guidance_rescale: Rescale = 0.0) -> LATENT:
    """Denoise in one node from separate Noise and Scheduler nodes (ComfyUI's SamplerCustom)."""
    return run_sampler(unet, positive, negative, latent, noise, scheduler, cfg, guidance_rescale, ctx)
