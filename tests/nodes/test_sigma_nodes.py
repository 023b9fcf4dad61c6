"""ComfyUI's sigma-list generators (nodes/sampling_custom.py: KarrasScheduler, ExponentialScheduler,
PolyexponentialScheduler, VPScheduler, SDTurboScheduler, FlipSigmas, SetFirstSigma): their sigmas are ComfyUI's
formulas, and a list is sampled through diffusers' `set_timesteps(sigmas=...)`, which for karras sigmas gives
diffusers' own karras result."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine.compat.comfy import litegraph_to_prompt, prompt_to_workflow
from engine.registry import Registry
from nodes.sampling_custom import (SigmaList, SigmaRecipe, exponential_scheduler, flip_sigmas, karras_scheduler,
                                   polyexponential_scheduler, sd_turbo_scheduler, set_first_sigma, split_sigmas,
                                   vp_scheduler)
from tests.nodes.sd_helpers import L, executor, output_of, txt2img_nodes, wf

STEPS = 8
SD15_SCHEDULER = json.loads((Path(__file__).parents[2] / "nodes/sd/configs/sd15/scheduler/scheduler_config.json").read_text())


@pytest.fixture(scope="module")
def ex(models_dir, tmp_path_factory):
    return executor(models_dir, tmp_path_factory.mktemp("sigmas"))


@pytest.fixture(scope="module")
def model_config(ex):
    result = ex.run(wf({"ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd15"}}}), targets=["ckpt"])
    return dict(output_of(ex, result, "ckpt", "unet").scheduler_config)


# --- the formulas, written out independently (comfy/k_diffusion/sampling.py, comfy_extras/nodes_custom_sampler.py) ---

def _karras(n, smax, smin, rho):
    i = np.arange(n, dtype=np.float64)
    ramp = i / (n - 1) if n > 1 else np.zeros(1)
    return np.append((smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho, 0.0)


def _exponential(n, smax, smin):
    return np.append(np.exp(np.linspace(np.log(smax), np.log(smin), n)), 0.0)


def _polyexponential(n, smax, smin, rho):
    ramp = np.linspace(1, 0, n) ** rho
    return np.append(np.exp(ramp * (np.log(smax) - np.log(smin)) + np.log(smin)), 0.0)


def _vp(n, beta_d, beta_min, eps_s):
    t = np.linspace(1, eps_s, n)
    return np.append(np.sqrt(np.expm1(beta_d * t ** 2 / 2 + beta_min * t)), 0.0)


def _sd15_training_sigmas():
    """scaled_linear betas 0.00085..0.012 over 1000 steps, sigma_t = sqrt((1 - alphas_cumprod) / alphas_cumprod)."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    ac = np.cumprod(1 - betas)
    return np.sqrt((1 - ac) / ac)


@pytest.mark.parametrize("steps", [1, 2, 10, 33])
def test_generators_give_comfyuis_formulas(steps):
    got = karras_scheduler(steps, 14.614642, 0.0291675, 7.0)
    assert isinstance(got, SigmaList) and len(got.values) == steps + 1 and got.values[-1] == 0.0
    np.testing.assert_allclose(got.values, _karras(steps, 14.614642, 0.0291675, 7.0), rtol=1e-12, atol=0)
    np.testing.assert_allclose(karras_scheduler(steps, 80.0, 0.002, 3.5).values, _karras(steps, 80.0, 0.002, 3.5), rtol=1e-12)
    np.testing.assert_allclose(exponential_scheduler(steps, 14.614642, 0.0291675).values,
                               _exponential(steps, 14.614642, 0.0291675), rtol=1e-12)
    np.testing.assert_allclose(polyexponential_scheduler(steps, 10.0, 0.1, 2.5).values, _polyexponential(steps, 10.0, 0.1, 2.5),
                               rtol=1e-12)
    # rho 1 is the exponential schedule
    np.testing.assert_allclose(polyexponential_scheduler(steps, 10.0, 0.1, 1.0).values, _exponential(steps, 10.0, 0.1), rtol=1e-12)
    np.testing.assert_allclose(vp_scheduler(steps, 19.9, 0.1, 0.001).values, _vp(steps, 19.9, 0.1, 0.001), rtol=1e-12)
    np.testing.assert_allclose(vp_scheduler(steps, 5.0, 0.5, 0.01).values, _vp(steps, 5.0, 0.5, 0.01), rtol=1e-12)
    # the ends are the given sigmas
    assert karras_scheduler(steps, 14.614642, 0.0291675, 7.0).values[0] == pytest.approx(14.614642, rel=1e-14)
    if steps > 1:
        assert exponential_scheduler(steps, 14.614642, 0.0291675).values[-2] == pytest.approx(0.0291675, rel=1e-14)


