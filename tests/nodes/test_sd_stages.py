"""Stable Diffusion stage nodes equal diffusers' pipelines exactly (fp32, CPU, tiny random models)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.nodes.sd_helpers import L, executor, gen, loop_nodes, output_of, reference_pipeline, txt2img_nodes, wf, with_source

TOL = 1e-6


@pytest.mark.parametrize("scheduler", ["euler", "euler_a", "dpmpp_2m", "ddim", "pndm"])
def test_txt2img_sample_equals_pipeline(models_dir, tmp_path, scheduler):
    ex = executor(models_dir, tmp_path)
    result = ex.run(wf(txt2img_nodes("tiny-sd15", scheduler=scheduler, steps=6)))
    ours = output_of(ex, result, "dec", "image")
    pipe = reference_pipeline(models_dir / "checkpoints" / "tiny-sd15", scheduler, 6)
    ref = pipe("a red circle", negative_prompt="", height=64, width=64, num_inference_steps=6, guidance_scale=7.5,
               generator=gen(42), output_type="np").images
    assert ours.shape == (1, 64, 64, 3)
    assert (torch.from_numpy(ref) - ours).abs().max().item() <= TOL


@pytest.mark.parametrize("scheduler", ["euler", "euler_a", "dpmpp_2m"])
def test_open_loop_equals_sample(models_dir, tmp_path, scheduler):
    ex = executor(models_dir, tmp_path)
    a = ex.run(wf(txt2img_nodes("tiny-sd15", scheduler=scheduler, steps=5)))
    b = ex.run(wf(loop_nodes("tiny-sd15", scheduler=scheduler, steps=5)))
    assert b.status == "success", b.error
    assert torch.equal(output_of(ex, a, "dec", "image"), output_of(ex, b, "dec", "image"))
    assert b.nodes["loop"].status == "success"


def test_loop_body_is_editable(models_dir, tmp_path):
    """A body with guidance at cfg 1 inside equals a Sample at cfg 1: the body really drives the loop."""
    from nodes.sampling import DEFAULT_DENOISE_BODY

    body = copy.deepcopy(DEFAULT_DENOISE_BODY)
    body["nodes"]["guide"]["inputs"]["cfg"] = 3.0
    ex = executor(models_dir, tmp_path)
    edited = ex.run(wf(loop_nodes("tiny-sd15", steps=4, body=body)))
    plain = ex.run(wf(txt2img_nodes("tiny-sd15", steps=4, cfg=3.0)))
    default = ex.run(wf(loop_nodes("tiny-sd15", steps=4)))
    img_edit = output_of(ex, edited, "dec", "image")
    assert torch.equal(img_edit, output_of(ex, plain, "dec", "image"))
    assert not torch.equal(img_edit, output_of(ex, default, "dec", "image"))


def test_seed_is_deterministic_and_matters(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    a = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", seed=1, steps=3))), "dec", "image")
    ex.cache.clear()
    b = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", seed=1, steps=3))), "dec", "image")
    c = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", seed=2, steps=3))), "dec", "image")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_img2img_equals_pipeline(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    nodes = txt2img_nodes("tiny-sd15", steps=10)
    image = torch.rand(1, 64, 64, 3, generator=gen(3))
    nodes["enc"] = {"type": "VAEEncode", "inputs": {"vae": L("ckpt", "vae"), "image": L("img", "image")}}
    nodes["img"] = {"type": "TestImageSource", "inputs": {}}
    nodes["sample"]["inputs"].update(latent=L("enc", "latent"), denoise=0.6)
    with_source(ex, image=image)
    result = ex.run(wf(nodes))
    ours = output_of(ex, result, "dec", "image")
    latents = output_of(ex, result, "enc", "latent").samples
    pipe = reference_pipeline(models_dir / "checkpoints" / "tiny-sd15", "euler", 10, "StableDiffusionImg2ImgPipeline")
    ref = pipe("a red circle", image=latents, negative_prompt="", strength=0.6, num_inference_steps=10,
               guidance_scale=7.5, generator=gen(42), output_type="np").images
    assert (torch.from_numpy(ref) - ours).abs().max().item() <= TOL


def test_sdxl_txt2img_equals_pipeline(sdxl_models_dir, tmp_path):
    ex = executor(sdxl_models_dir, tmp_path)
    result = ex.run(wf(txt2img_nodes("tiny-sdxl", steps=5, scheduler="euler")))
    ours = output_of(ex, result, "dec", "image")
    pipe = reference_pipeline(sdxl_models_dir / "checkpoints" / "tiny-sdxl", "euler", 5)
    ref = pipe("a red circle", negative_prompt="", height=64, width=64, num_inference_steps=5, guidance_scale=7.5,
               generator=gen(42), output_type="np").images
    assert (torch.from_numpy(ref) - ours).abs().max().item() <= TOL


def test_inpainting_unet_equals_pipeline(inpaint_models_dir, tmp_path):
    ex = executor(inpaint_models_dir, tmp_path)
    image = torch.rand(1, 64, 64, 3, generator=gen(5))
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 20:44] = 1.0
    with_source(ex, image=image, mask=mask)
    nodes = txt2img_nodes("tiny-inpaint", steps=6)
    nodes["src"] = {"type": "TestImageSource"}
    nodes["enc"] = {"type": "VAEEncodeForInpaint", "inputs": {"vae": L("ckpt", "vae"), "image": L("src", "image"), "mask": L("src", "mask")}}
    nodes["sample"]["inputs"]["latent"] = L("enc", "latent")
    result = ex.run(wf(nodes))
    ours = output_of(ex, result, "dec", "image")
    latent = output_of(ex, result, "enc", "latent")
    pipe = reference_pipeline(inpaint_models_dir / "checkpoints" / "tiny-inpaint", "euler", 6, "StableDiffusionInpaintPipeline")
    ref = pipe("a red circle", image=image.permute(0, 3, 1, 2), mask_image=mask[:, None],
               masked_image_latents=latent.inpaint[:, 1:], negative_prompt="", height=64, width=64,
               num_inference_steps=6, guidance_scale=7.5, generator=gen(42), output_type="np").images
    assert (torch.from_numpy(ref) - ours).abs().max().item() <= TOL


def test_regular_unet_inpainting_keeps_unmasked_area(models_dir, tmp_path):
    """Noise-mask blending: outside the mask the result stays the encoded original's decode."""
    ex = executor(models_dir, tmp_path)
    image = torch.rand(1, 64, 64, 3, generator=gen(7))
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0
    with_source(ex, image=image, mask=mask)
    nodes = txt2img_nodes("tiny-sd15", steps=5)
    nodes["src"] = {"type": "TestImageSource"}
    nodes["enc"] = {"type": "VAEEncode", "inputs": {"vae": L("ckpt", "vae"), "image": L("src", "image")}}
    nodes["masked"] = {"type": "SetLatentNoiseMask", "inputs": {"latent": L("enc", "latent"), "mask": L("src", "mask")}}
    nodes["sample"]["inputs"]["latent"] = L("masked", "latent")
    result = ex.run(wf(nodes))
    out_lat = output_of(ex, result, "sample", "latent").samples
    enc_lat = output_of(ex, result, "enc", "latent").samples
    keep = out_lat[..., 4:] - enc_lat[..., 4:]  # latent columns right of the mask (mask covers x < 32 px = 4 latents)
    assert keep.abs().max().item() <= 1e-6
    assert (out_lat[..., :4] - enc_lat[..., :4]).abs().max().item() > 1e-3


