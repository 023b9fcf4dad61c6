"""SD2 / SDXL inpainting and the SDXL refiner through the nodes equal diffusers' pipelines exactly (fp32, CPU,
tiny random models), and the base -> refiner hand-over (ComfyUI's two-stage SDXL workflow) equals diffusers'
``denoising_end`` / ``denoising_start`` ensemble of experts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from tests import tiny_models
from tests.nodes.sd_helpers import (
    L,
    executor,
    gen,
    output_of,
    reference_pipeline,
    txt2img_nodes,
    wf,
    with_source,
)

REPO = Path(__file__).resolve().parents[2]
def _max_diff(ref, ours: torch.Tensor) -> float:
    return (torch.from_numpy(ref) - ours).abs().max().item()


def _inpaint_nodes(ckpt: str, steps: int) -> dict:
    nodes = txt2img_nodes(ckpt, steps=steps)
    nodes["src"] = {"type": "TestImageSource"}
    nodes["enc"] = {"type": "VAEEncodeForInpaint", "inputs": {"vae": L("ckpt", "vae"), "image": L("src", "image"),
                                                              "mask": L("src", "mask")}}
    nodes["sample"]["inputs"]["latent"] = L("enc", "latent")
    return nodes


def _inpaint_parity(models_dir: Path, tmp_path: Path, ckpt: str, arch: str, pipeline: str, **extra) -> float:
    ex = executor(models_dir, tmp_path)
    image = torch.rand(1, 64, 64, 3, generator=gen(5))
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 20:44] = 1.0
    with_source(ex, image=image, mask=mask)
    result = ex.run(wf(_inpaint_nodes(ckpt, 6)))
    ours = output_of(ex, result, "dec", "image")
    latent = output_of(ex, result, "enc", "latent")
    assert result.nodes["ckpt"].status == "success"
    unet = output_of(ex, result, "ckpt", "unet")
    assert (unet.arch, unet.in_channels) == (arch, 9)
    pipe = reference_pipeline(models_dir / "checkpoints" / ckpt, "euler", 6)
    assert type(pipe).__name__ == pipeline
    # the pipeline would draw the masked image's latents from the posterior; ours are its mode, so pass them in
    ref = pipe("a red circle", image=image.permute(0, 3, 1, 2), mask_image=mask[:, None],
               masked_image_latents=latent.inpaint[:, 1:], negative_prompt="", height=64, width=64,
               num_inference_steps=6, guidance_scale=7.5, generator=gen(42), output_type="np", **extra).images
    assert ours.shape == (1, 64, 64, 3)
    return _max_diff(ref, ours)


def test_sd2_inpainting_equals_pipeline(sd2_inpaint_models_dir, tmp_path):
    diff = _inpaint_parity(sd2_inpaint_models_dir, tmp_path, "tiny-sd2-inpaint", "sd2-inpaint",
                           "StableDiffusionInpaintPipeline")
    assert diff == 0.0


def test_sdxl_inpainting_equals_pipeline(sdxl_inpaint_models_dir, tmp_path):
    # StableDiffusionXLInpaintPipeline defaults to strength 0.9999 (noising the image); full strength is ours
    diff = _inpaint_parity(sdxl_inpaint_models_dir, tmp_path, "tiny-sdxl-inpaint", "sdxl-inpaint",
                           "StableDiffusionXLInpaintPipeline", strength=1.0)
    assert diff == 0.0


def _refiner_img2img_nodes(steps: int, denoise: float) -> dict:
    nodes = txt2img_nodes("tiny-sdxl-refiner", steps=steps)
    del nodes["lat"]
    nodes["src"] = {"type": "TestImageSource"}
    nodes["enc"] = {"type": "VAEEncode", "inputs": {"vae": L("ckpt", "vae"), "image": L("src", "image")}}
    nodes["sample"]["inputs"].update(latent=L("enc", "latent"), denoise=denoise)
    return nodes


def test_refiner_img2img_equals_pipeline(refiner_models_dir, tmp_path):
    ex = executor(refiner_models_dir, tmp_path)
    with_source(ex, image=torch.rand(1, 64, 64, 3, generator=gen(3)))
    result = ex.run(wf(_refiner_img2img_nodes(10, 0.3)))
    ours = output_of(ex, result, "dec", "image")
    latents = output_of(ex, result, "enc", "latent").samples
    unet = output_of(ex, result, "ckpt", "unet")
    te = output_of(ex, result, "ckpt", "text_encoder")
    assert (unet.arch, unet.family, len(te.encoders)) == ("sdxl-refiner", "sdxl-refiner", 1)
    assert output_of(ex, result, "ckpt", "vae").family == "sdxl"  # the base's latent space
    cond = output_of(ex, result, "pos", "conditioning")
    assert cond.embeds.shape == (1, 77, 64) and cond.pooled.shape == (1, 64)  # penultimate layer + pooled G
    pipe = reference_pipeline(refiner_models_dir / "checkpoints" / "tiny-sdxl-refiner", "euler", 10)
    assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline" and pipe.config.requires_aesthetics_score
    ref = pipe("a red circle", image=latents, negative_prompt="", strength=0.3, num_inference_steps=10,
               guidance_scale=7.5, generator=gen(42), output_type="np").images
    assert _max_diff(ref, ours) == 0.0


def test_refiner_size_and_aesthetic_conditioning_equals_pipeline(refiner_models_dir, tmp_path):
    ex = executor(refiner_models_dir, tmp_path)
    with_source(ex, image=torch.rand(1, 64, 64, 3, generator=gen(4)))
    nodes = _refiner_img2img_nodes(8, 0.5)
    for side, score in (("pos", 7.5), ("neg", 1.5)):
        nodes[f"{side}_size"] = {"type": "SDXLSizeConditioning", "inputs": {
            "conditioning": L(side, "conditioning"), "original_width": 96, "original_height": 80,
            "crop_left": 4, "crop_top": 8, "aesthetic_score": score}}
    nodes["sample"]["inputs"].update(positive=L("pos_size", "conditioning"), negative=L("neg_size", "conditioning"))
    result = ex.run(wf(nodes))
    ours = output_of(ex, result, "dec", "image")
    latents = output_of(ex, result, "enc", "latent").samples
    pipe = reference_pipeline(refiner_models_dir / "checkpoints" / "tiny-sdxl-refiner", "euler", 8)
    kwargs = {"image": latents, "negative_prompt": "", "strength": 0.5, "num_inference_steps": 8, "guidance_scale": 7.5,
              "output_type": "np", "original_size": (80, 96), "crops_coords_top_left": (8, 4),
              "negative_original_size": (80, 96), "negative_crops_coords_top_left": (8, 4)}
    ref = pipe("a red circle", aesthetic_score=7.5, negative_aesthetic_score=1.5, generator=gen(42), **kwargs).images
    assert _max_diff(ref, ours) == 0.0
    default = pipe("a red circle", generator=gen(42), **kwargs).images  # 6.0 / 2.5: the score matters
    assert _max_diff(default, ours) > 1e-4


def _handoff_nodes(steps: int, switch: int) -> dict:
    nodes = txt2img_nodes("tiny-sdxl", steps=steps)
    nodes["sample"]["inputs"]["end_step"] = switch
    nodes["refiner"] = {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sdxl-refiner"}}
    nodes["rpos"] = {"type": "EncodeText", "inputs": {"text_encoder": L("refiner", "text_encoder"), "text": "a red circle"}}
    nodes["rneg"] = {"type": "EncodeText", "inputs": {"text_encoder": L("refiner", "text_encoder"), "text": ""}}
    nodes["refine"] = {"type": "Sample", "inputs": {
        "unet": L("refiner", "unet"), "positive": L("rpos", "conditioning"), "negative": L("rneg", "conditioning"),
        "latent": L("sample", "latent"), "seed": 42, "steps": steps, "cfg": 7.5, "scheduler": "euler",
        "start_step": switch, "add_noise": False}}
    nodes["dec"]["inputs"].update(vae=L("refiner", "vae"), latent=L("refine", "latent"))
    return nodes


def test_base_to_refiner_handoff_equals_diffusers_ensemble_of_experts(refiner_models_dir, tmp_path):
    """Sample(end_step) on the base, then Sample(start_step, add_noise off) on the refiner: ComfyUI's two-stage
    workflow, and the same as diffusers' base(denoising_end=0.7) -> refiner(denoising_start=0.7)."""
    ex = executor(refiner_models_dir, tmp_path)
    result = ex.run(wf(_handoff_nodes(10, 7)))
    ours = output_of(ex, result, "dec", "image")
    assert ours.shape == (1, 64, 64, 3) and torch.isfinite(ours).all()
    partial = output_of(ex, result, "sample", "latent").samples
    refined = output_of(ex, result, "refine", "latent").samples
    assert (refined - partial).abs().max().item() > 1e-3  # the refiner did the last 3 steps
    ckpts = refiner_models_dir / "checkpoints"
    base = reference_pipeline(ckpts / "tiny-sdxl", "euler", 10)
    refiner = reference_pipeline(ckpts / "tiny-sdxl-refiner", "euler", 10)
    latents = base("a red circle", negative_prompt="", height=64, width=64, num_inference_steps=10, guidance_scale=7.5,
                   denoising_end=0.7, generator=gen(42), output_type="latent").images
    assert (latents - partial).abs().max().item() == 0.0
    ref = refiner("a red circle", image=latents, negative_prompt="", num_inference_steps=10, guidance_scale=7.5,
                  denoising_start=0.7, generator=gen(42), output_type="np").images
    assert _max_diff(ref, ours) == 0.0


