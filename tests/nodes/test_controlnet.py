"""ControlNet nodes equal diffusers' StableDiffusionControlNetPipeline exactly (fp32, tiny models).

The ControlNets are built from the tiny UNet and their zero-initialised layers (controlnet_down_blocks,
controlnet_mid_block, controlnet_cond_embedding.conv_out) are set to random values: a fresh ControlNet adds
exactly zero and would prove nothing.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.node import node
from engine.types import IMAGE
from tests.nodes.sd_helpers import L, executor, gen, loop_nodes, output_of, reference_pipeline, txt2img_nodes, wf, quick

TOL = 1e-6
STEPS = 3
REPO = Path(__file__).resolve().parents[2]

_IMAGES: dict[str, torch.Tensor] = {}


@node(name="TestControlImage", output_name="image")
def control_image(key: str = "a") -> IMAGE:
    return _IMAGES[key]


def _nonzero_controlnet(unet, seed: int, **kwargs):
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    cn = ControlNetModel.from_unet(unet, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in cn.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return cn.eval()


@pytest.fixture(scope="module")
def cn_dir(models_dir):
    """Two non-zero ControlNets of the tiny SD1.5 UNet (diffusers folders), and control images."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(models_dir / "checkpoints" / "tiny-sd15"), subfolder="unet")
    folder = models_dir / "controlnet"
    folder.mkdir(exist_ok=True)
    for name, seed in (("tiny-cn-a", 1), ("tiny-cn-b", 2)):
        if not (folder / name).exists():
            _nonzero_controlnet(unet, seed).save_pretrained(str(folder / name))
    g = gen(11)
    _IMAGES["a"] = (torch.rand(1, 64, 64, 3, generator=g) > 0.7).float()
    _IMAGES["b"] = torch.rand(1, 64, 64, 3, generator=g)
    _IMAGES["wide"] = torch.rand(1, 64, 96, 3, generator=g)
    return models_dir


@pytest.fixture(scope="module")
def pipes(cn_dir):
    """diffusers' ControlNet pipelines (one and two ControlNets) over the same tiny weights."""
    from diffusers import ControlNetModel, MultiControlNetModel, StableDiffusionControlNetPipeline

    base = reference_pipeline(cn_dir / "checkpoints" / "tiny-sd15", "euler", STEPS)
    a = ControlNetModel.from_pretrained(str(cn_dir / "controlnet" / "tiny-cn-a"))
    b = ControlNetModel.from_pretrained(str(cn_dir / "controlnet" / "tiny-cn-b"))
    parts = {k: v for k, v in base.components.items() if k != "image_encoder"}
    one = StableDiffusionControlNetPipeline(**{**parts, "controlnet": a})
    two = StableDiffusionControlNetPipeline(**{**parts, "controlnet": MultiControlNetModel([a, b])})
    for p in (one, two):
        p.set_progress_bar_config(disable=True)
    return {"one": one, "two": two}