def test_single_file_equals_folder(models_dir, tmp_path):
    from nodes.sd import ldm_convert, loading

    folder = models_dir / "checkpoints" / "tiny-sd15"
    ck = loading.load_checkpoint(folder)
    single = models_dir / "checkpoints" / "tiny-sd15-single.safetensors"
    if not single.exists():
        ldm_convert.save_single_file(single, ck.unet, ck.vae, ck.text_encoders, "sd15", scheduler_config=ck.scheduler_config)
    ex = executor(models_dir, tmp_path)
    a = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", steps=4))), "dec", "image")
    b = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15-single.safetensors", steps=4))), "dec", "image")
    assert torch.equal(a, b)


def test_saved_png_decodes_and_embeds_workflow(models_dir, tmp_path):
    from PIL import Image

    ex = executor(models_dir, tmp_path)
    result = ex.run(wf(txt2img_nodes("tiny-sd15", steps=2)))
    paths = result.output_paths(ex.settings)["save"]
    with Image.open(paths[0]) as im:
        assert im.size == (64, 64)
        assert "LoadCheckpoint" in im.text["workflow"]
        arr = np.asarray(im)
    assert arr.std() > 0  # a picture, not a flat fill


def test_family_mismatch_is_named(sdxl_models_dir, tmp_path):
    ex = executor(sdxl_models_dir, tmp_path)
    nodes = txt2img_nodes("tiny-sd15", steps=2)
    nodes["xl"] = {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sdxl"}}
    nodes["dec"]["inputs"]["vae"] = L("xl", "vae")
    result = ex.run(wf(nodes))
    assert result.status == "error"
    assert result.error["node_id"] == "dec"
    assert "SD 1.x" in result.error["message"] and "SDXL" in result.error["message"]


def test_width_not_multiple_of_8_fails_validation(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    nodes = txt2img_nodes("tiny-sd15")
    nodes["lat"]["inputs"]["width"] = 60
    result = ex.run(wf(nodes))
    assert result.status == "invalid"
    err = result.error["errors"][0]
    assert (err["node_id"], err["input"]) == ("lat", "width")
    assert "multiple of 8" in err["message"]


def test_missing_checkpoint_lists_folder(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    graph, errors = ex.validate(wf(txt2img_nodes("nope")))
    assert errors and errors[0].code == "not_in_choices" and "tiny-sd15" in errors[0].message


def test_long_prompt_uses_several_windows(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    long_prompt = ", ".join(["a red circle on a blue background"] * 15)
    nodes = txt2img_nodes("tiny-sd15", prompt=long_prompt, steps=2)
    result = ex.run(wf(nodes))
    cond = output_of(ex, result, "pos", "conditioning")
    assert cond.embeds.shape[1] == 77 * 2


def test_prompt_weights_change_only_weighted_prompts(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    plain = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", prompt="a red circle", steps=1))), "pos", "conditioning")
    unit = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", prompt="a (red:1.0) circle", steps=1))), "pos", "conditioning")
    heavy = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", prompt="a (red:1.5) circle", steps=1))), "pos", "conditioning")
    assert torch.allclose(plain.embeds, unit.embeds, atol=1e-6)
    assert not torch.allclose(plain.embeds, heavy.embeds, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# SDXL with a prompt per text encoder (diffusers' prompt_2, ComfyUI's CLIPTextEncodeSDXL)
# ---------------------------------------------------------------------------------------------------------------


def _two_prompt_nodes(text_l: str, text_g: str, **sizes) -> dict:
    nodes = txt2img_nodes("tiny-sdxl", steps=4, scheduler="euler")
    nodes["pos"] = {"type": "EncodeTextSDXL", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text_l": text_l,
                                                         "text_g": text_g, **sizes}}
    return nodes


def test_sdxl_prompt_per_encoder_equals_pipeline_prompt_2(sdxl_models_dir, tmp_path):
    ex = executor(sdxl_models_dir, tmp_path)
    ours = output_of(ex, ex.run(wf(_two_prompt_nodes("a red circle", "a blue square"))), "dec", "image")
    pipe = reference_pipeline(sdxl_models_dir / "checkpoints" / "tiny-sdxl", "euler", 4)
    kwargs = dict(negative_prompt="", height=64, width=64, num_inference_steps=4, guidance_scale=7.5, output_type="np")
    ref = pipe("a red circle", prompt_2="a blue square", generator=gen(42), **kwargs).images
    assert (torch.from_numpy(ref) - ours).abs().max().item() <= TOL
    one = pipe("a red circle", generator=gen(42), **kwargs).images
    assert np.abs(one - ref).max() > 1e-3  # the second prompt really went to the second encoder
    same = output_of(ex, ex.run(wf(_two_prompt_nodes("", "a red circle"))), "dec", "image")
    assert (torch.from_numpy(one) - same).abs().max().item() <= TOL  # empty text_l: text_g for both


def test_comfy_clip_text_encode_sdxl_translates_and_runs(sdxl_models_dir, tmp_path):
    from engine.compat.comfy import prompt_to_workflow

    ex = executor(sdxl_models_dir, tmp_path)
    sizes = {"width": 96, "height": 80, "crop_w": 8, "crop_h": 4, "target_width": 64, "target_height": 64}
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sdxl"}},
        "2": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"clip": ["1", 1], "text_g": "a blue square",
                                                             "text_l": "a red circle", **sizes}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                    "latent_image": ["4", 0], "seed": 42, "steps": 4, "cfg": 7.5,
                                                    "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "sdxl"}},
    }
    got = ex.run(prompt_to_workflow(prompt))
    comfy = output_of(ex, got, "6", "image")
    native = _two_prompt_nodes("a red circle", "a blue square", original_width=96, original_height=80, crop_left=8,
                               crop_top=4, target_width=64, target_height=64)
    assert torch.equal(comfy, output_of(ex, ex.run(wf(native)), "dec", "image"))
    plain = output_of(ex, ex.run(wf(_two_prompt_nodes("a red circle", "a blue square"))), "dec", "image")
    assert not torch.equal(comfy, plain)  # the sizes reached the time ids
    refiner = prompt_to_workflow({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "r"}},
                                  "2": {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
                                      "clip": ["1", 1], "text": "a cat", "ascore": 2.5, "width": 1024, "height": 768}}})
    assert refiner["nodes"]["2"]["type"] == "EncodeTextSDXL"
    assert {k: v for k, v in refiner["nodes"]["2"]["inputs"].items() if k != "text_encoder"} == {
        "text_g": "a cat", "aesthetic_score": 2.5, "original_width": 1024, "original_height": 768}


