"""Sigma lists (ComfyUI's SIGMAS) sampled by the k-diffusion-family schedulers, and DPM++ 2S ancestral.

nodes/sd/sigma_schedulers.py lets EulerAncestral, Heun, DPM2, DPM2 ancestral, LMS and DPM++ SDE sample a given list:
- given the sigmas (and timesteps) a scheduler computes itself, the adapter rebuilds its whole state bit for bit, and a
  run on the tiny model with the list equals the scheduler's own run;
- on a toy denoiser, the adapted schedulers step a list as k-diffusion's loops do (also a list that rises and ends
  above 0, where diffusers' last-step shortcut would stop early);
and DPMPP2SAncestralScheduler is ComfyUI's sample_dpmpp_2s_ancestral, checked against a loop written out here.
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nodes.sampling_custom import karras_scheduler
from tests.nodes.sd_helpers import L, executor, output_of, txt2img_nodes, wf

STEPS = 8
SD15 = json.loads((Path(__file__).parents[2] / "nodes/sd/configs/sd15/scheduler/scheduler_config.json").read_text())
ADAPTED = ["euler_a", "heun", "dpm2", "dpm2_a", "lms", "dpmpp_sde"]

# (scheduler, spacing) whose own timesteps are the log-sigma mapping of its sigmas (DPM2's karras timesteps are rounded
# to integers, so DPM2 is checked on exponential sigmas; Euler ancestral has no other spacing)
OWN_RUNS = [("euler_a", "default"), ("heun", "default"), ("heun", "karras"), ("dpm2", "default"),
            ("dpm2", "exponential"), ("dpm2_a", "default"), ("dpm2_a", "exponential"), ("lms", "default"),
            ("lms", "karras"), ("dpmpp_sde", "default"), ("dpmpp_sde", "karras")]


def _spec(name: str, spacing: str = "default", steps: int = STEPS, config: dict = SD15, seed: int | None = 5):
    from nodes.sd.schedulers import make_spec

    return make_spec(name, config, steps, 1.0, spacing, seed_for_sde=seed)


def _own(name: str, spacing: str = "default", steps: int = STEPS):
    """The scheduler as it sets itself up, and its schedule's N+1 sigmas and N timesteps (de-interleaved)."""
    from nodes.sd.schedulers import instantiate

    sched = instantiate(_spec(name, spacing, steps))
    sched.set_timesteps(steps)
    sg, ts = sched.sigmas, sched.timesteps
    if name in ("heun", "dpmpp_sde"):  # [s0, s1, s1, ..., s_N]
        sigmas = torch.cat([sg[:1], sg[1::2]])
    elif name in ("dpm2", "dpm2_a"):  # [s0, s1, s1, ..., s_N, s_N, s_N]
        sigmas = torch.cat([sg[:1], sg[1::2][:steps]])
    else:
        sigmas = sg
    if name == "heun":  # [t0, t1, t1, ...]
        timesteps = torch.cat([ts[:1], ts[1::2]])
    elif name in ("dpm2", "dpm2_a", "dpmpp_sde"):  # [t0, mid, t1, mid, ...]
        timesteps = ts[0::2]
    else:
        timesteps = ts
    assert len(sigmas) == steps + 1 and len(timesteps) == steps
    return sched, [float(s) for s in sigmas], timesteps


STATE = ("sigmas", "timesteps", "sigmas_interpol", "sigmas_up", "sigmas_down", "log_sigmas", "num_inference_steps")


# --- the table ---------------------------------------------------------------------------------------------------------

def test_the_sigma_list_classes_are_the_adapted_and_the_native_ones():
    from diffusers import EulerDiscreteScheduler

    from nodes.sd.schedulers import SCHEDULERS, SIGMA_LIST_CLASSES, scheduler_class
    from nodes.sd.sigma_schedulers import ADAPTERS, NATIVE

    assert set(SIGMA_LIST_CLASSES) == set(ADAPTERS) | set(NATIVE)
    assert {SCHEDULERS[n].class_name for n in ADAPTED} == set(ADAPTERS)
    for cls in NATIVE:  # these take the list themselves
        assert "sigmas" in inspect.signature(scheduler_class(cls).set_timesteps).parameters
    for cls in ADAPTERS:  # these do not: that is why they have adapters
        assert "sigmas" not in inspect.signature(scheduler_class(cls).set_timesteps).parameters
    assert scheduler_class("EulerDiscreteScheduler") is EulerDiscreteScheduler


