"""IP-Adapter (nodes/ip_adapter.py, nodes/sd/ip_adapter.py) on tiny random models built here: the same picture as
diffusers' IP-Adapter pipeline (basic, plus, full face; SD 1.5 and SDXL), CLIP preprocessing equal to the pipeline's
feature extractor, the shared UNet left untouched, the step window, combined prompts, fast mode, and errors that name
what does not fit."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from engine.node import NodeError
from tests.nodes.sd_helpers import (L, executor, gen, loop_nodes, output_of, reference_pipeline, txt2img_nodes, wf,
                                   with_source)

TOL = 1e-5
VIT = {"hidden_size": 128, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2,
       "image_size": 32, "patch_size": 8, "projection_dim": 48, "hidden_act": "gelu"}


# ------------------------------------------------------------------------------------------------ tiny models


def tiny_clip_vision(seed: int = 0, **overrides):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**{**VIT, **overrides})).eval()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:  # distinct layer-norm weights, as tests/tiny_models.py does
                p.add_(torch.randn(p.shape, generator=g), alpha=0.02)
    return model


class _Rand:
    def __init__(self, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, *shape: int, scale: float = 1.0, around: float = 0.0) -> torch.Tensor:
        return around + torch.randn(*shape, generator=self.g) * scale


def attention_layers_of(unet) -> list[tuple[int, int]]:
    """(out, in) of every cross-attention layer's to_k, in the order diffusers numbers IP-Adapter keys."""
    names = [n for n in unet.attn_processors if not n.endswith("attn1.processor")]
    return [tuple(unet.get_submodule(n[: -len(".processor")]).to_k.weight.shape) for n in names]


def ip_layers(unet, r: _Rand, scale: float = 0.5, drop_last: bool = False) -> dict[str, torch.Tensor]:
    shapes = attention_layers_of(unet)[: -1 if drop_last else None]
    out = {}
    for i, (o, c) in enumerate(shapes):
        out[f"{2 * i + 1}.to_k_ip.weight"] = r(o, c, scale=scale)
        out[f"{2 * i + 1}.to_v_ip.weight"] = r(o, c, scale=scale)
    return out


def basic_proj(r: _Rand, width: int, embed: int = 48, tokens: int = 4) -> dict[str, torch.Tensor]:
    return {"proj.weight": r(tokens * width, embed, scale=0.2), "proj.bias": r(tokens * width, scale=0.1),
            "norm.weight": r(width, scale=0.1, around=1.0), "norm.bias": r(width, scale=0.1)}


def plus_proj(r: _Rand, width: int, embed: int = 128, hidden: int = 64, queries: int = 16, depth: int = 4) -> dict:
    """The h94 Resampler layout: layers.i.0 = PerceiverAttention (norm1, norm2, to_q, to_kv, to_out), layers.i.1 =
    LayerNorm, Linear (x4), GELU, Linear."""
    sd = {"latents": r(1, queries, hidden, scale=hidden ** -0.5), "proj_in.weight": r(hidden, embed, scale=embed ** -0.5),
          "proj_in.bias": r(hidden, scale=0.1), "proj_out.weight": r(width, hidden, scale=hidden ** -0.5),
          "proj_out.bias": r(width, scale=0.1), "norm_out.weight": r(width, scale=0.1, around=1.0),
          "norm_out.bias": r(width, scale=0.1)}
    for i in range(depth):
        a, f = f"layers.{i}.0.", f"layers.{i}.1."
        sd.update({a + "norm1.weight": r(hidden, scale=0.1, around=1.0), a + "norm1.bias": r(hidden, scale=0.1),
                   a + "norm2.weight": r(hidden, scale=0.1, around=1.0), a + "norm2.bias": r(hidden, scale=0.1),
                   a + "to_q.weight": r(hidden, hidden, scale=hidden ** -0.5),
                   a + "to_kv.weight": r(2 * hidden, hidden, scale=hidden ** -0.5),
                   a + "to_out.weight": r(hidden, hidden, scale=hidden ** -0.5),
                   f + "0.weight": r(hidden, scale=0.1, around=1.0), f + "0.bias": r(hidden, scale=0.1),
                   f + "1.weight": r(4 * hidden, hidden, scale=hidden ** -0.5),
                   f + "3.weight": r(hidden, 4 * hidden, scale=(4 * hidden) ** -0.5)})
    return sd