def _ex(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    ex.registry.add(control_image)
    return ex


def _with_controls(nodes: dict, controls: list[dict], sampler: str = "sample") -> dict:
    """Chain ApplyControlNetAdvanced nodes between the prompts and the sampler."""
    pos, neg = L("pos", "conditioning"), L("neg", "conditioning")
    for i, c in enumerate(controls):
        nodes[f"cn{i}"] = {"type": "LoadControlNet", "inputs": {"name": c["name"]}}
        nodes[f"img{i}"] = {"type": "TestControlImage", "inputs": {"key": c.get("image", "a")}}
        nodes[f"apply{i}"] = {"type": "ApplyControlNetAdvanced", "inputs": {
            "positive": pos, "negative": neg, "control_net": L(f"cn{i}", "control_net"), "image": L(f"img{i}", "image"),
            "strength": c.get("strength", 1.0), "start_percent": c.get("start", 0.0), "end_percent": c.get("end", 1.0)}}
        pos, neg = L(f"apply{i}", "positive"), L(f"apply{i}", "negative")
    nodes[sampler]["inputs"].update(positive=pos, negative=neg)
    return nodes


def _ref(pipe, images, **kw):
    img = [_IMAGES[k].permute(0, 3, 1, 2).contiguous() for k in images]
    out = pipe("a red circle", image=img[0] if len(img) == 1 else img, negative_prompt="", height=64, width=64,
               num_inference_steps=STEPS, guidance_scale=7.5, generator=gen(42), output_type="np", **kw).images
    return torch.from_numpy(out)


def test_one_controlnet_equals_pipeline(cn_dir, pipes, tmp_path):
    ex = _ex(cn_dir, tmp_path)
    nodes = _with_controls(txt2img_nodes("tiny-sd15", steps=STEPS), [{"name": "tiny-cn-a", "strength": 0.8}])
    ours = output_of(ex, ex.run(wf(nodes)), "dec", "image")
    ref = _ref(pipes["one"], ["a"], controlnet_conditioning_scale=0.8)
    assert (ref - ours).abs().max().item() <= TOL


def test_two_controlnets_with_step_ranges_equal_multicontrolnet(cn_dir, pipes, tmp_path):
    ex = _ex(cn_dir, tmp_path)
    controls = [{"name": "tiny-cn-a", "strength": 0.7, "start": 0.0, "end": 0.6},
                {"name": "tiny-cn-b", "image": "b", "strength": 1.2, "start": 0.3, "end": 1.0}]
    ours = output_of(ex, ex.run(wf(_with_controls(txt2img_nodes("tiny-sd15", steps=STEPS), controls))), "dec", "image")
    ref = _ref(pipes["two"], ["a", "b"], controlnet_conditioning_scale=[0.7, 1.2],
               control_guidance_start=[0.0, 0.3], control_guidance_end=[0.6, 1.0])
    assert (ref - ours).abs().max().item() <= TOL


def test_window_outside_all_steps_equals_no_controlnet(cn_dir, tmp_path):
    ex = _ex(cn_dir, tmp_path)
    plain = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", steps=STEPS))), "dec", "image")
    off = _with_controls(txt2img_nodes("tiny-sd15", steps=STEPS), [{"name": "tiny-cn-a", "start": 1.0, "end": 1.0}])
    assert torch.equal(output_of(ex, ex.run(wf(off)), "dec", "image"), plain)
    # only the last step on: a different picture, so the window really switches it per step
    late = _with_controls(txt2img_nodes("tiny-sd15", steps=STEPS), [{"name": "tiny-cn-a", "start": 0.6, "end": 1.0}])
    assert not torch.equal(output_of(ex, ex.run(wf(late)), "dec", "image"), plain)


def test_controlnet_in_the_loop_body_equals_sample(cn_dir, tmp_path):
    from nodes.sampling import DEFAULT_DENOISE_BODY

    ex = _ex(cn_dir, tmp_path)
    controls = [{"name": "tiny-cn-a", "strength": 0.9, "start": 0.25, "end": 1.0}]
    sample = output_of(ex, ex.run(wf(_with_controls(txt2img_nodes("tiny-sd15", steps=STEPS), controls))), "dec", "image")
    body = copy.deepcopy(DEFAULT_DENOISE_BODY)
    body["nodes"]["apply"] = {"type": "ApplyControlNetAdvanced", "inputs": {
        "positive": L("in", "positive"), "negative": L("in", "negative"), "control_net": L("cn0", "control_net"),
        "image": L("img0", "image"), "strength": 0.9, "start_percent": 0.25, "end_percent": 1.0}}
    body["nodes"]["predict"]["inputs"].update(positive=L("apply", "positive"), negative=L("apply", "negative"))
    nodes = loop_nodes("tiny-sd15", steps=STEPS, body=body)
    nodes["cn0"] = {"type": "LoadControlNet", "inputs": {"name": "tiny-cn-a"}}
    nodes["img0"] = {"type": "TestControlImage", "inputs": {"key": "a"}}
    looped = output_of(ex, ex.run(wf(nodes)), "dec", "image")
    assert torch.equal(looped, sample)


def test_positive_only_hint_leaves_uncond_half_alone(cn_dir, tmp_path):
    """ApplyControlNet on the positive: the uncond half gets no residual (ComfyUI's semantics)."""
    from nodes.sd.controlnet import Hint, load_controlnet, residuals_for_step
    from nodes.sd.handles import Conditioning

    cn = load_controlnet(cn_dir / "controlnet" / "tiny-cn-a")
    hint = Hint(controlnet=cn, image=_IMAGES["a"], strength=1.0)
    emb = torch.randn(2, 77, 32, generator=gen(1))
    pos = Conditioning(embeds=emb[1:], family="sd15", controls=(hint,))
    neg = Conditioning(embeds=emb[:1], family="sd15")

    class State:
        total = 4
        timesteps = torch.arange(4)

    x = torch.randn(2, 4, 8, 8, generator=gen(2))
    t = torch.tensor(500)
    devices = executor(cn_dir, tmp_path).settings.devices()
    down, mid = residuals_for_step(pos, neg, State, 0, devices)(x, t, emb, None, True)
    assert all(d[0].abs().max() == 0 and d[1].abs().max() > 0 for d in down) and mid[0].abs().max() == 0
    full_down, full_mid = cn.model(x, t, encoder_hidden_states=emb, controlnet_cond=torch.cat([_IMAGES["a"].permute(0, 3, 1, 2).contiguous()] * 2),
                                   return_dict=False)
    cond_down, _ = cn.model(x[1:], t, encoder_hidden_states=emb[1:], controlnet_cond=_IMAGES["a"].permute(0, 3, 1, 2).contiguous(),
                            return_dict=False)
    assert all(torch.equal(d[1:], c) for d, c in zip(down, cond_down))
    both = Conditioning(embeds=emb[:1], family="sd15", controls=(hint,))
    down2, mid2 = residuals_for_step(pos, both, State, 0, devices)(x, t, emb, None, True)
    assert all(torch.equal(a, b) for a, b in zip(down2, full_down)) and torch.equal(mid2, full_mid)


def test_single_files_load_like_the_folder(cn_dir, tmp_path):
    """Original layout (.safetensors and .pth), and diffusers names in one file: the same weights as the folder,
    and diffusers' own from_single_file reads our original-layout file the same way."""
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    from nodes.sd.controlnet import controlnet_to_ldm, load_controlnet

    folder = cn_dir / "controlnet" / "tiny-cn-a"
    ref = load_controlnet(folder).model
    ldm = controlnet_to_ldm(ref)
    assert "control_model.input_hint_block.14.weight" in ldm and "control_model.zero_convs.0.0.weight" in ldm
    save_file({k: v.contiguous() for k, v in ldm.items()}, str(tmp_path / "control_sd15_canny.safetensors"))
    torch.save({"state_dict": ldm}, str(tmp_path / "control_sd15_depth.pth"))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "diffusers-names.safetensors"))
    want = ref.state_dict()
    for name in ("control_sd15_canny.safetensors", "control_sd15_depth.pth", "diffusers-names.safetensors"):
        handle = load_controlnet(tmp_path / name)
        got = handle.model.state_dict()
        assert set(got) == set(want), name
        assert all(torch.equal(got[k], want[k]) for k in want), name
        assert dict(handle.model.config)["attention_head_dim"] == dict(ref.config)["attention_head_dim"]
    theirs = ControlNetModel.from_single_file(str(tmp_path / "control_sd15_canny.safetensors"), config=str(folder),
                                              local_files_only=True)
    assert all(torch.equal(theirs.state_dict()[k], want[k]) for k in want)