# --- exactness: a list equal to the scheduler's own sigmas gives its own state and its own run --------------------------

@pytest.mark.parametrize("name,spacing", OWN_RUNS)
def test_the_adapter_rebuilds_the_schedulers_own_state(name, spacing):
    """Handed back its own sigmas and timesteps, each adapted class holds exactly the arrays its own set_timesteps
    computed (DPM2's float64 karras/exponential timesteps come back as float32, DPM++ SDE's midpoints from float32
    sigmas instead of float64 ones: those within float32 ulps of t ~ 1000)."""
    from nodes.sd.schedulers import instantiate
    from nodes.sd.sigma_schedulers import set_sigma_list

    own, sigmas, timesteps = _own(name, spacing)
    adapted = instantiate(_spec(name))
    set_sigma_list(adapted, sigmas, None, timesteps=timesteps.numpy())
    approx_t = name == "dpmpp_sde" or (name in ("dpm2", "dpm2_a") and spacing != "default")
    for attr in STATE:
        if not hasattr(own, attr):
            continue
        a, b = getattr(own, attr), getattr(adapted, attr)
        if attr == "timesteps" and approx_t:
            assert a.shape == b.shape
            torch.testing.assert_close(b.double(), a.double(), rtol=0, atol=1e-4)
        elif isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and a.device == b.device, attr
            torch.testing.assert_close(b, a, rtol=0, atol=0, equal_nan=True, msg=attr)
        else:
            assert a == b, attr
    assert adapted.step_index is None and adapted.begin_index is None
    if name == "lms":
        assert adapted.derivatives == []


@pytest.mark.parametrize("name,spacing", OWN_RUNS)
def test_the_list_maps_to_the_schedulers_own_timesteps(name, spacing):
    """Mapped by log-sigma interpolation (as Euler's `sigmas=`), the timesteps are the class's own: exactly for the
    default spacing's integer timesteps, within float32 ulps for karras / exponential ones."""
    from nodes.sd.schedulers import explicit_spec, set_timesteps

    own, sigmas, _ = _own(name, spacing)
    adapted, timesteps, t_start = set_timesteps(explicit_spec(name, SD15, sigmas), torch.device("cpu"))
    assert t_start == 0 and adapted.begin_index == 0 and torch.equal(timesteps, adapted.timesteps)
    assert torch.equal(adapted.sigmas, own.sigmas)
    if spacing == "default" and name != "dpmpp_sde":
        assert torch.equal(adapted.timesteps.double(), own.timesteps.double())
    else:
        torch.testing.assert_close(adapted.timesteps.double(), own.timesteps.double(), rtol=0, atol=1e-4)
    assert adapted.init_noise_sigma == own.init_noise_sigma
    assert len(adapted.timesteps) == len(own.timesteps)  # the engine's step count and order-2 cutting are unchanged


@pytest.fixture(scope="module")
def ex(models_dir, tmp_path_factory):
    return executor(models_dir, tmp_path_factory.mktemp("sigma-samplers"))


@pytest.fixture(scope="module")
def parts(ex):
    """The tiny model's UNet, prompts and an empty latent, for the engine's own sampling loop (run_sampler)."""
    nodes = txt2img_nodes("tiny-sd15", steps=STEPS, seed=3)
    del nodes["sample"], nodes["dec"], nodes["save"]
    result = ex.run(wf(nodes), targets=["ckpt", "pos", "neg", "lat"])
    return SimpleNamespace(unet=output_of(ex, result, "ckpt", "unet"), pos=output_of(ex, result, "pos", "conditioning"),
                           neg=output_of(ex, result, "neg", "conditioning"), lat=output_of(ex, result, "lat", "latent"))