def full_proj(r: _Rand, width: int, embed: int = 128) -> dict[str, torch.Tensor]:
    return {"proj.0.weight": r(embed, embed, scale=embed ** -0.5), "proj.0.bias": r(embed, scale=0.1),
            "proj.2.weight": r(width, embed, scale=embed ** -0.5), "proj.2.bias": r(width, scale=0.1),
            "proj.3.weight": r(width, scale=0.1, around=1.0), "proj.3.bias": r(width, scale=0.1)}


def save_adapter(path: Path, proj: dict, ip: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({**{f"image_proj.{k}": v.contiguous() for k, v in proj.items()},
                   **{f"ip_adapter.{k}": v.contiguous() for k, v in ip.items()}}, str(path))
    else:
        torch.save({"image_proj": proj, "ip_adapter": ip}, path)


@pytest.fixture(scope="module")
def ipa_dir(models_dir: Path) -> Path:
    """models_dir with models/ipadapter (basic .safetensors, plus .bin, full face, a 3-layer misfit, a FaceID file)
    and models/clip_vision (a transformers folder, the same as a single file, and one with another projection)."""
    from safetensors.torch import save_file

    from nodes.sd.loading import load_checkpoint

    unet = load_checkpoint(models_dir / "checkpoints" / "tiny-sd15").unet
    ipa = models_dir / "ipadapter"
    r = _Rand(1)
    save_adapter(ipa / "tiny-basic.safetensors", basic_proj(r, 32), ip_layers(unet, r))
    save_adapter(ipa / "tiny-plus.bin", plus_proj(r, 32), ip_layers(unet, r))
    save_adapter(ipa / "tiny-full.safetensors", full_proj(r, 32), ip_layers(unet, r))
    save_adapter(ipa / "tiny-3-layers.safetensors", basic_proj(r, 32), ip_layers(unet, r, drop_last=True))
    save_adapter(ipa / "tiny-faceid.bin", {"proj.0.weight": r(64, 48), "proj.0.bias": r(64), "proj.2.weight": r(128, 64),
                                           "proj.2.bias": r(128), "norm.weight": r(32), "norm.bias": r(32)},
                 ip_layers(unet, r))
    cv = models_dir / "clip_vision"
    model = tiny_clip_vision(0)
    model.save_pretrained(cv / "tiny-vit")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(cv / "tiny-vit.safetensors"))
    tiny_clip_vision(3, projection_dim=40).save_pretrained(cv / "tiny-vit-proj40")
    return models_dir


# ------------------------------------------------------------------------------------------------ helpers


def make_image(seed: int = 0, h: int = 40, w: int = 56, n: int = 1) -> tuple[list[Image.Image], torch.Tensor]:
    """Random 8-bit pictures as PIL images (the pipeline's input) and as our IMAGE tensor (the same values)."""
    arr = np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    return [Image.fromarray(a) for a in arr], torch.from_numpy(arr).float() / 255


def ip_nodes(ckpt: str = "tiny-sd15", adapter: str = "tiny-basic.safetensors", encoder: str = "tiny-vit",
             weight: float = 0.8, steps: int = 5, **apply) -> dict:
    nodes = txt2img_nodes(ckpt, steps=steps, cfg=7.5, scheduler="euler")
    nodes["img"] = {"type": "TestImageSource"}
    nodes["ipa"] = {"type": "LoadIPAdapter", "inputs": {"name": adapter}}
    nodes["cv"] = {"type": "LoadCLIPVision", "inputs": {"name": encoder}}
    nodes["apply"] = {"type": "ApplyIPAdapter", "inputs": {
        "conditioning": L("pos", "conditioning"), "ip_adapter": L("ipa", "ip_adapter"), "clip_vision": L("cv", "clip_vision"),
        "image": L("img", "image"), "weight": weight, **apply}}
    nodes["sample"]["inputs"]["positive"] = L("apply", "conditioning")
    return nodes


def run_image(ex, nodes: dict) -> torch.Tensor:
    return output_of(ex, ex.run(wf(nodes)), "dec", "image")