def test_prompt_per_encoder_needs_sdxl(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    nodes = txt2img_nodes("tiny-sd15", steps=1)
    nodes["pos"] = {"type": "EncodeTextSDXL", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text_g": "a"}}
    result = ex.run(wf(nodes))
    assert result.status == "error" and result.error["node_id"] == "pos"
    assert "use EncodeText" in result.error["message"], result.error


def test_sdxl_vae_runs_in_fp32_under_fp16(sdxl_models_dir, tmp_path, own_models):
    """diffusers' SDXL pipelines upcast a `force_upcast` VAE under fp16 (the stock SDXL VAE overflows to NaN in
    fp16): our encode and decode run it in fp32 too, while the UNet runs in fp16."""
    ex = executor(sdxl_models_dir, tmp_path)
    ex.settings.dtype = "fp16"
    nodes = txt2img_nodes("tiny-sdxl", steps=2)
    nodes["enc"] = {"type": "VAEEncode", "inputs": {"vae": L("ckpt", "vae"), "image": L("dec", "image")}}
    result = ex.run(wf(nodes), targets=["enc", "save"])
    handles = ex.cache.peek(result.signatures["ckpt"])
    seen: list = []
    hook = handles["vae"].model.register_forward_pre_hook(lambda m, args: seen.append(next(m.parameters()).dtype))
    unet_seen: list = []
    uhook = handles["unet"].model.register_forward_pre_hook(lambda m, args: unet_seen.append(next(m.parameters()).dtype))
    try:
        for fn in ("decode", "encode"):  # diffusers' AutoencoderKL runs these without forward(): wrap them
            orig = getattr(handles["vae"].model, fn)
            setattr(handles["vae"].model, fn, lambda *a, _o=orig, **k: seen.append(next(handles["vae"].model.parameters()).dtype) or _o(*a, **k))
        ex.cache.clear()
        result = ex.run(wf(nodes), targets=["enc", "save"])
    finally:
        hook.remove()
        uhook.remove()
        for fn in ("decode", "encode"):
            handles["vae"].model.__dict__.pop(fn, None)
    assert result.status == "success", result.error
    assert seen and set(seen) == {torch.float32}, seen
    assert unet_seen and set(unet_seen) == {torch.float16}, unet_seen
    image = output_of(ex, result, "dec", "image")
    assert torch.isfinite(image).all() and image.dtype == torch.float32


@pytest.mark.parametrize("arch,scheduler", [("tiny-sd15", "euler"), ("tiny-sd15", "dpmpp_2m"), ("tiny-sdxl", "euler_a")])
def test_fp16_equals_pipeline_in_fp16(arch, scheduler, sdxl_models_dir, tmp_path, own_models):
    """The GPU default is fp16: the same stages in fp16 (run here on the CPU) equal diffusers' fp16 pipeline.
    SD 1.x: the decoded image, exactly. SDXL: the sampled latents, exactly (the pipeline decodes with its VAE
    rounded to fp16 and upcast; ours keeps the fp32 weights for its fp32 decode, closer to the model)."""
    ex = executor(sdxl_models_dir, tmp_path)
    ex.settings.dtype = "fp16"
    result = ex.run(wf(txt2img_nodes(arch, steps=5, scheduler=scheduler)))
    pipe = reference_pipeline(sdxl_models_dir / "checkpoints" / arch, scheduler, 5).to(torch.float16)
    kwargs = dict(negative_prompt="", height=64, width=64, num_inference_steps=5, guidance_scale=7.5, generator=gen(42))
    if arch == "tiny-sd15":
        ref = pipe("a red circle", output_type="np", **kwargs).images
        assert (torch.from_numpy(ref) - output_of(ex, result, "dec", "image")).abs().max().item() == 0.0
    else:
        ref = pipe("a red circle", output_type="latent", **kwargs).images
        ours = output_of(ex, result, "sample", "latent").samples
        assert ours.dtype == torch.float16 and torch.equal(ref.cpu(), ours)
        assert torch.isfinite(output_of(ex, result, "dec", "image")).all()


# ---------------------------------------------------------------------------------------------------------------
# Combined and step-limited conditioning (ComfyUI's ConditioningCombine / ConditioningSetTimestepRange)
# ---------------------------------------------------------------------------------------------------------------


def _combined_nodes(pos_a: dict, pos_b: dict | None = None, ranges: tuple | None = None, steps: int = 6) -> dict:
    nodes = txt2img_nodes("tiny-sd15", steps=steps, scheduler="euler")
    nodes["a"] = {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), **pos_a}}
    nodes["b"] = {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), **(pos_b or pos_a)}}
    first, second = L("a", "conditioning"), L("b", "conditioning")
    if ranges is not None:
        nodes["ra"] = {"type": "ConditioningSetTimestepRange", "inputs": {"conditioning": first, "start": ranges[0][0], "end": ranges[0][1]}}
        nodes["rb"] = {"type": "ConditioningSetTimestepRange", "inputs": {"conditioning": second, "start": ranges[1][0], "end": ranges[1][1]}}
        first, second = L("ra", "conditioning"), L("rb", "conditioning")
    nodes["both"] = {"type": "ConditioningCombine", "inputs": {"conditioning_1": first, "conditioning_2": second}}
    nodes["sample"]["inputs"]["positive"] = L("both", "conditioning")
    return nodes