def _run(ex, parts, spec, seed: int = 3, latent=None, start_step: int = 0, end_step: int | None = None,
         add_noise: bool = True) -> torch.Tensor:
    """Prepare, then per timestep predict, guide and step: the loop Sample, SampleParts and SampleGuided run."""
    from nodes.sampling import run_sampler
    from nodes.sd.handles import NoiseSpec

    ctx = SimpleNamespace(settings=ex.settings, progress=lambda *a, **k: None)
    out = run_sampler(parts.unet, parts.pos, parts.neg, latent or parts.lat, NoiseSpec(seed, add=add_noise), spec, 7.5,
                      0.0, ctx, start_step=start_step, end_step=end_step, add_noise=add_noise)
    return out.samples


@pytest.mark.parametrize("name,spacing", OWN_RUNS)
def test_a_list_of_the_schedulers_own_sigmas_samples_its_own_run(ex, parts, name, spacing):
    """The tiny model, CFG, the engine's loop: the adapted run equals the scheduler's own run bit for bit where the
    timesteps map back exactly, else within float32 ulps (t moves by ~6e-5, the latents by ~1e-6 of their scale).
    The ancestral ones draw the same noise from the seed's generator; DPM++ SDE its Brownian tree from the seed."""
    from nodes.sd.schedulers import explicit_spec

    _, sigmas, _ = _own(name, spacing)
    own = _run(ex, parts, _spec(name, spacing))
    listed = _run(ex, parts, explicit_spec(name, SD15, sigmas, seed_for_sde=5))
    assert torch.isfinite(own).all()
    if spacing == "default" and name != "dpmpp_sde":
        assert torch.equal(listed, own)
    else:
        scale = own.abs().max()
        assert (listed - own).abs().max() <= 1e-5 * scale, ((listed - own).abs().max(), scale)
    assert (_run(ex, parts, _spec(name, spacing), seed=4) - own).abs().max() > 1e-2  # the seed matters


# --- the node path: KarrasScheduler + SamplerSelect --------------------------------------------------------------------

def _custom_nodes(sampler: str) -> dict:
    nodes = txt2img_nodes("tiny-sd15", steps=STEPS, seed=3, scheduler="euler")
    del nodes["sample"], nodes["dec"], nodes["save"]
    nodes["algo"] = {"type": "SamplerSelect", "inputs": {"name": sampler}}
    return nodes


def _sample_parts(latent: dict, sigmas: dict, seed: int = 3, add_noise: bool = True) -> dict:
    return {"type": "SampleParts", "inputs": {"unet": L("ckpt", "unet"), "positive": L("pos", "conditioning"),
                                              "negative": L("neg", "conditioning"), "latent": latent,
                                              "sampler": L("algo", "sampler"), "sigmas": sigmas, "seed": seed,
                                              "cfg": 7.5, "add_noise": add_noise}}


def _karras_inputs() -> dict:
    """KarrasScheduler's inputs for diffusers' karras sigma range for this model and step count."""
    _, sigmas, _ = _own("heun", "karras")
    return {"steps": STEPS, "sigma_max": sigmas[0], "sigma_min": sigmas[-2], "rho": 7.0}


@pytest.mark.parametrize("sampler", ["heun", "lms", "dpmpp_sde"])
def test_karras_scheduler_list_samples_as_the_samplers_own_karras_sigmas(ex, sampler):
    nodes = _custom_nodes(sampler)
    nodes["sigmas"] = {"type": "KarrasScheduler", "inputs": _karras_inputs()}
    nodes["basic"] = {"type": "SigmaSchedule", "inputs": {"unet": L("ckpt", "unet"), "sigmas": "karras", "steps": STEPS}}
    nodes["ours"] = _sample_parts(L("lat", "latent"), L("sigmas", "sigmas"))
    nodes["theirs"] = _sample_parts(L("lat", "latent"), L("basic", "sigmas"))
    result = ex.run(wf(nodes), targets=["ours", "theirs"])
    ours, theirs = (output_of(ex, result, n, "latent").samples for n in ("ours", "theirs"))
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