def diffusers_ip_pipeline(root: Path, ckpt: str, adapter: str, weight: float, steps: int = 5):
    """diffusers' pipeline with its own IP-Adapter loading, on a copy of the UNet (load_ip_adapter changes it)."""
    pipe = reference_pipeline(root / "checkpoints" / ckpt, "euler", steps)
    pipe.register_modules(unet=copy.deepcopy(pipe.unet))
    try:  # the PIL processor (IP-Adapter's own preprocessing) also where torchvision is installed
        from transformers import CLIPImageProcessorPil

        pipe.register_modules(feature_extractor=CLIPImageProcessorPil(size=VIT["image_size"], crop_size=VIT["image_size"]))
    except ImportError:  # pragma: no cover - an older transformers: the PIL processor is the default one
        pass
    pipe.load_ip_adapter(str(root / "ipadapter"), subfolder="", weight_name=adapter,
                         image_encoder_folder=str(root / "clip_vision" / "tiny-vit"))
    pipe.set_ip_adapter_scale(weight)
    return pipe


def processors(unet) -> dict:
    return {name: m.processor for name, m in unet.named_modules() if hasattr(m, "set_processor")}


def shared_unet(root: Path, ckpt: str = "tiny-sd15"):
    from nodes.sd.loading import load_checkpoint

    return load_checkpoint(root / "checkpoints" / ckpt).unet


# ------------------------------------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize("h,w,size", [(40, 56, 32), (56, 40, 32), (20, 13, 32), (32, 32, 32), (300, 225, 224),
                                      (97, 500, 224)])
def test_clip_pixels_equal_the_pipeline_feature_extractor(h, w, size):
    from transformers import CLIPImageProcessorPil

    from nodes.sd.ip_adapter import clip_pixels

    pils, image = make_image(h * w, h, w, n=2)
    ref = CLIPImageProcessorPil(size=size, crop_size=size)(pils, return_tensors="pt").pixel_values
    ours = clip_pixels(image, size)
    assert ours.shape == (2, 3, size, size) and ours.dtype == torch.float32
    assert torch.equal(ours, ref)


# ------------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("adapter,weight,images", [("tiny-basic.safetensors", 0.8, 1), ("tiny-plus.bin", 0.7, 1),
                                                   ("tiny-full.safetensors", 1.0, 1), ("tiny-basic.safetensors", 0.6, 2)])
def test_sd15_equals_diffusers_ip_adapter_pipeline(ipa_dir, tmp_path, adapter, weight, images):
    pils, image = make_image(7, n=images)
    ex = executor(ipa_dir, tmp_path)
    with_source(ex, image=image)
    result = ex.run(wf(ip_nodes(adapter=adapter, weight=weight)))
    ours = output_of(ex, result, "dec", "image")
    plain = run_image(ex, txt2img_nodes("tiny-sd15", steps=5, cfg=7.5, scheduler="euler"))
    assert (ours - plain).abs().max() > 0.05  # the adapter really changes the picture
    prompt = output_of(ex, result, "apply", "conditioning").image_prompts[0]
    per_image = {"tiny-basic.safetensors": 4, "tiny-plus.bin": 16, "tiny-full.safetensors": 17}[adapter]
    assert prompt.tokens.shape == (images * per_image, 32) and prompt.images == images

    pipe = diffusers_ip_pipeline(ipa_dir, "tiny-sd15", adapter, weight)
    ref = pipe("a red circle", negative_prompt="", ip_adapter_image=[pils] if images > 1 else pils[0], height=64,
               width=64, num_inference_steps=5, guidance_scale=7.5, generator=gen(42), output_type="np").images
    assert (torch.from_numpy(ref) - ours).abs().max().item() <= TOL


def test_sdxl_equals_diffusers_ip_adapter_pipeline(ipa_dir, sdxl_models_dir, tmp_path):
    xl_unet = shared_unet(sdxl_models_dir, "tiny-sdxl")
    r = _Rand(11)
    save_adapter(sdxl_models_dir / "ipadapter" / "tiny-xl-plus.safetensors", plus_proj(r, 96), ip_layers(xl_unet, r))
    pils, image = make_image(9)
    ex = executor(sdxl_models_dir, tmp_path)
    with_source(ex, image=image)
    ours = run_image(ex, ip_nodes("tiny-sdxl", "tiny-xl-plus.safetensors", weight=0.9))
    pipe = diffusers_ip_pipeline(sdxl_models_dir, "tiny-sdxl", "tiny-xl-plus.safetensors", 0.9)
    ref = pipe("a red circle", negative_prompt="", ip_adapter_image=pils[0], height=64, width=64,
               num_inference_steps=5, guidance_scale=7.5, generator=gen(42), output_type="np").images
    assert (torch.from_numpy(ref) - ours).abs().max().item() <= TOL
    plain = run_image(ex, txt2img_nodes("tiny-sdxl", steps=5, cfg=7.5, scheduler="euler"))
    assert (ours - plain).abs().max() > 0.05