def test_combining_a_prompt_with_itself_changes_nothing(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    plain = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", steps=6, scheduler="euler"))), "dec", "image")
    both = output_of(ex, ex.run(wf(_combined_nodes({"text": "a red circle"}))), "dec", "image")
    assert (plain - both).abs().max().item() <= 1e-5  # predicted one by one instead of in one batch


@pytest.mark.parametrize("sigmas", ["default", "karras"])
def test_timestep_ranges_switch_prompts_part_way_by_noise_level(models_dir, tmp_path, sigmas):
    """A for the first half, B for the second: the same as sampling A's steps, then handing the latent to a second
    sampler on B (start/end steps, no added noise). The half is ComfyUI's: timestep 499.5 (50 % of the noise
    levels), which these 6 steps pass after their 2nd step with either spacing (leading: 831, 665, 499, ...), where a
    rule by step fractions would switch after 3."""
    from nodes.sd.loading import load_checkpoint
    from nodes.sd.schedulers import make_spec, set_timesteps

    ck = load_checkpoint(models_dir / "checkpoints" / "tiny-sd15")
    _, timesteps, _ = set_timesteps(make_spec("euler", ck.scheduler_config, 6, sigmas=sigmas), torch.device("cpu"))
    switch = int((timesteps >= 499.5).sum())
    assert switch == 2, timesteps
    ex = executor(models_dir, tmp_path)
    nodes = _combined_nodes({"text": "a red circle"}, {"text": "a blue square"}, ranges=((0.0, 0.5), (0.5, 1.0)))
    nodes["sample"]["inputs"]["sigmas"] = sigmas
    switched = output_of(ex, ex.run(wf(nodes)), "dec", "image")
    handed = {}
    for at in (switch, 3):
        nodes = txt2img_nodes("tiny-sd15", steps=6, scheduler="euler")
        nodes["sample"]["inputs"].update(sigmas=sigmas, end_step=at)
        nodes["b"] = {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text": "a blue square"}}
        nodes["second"] = {"type": "Sample", "inputs": {**nodes["sample"]["inputs"], "positive": L("b", "conditioning"),
                                                        "latent": L("sample", "latent"), "start_step": at,
                                                        "end_step": 10000, "add_noise": False}}
        nodes["dec"]["inputs"]["latent"] = L("second", "latent")
        handed[at] = output_of(ex, ex.run(wf(nodes)), "dec", "image")
    assert (switched - handed[switch]).abs().max().item() <= 1e-4
    assert (switched - handed[3]).abs().max().item() > 1e-3
    only_a = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", steps=6, scheduler="euler"))), "dec", "image")
    assert (switched - only_a).abs().max().item() > 1e-3  # B really took over


def test_timestep_range_checks_its_order(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    result = ex.run(wf(_combined_nodes({"text": "a"}, ranges=((0.6, 0.2), (0.0, 1.0)))))
    assert result.status == "error" and result.error["node_id"] == "ra" and "before start" in result.error["message"]


def _two_prompts_at_step0(models_dir, tmp_path, width: int, seed: int):
    """(unet, conditioning A, conditioning B, sampler state, starting latents, devices) for stage-level checks."""
    from nodes.sd.denoise import prepare
    from nodes.sd.handles import NoiseSpec
    from nodes.sd.schedulers import make_spec

    ex = executor(models_dir, tmp_path)
    nodes = {"ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd15"}},
             "a": {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text": "a red circle"}},
             "b": {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text": "a blue square"}},
             "lat": {"type": "EmptyLatent", "inputs": {"width": width, "height": 64, "vae": L("ckpt", "vae")}}}
    r = ex.run(wf(nodes), targets=["a", "b", "lat"])
    assert r.status == "success", r.error
    unet = ex.cache.peek(r.signatures["ckpt"])["unet"]
    a, b = (ex.cache.peek(r.signatures[k])["conditioning"] for k in ("a", "b"))
    devices = ex.settings.devices()
    state, x = prepare(unet, ex.cache.peek(r.signatures["lat"])["latent"], NoiseSpec(seed),
                       make_spec("euler", unet.scheduler_config, 4), devices)
    return unet, a, b, state, x, devices


def test_masked_prompts_mix_their_predictions_per_pixel(models_dir, tmp_path):
    """Regional prompting: with complementary masks, each pixel's prediction is its own prompt's prediction, and
    strengths weight overlapping ones; a prompt without a mask counts everywhere."""
    from nodes import conditioning as C
    from nodes.sd.denoise import predict_noise

    unet, a, b, state, x, devices = _two_prompts_at_step0(models_dir, tmp_path, width=64, seed=5)
    t = state.timesteps[0]

    def eps(c):
        return predict_noise(unet, x, t, c, None, state, devices, guidance=False).cond

    left = torch.zeros(1, 64, 64)
    left[..., :32] = 1.0
    mixed = eps(C.conditioning_combine(C.conditioning_set_mask(a, left), C.conditioning_set_mask(b, 1 - left)))
    ea, eb = eps(a), eps(b)
    assert torch.allclose(mixed[..., :4], ea[..., :4], atol=1e-6) and torch.allclose(mixed[..., 4:], eb[..., 4:], atol=1e-6)
    weighted = eps(C.conditioning_combine(C.conditioning_set_mask(a, torch.ones(1, 64, 64), strength=3.0), b))
    assert torch.allclose(weighted, (3 * ea + eb) / 4, atol=1e-6)  # b has no mask: weight 1 everywhere


def test_area_prompts_see_their_part_of_the_latents(models_dir, tmp_path):
    """Side-by-side areas (no overlap): each latent pixel gets the prediction of the model run on its area alone
    (the edge fade only weights, and nothing else covers those pixels)."""
    from nodes import conditioning as C
    from nodes.sd.denoise import predict_noise

    unet, a, b, state, x, devices = _two_prompts_at_step0(models_dir, tmp_path, width=128, seed=6)
    t = state.timesteps[0]
    both = C.conditioning_combine(C.conditioning_set_area(a, width=64, height=64, x=0, y=0),
                                  C.conditioning_set_area(b, width=64, height=64, x=64, y=0))
    mixed = predict_noise(unet, x, t, both, None, state, devices, guidance=False).cond
    ea = predict_noise(unet, x[..., :8], t, a, None, state, devices, guidance=False).cond
    eb = predict_noise(unet, x[..., 8:], t, b, None, state, devices, guidance=False).cond
    assert torch.allclose(mixed[..., :8], ea, atol=1e-6) and torch.allclose(mixed[..., 8:], eb, atol=1e-6)
    whole = predict_noise(unet, x, t, a, None, state, devices, guidance=False).cond
    assert not torch.allclose(ea, whole[..., :8], atol=1e-4)  # the area really saw only its part


def test_mask_bounds_runs_the_model_on_the_box_around_the_mask(models_dir, tmp_path):
    """ComfyUI's set_cond_area "mask bounds": the masked prompt's model call sees the mask's bounding box (at least 8
    latent pixels), its prediction weighted by the mask there without the area fade; a mask of 2x3 latent pixels
    grows to an 8-pixel box, cut at the latents' edge."""
    from nodes import conditioning as C
    from nodes.sd.denoise import predict_noise

    unet, a, b, state, x, devices = _two_prompts_at_step0(models_dir, tmp_path, width=128, seed=7)
    t = state.timesteps[0]

    def eps(c, latents=x):
        return predict_noise(unet, latents, t, c, None, state, devices, guidance=False).cond

    right = torch.zeros(1, 64, 128)
    right[..., 64:] = 1.0  # latent columns 8..15, all 8 rows
    bounded = C.conditioning_set_mask(b, right, set_cond_area="mask bounds")
    mixed = eps(C.conditioning_combine(C.conditioning_set_mask(a, 1 - right), bounded))
    assert torch.allclose(mixed[..., 8:], eps(b, x[..., 8:]), atol=1e-6)  # the right half alone
    assert torch.allclose(mixed[..., :8], eps(a)[..., :8], atol=1e-6)
    assert not torch.allclose(eps(b, x[..., 8:]), eps(b)[..., 8:], atol=1e-4)  # not the whole-image prediction
    small = torch.zeros(1, 64, 128)
    small[:, 16:32, 96:120] = 1.0  # latent rows 2..3, columns 12..14
    only = eps(C.conditioning_set_mask(b, small, set_cond_area="mask bounds"))
    inside = eps(b, x[..., 2:8, 12:16])  # 8 rows from row 2 and 8 columns from 12, both cut at the edge
    assert torch.allclose(only[..., 2:4, 12:15], inside[..., :2, :3], atol=1e-6)
    assert torch.count_nonzero(only[..., :2, :]) == 0 and torch.count_nonzero(only[..., :, :12]) == 0  # no weight


def test_area_and_mask_prompts_sample_end_to_end(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    nodes = txt2img_nodes("tiny-sd15", steps=3, size=64)
    nodes["lat"]["inputs"].update(width=128, height=64)
    nodes["b"] = {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text": "a blue square"}}
    nodes["area"] = {"type": "ConditioningSetArea", "inputs": {"conditioning": L("b", "conditioning"), "width": 48,
                                                               "height": 40, "x": 64, "y": 16, "strength": 1.5}}
    nodes["both"] = {"type": "ConditioningCombine", "inputs": {"conditioning_1": L("pos", "conditioning"),
                                                               "conditioning_2": L("area", "conditioning")}}
    nodes["sample"]["inputs"]["positive"] = L("both", "conditioning")
    image = output_of(ex, ex.run(wf(nodes)), "dec", "image")
    assert image.shape == (1, 64, 128, 3) and torch.isfinite(image).all()