@pytest.mark.parametrize("steps,denoise,timesteps", [(1, 1.0, [999]), (4, 1.0, [999, 899, 799, 699]),
                                                     (2, 0.5, [499, 399]), (10, 0.3, [299, 199, 99]), (3, 0.0, [])])
def test_sd_turbo_takes_the_models_sigmas_at_every_hundredth_timestep(steps, denoise, timesteps):
    got = sd_turbo_scheduler(SimpleNamespace(scheduler_config=SD15_SCHEDULER), steps, denoise)
    want = np.append(_sd15_training_sigmas()[timesteps], 0.0)
    assert len(got.values) == len(timesteps) + 1
    np.testing.assert_allclose(got.values, want, rtol=1e-5)


def test_a_sigma_list_maps_to_the_timesteps_diffusers_derives(model_config):
    """The UNet sees the timestep whose training sigma is the step's sigma (log-sigma interpolation), so SD-Turbo's
    sigmas come back as timesteps 999, 899, ...; a flipped list's first sigma 0.0001 is below the table: timestep 0."""
    from nodes.sd.schedulers import explicit_spec, set_timesteps

    turbo = sd_turbo_scheduler(SimpleNamespace(scheduler_config=model_config), 4, 1.0)
    sched, timesteps, t_start = set_timesteps(explicit_spec("euler", model_config, turbo.values), torch.device("cpu"))
    assert t_start == 0 and type(sched).__name__ == "EulerDiscreteScheduler"
    np.testing.assert_allclose(timesteps.numpy(), [999, 899, 799, 699], atol=2e-3)
    np.testing.assert_array_equal(sched.sigmas.numpy(), np.float32(turbo.values))
    flipped = flip_sigmas(turbo)
    _, timesteps, _ = set_timesteps(explicit_spec("euler", model_config, flipped.values), torch.device("cpu"))
    assert flipped.values[0] == 0.0001 and timesteps[0] == 0
    np.testing.assert_allclose(timesteps[1:].numpy(), [699, 799, 899], atol=2e-3)
    # Euler steps up the flipped list: x + eps (sigma_next - sigma), as ComfyUI's sample_euler steps it (from sigma
    # 0.0001 both go through x0 = x - sigma eps in float32, which keeps only ~3 digits of eps)
    sched, timesteps, _ = set_timesteps(explicit_spec("euler", model_config, flipped.values), torch.device("cpu"))
    x, eps = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).chunk(2, dim=1)
    s = [np.float32(v) for v in flipped.values]
    sched.scale_model_input(x, timesteps[0])
    x1 = sched.step(eps, timesteps[0], x, return_dict=False)[0]
    assert torch.allclose(x1, x + eps * (s[1] - s[0]), atol=2e-2)
    sched.scale_model_input(x1, timesteps[1])
    x2 = sched.step(eps, timesteps[1], x1, return_dict=False)[0]
    assert torch.allclose(x2, x1 + eps * (s[2] - s[1]), atol=1e-5)