def _with_image(ipa_dir, tmp_path, seed: int):
    """(the shared UNet, its attention processors now, an executor whose TestImageSource gives image `seed`)."""
    unet = shared_unet(ipa_dir)
    before = processors(unet)
    _, image = make_image(seed)
    ex = executor(ipa_dir, tmp_path)
    with_source(ex, image=image)
    return unet, before, ex


# ------------------------------------------------------------------------------------------------ behaviour


def test_weight_zero_equals_no_adapter_and_the_shared_unet_is_left_as_it_was(ipa_dir, tmp_path):
    from nodes.sd.ip_adapter import active_key

    unet, before, ex = _with_image(ipa_dir, tmp_path, 1)
    plain = run_image(ex, txt2img_nodes("tiny-sd15", steps=5, cfg=7.5, scheduler="euler"))
    assert torch.equal(run_image(ex, ip_nodes(weight=0.0)), plain)
    with_ip = run_image(ex, ip_nodes(weight=1.0))
    assert not torch.equal(with_ip, plain)
    after = processors(unet)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert active_key(unet) == () and unet.encoder_hid_proj is None
    ex.cache.clear()
    assert torch.equal(run_image(ex, txt2img_nodes("tiny-sd15", steps=5, cfg=7.5, scheduler="euler")), plain)


def test_a_failing_call_restores_the_processors(ipa_dir, tmp_path, monkeypatch):
    from nodes.sd import ip_adapter as ipa

    unet = shared_unet(ipa_dir)
    before = processors(unet)
    calls = []

    def boom(self, attn, hidden_states, *args, **kwargs):
        calls.append(1)
        raise RuntimeError("boom in the image attention")

    monkeypatch.setattr(ipa.IPAttnProcessor, "__call__", boom)
    _, image = make_image(2)
    ex = executor(ipa_dir, tmp_path)
    with_source(ex, image=image)
    result = ex.run(wf(ip_nodes()))
    assert result.status != "success" and "boom" in str(result.error) and calls
    after = processors(unet)
    assert all(after[k] is before[k] for k in before) and ipa.active_key(unet) == ()


def _spy_steps(monkeypatch) -> list[tuple[int, float, bool]]:
    from nodes.sd import ip_adapter as ipa

    seen: list[tuple[int, float, bool]] = []
    real = ipa.prompts_for_call

    def spy(positive, negative, state, step, batch):
        out = real(positive, negative, state, step, batch)
        seen.append((step, float(state.timesteps[step]), out is not None))
        return out

    monkeypatch.setattr(ipa, "prompts_for_call", spy)
    return seen


def test_start_and_end_percent_switch_per_step(ipa_dir, tmp_path, monkeypatch):
    from nodes.sd.denoise import in_noise_range

    _, image = make_image(3)
    ex = executor(ipa_dir, tmp_path)
    with_source(ex, image=image)
    seen = _spy_steps(monkeypatch)
    windowed = run_image(ex, ip_nodes(steps=5, start_percent=0.2, end_percent=0.6))
    # of the steps (diffusers' control_guidance rule): off when i/5 < 0.2 or (i+1)/5 > 0.6
    assert [on for _, _, on in seen] == [False, True, True, False, False]
    full = run_image(ex, ip_nodes(steps=5))
    none = run_image(ex, ip_nodes(steps=5, weight=0.0))
    assert (windowed - full).abs().max() > 1e-3 and (windowed - none).abs().max() > 1e-3
    seen.clear()
    run_image(ex, ip_nodes(steps=5, start_percent=0.3, end_percent=0.9, percent_of="noise levels"))
    # of the noise levels (ComfyUI_IPAdapter_plus): by each step's timestep
    assert [on for _, _, on in seen] == [in_noise_range(0.3, 0.9, t) for _, t, _ in seen]
    assert [on for _, _, on in seen] != [not 0 / 5 < 0.3 and not (i + 1) / 5 > 0.9 for i in range(5)]


