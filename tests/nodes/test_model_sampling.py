"""ModelSamplingDiscrete (nodes/unet_patches.py): what the model predicts and zero terminal SNR, checked against the
loader's own prediction override and against diffusers' pipeline with a zero-terminal-SNR scheduler."""

from __future__ import annotations

import pytest
import torch

from engine.compat.comfy import ComfyTranslationError, prompt_to_workflow
from engine.registry import Registry
from tests.nodes.sd_helpers import L, executor, gen, output_of, txt2img_nodes, wf


def _patched(sampling: str, zsnr: bool = False, **sample) -> dict:
    nodes = txt2img_nodes("tiny-sd15", steps=6, seed=4, **sample)
    nodes["ms"] = {"type": "ModelSamplingDiscrete", "inputs": {"unet": L("ckpt", "unet"), "sampling": sampling, "zsnr": zsnr}}
    nodes["sample"]["inputs"]["unet"] = L("ms", "unet")
    return nodes


def test_v_prediction_equals_the_loaders_override(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    patched = output_of(ex, ex.run(wf(_patched("v_prediction")), targets=["sample"]), "sample", "latent").samples
    nodes = txt2img_nodes("tiny-sd15", steps=6, seed=4)
    nodes["ckpt"]["inputs"]["prediction_type"] = "v_prediction"
    loaded = output_of(ex, ex.run(wf(nodes), targets=["sample"]), "sample", "latent").samples
    plain = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", steps=6, seed=4)), targets=["sample"]), "sample", "latent")
    assert torch.equal(patched, loaded)
    assert (patched - plain.samples).abs().max() > 1e-3


@pytest.mark.parametrize("scheduler,diffusers_class", [("euler", "EulerDiscreteScheduler"), ("ddim", "DDIMScheduler")])
def test_zero_terminal_snr_equals_diffusers_pipeline(models_dir, tmp_path, scheduler, diffusers_class):
    """v-prediction + zsnr: diffusers' rescale_betas_zero_snr with trailing timesteps (Lin et al. 2023), so the
    first step starts at the last timestep (pure noise)."""
    import diffusers

    from nodes.sd import loading

    ex = executor(models_dir, tmp_path)
    ours = output_of(ex, ex.run(wf(_patched("v_prediction", zsnr=True, scheduler=scheduler))), "dec", "image")
    ck = loading.load_checkpoint(models_dir / "checkpoints" / "tiny-sd15")
    config = dict(ck.scheduler_config, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                  timestep_spacing="trailing")
    sched = getattr(diffusers, diffusers_class).from_config(config)
    pipe = ck.pipeline(sched)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a red circle", negative_prompt="", height=64, width=64, num_inference_steps=6, guidance_scale=7.5,
               generator=gen(4), output_type="np").images
    assert (torch.from_numpy(ref) - ours).abs().max().item() <= 1e-5
    sched.set_timesteps(6)
    assert int(sched.timesteps[0]) == 999


def test_schedulers_without_zero_snr_are_refused_by_name(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    result = ex.run(wf(_patched("v_prediction", zsnr=True, scheduler="heun")))
    assert result.status == "error" and result.error["node_id"] == "sample"
    assert "'heun' cannot sample a zero-terminal-SNR model" in result.error["message"] and "euler" in result.error["message"]


def test_comfyui_class_translates():
    prompt = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15"}},
              "9": {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["4", 0], "sampling": "v_prediction",
                                                                      "zsnr": True}}}
    node = prompt_to_workflow(prompt, Registry.default())["nodes"]["9"]
    assert node["type"] == "ModelSamplingDiscrete"
    assert node["inputs"] == {"unet": L("4", "unet"), "sampling": "v_prediction", "zsnr": True}
    prompt["9"]["inputs"]["sampling"] = "img_to_img"
    with pytest.raises(ComfyTranslationError, match="node 9: .*'img_to_img'"):
        prompt_to_workflow(prompt, Registry.default())