def test_flip_and_set_first_sigma():
    k = karras_scheduler(6, 14.614642, 0.0291675, 7.0)
    f = flip_sigmas(k)
    assert f.values == (0.0001, *reversed(k.values[:-1]))
    assert set_first_sigma(k, 136.0).values == (136.0, *k.values[1:])
    # on a part, as ComfyUI's nodes see the part's own list
    high, low = _pair(split_sigmas(k, 2))
    assert high.visible() == k.values[:3] and low.visible() == k.values[2:]
    assert flip_sigmas(high).values == tuple(reversed(k.values[:3]))
    assert set_first_sigma(low, 20.0).values == (20.0, *k.values[3:])
    # a BasicScheduler recipe: the sigmas Euler computes for it
    from nodes.sd.schedulers import make_spec, set_timesteps

    recipe = SigmaRecipe(tuple(sorted(SD15_SCHEDULER.items())), "karras", 5, 1.0)
    sched, _, _ = set_timesteps(make_spec("euler", SD15_SCHEDULER, 5, 1.0, "karras"), torch.device("cpu"))
    assert flip_sigmas(recipe).values == (0.0001, *(float(s) for s in sched.sigmas.flip(0)[1:]))


def _pair(outputs) -> tuple:
    return outputs.high_sigmas, outputs.low_sigmas


# --- sampling ---

def _nodes(sigmas_node: dict, sampler: str = "euler") -> dict:
    nodes = txt2img_nodes("tiny-sd15", steps=STEPS, seed=3, scheduler=sampler)
    del nodes["sample"], nodes["dec"], nodes["save"]
    nodes["algo"] = {"type": "SamplerSelect", "inputs": {"name": sampler}}
    nodes["sigmas"] = sigmas_node
    return nodes


def _parts(latent: dict, sigmas: dict, seed: int = 3, add_noise: bool = True) -> dict:
    return {"type": "SampleParts", "inputs": {"unet": L("ckpt", "unet"), "positive": L("pos", "conditioning"),
                                              "negative": L("neg", "conditioning"), "latent": latent,
                                              "sampler": L("algo", "sampler"), "sigmas": sigmas, "seed": seed,
                                              "cfg": 7.5, "add_noise": add_noise}}


def _karras_node(model_config) -> dict:
    """KarrasScheduler with the sigma range diffusers' karras sigmas use for this model and step count: the sigmas at
    the first and last timestep of the model's spacing (SD 1.5: "leading", so not the training table's ends)."""
    from nodes.sd.schedulers import make_spec, set_timesteps

    sched, _, _ = set_timesteps(make_spec("euler", model_config, STEPS), torch.device("cpu"))
    smax, smin = float(sched.sigmas[0]), float(sched.sigmas[-2])
    return {"type": "KarrasScheduler", "inputs": {"steps": STEPS, "sigma_max": smax, "sigma_min": smin, "rho": 7.0}}


def test_karras_list_samples_as_diffusers_own_karras_sigmas(ex, model_config):
    nodes = _nodes(_karras_node(model_config))
    nodes["basic_karras"] = {"type": "SigmaSchedule", "inputs": {"unet": L("ckpt", "unet"), "sigmas": "karras", "steps": STEPS}}
    nodes["basic_default"] = {"type": "SigmaSchedule", "inputs": {"unet": L("ckpt", "unet"), "steps": STEPS}}
    nodes["ours"] = _parts(L("lat", "latent"), L("sigmas", "sigmas"))
    nodes["theirs"] = _parts(L("lat", "latent"), L("basic_karras", "sigmas"))
    nodes["default"] = _parts(L("lat", "latent"), L("basic_default", "sigmas"))
    result = ex.run(wf(nodes), targets=["ours", "theirs", "default"])
    ours = output_of(ex, result, "ours", "latent").samples
    theirs = output_of(ex, result, "theirs", "latent").samples
    # the same float32 sigmas; the timesteps differ by a float32 ulp at most (diffusers maps its float64 karras sigmas to
    # timesteps, `sigmas=` the float32 ones), which moves the latents by ~1e-6 of their scale
    scale = theirs.abs().max()
    assert (ours - theirs).abs().max() <= 1e-5 * scale, ((ours - theirs).abs().max(), scale)
    assert (output_of(ex, result, "default", "latent").samples - theirs).abs().max() > 1e-2  # karras really differs