def test_the_open_denoise_loop_gives_the_sample_picture(ipa_dir, tmp_path):
    """DenoiseLoop's body (PredictNoise with the step index) applies the image prompts as Sample does."""
    _, image = make_image(10)
    ex = executor(ipa_dir, tmp_path)
    with_source(ex, image=image)
    nodes = ip_nodes(start_percent=0.2, end_percent=0.8)
    sample = run_image(ex, nodes)
    loop = loop_nodes("tiny-sd15", steps=5, scheduler="euler")
    loop.update({k: nodes[k] for k in ("img", "ipa", "cv", "apply")})
    loop["loop"]["inputs"]["positive"] = L("apply", "conditioning")
    assert torch.equal(run_image(ex, loop), sample)


def test_combined_prompts_keep_their_image_prompts(ipa_dir, tmp_path):
    """A prompt combined with itself is predicted prompt by prompt (each alone, the uncond run with the blank
    tokens): the same picture as the prompt on its own, up to batch rounding."""
    _, image = make_image(4)
    ex = executor(ipa_dir, tmp_path)
    with_source(ex, image=image)
    single = run_image(ex, ip_nodes())
    nodes = ip_nodes()
    nodes["both"] = {"type": "ConditioningCombine", "inputs": {"conditioning_1": L("apply", "conditioning"),
                                                               "conditioning_2": L("apply", "conditioning")}}
    nodes["sample"]["inputs"]["positive"] = L("both", "conditioning")
    combined = run_image(ex, nodes)
    assert (combined - single).abs().max().item() <= 1e-4
    plain_both = txt2img_nodes("tiny-sd15", steps=5, cfg=7.5, scheduler="euler")
    plain_both["both"] = {"type": "ConditioningCombine", "inputs": {"conditioning_1": L("pos", "conditioning"),
                                                                    "conditioning_2": L("pos", "conditioning")}}
    plain_both["sample"]["inputs"]["positive"] = L("both", "conditioning")
    assert (run_image(ex, plain_both) - combined).abs().max() > 0.05


def test_an_image_prompt_on_the_negative_is_the_mirror_image(ipa_dir, tmp_path):
    """On the negative conditioning the uncond rows get the image and the cond rows the blank (the rows are checked
    in test_prompts_for_call_rows): it runs, and steers elsewhere than the same image on the positive."""
    _, image = make_image(5)
    ex = executor(ipa_dir, tmp_path)
    with_source(ex, image=image)
    nodes = ip_nodes()
    nodes["apply"]["inputs"]["conditioning"] = L("neg", "conditioning")
    nodes["sample"]["inputs"].update(positive=L("pos", "conditioning"), negative=L("apply", "conditioning"))
    on_negative = run_image(ex, nodes)
    plain = run_image(ex, txt2img_nodes("tiny-sd15", steps=5, cfg=7.5, scheduler="euler"))
    on_positive = run_image(ex, ip_nodes())
    assert (on_negative - plain).abs().max() > 0.05 and (on_negative - on_positive).abs().max() > 0.05


def test_prompts_for_call_rows(ipa_dir):
    """[uncond x B, cond x B] rows: the positive's blank tokens then its image tokens; a negative's prompt mirrored."""
    from nodes.sd.handles import Conditioning
    from nodes.sd.ip_adapter import ImagePrompt, load_ip_adapter, prompts_for_call

    adapter = load_ip_adapter(ipa_dir / "ipadapter" / "tiny-basic.safetensors")
    img, blank, img2, blank2 = (torch.full((4, 32), float(v)) for v in (1, 2, 3, 4))
    pos = Conditioning(embeds=torch.zeros(1, 77, 32), family="sd15",
                       image_prompts=(ImagePrompt(adapter, img, blank, weight=0.5),))
    neg = Conditioning(embeds=torch.zeros(1, 77, 32), family="sd15",
                       image_prompts=(ImagePrompt(adapter, img2, blank2, weight=0.0), ImagePrompt(adapter, img2, blank2)))
    state = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32, total=5, timesteps=torch.arange(5))
    call = prompts_for_call(pos, neg, state, 0, 2)
    assert call.weights == (0.5, 1.0) and len(call.tokens) == 2  # the weight-0 prompt is left out
    assert [t[:, 0, 0].tolist() for t in call.tokens] == [[2, 2, 1, 1], [3, 3, 4, 4]]
    alone = prompts_for_call(pos, None, state, 0, 3)
    assert alone.tokens[0][:, 0, 0].tolist() == [1, 1, 1] and alone.tokens[0].shape == (3, 4, 32)
    assert prompts_for_call(replace_prompts(pos, ()), None, state, 0, 1) is None