@pytest.mark.parametrize("sampler", ["heun", "dpm2"])
def test_a_split_list_sampled_in_two_parts_equals_the_whole(ex, sampler):
    """Two evaluations per step: SplitSigmas cuts the interleaved timesteps at a step boundary."""
    nodes = _custom_nodes(sampler)
    nodes["sigmas"] = {"type": "KarrasScheduler", "inputs": _karras_inputs()}
    nodes["whole"] = _sample_parts(L("lat", "latent"), L("sigmas", "sigmas"))
    nodes["split"] = {"type": "SplitSigmas", "inputs": {"sigmas": L("sigmas", "sigmas"), "step": 3}}
    nodes["high"] = _sample_parts(L("lat", "latent"), L("split", "high_sigmas"))
    nodes["low"] = _sample_parts(L("high", "latent"), L("split", "low_sigmas"), seed=99, add_noise=False)
    result = ex.run(wf(nodes), targets=["whole", "low"])
    whole = output_of(ex, result, "whole", "latent").samples
    assert (output_of(ex, result, "high", "latent").samples - whole).abs().max() > 0.1
    assert torch.allclose(output_of(ex, result, "low", "latent").samples, whole, atol=1e-5)


@pytest.mark.parametrize("sampler", ["heun", "dpm2", "lms"])
def test_unsampling_with_flipped_sigmas(ex, sampler):
    """A rising list that ends above 0 (FlipSigmas) steps a clean latent back up to noise."""
    nodes = _custom_nodes(sampler)
    nodes["sigmas"] = {"type": "KarrasScheduler", "inputs": {"steps": 4}}
    nodes["flip"] = {"type": "FlipSigmas", "inputs": {"sigmas": L("sigmas", "sigmas")}}
    nodes["clean"] = _sample_parts(L("lat", "latent"), L("sigmas", "sigmas"))
    nodes["unsample"] = _sample_parts(L("clean", "latent"), L("flip", "sigmas"), add_noise=False)
    result = ex.run(wf(nodes), targets=["unsample"])
    clean = output_of(ex, result, "clean", "latent").samples
    noisy = output_of(ex, result, "unsample", "latent").samples
    assert torch.isfinite(noisy).all() and (noisy - clean).abs().max() > 0.1


# --- refusals ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler,cls", [("dpmpp_2m", "DPMSolverMultistepScheduler"), ("ddim", "DDIMScheduler"),
                                         ("unipc", "UniPCMultistepScheduler")])
def test_a_scheduler_that_cannot_take_a_list_is_named_with_those_that_can(sampler, cls):
    from nodes.sd.schedulers import SchedulerError, explicit_spec

    with pytest.raises(SchedulerError) as err:
        explicit_spec(sampler, SD15, karras_scheduler(4).values)
    msg = str(err.value)
    assert sampler in msg and cls in msg
    assert "schedulers that can: euler, euler_a, heun, dpm2, dpm2_a, dpmpp_sde, lms, dpmpp_2s_ancestral" in msg, msg


@pytest.mark.parametrize("sampler", ["euler_a", "dpm2_a", "dpmpp_sde", "dpmpp_2s_ancestral"])
def test_a_noisy_sampler_refuses_a_rising_list(sampler):
    from nodes.sd.schedulers import SchedulerError, explicit_spec

    with pytest.raises(SchedulerError) as err:
        explicit_spec(sampler, SD15, (0.0001, 1.0, 5.0, 14.6))
    msg = str(err.value)
    assert sampler in msg and "rising" in msg and "schedulers that can: euler, heun, dpm2, lms" in msg, msg


@pytest.mark.parametrize("sampler", ["lms", "dpmpp_sde"])
def test_lms_and_sde_refuse_a_repeated_sigma(sampler):
    from nodes.sd.schedulers import SchedulerError, explicit_spec

    with pytest.raises(SchedulerError) as err:
        explicit_spec(sampler, SD15, (5.0, 5.0, 1.0, 0.0))
    msg = str(err.value)
    assert sampler in msg and "repeats sigma 5" in msg
    assert "schedulers that can: euler, euler_a, heun, dpm2, dpm2_a, dpmpp_2s_ancestral" in msg, msg


