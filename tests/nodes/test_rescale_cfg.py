"""RescaleCFG (nodes/unet_patches.py, nodes/sd/denoise.apply_guidance): ComfyUI's guidance rescale in v space,
checked against ComfyUI's formula written in its own (k-diffusion) terms, equal to diffusers' guidance_rescale on a
v-prediction model, the same through Sample, the open loop and fast mode."""

from __future__ import annotations

import math

import pytest
import torch

from engine.compat.comfy import prompt_to_workflow
from engine.registry import Registry
from nodes.sd.denoise import apply_guidance, vp_coefficients
from nodes.sd.handles import NoisePrediction, VFrame
from tests.nodes.sd_helpers import L, executor, loop_nodes, output_of, txt2img_nodes, wf


def comfy_rescale_cfg(x_orig, sigma, eps_cond, eps_uncond, scale, multiplier):
    """ComfyUI's RescaleCFG as its sampler sees it: inputs in k-diffusion scale (x = x0 + sigma eps), the function
    given x - denoised for each side, and the guided denoised image as the result."""
    cond, uncond = sigma * eps_cond, sigma * eps_uncond  # x - denoised
    x = x_orig / (sigma ** 2 + 1)
    v_cond = ((x - (x_orig - cond)) * (sigma ** 2 + 1) ** 0.5) / sigma
    v_uncond = ((x - (x_orig - uncond)) * (sigma ** 2 + 1) ** 0.5) / sigma
    v_cfg = v_uncond + scale * (v_cond - v_uncond)
    ro_pos = v_cond.std(dim=(1, 2, 3), keepdim=True)
    ro_cfg = v_cfg.std(dim=(1, 2, 3), keepdim=True)
    v_final = multiplier * v_cfg * (ro_pos / ro_cfg) + (1 - multiplier) * v_cfg
    return x - v_final * sigma / (sigma ** 2 + 1) ** 0.5


@pytest.mark.parametrize("sigma", [0.3, 2.5, 14.6])
def test_guidance_equals_comfyuis_formula(sigma):
    g = torch.Generator().manual_seed(int(sigma * 10))
    x_orig = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) * (1 + sigma ** 2) ** 0.5
    eps_c, eps_u = (torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    alpha, sig = 1 / (1 + sigma ** 2) ** 0.5, sigma / (1 + sigma ** 2) ** 0.5
    frame = VFrame(0.7, x_orig * alpha, alpha, sig, "epsilon")  # the UNet's input is the variance-preserving x_t
    guided = apply_guidance(NoisePrediction(cond=eps_c, uncond=eps_u, v_frame=frame), 7.5).guided
    ours = x_orig - sigma * guided  # the denoised image the guided noise prediction stands for
    want = comfy_rescale_cfg(x_orig, sigma, eps_c, eps_u, 7.5, 0.7)
    assert torch.allclose(ours, want, atol=1e-10)
    plain = x_orig - sigma * (eps_u + 7.5 * (eps_c - eps_u))
    assert (plain - want).abs().max() > 1e-3


def test_timestep_coefficients_follow_the_training_schedule():
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    ac = sched.alphas_cumprod.double()
    alpha, sigma = vp_coefficients(sched, torch.tensor(500))
    assert math.isclose(alpha, float(ac[500].sqrt()), rel_tol=1e-9) and math.isclose(sigma, float((1 - ac[500]).sqrt()), rel_tol=1e-9)
    sched.set_timesteps(7)  # float timesteps (between training steps): sigma_t is the schedule's own sigma
    for t, s in zip(sched.timesteps, sched.sigmas):
        _, vp_sigma = vp_coefficients(sched, t)
        assert math.isclose(vp_sigma / (1 - vp_sigma ** 2) ** 0.5, float(s), rel_tol=1e-4)


def _rescaled_nodes(multiplier: float, prediction: str = "auto", loop: bool = False, **sample) -> dict:
    nodes = (loop_nodes if loop else txt2img_nodes)("tiny-sd15", steps=5, seed=3)
    nodes["ckpt"]["inputs"]["prediction_type"] = prediction
    nodes["rescale"] = {"type": "RescaleCFG", "inputs": {"unet": L("ckpt", "unet"), "multiplier": multiplier}}
    key = "loop" if loop else "sample"
    nodes[key]["inputs"]["unet"] = L("rescale", "unet")
    nodes[key]["inputs"].update(sample)
    return nodes


def _latent(ex, nodes, node="sample"):
    return output_of(ex, ex.run(wf(nodes), targets=[node]), node, "latent").samples


def test_on_a_v_prediction_model_it_is_guidance_rescale(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    patched = _latent(ex, _rescaled_nodes(0.7, "v_prediction"))
    nodes = txt2img_nodes("tiny-sd15", steps=5, seed=3)
    nodes["ckpt"]["inputs"]["prediction_type"] = "v_prediction"
    plain = _latent(ex, nodes)
    nodes["sample"]["inputs"]["guidance_rescale"] = 0.7
    diffusers_way = _latent(ex, nodes)
    assert torch.allclose(patched, diffusers_way, atol=1e-5)
    assert (patched - plain).abs().max() > 1e-3


def test_on_an_epsilon_model_it_differs_from_guidance_rescale(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    plain = _latent(ex, txt2img_nodes("tiny-sd15", steps=5, seed=3))
    assert torch.allclose(_latent(ex, _rescaled_nodes(0.0)), plain, atol=1e-5)  # multiplier 0: plain CFG
    patched = _latent(ex, _rescaled_nodes(0.7))
    nodes = txt2img_nodes("tiny-sd15", steps=5, seed=3)
    nodes["sample"]["inputs"]["guidance_rescale"] = 0.7
    assert (patched - plain).abs().max() > 1e-3 and (patched - _latent(ex, nodes)).abs().max() > 1e-4
    # the open loop (PredictNoise -> Guidance -> SchedulerStep) gives the one-node sampler's result
    assert torch.allclose(_latent(ex, _rescaled_nodes(0.7, loop=True), "loop"), patched, atol=1e-5)


def test_fast_mode_runs_it_stagewise_with_the_same_picture(models_dir, tmp_path, monkeypatch):
    from nodes.sd import fast

    monkeypatch.setenv("LOOM_FAST_BACKEND", "aot_eager_decomp_partition")
    ex = executor(models_dir, tmp_path)
    ex.settings.user_dir = tmp_path / "user"
    want = _latent(ex, _rescaled_nodes(0.7))
    ex.settings.fast = True
    ex.cache.clear()
    got = _latent(ex, _rescaled_nodes(0.7))
    ex.settings.fast = False
    assert fast.LAST_RUN["path"] == "stagewise"
    assert torch.allclose(got, want, atol=1e-4)


def test_comfyui_class_translates_and_bad_models_are_named():
    prompt = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15"}},
              "9": {"class_type": "RescaleCFG", "inputs": {"model": ["4", 0], "multiplier": 0.6}}}
    node = prompt_to_workflow(prompt, Registry.default())["nodes"]["9"]
    assert node["type"] == "RescaleCFG" and node["inputs"] == {"unet": L("4", "unet"), "multiplier": 0.6}
    from types import SimpleNamespace

    from engine.node import NodeError
    from nodes.unet_patches import rescale_cfg

    with pytest.raises(NodeError, match="unet: RescaleCFG needs an epsilon or v-prediction model"):
        rescale_cfg(SimpleNamespace(prediction_type="sample"), 0.7)