def test_sdxl_controlnet_on_sd15_names_both_sides(cn_dir, tmp_path):
    from diffusers import ControlNetModel

    from nodes.sd.loading import component_configs
    from tests.tiny_models import TINY_OVERRIDES

    cfg = {**component_configs("sdxl")["unet"], **TINY_OVERRIDES["sdxl"]["unet"]}
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("out_channels", "up_block_types", "sample_size", "center_input_sample")}
    import inspect

    allowed = set(inspect.signature(ControlNetModel.__init__).parameters)
    ControlNetModel.from_config({k: v for k, v in cfg.items() if k in allowed}).save_pretrained(
        str(cn_dir / "controlnet" / "tiny-cn-sdxl"))
    ex = _ex(cn_dir, tmp_path)
    nodes = _with_controls(txt2img_nodes("tiny-sd15", steps=1), [{"name": "tiny-cn-sdxl"}])
    result = ex.run(wf(nodes))
    assert result.status == "error"
    msg = result.error["message"]
    assert result.error["node_id"] == "apply0"
    assert "SDXL" in msg and "text width 96" in msg and "SD 1.x" in msg and "text width 32" in msg, msg


def test_control_image_of_another_size_is_fitted(cn_dir, tmp_path):
    """A 96x64 image with resize=crop gives the same picture as the image cropped to 64x64 first (ControlNetResize);
    the resize choices are visible in the node's options."""
    ex = _ex(cn_dir, tmp_path)
    schema = {i.name: i for i in ex.registry.get("ApplyControlNetAdvanced").schema().inputs}
    assert schema["resize"].choices == ["crop", "stretch", "pad"] and schema["resize"].default == "crop"
    wide = _with_controls(txt2img_nodes("tiny-sd15", steps=1), [{"name": "tiny-cn-a", "image": "wide"}])
    a = output_of(ex, ex.run(wf(wide)), "dec", "image")
    pre = copy.deepcopy(wide)
    pre["fit"] = {"type": "ControlNetResize", "inputs": {"image": L("img0", "image"), "latent": L("lat", "latent"),
                                                          "control_net": L("cn0", "control_net"), "mode": "crop"}}
    pre["apply0"]["inputs"]["image"] = L("fit", "image")
    result = ex.run(wf(pre))
    assert output_of(ex, result, "fit", "image").shape == (1, 64, 64, 3)
    assert torch.equal(output_of(ex, result, "dec", "image"), a)
    for mode in ("stretch", "pad"):
        pre["fit"]["inputs"]["mode"] = mode
        out = output_of(ex, ex.run(wf(pre)), "fit", "image")
        assert out.shape == (1, 64, 64, 3)
    assert out[:, :10].abs().max() == 0  # pad: 96x64 fitted to 64 wide leaves black bands top and bottom