def test_karras_list_gives_diffusers_karras_schedule(model_config):
    from nodes.sd.schedulers import explicit_spec, make_spec, set_timesteps

    theirs, t_theirs, _ = set_timesteps(make_spec("euler", model_config, STEPS, 1.0, "karras"), torch.device("cpu"))
    k = karras_scheduler(**_karras_node(model_config)["inputs"])
    ours, t_ours, _ = set_timesteps(explicit_spec("euler", model_config, k.values), torch.device("cpu"))
    assert torch.equal(ours.sigmas, theirs.sigmas)
    assert torch.allclose(t_ours, t_theirs, rtol=0, atol=1e-4)  # float32 ulps of t near 1000 are 6e-5
    assert ours.init_noise_sigma == theirs.init_noise_sigma


def test_split_sigma_list_sampled_in_two_parts_equals_the_whole(ex, model_config):
    nodes = _nodes(_karras_node(model_config))
    nodes["whole"] = _parts(L("lat", "latent"), L("sigmas", "sigmas"))
    nodes["split"] = {"type": "SplitSigmas", "inputs": {"sigmas": L("sigmas", "sigmas"), "step": 3}}
    nodes["high"] = _parts(L("lat", "latent"), L("split", "high_sigmas"))
    nodes["low"] = _parts(L("high", "latent"), L("split", "low_sigmas"), seed=99, add_noise=False)
    result = ex.run(wf(nodes), targets=["whole", "low"])
    whole = output_of(ex, result, "whole", "latent").samples
    assert (output_of(ex, result, "high", "latent").samples - whole).abs().max() > 0.1  # noise left in
    assert torch.allclose(output_of(ex, result, "low", "latent").samples, whole, atol=1e-5)


@pytest.mark.parametrize("sampler,cls", [("dpmpp_2m", "DPMSolverMultistepScheduler"),
                                         ("ddim", "DDIMScheduler")])  # euler_a takes lists now (test_sigma_samplers.py)
def test_a_scheduler_that_cannot_take_a_sigma_list_is_named(ex, sampler, cls):
    nodes = _nodes({"type": "KarrasScheduler", "inputs": {"steps": 4}}, sampler)
    nodes["parts"] = _parts(L("lat", "latent"), L("sigmas", "sigmas"))
    result = ex.run(wf(nodes), targets=["parts"])
    assert result.status == "error" and result.error["node_id"] == "parts"
    msg = result.error["message"]
    assert sampler in msg and cls in msg and "schedulers that can: euler" in msg, msg


def test_unsampling_with_flipped_sigmas(ex):
    """FlipSigmas steps a latent from low noise to high, from the latent as it is; from an empty latent with new
    noise it is refused (the sampler would start at the highest sigma)."""
    nodes = _nodes({"type": "KarrasScheduler", "inputs": {"steps": 4}})
    nodes["flip"] = {"type": "FlipSigmas", "inputs": {"sigmas": L("sigmas", "sigmas")}}
    nodes["clean"] = _parts(L("lat", "latent"), L("sigmas", "sigmas"))
    nodes["unsample"] = _parts(L("clean", "latent"), L("flip", "sigmas"), add_noise=False)
    nodes["bad"] = _parts(L("lat", "latent"), L("flip", "sigmas"))
    result = ex.run(wf(nodes), targets=["unsample"])
    clean = output_of(ex, result, "clean", "latent").samples
    noisy = output_of(ex, result, "unsample", "latent").samples
    assert torch.isfinite(noisy).all() and (noisy - clean).abs().max() > 0.1
    result = ex.run(wf(nodes), targets=["bad"])
    assert result.status == "error" and "add_noise off" in result.error["message"]