def test_an_adapted_sampler_refuses_sigma_0_before_the_end():
    from nodes.sd.schedulers import SchedulerError, explicit_spec

    with pytest.raises(SchedulerError, match="above 0 except the last"):
        explicit_spec("heun", SD15, (14.6, 0.0, 1.0, 0.0))
    explicit_spec("euler", SD15, (14.6, 0.0, 1.0, 0.0))  # Euler's list path is as it was


# --- k-diffusion's loops on a toy denoiser ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _log_sigmas() -> np.ndarray:
    from nodes.sd.schedulers import training_sigmas

    return np.log(np.array(training_sigmas(SD15), dtype=np.float64))


def _t_of(sigma) -> float:
    """The training timestep of a sigma: log sigma interpolated over the model's training sigmas (written here
    independently, with numpy's interp)."""
    log_sigmas = _log_sigmas()
    return float(np.interp(np.log(max(float(sigma), 1e-10)), log_sigmas, np.arange(len(log_sigmas))))


def _toy(x_in: torch.Tensor, t) -> torch.Tensor:
    """A smooth stand-in for the UNet: its output depends on the scaled input and the timestep."""
    return torch.tanh(x_in) * (0.5 + float(t) / 2000) + 0.1 * torch.sin(3 * x_in)


def _denoiser(prediction: str = "epsilon"):
    """D(x, sigma) as k-diffusion wraps an eps / v model (ComfyUI's EPS / V_PREDICTION, sigma_data 1)."""
    def D(x, sigma):
        out = _toy(x / (sigma**2 + 1) ** 0.5, _t_of(sigma))
        if prediction == "epsilon":
            return x - out * sigma
        return x / (sigma**2 + 1) - out * sigma / (sigma**2 + 1) ** 0.5
    return D


def _ancestral_step(sigma_from, sigma_to, eta=1.0):
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - sigma_up**2) ** 0.5, sigma_up


def _noise(x, g):
    return torch.randn(x.shape, generator=g, dtype=torch.float32)


def ref_dpmpp_2s_ancestral(D, x, sigmas, g, eta=1.0, s_noise=1.0):
    sigma_fn = lambda t: t.neg().exp()  # noqa: E731
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised = D(x, sigmas[i])
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            d = (x - denoised) / sigmas[i]
            x = x + d * (sigma_down - sigmas[i])
        else:
            t, t_next = t_fn(sigmas[i]), t_fn(sigma_down)
            r = 1 / 2
            h = t_next - t
            s = t + r * h
            x_2 = (sigma_fn(s) / sigma_fn(t)) * x - (-h * r).expm1() * denoised
            denoised_2 = D(x_2, sigma_fn(s))
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + _noise(x, g) * s_noise * sigma_up
    return x


def ref_heun(D, x, sigmas, g):
    for i in range(len(sigmas) - 1):
        denoised = D(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - D(x_2, sigmas[i + 1])) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


def ref_dpm_2(D, x, sigmas, g):
    for i in range(len(sigmas) - 1):
        denoised = D(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = (x_2 - D(x_2, sigma_mid)) / sigma_mid
            x = x + d_2 * (sigmas[i + 1] - sigmas[i])
    return x


def ref_euler_ancestral(D, x, sigmas, g):
    for i in range(len(sigmas) - 1):
        denoised = D(x, sigmas[i])
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1])
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigma_down - sigmas[i])
        x = x + _noise(x, g) * sigma_up  # diffusers draws at the last step too (times sigma_up 0)
    return x


def ref_dpm_2_ancestral(D, x, sigmas, g):
    for i in range(len(sigmas) - 1):
        denoised = D(x, sigmas[i])
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1])
        d = (x - denoised) / sigmas[i]
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = (x_2 - D(x_2, sigma_mid)) / sigma_mid
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + _noise(x, g) * sigma_up
    return x


