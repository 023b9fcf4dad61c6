"""ComfyUI-style custom sampling (nodes/sampling_custom.py): SampleParts / SampleGuided give Sample's picture,
and a schedule cut by SplitSigmas / SplitSigmasDenoise and sampled in two parts (the second without new noise)
gives the uncut result."""

from __future__ import annotations

import pytest
import torch

from engine.compat.comfy import prompt_to_workflow
from engine.registry import Registry
from nodes.sampling_custom import SigmaRecipe, split_sigmas, split_sigmas_denoise
from tests.nodes.sd_helpers import L, executor, output_of, txt2img_nodes, wf

STEPS = 8


@pytest.fixture(scope="module")
def ex(models_dir, tmp_path_factory):
    return executor(models_dir, tmp_path_factory.mktemp("custom"))


def _sample(ex, scheduler: str = "euler", seed: int = 3) -> torch.Tensor:
    nodes = txt2img_nodes("tiny-sd15", steps=STEPS, seed=seed, scheduler=scheduler)
    return output_of(ex, ex.run(wf(nodes)), "sample", "latent").samples


def _parts_nodes(scheduler: str = "euler", seed: int = 3) -> dict:
    nodes = txt2img_nodes("tiny-sd15", steps=STEPS, seed=seed, scheduler=scheduler)
    del nodes["sample"], nodes["dec"], nodes["save"]
    nodes["algo"] = {"type": "SamplerSelect", "inputs": {"name": scheduler}}
    nodes["sigmas"] = {"type": "SigmaSchedule", "inputs": {"unet": L("ckpt", "unet"), "steps": STEPS}}
    return nodes


def _guider() -> dict:
    return {"type": "CFGGuider", "inputs": {"unet": L("ckpt", "unet"), "positive": L("pos", "conditioning"),
                                            "negative": L("neg", "conditioning"), "cfg": 7.5}}


def _guided(noise: str, sigmas: dict, latent: dict) -> dict:
    return {"type": "SampleGuided", "inputs": {"noise": L(noise, "noise"), "guider": L("guider", "guider"),
                                               "sampler": L("algo", "sampler"), "sigmas": sigmas, "latent": latent}}


def _parts(inputs: dict, latent: dict, sigmas: dict, seed: int = 3, add_noise: bool = True) -> dict:
    return {"type": "SampleParts", "inputs": {"unet": L("ckpt", "unet"), "positive": L("pos", "conditioning"),
                                              "negative": L("neg", "conditioning"), "latent": latent,
                                              "sampler": L("algo", "sampler"), "sigmas": sigmas, "seed": seed,
                                              "cfg": 7.5, "add_noise": add_noise, **inputs}}


@pytest.mark.parametrize("scheduler", ["euler", "dpmpp_2m"])
def test_sample_parts_and_sample_guided_give_samples_result(ex, scheduler):
    want = _sample(ex, scheduler)
    nodes = _parts_nodes(scheduler)
    nodes["parts"] = _parts({}, L("lat", "latent"), L("sigmas", "sigmas"))
    nodes["noise"] = {"type": "Noise", "inputs": {"seed": 3}}
    nodes["guider"] = _guider()
    nodes["guided"] = _guided("noise", L("sigmas", "sigmas"), L("lat", "latent"))
    result = ex.run(wf(nodes), targets=["parts", "guided"])
    assert torch.equal(output_of(ex, result, "parts", "latent").samples, want)
    assert torch.equal(output_of(ex, result, "guided", "latent").samples, want)


def test_split_schedule_sampled_in_two_parts_equals_the_whole(ex):
    """Euler, split at step 3: the first part adds the noise and stops with it left in; the second continues from
    the latent as it is (SampleParts add_noise off, or SampleGuided with DisableNoise)."""
    want = _sample(ex)
    nodes = _parts_nodes()
    nodes["split"] = {"type": "SplitSigmas", "inputs": {"sigmas": L("sigmas", "sigmas"), "step": 3}}
    nodes["high"] = _parts({}, L("lat", "latent"), L("split", "high_sigmas"))
    nodes["low"] = _parts({}, L("high", "latent"), L("split", "low_sigmas"), seed=99, add_noise=False)
    nodes["off"] = {"type": "DisableNoise", "inputs": {}}
    nodes["guider"] = _guider()
    nodes["low2"] = _guided("off", L("split", "low_sigmas"), L("high", "latent"))
    result = ex.run(wf(nodes), targets=["low", "low2"])
    high = output_of(ex, result, "high", "latent").samples
    assert (high - want).abs().max() > 0.1  # the first part really stopped early, noise left in
    for node_id in ("low", "low2"):
        assert torch.allclose(output_of(ex, result, node_id, "latent").samples, want, atol=1e-5), node_id


def test_split_points_and_empty_parts(ex):
    r = SigmaRecipe((), "default", 8, 1.0)
    high, low = _pair(split_sigmas(r, 3))
    assert (high.start, high.stop, low.start, low.stop) == (0, 3, 3, 8)
    # cutting the low part again counts from its own first step
    again_high, again_low = _pair(split_sigmas(low, 2))
    assert (again_high.start, again_high.stop, again_low.start, again_low.stop) == (3, 5, 5, 8)
    # SplitSigmasDenoise: the low part is the last `denoise` fraction of the steps (ComfyUI rounds the count)
    high, low = _pair(split_sigmas_denoise(r, 0.25))
    assert (high.stop, low.start, low.stop) == (6, 6, 8)
    high, low = _pair(split_sigmas(r, 20))
    assert (high.start, high.stop) == (0, 8) and low.start == low.stop == 8
    # an empty part passes the latent through untouched
    nodes = _parts_nodes()
    nodes["split"] = {"type": "SplitSigmas", "inputs": {"sigmas": L("sigmas", "sigmas"), "step": 0}}
    nodes["high"] = _parts({}, L("lat", "latent"), L("split", "high_sigmas"))
    result = ex.run(wf(nodes), targets=["high"])
    assert torch.count_nonzero(output_of(ex, result, "high", "latent").samples) == 0


def _pair(outputs) -> tuple:
    return outputs.high_sigmas, outputs.low_sigmas


def test_comfyui_split_sigmas_prompt_translates_and_runs(ex):
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "20": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "21": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "normal", "steps": STEPS,
                                                          "denoise": 1.0}},
        "22": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["21", 0], "step": 3}},
        "23": {"class_type": "SamplerCustom", "inputs": {"model": ["4", 0], "add_noise": True, "noise_seed": 3, "cfg": 7.5,
                                                         "positive": ["6", 0], "negative": ["7", 0], "sampler": ["20", 0],
                                                         "sigmas": ["22", 0], "latent_image": ["5", 0]}},
        "24": {"class_type": "SamplerCustom", "inputs": {"model": ["4", 0], "add_noise": False, "noise_seed": 0, "cfg": 7.5,
                                                         "positive": ["6", 0], "negative": ["7", 0], "sampler": ["20", 0],
                                                         "sigmas": ["22", 1], "latent_image": ["23", 0]}},
    }
    ours = prompt_to_workflow(prompt, Registry.default())
    assert ours["nodes"]["24"]["inputs"]["sigmas"] == L("22", "low_sigmas")
    result = ex.run(ours, targets=["24"])
    assert torch.allclose(output_of(ex, result, "24", "latent").samples, _sample(ex), atol=1e-5)