def test_base_conditioning_on_the_refiner_is_named(refiner_models_dir, tmp_path):
    ex = executor(refiner_models_dir, tmp_path)
    nodes = _handoff_nodes(4, 2)
    nodes["refine"]["inputs"]["positive"] = L("pos", "conditioning")  # CLIP-L + G conditioning from the base
    result = ex.run(wf(nodes))
    assert result.status == "error" and result.error["node_id"] == "refine"
    assert "made for SDXL but the UNet is SDXL refiner" in result.error["message"]


def test_shipped_refiner_workflow_validates_and_runs(refiner_models_dir, tmp_path):
    """workflows/sdxl-refiner.json with tiny single-file stand-ins under the real file names."""
    data = json.loads((REPO / "workflows" / "sdxl-refiner.json").read_text())
    names = {n["inputs"]["name"] for n in data["nodes"].values() if n["type"] == "LoadCheckpoint"}
    assert names == {"sd_xl_base_1.0.safetensors", "sd_xl_refiner_1.0.safetensors"}
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    tiny_models.make_tiny_single_file(root / "checkpoints" / "sd_xl_base_1.0.safetensors", "sdxl")
    tiny_models.make_tiny_single_file(root / "checkpoints" / "sd_xl_refiner_1.0.safetensors", "sdxl-refiner")
    ex = executor(root, tmp_path / "out")
    _, errors = ex.validate(data)
    assert errors == []
    samplers = [n for n in data["nodes"].values() if n["type"] == "Sample"]
    base, refine = sorted(samplers, key=lambda n: n["inputs"].get("start_step", 0))
    assert base["inputs"]["end_step"] == refine["inputs"]["start_step"] and refine["inputs"]["add_noise"] is False
    for n in data["nodes"].values():  # small and short for the test: 64x64, 4 steps, hand over after 3
        if n["type"] == "EmptyLatent":
            n["inputs"].update(width=64, height=64)
    base["inputs"].update(steps=4, end_step=3)
    refine["inputs"].update(steps=4, start_step=3)
    shutil.copytree(REPO / "workflows" / "input", tmp_path / "out" / "input")
    result = ex.run(data)
    assert result.status == "success", result.error
    assert any(ui.images for ui in result.ui.values())