def test_comfyui_prompt_with_sigma_generators_translates_and_runs(ex, model_config):
    base = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "20": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
    }
    k = _karras_node(model_config)["inputs"]
    prompt = {**base,
              "21": {"class_type": "KarrasScheduler", "inputs": dict(k)},
              "22": {"class_type": "SDTurboScheduler", "inputs": {"model": ["4", 0], "steps": 2, "denoise": 1.0}},
              "23": {"class_type": "SamplerCustom", "inputs": {"model": ["4", 0], "add_noise": True, "noise_seed": 3,
                                                               "cfg": 7.5, "positive": ["6", 0], "negative": ["7", 0],
                                                               "sampler": ["20", 0], "sigmas": ["21", 0],
                                                               "latent_image": ["5", 0]}},
              "24": {"class_type": "SamplerCustom", "inputs": {"model": ["4", 0], "add_noise": True, "noise_seed": 3,
                                                               "cfg": 1.0, "positive": ["6", 0], "negative": ["7", 0],
                                                               "sampler": ["20", 0], "sigmas": ["22", 0],
                                                               "latent_image": ["5", 0]}}}
    ours = prompt_to_workflow(prompt, Registry.default())
    n = ours["nodes"]
    assert n["21"]["type"] == "KarrasScheduler" and n["21"]["inputs"] == k
    assert n["22"]["type"] == "SDTurboScheduler" and n["22"]["inputs"] == {"unet": L("4", "unet"), "steps": 2, "denoise": 1.0}
    assert n["23"]["inputs"]["sigmas"] == L("21", "sigmas") and n["24"]["inputs"]["sigmas"] == L("22", "sigmas")
    result = ex.run(ours, targets=["23", "24"])
    got = output_of(ex, result, "23", "latent").samples
    nodes = _nodes(_karras_node(model_config))
    nodes["basic"] = {"type": "SigmaSchedule", "inputs": {"unet": L("ckpt", "unet"), "sigmas": "karras", "steps": STEPS}}
    nodes["want"] = _parts(L("lat", "latent"), L("basic", "sigmas"))
    want = output_of(ex, ex.run(wf(nodes), targets=["want"]), "want", "latent").samples
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()  # as in test_karras_list_samples_as_diffusers_own...
    assert torch.isfinite(output_of(ex, result, "24", "latent").samples).all()


def test_comfyui_editor_widgets_of_the_generators():
    lg = {"nodes": [
        {"id": 1, "type": "KarrasScheduler", "pos": [0, 0], "mode": 0, "inputs": [], "outputs": [],
         "widgets_values": [12, 10.0, 0.05, 6.0]},
        {"id": 2, "type": "VPScheduler", "pos": [0, 0], "mode": 0, "inputs": [], "outputs": [],
         "widgets_values": [10, 19.9, 0.1, 0.001]},
        {"id": 3, "type": "SDTurboScheduler", "pos": [0, 0], "mode": 0, "inputs": [], "outputs": [],
         "widgets_values": [3, 0.8]},
        {"id": 4, "type": "SetFirstSigma", "pos": [0, 0], "mode": 0, "inputs": [], "outputs": [], "widgets_values": [100.0]},
    ], "links": []}
    prompt, _, warnings = litegraph_to_prompt(lg, Registry.default())
    assert prompt["1"]["inputs"] == {"steps": 12, "sigma_max": 10.0, "sigma_min": 0.05, "rho": 6.0}
    assert prompt["2"]["inputs"] == {"steps": 10, "beta_d": 19.9, "beta_min": 0.1, "eps_s": 0.001}
    assert prompt["3"]["inputs"] == {"steps": 3, "denoise": 0.8}
    assert prompt["4"]["inputs"] == {"sigma": 100.0}