def replace_prompts(c, prompts):
    from dataclasses import replace

    return replace(c, image_prompts=prompts)


# ------------------------------------------------------------------------------------------------ fast mode


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def test_fast_mode_gives_the_default_picture(ipa_dir, tmp_path, monkeypatch):
    from torch._dynamo.utils import counters

    from nodes.sd import fast

    from nodes.sd.ip_adapter import load_clip_vision, load_ip_adapter
    from nodes.sd.loading import load_checkpoint

    monkeypatch.setenv("LOOM_FAST_BACKEND", "aot_eager_decomp_partition")
    # the models stay loaded throughout (the loader keeps only two unused ones): the same UNet, the same graphs
    keep = (load_checkpoint(ipa_dir / "checkpoints" / "tiny-sd15"), load_ip_adapter(ipa_dir / "ipadapter" / "tiny-basic.safetensors"),
            load_clip_vision(ipa_dir / "clip_vision" / "tiny-vit"))
    _, image = make_image(6)
    ex = executor(ipa_dir, tmp_path)
    ex.settings.user_dir = tmp_path / "user"
    with_source(ex, image=image)
    pictures = {}
    for mode in ("default", "fast"):
        ex.settings.fast = mode == "fast"
        ex.cache.clear()
        pictures[mode] = run_image(ex, ip_nodes(weight=0.9))
        if mode == "fast":
            assert fast.LAST_RUN["path"] == "stagewise"
    assert psnr(pictures["default"], pictures["fast"]) >= 40.0
    # another weight and another image: the same compiled graph (tokens and weight are inputs of the call)
    ex.settings.fast = True
    before = (fast.STATS["compiles"], int(counters["stats"]["unique_graphs"]))
    other = run_image(ex, ip_nodes(weight=0.4))
    _, image2 = make_image(16)
    with_source(ex, image=image2)
    ex.cache.clear()
    other_image = run_image(ex, ip_nodes(weight=0.9))
    assert (fast.STATS["compiles"], int(counters["stats"]["unique_graphs"])) == before
    # a plain run in fast mode never replays a graph traced with the image attention (nor the other way round)
    plain_fast = run_image(ex, txt2img_nodes("tiny-sd15", steps=5, cfg=7.5, scheduler="euler"))
    ex.settings.fast = False
    ex.cache.clear()
    with_source(ex, image=image2)
    assert psnr(run_image(ex, ip_nodes(weight=0.9)), other_image) >= 40.0
    with_source(ex, image=image)
    ex.cache.clear()  # the source node's output is cached
    assert psnr(run_image(ex, ip_nodes(weight=0.4)), other) >= 40.0
    plain = run_image(ex, txt2img_nodes("tiny-sd15", steps=5, cfg=7.5, scheduler="euler"))
    assert psnr(plain, plain_fast) >= 40.0 and (plain - pictures["default"]).abs().max() > 0.05
    assert all(k is not None for k in keep)


# ------------------------------------------------------------------------------------------------ loading, errors


def test_clip_vision_single_file_equals_the_folder(ipa_dir):
    from nodes.sd.ip_adapter import load_clip_vision

    folder = load_clip_vision(ipa_dir / "clip_vision" / "tiny-vit")
    single = load_clip_vision(ipa_dir / "clip_vision" / "tiny-vit.safetensors")
    assert single.layout == "single file" and single.has_projection
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                "patch_size", "projection_dim", "hidden_act"):
        assert getattr(single.model.config, key) == getattr(folder.model.config, key), key
    x = torch.randn(2, 3, 32, 32, generator=gen(0))
    with torch.no_grad():
        a, b = folder.model(x, output_hidden_states=True), single.model(x, output_hidden_states=True)
    assert torch.equal(a.image_embeds, b.image_embeds) and torch.equal(a.hidden_states[-2], b.hidden_states[-2])