def ref_lms(D, x, sigmas, g, order=4):
    from scipy import integrate

    s = sigmas.numpy()

    def coeff(cur, i, j):
        def fn(tau):
            prod = 1.0
            for k in range(cur):
                if j != k:
                    prod *= (tau - s[i - k]) / (s[i - j] - s[i - k])
            return prod
        return integrate.quad(fn, s[i], s[i + 1], epsrel=1e-4)[0]

    ds = []
    for i in range(len(sigmas) - 1):
        ds = (ds + [(x - D(x, sigmas[i])) / sigmas[i]])[-order:]
        cur = min(i + 1, order)
        x = x + sum(coeff(cur, i, j) * d for j, d in zip(range(cur), reversed(ds)))
    return x


REFERENCES = {"lms": ref_lms, "dpmpp_2s_ancestral": ref_dpmpp_2s_ancestral, "heun": ref_heun, "dpm2": ref_dpm_2,
              "euler_a": ref_euler_ancestral, "dpm2_a": ref_dpm_2_ancestral}


def _drive(sched, x: torch.Tensor, g: torch.Generator, timesteps=None) -> tuple[torch.Tensor, int]:
    """The engine's loop over a scheduler with the toy model: scale, predict, step (generator where step takes it)."""
    from nodes.sd.schedulers import step_kwargs

    kw = step_kwargs(sched, g, 0.0)
    calls = 0
    for t in sched.timesteps if timesteps is None else timesteps:
        out = _toy(sched.scale_model_input(x, t), t)
        x = sched.step(out, t, x, **kw, return_dict=False)[0]
        calls += 1
    return x, calls


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal to 1e-6 of the result's scale: float32 ulps (the two sides map sigma to the toy's timestep separately)."""
    err, scale = (got - want).abs().max(), want.abs().max()
    assert err <= 1e-6 * scale, (err, scale)


def _same_timesteps(sched):
    """The reference's sigma -> timestep as the scheduler maps it (each evaluation's sigma -> its timestep)."""
    table = {float(s): float(t) for s, t in zip(sched.sigmas[: len(sched.timesteps)], sched.timesteps)}
    return lambda sigma: table[float(sigma)]


def _list_scheduler(name: str, sigmas, prediction: str = "epsilon"):
    from nodes.sd.schedulers import explicit_spec, set_timesteps

    config = dict(SD15, prediction_type=prediction)
    sched, _, _ = set_timesteps(explicit_spec(name, config, tuple(sigmas)), torch.device("cpu"))
    return sched


FALLING = karras_scheduler(6, 14.614642, 0.0291675, 7.0).values
FALLING_ABOVE_0 = FALLING[:-2]  # a list that stops at a sigma above 0 (SplitSigmas' high part, handed on)
RISING = (0.0001, 0.3, 1.2, 4.0, 14.0)  # FlipSigmas: unsampling up to noise, ending above 0


def _start(sigmas, seed: int = 0) -> tuple[torch.Tensor, torch.Generator]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g) * (1.0 if sigmas[0] < sigmas[-1] else float(sigmas[0]))
    return x, g


@pytest.mark.parametrize("name,sigmas,prediction", [
    ("dpmpp_2s_ancestral", FALLING, "epsilon"), ("dpmpp_2s_ancestral", FALLING, "v_prediction"),
    ("dpmpp_2s_ancestral", FALLING_ABOVE_0, "epsilon"), ("heun", FALLING, "epsilon"),
    ("heun", FALLING_ABOVE_0, "epsilon"), ("heun", RISING, "epsilon"), ("heun", FALLING, "v_prediction"),
    ("dpm2", FALLING, "epsilon"), ("dpm2", FALLING_ABOVE_0, "epsilon"), ("dpm2", RISING, "epsilon"),
    ("lms", FALLING, "epsilon"), ("lms", FALLING_ABOVE_0, "epsilon"), ("lms", RISING, "epsilon"),
    ("euler_a", FALLING, "epsilon"), ("euler_a", FALLING_ABOVE_0, "epsilon"), ("dpm2_a", FALLING, "epsilon"),
    ("dpm2_a", FALLING_ABOVE_0, "epsilon")])
def test_a_list_is_stepped_as_k_diffusions_loop_steps_it(name, sigmas, prediction):
    """Same toy model, same start and same noise draws (the step's generator): the scheduler's result equals the
    k-diffusion-style loop's to 1e-6 (of its scale, float32), with one model evaluation per step where the step goes
    to 0 and two elsewhere, the last step of a list ending above 0 included. DPM++ 2S ancestral does k-diffusion's
    arithmetic op for op: given the same timesteps, bit for bit."""
    x0, g = _start(sigmas)
    g_ref = torch.Generator().manual_seed(0)
    torch.randn(x0.shape, generator=g_ref)  # the same draws so far as g
    sched = _list_scheduler(name, sigmas, prediction)
    got, calls = _drive(sched, x0.clone(), g)
    s = torch.tensor(sigmas, dtype=torch.float32)
    want = REFERENCES[name](_denoiser(prediction), x0.clone(), s, g_ref)
    steps = len(sigmas) - 1
    one_call_steps = 1 if sigmas[-1] == 0 else 0
    single = name in ("euler_a", "lms")
    assert calls == (steps if single else 2 * steps - one_call_steps)
    assert sched.order == (1 if single else 2)
    _close(got, want)
    assert torch.isfinite(got).all() and (got - x0).abs().max() > 0.1
    if name == "dpmpp_2s_ancestral":
        global _t_of
        independent, _t_of = _t_of, _same_timesteps(sched)
        try:
            g_ref = torch.Generator().manual_seed(0)
            torch.randn(x0.shape, generator=g_ref)
            assert torch.equal(got, REFERENCES[name](_denoiser(prediction), x0.clone(), s, g_ref))
        finally:
            _t_of = independent


@pytest.mark.parametrize("name", ["heun", "dpm2", "dpm2_a", "dpmpp_sde", "dpmpp_2s_ancestral"])
def test_start_steps_cut_a_two_evaluation_list_at_step_boundaries(name):
    """prepare's start / end steps cut the timesteps in units of `order`: step k's first evaluation is at
    2k, at the step's own sigma."""
    sched = _list_scheduler(name, FALLING)
    for k in range(len(FALLING) - 1):
        assert float(sched.timesteps[2 * k]) == pytest.approx(_t_of(FALLING[k]), abs=1e-3)
    assert len(sched.timesteps) == 2 * (len(FALLING) - 1) - 1


# --- DPM++ 2S ancestral -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spacing", ["default", "karras", "exponential"])
def test_dpmpp_2s_ancestral_schedule_is_eulers_for_the_recipe(spacing):
    """Its normal schedule: the sigmas and timesteps Euler computes for the same config and spacing, each step's
    midpoint between; the recipe run equals the k-diffusion loop over those sigmas."""
    from nodes.sd.schedulers import instantiate, set_timesteps

    sched, timesteps, _ = set_timesteps(_spec("dpmpp_2s_ancestral", spacing), torch.device("cpu"))
    euler = instantiate(_spec("euler", spacing))
    euler.set_timesteps(STEPS)
    assert type(sched).__name__ == "DPMPP2SAncestralScheduler" and sched.order == 2
    assert len(timesteps) == 2 * STEPS - 1
    torch.testing.assert_close(sched.sigmas[0::2], euler.sigmas[:-1], rtol=0, atol=0)
    assert float(sched.sigmas[-1]) == 0.0
    assert torch.equal(timesteps[0::2], euler.timesteps.float())
    assert sched.init_noise_sigma == euler.init_noise_sigma
    x0, g = _start(euler.sigmas.tolist())
    g_ref = torch.Generator().manual_seed(0)
    torch.randn(x0.shape, generator=g_ref)
    got, _ = _drive(sched, x0.clone(), g)
    want = ref_dpmpp_2s_ancestral(_denoiser(), x0.clone(), euler.sigmas.float(), g_ref)
    _close(got, want)


def test_dpmpp_2s_ancestral_is_registered():
    from nodes.sd.schedulers import COMFY_SAMPLERS, SCHEDULERS, make_spec, scheduler_class

    assert SCHEDULERS["dpmpp_2s_ancestral"].label == "DPM++ 2S ancestral"
    assert COMFY_SAMPLERS["dpmpp_2s_ancestral"] == "dpmpp_2s_ancestral"
    assert scheduler_class("DPMPP2SAncestralScheduler").order == 2
    for spacing in ("karras", "exponential", "beta"):
        assert dict(make_spec("dpmpp_2s_ancestral", SD15, 4, 1.0, spacing).config)[f"use_{spacing}_sigmas"] is True


def test_dpmpp_2s_ancestral_samples_the_tiny_model(ex, parts):
    """Through the engine's loop: seeded (the sampler state's generator), img2img-able, a list of its own sigmas
    gives its own run."""
    from nodes.sd.schedulers import explicit_spec, set_timesteps

    for spacing in ("default", "karras", "exponential"):
        a = _run(ex, parts, _spec("dpmpp_2s_ancestral", spacing))
        assert torch.isfinite(a).all() and a.abs().max() > 0.1
        assert torch.equal(_run(ex, parts, _spec("dpmpp_2s_ancestral", spacing)), a)
        assert (_run(ex, parts, _spec("dpmpp_2s_ancestral", spacing), seed=4) - a).abs().max() > 1e-2
    own, _, _ = set_timesteps(_spec("dpmpp_2s_ancestral", "karras"), torch.device("cpu"))
    sigmas = [float(v) for v in torch.cat([own.sigmas[0:-1:2], own.sigmas[-1:]])]
    listed = _run(ex, parts, explicit_spec("dpmpp_2s_ancestral", SD15, sigmas))
    want = _run(ex, parts, _spec("dpmpp_2s_ancestral", "karras"))
    assert (listed - want).abs().max() <= 1e-5 * want.abs().max()
    # img2img (denoise 0.5): the schedule's tail, cut at a step boundary
    from nodes.sd.schedulers import make_spec

    half = make_spec("dpmpp_2s_ancestral", SD15, STEPS, 0.5)
    sched, timesteps, t_start = set_timesteps(half, torch.device("cpu"))
    assert t_start == STEPS // 2 and len(timesteps) == 2 * (STEPS - t_start) - 1
    assert sched.begin_index == 2 * t_start
    latent = parts.lat.with_samples(torch.randn(parts.lat.samples.shape, generator=torch.Generator().manual_seed(1)))
    out = _run(ex, parts, half, latent=latent)
    assert torch.isfinite(out).all() and (out - latent.samples).abs().max() > 1e-2


def _has_sampler_name(name: str) -> bool:
    from nodes.sampling import SchedulerName

    return name in typing.get_args(SchedulerName)


@pytest.mark.skipif(not _has_sampler_name("dpmpp_2s_ancestral"),
                    reason="SamplerSelect's choices (nodes/sampling.py SchedulerName) do not list dpmpp_2s_ancestral yet")
def test_dpmpp_2s_ancestral_through_sampler_select(ex):
    """SampleParts with SamplerSelect: a KarrasScheduler list and BasicScheduler's karras recipe give one picture;
    the split list sampled in two parts runs."""
    nodes = _custom_nodes("dpmpp_2s_ancestral")
    nodes["sigmas"] = {"type": "KarrasScheduler", "inputs": _karras_inputs()}
    nodes["basic"] = {"type": "SigmaSchedule", "inputs": {"unet": L("ckpt", "unet"), "sigmas": "karras", "steps": STEPS}}
    nodes["ours"] = _sample_parts(L("lat", "latent"), L("sigmas", "sigmas"))
    nodes["theirs"] = _sample_parts(L("lat", "latent"), L("basic", "sigmas"))
    nodes["split"] = {"type": "SplitSigmas", "inputs": {"sigmas": L("sigmas", "sigmas"), "step": 3}}
    nodes["high"] = _sample_parts(L("lat", "latent"), L("split", "high_sigmas"))
    nodes["low"] = _sample_parts(L("high", "latent"), L("split", "low_sigmas"), seed=99, add_noise=False)
    result = ex.run(wf(nodes), targets=["ours", "theirs", "low"])
    ours, theirs = (output_of(ex, result, n, "latent").samples for n in ("ours", "theirs"))
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    assert torch.isfinite(output_of(ex, result, "low", "latent").samples).all()