def test_preprocessors(tmp_path, models_dir):
    import cv2

    from nodes.control import canny, image_threshold, soft_edge
    from nodes.image import image_invert

    img = np.zeros((1, 64, 64, 3), np.float32)
    img[:, 16:48, 20:44] = [0.9, 0.2, 0.1]
    t = torch.from_numpy(img)
    edges = canny(t, 100, 200)
    ref = cv2.Canny((img[0] * 255).round().astype(np.uint8), 100, 200) / 255.0
    assert edges.shape == (1, 64, 64, 3) and torch.equal(edges[0, ..., 0], torch.from_numpy(ref).float())
    assert set(edges.unique().tolist()) == {0.0, 1.0}
    drawing = torch.ones_like(t)
    drawing[:, 16:48, 20:44] = 0.1  # a dark rectangle drawn on light paper
    scribble = image_threshold(drawing, 0.5, True)
    assert scribble[0, 30, 30, 0] == 1.0 and scribble[0, 2, 2, 0] == 0.0
    assert torch.equal(image_invert(scribble), image_threshold(drawing, 0.5, False))
    soft = soft_edge(t, 1.0, 1.0)
    assert soft.shape == (1, 64, 64, 3) and 0 <= soft.min() and soft.max() <= 1
    assert soft[0, 16, 30, 0] > 0.3 and soft[0, 32, 32, 0] < 0.05


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-linked copy (model names must not be symlinks leading out of the models folder)."""
    import os
    import shutil

    shutil.copytree(src, dst, copy_function=os.link)


@pytest.mark.parametrize("name", ["controlnet-canny.json", "controlnet-multi.json"])
def test_shipped_workflows_run_with_tiny_models(cn_dir, tmp_path, name):
    """The shipped workflows validate and run with tiny stand-ins for loom-shapes and loom-shapes-canny."""
    import shutil

    root = tmp_path / "models"
    _link_tree(cn_dir / "checkpoints" / "tiny-sd15", root / "checkpoints" / "loom-shapes")
    _link_tree(cn_dir / "controlnet" / "tiny-cn-a", root / "controlnet" / "loom-shapes-canny")
    data = json.loads((REPO / "workflows" / name).read_text())
    assert {n["inputs"]["name"] for n in data["nodes"].values() if n["type"] == "LoadControlNet"} == {"loom-shapes-canny"}
    quick(data)
    ex = executor(root, tmp_path / "out")
    shutil.copytree(REPO / "workflows" / "input", tmp_path / "out" / "input")
    result = ex.run(data)
    assert result.status == "success", result.error
    assert any(ui.images for ui in result.ui.values())


@pytest.mark.parametrize("fast", [False, True])
def test_percent_of_noise_levels_is_comfyuis_window(cn_dir, tmp_path, monkeypatch, fast):
    """ComfyUI's end_percent 0.5 ends the ControlNet at timestep 499.5: with Karras sigmas these 6 steps pass it after
    the 2nd step, so it equals a step window of 2/6, not 3/6 (diffusers' reading of 0.5). The fused fast-mode step
    switches it at the same step."""
    from nodes.sd.loading import load_checkpoint
    from nodes.sd.schedulers import make_spec, set_timesteps

    monkeypatch.setenv("LOOM_FAST_BACKEND", "aot_eager_decomp_partition")
    cfg = load_checkpoint(cn_dir / "checkpoints" / "tiny-sd15").scheduler_config
    _, timesteps, _ = set_timesteps(make_spec("euler", cfg, 6, sigmas="karras"), torch.device("cpu"))
    k = int((timesteps >= 499.5).sum())
    assert k == 2, timesteps
    ex = _ex(cn_dir, tmp_path)
    ex.settings.user_dir = tmp_path / "user"

    def run(end: float, percent_of: str | None = None) -> torch.Tensor:
        nodes = _with_controls(txt2img_nodes("tiny-sd15", steps=6), [{"name": "tiny-cn-a", "end": end}])
        nodes["sample"]["inputs"]["sigmas"] = "karras"
        if percent_of:
            nodes["apply0"]["inputs"]["percent_of"] = percent_of
        return output_of(ex, ex.run(wf(nodes), targets=["sample"]), "sample", "latent").samples

    ex.settings.fast = fast
    try:
        comfy = run(0.5, "noise levels")
        assert torch.allclose(comfy, run(k / 6), atol=1e-5)
        assert (comfy - run(0.5)).abs().max() > 1e-3
    finally:
        ex.settings.fast = False


def test_comfy_prompt_with_lora_and_controlnet_equals_native(cn_dir, tmp_path):
    """A ComfyUI API prompt (LoraLoader, ControlNetLoader, Canny, ControlNetApplyAdvanced, ControlNetApply) runs
    and gives the same picture as the native workflow it translates to."""
    import shutil

    from safetensors.torch import save_file

    from engine.compat.comfy import prompt_to_workflow
    from nodes.sd import loading

    unet = loading.load_checkpoint(cn_dir / "checkpoints" / "tiny-sd15").unet
    g = gen(3)
    lora = {}
    for n, m in unet.named_modules():
        if n.endswith(("attn1.to_q", "attn2.to_v")):
            key = "lora_unet_" + n.replace(".", "_")
            lora[key + ".lora_down.weight"] = torch.randn(2, m.weight.shape[1], generator=g) * 0.2
            lora[key + ".lora_up.weight"] = torch.randn(m.weight.shape[0], 2, generator=g) * 0.2
    (cn_dir / "loras").mkdir(exist_ok=True)
    save_file(lora, str(cn_dir / "loras" / "comfy-test.safetensors"))
    ex = _ex(cn_dir, tmp_path)
    shutil.copytree(REPO / "workflows" / "input", tmp_path / "input")
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15"}},
        "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": "comfy-test.safetensors",
                                                      "strength_model": 0.7, "strength_clip": 1.0}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": "a red circle"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": ""}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "shapes-example.png", "upload": "image"}},
        "6": {"class_type": "Canny", "inputs": {"image": ["5", 0], "low_threshold": 0.2, "high_threshold": 0.6}},
        "7": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "tiny-cn-a"}},
        "8": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["3", 0], "negative": ["4", 0], "control_net": ["7", 0],
                                                                   "image": ["6", 0], "strength": 0.9, "start_percent": 0.0,
                                                                   "end_percent": 0.5}},
        "9": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "tiny-cn-b"}},
        "10": {"class_type": "ControlNetApply", "inputs": {"conditioning": ["8", 0], "control_net": ["9", 0], "image": ["6", 0],
                                                            "strength": 0.5}},
        "11": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "12": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["10", 0], "negative": ["8", 1],
                                                     "latent_image": ["11", 0], "seed": 42, "steps": 2, "cfg": 7.5,
                                                     "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["1", 2]}},
        "14": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "comfy"}},
    }
    translated = prompt_to_workflow(prompt)
    assert translated["nodes"]["6"]["inputs"]["low_threshold"] == 51 and "vae" not in translated["nodes"]["8"]["inputs"]
    assert translated["nodes"]["8"]["inputs"]["percent_of"] == "noise levels"  # ComfyUI's percentages
    got = ex.run(translated)
    assert got.status == "success", got.error
    native = {
        "ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd15"}},
        "lora": {"type": "LoadLora", "inputs": {"unet": L("ckpt", "unet"), "text_encoder": L("ckpt", "text_encoder"),
                                                "name": "comfy-test.safetensors", "unet_strength": 0.7}},
        "pos": {"type": "EncodeText", "inputs": {"text_encoder": L("lora", "text_encoder"), "text": "a red circle"}},
        "neg": {"type": "EncodeText", "inputs": {"text_encoder": L("lora", "text_encoder"), "text": ""}},
        "img": {"type": "LoadImage", "inputs": {"image": "shapes-example.png"}},
        "edges": {"type": "Canny", "inputs": {"image": L("img", "image"), "low_threshold": 51, "high_threshold": 153}},
        "cna": {"type": "LoadControlNet", "inputs": {"name": "tiny-cn-a"}},
        "adv": {"type": "ApplyControlNetAdvanced", "inputs": {"positive": L("pos", "conditioning"), "negative": L("neg", "conditioning"),
                                                              "control_net": L("cna", "control_net"), "image": L("edges", "image"),
                                                              "strength": 0.9, "end_percent": 0.5,
                                                              "percent_of": "noise levels"}},
        "cnb": {"type": "LoadControlNet", "inputs": {"name": "tiny-cn-b"}},
        "one": {"type": "ApplyControlNet", "inputs": {"conditioning": L("adv", "positive"), "control_net": L("cnb", "control_net"),
                                                      "image": L("edges", "image"), "strength": 0.5}},
        "lat": {"type": "EmptyLatent", "inputs": {"width": 64, "height": 64}},
        "sample": {"type": "Sample", "inputs": {"unet": L("lora", "unet"), "positive": L("one", "conditioning"),
                                                "negative": L("adv", "negative"), "latent": L("lat", "latent"), "seed": 42,
                                                "steps": 2, "cfg": 7.5, "scheduler": "euler"}},
        "dec": {"type": "VAEDecode", "inputs": {"vae": L("ckpt", "vae"), "latent": L("sample", "latent")}},
        "save": {"type": "SaveImage", "inputs": {"images": L("dec", "image")}},
    }
    mine = ex.run(wf(native))
    assert torch.equal(output_of(ex, got, "13", "image"), output_of(ex, mine, "dec", "image"))


def test_controlnet_applied_after_combine_reaches_every_prompt(cn_dir, tmp_path):
    """ApplyControlNet on a combined conditioning hints every prompt in it (as ComfyUI's list of conds): a prompt
    combined with itself, then controlled, gives the controlled prompt's picture."""
    ex = _ex(cn_dir, tmp_path)
    plain = _with_controls(txt2img_nodes("tiny-sd15", steps=STEPS), [{"name": "tiny-cn-a"}])
    combined = txt2img_nodes("tiny-sd15", steps=STEPS)
    combined["twice"] = {"type": "ConditioningCombine", "inputs": {"conditioning_1": L("pos", "conditioning"),
                                                                   "conditioning_2": L("pos", "conditioning")}}
    combined = _with_controls(combined, [{"name": "tiny-cn-a"}])
    combined["apply0"]["inputs"]["positive"] = L("twice", "conditioning")
    a = output_of(ex, ex.run(wf(plain)), "dec", "image")
    b = output_of(ex, ex.run(wf(combined)), "dec", "image")
    assert (a - b).abs().max().item() <= 1e-5