def test_adapter_kinds_are_read_from_the_weights(ipa_dir):
    from nodes.sd.ip_adapter import load_ip_adapter

    kinds = {name: load_ip_adapter(ipa_dir / "ipadapter" / name) for name in
             ("tiny-basic.safetensors", "tiny-plus.bin", "tiny-full.safetensors")}
    assert [(a.kind, a.tokens_per_image, a.embed_width, a.width, len(a.layers)) for a in kinds.values()] == [
        ("basic", 4, 48, 32, 4), ("plus", 16, 128, 32, 4), ("full", None, 128, 32, 4)]
    assert "an unknown model family (4 cross-attention layers, context width 32)" in kinds["tiny-plus.bin"].describe()
    assert load_ip_adapter(ipa_dir / "ipadapter" / "tiny-plus.bin") is kinds["tiny-plus.bin"]  # shared


def test_an_sdxl_adapter_on_an_sd15_prompt_names_both(ipa_dir, sdxl_models_dir, tmp_path):
    r = _Rand(12)
    save_adapter(sdxl_models_dir / "ipadapter" / "tiny-xl-basic.safetensors", basic_proj(r, 96),
                 ip_layers(shared_unet(sdxl_models_dir, "tiny-sdxl"), r))
    _, image = make_image(8)
    ex = executor(ipa_dir, tmp_path)
    with_source(ex, image=image)
    result = ex.run(wf(ip_nodes(adapter="tiny-xl-basic.safetensors")))
    assert result.status != "success"
    message = str(result.error)
    assert "tiny-xl-basic.safetensors" in message and "context width 96" in message
    assert "SD 1.x (text width 32)" in message


def test_an_adapter_that_does_not_fit_the_unet_names_both(ipa_dir, tmp_path):
    """Same text width, one layer short: the prompt is accepted, the sampler refuses it before touching the UNet."""
    unet, before, ex = _with_image(ipa_dir, tmp_path, 8)
    result = ex.run(wf(ip_nodes(adapter="tiny-3-layers.safetensors")))
    assert result.status != "success"
    message = str(result.error)
    assert "tiny-3-layers.safetensors" in message and "(3 cross-attention layers, context width 32)" in message
    assert "the UNet is SD 1.x (4 cross-attention layers, context width 32)" in message
    assert all(processors(unet)[k] is before[k] for k in before)


def test_a_clip_vision_model_of_another_width_names_both_widths(ipa_dir, tmp_path):
    _, image = make_image(8)
    ex = executor(ipa_dir, tmp_path)
    with_source(ex, image=image)
    result = ex.run(wf(ip_nodes(encoder="tiny-vit-proj40")))
    assert result.status != "success"
    message = str(result.error)
    assert "image embeddings 48 wide" in message and "image embeddings 40 wide" in message
    assert "tiny-basic.safetensors" in message and "tiny-vit-proj40" in message


def test_missing_files_name_the_folder_and_faceid_is_refused(ipa_dir, tmp_path):
    from nodes.ip_adapter import load_clip_vision, load_ip_adapter

    ctx = SimpleNamespace(settings=executor(ipa_dir, tmp_path).settings)
    with pytest.raises(NodeError, match=r"ipadapter 'nope\.safetensors' not found in .*ipadapter.*available: .*tiny-basic"):
        load_ip_adapter("nope.safetensors", ctx)
    with pytest.raises(NodeError, match=r"clip_vision 'nope' not found in .*clip_vision.*available: .*tiny-vit"):
        load_clip_vision("nope", ctx)
    with pytest.raises(NodeError, match=r"tiny-faceid\.bin.*FaceID"):
        load_ip_adapter("tiny-faceid.bin", ctx)


def test_comfyui_loaders_translate():
    from engine.compat.comfy import prompt_to_workflow
    from engine.registry import Registry

    prompt = {"1": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "tiny-vit"}},
              "2": {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": "tiny-plus.bin"}}}
    nodes = prompt_to_workflow(prompt, Registry.default())["nodes"]
    assert (nodes["1"]["type"], nodes["1"]["inputs"]) == ("LoadCLIPVision", {"name": "tiny-vit"})
    assert (nodes["2"]["type"], nodes["2"]["inputs"]) == ("LoadIPAdapter", {"name": "tiny-plus.bin"})
