"""Latent batches and blends, conditioning concat/average, image batches: ComfyUI's semantics, checked by hand
formulas, and the ComfyUI prompt forms translating to them."""

from __future__ import annotations

import pytest
import torch

from engine.node import NodeError
from nodes import conditioning as C
from nodes import image as I
from nodes import latent as N
from nodes.sd.handles import Conditioning, Latent


def lat(b=2, h=8, w=8, seed=0, family="sd15", **kw):
    g = torch.Generator().manual_seed(seed)
    return Latent(samples=torch.randn(b, 4, h, w, generator=g), family=family, **kw)


def test_latent_from_batch_and_repeat_keep_masks_in_step():
    mask = torch.rand(4, 1, 64, 64)
    src = lat(4, noise_mask=mask)
    out = N.latent_from_batch(src, batch_index=1, length=2)
    assert torch.equal(out.samples, src.samples[1:3]) and torch.equal(out.noise_mask, mask[1:3])
    assert N.latent_from_batch(src, batch_index=3, length=5).samples.shape[0] == 1  # cut at the end
    with pytest.raises(NodeError, match="batch_index 4"):
        N.latent_from_batch(src, batch_index=4)
    rep = N.repeat_latent_batch(lat(2, noise_mask=torch.ones(1, 1, 64, 64)), amount=3)
    assert rep.samples.shape[0] == 6 and torch.equal(rep.samples[2:4], rep.samples[:2])
    assert rep.noise_mask.shape[0] == 1  # a mask for the whole batch stays one


def test_latent_batch_resizes_the_second_like_comfyui():
    a, b = lat(1, 8, 8), lat(2, 8, 16, seed=1)
    out = N.latent_batch(a, b)
    assert out.samples.shape == (3, 4, 8, 8)
    # centre crop of the wider one, then the resize (ComfyUI's common_upscale)
    assert torch.allclose(out.samples[1:], b.samples[..., 4:12])
    with pytest.raises(NodeError, match="SDXL"):
        N.latent_batch(a, lat(1, family="sdxl"))


def test_latent_composite_pastes_and_feathers_inner_edges_only():
    to, src = lat(1, 16, 16), lat(1, 8, 8, seed=2)
    out = N.latent_composite(to, src, x=32, y=0, feather=0).samples  # 4 latent px right, at the top
    assert torch.equal(out[..., 0:8, 4:12], src.samples) and torch.equal(out[..., 8:, :], to.samples[..., 8:, :])
    soft = N.latent_composite(to, src, x=32, y=0, feather=16).samples  # 2 latent px of ramp
    # the top edge touches the border: not faded; the left edge is: its first column is half the source
    assert torch.allclose(soft[..., 3, 6], src.samples[..., 3, 2])
    assert torch.allclose(soft[..., 3, 4], 0.5 * src.samples[..., 3, 0] + 0.5 * to.samples[..., 3, 4])
    clipped = N.latent_composite(to, lat(1, 16, 16, seed=3), x=64, y=64).samples  # only what fits is pasted
    assert clipped.shape == to.samples.shape
    with pytest.raises(NodeError, match="outside"):
        N.latent_composite(to, src, x=128, y=0)


def test_latent_blend():
    a, b = lat(1), lat(1, seed=4)
    assert torch.allclose(N.latent_blend(a, b, 0.25).samples, 0.25 * a.samples + 0.75 * b.samples)


def cond(tokens=77, width=32, seed=0, family="sd15", pooled=False):
    g = torch.Generator().manual_seed(seed)
    return Conditioning(embeds=torch.randn(1, tokens, width, generator=g), family=family,
                        pooled=torch.randn(1, 16, generator=g) if pooled else None)


def test_conditioning_concat_and_average():
    to, src = cond(), cond(154, seed=1)
    cat = C.conditioning_concat(to, src)
    assert cat.embeds.shape == (1, 231, 32) and torch.equal(cat.embeds[:, 77:], src.embeds)
    avg = C.conditioning_average(to, src, 0.3)
    assert torch.allclose(avg.embeds, 0.3 * to.embeds + 0.7 * src.embeds[:, :77])
    short = C.conditioning_average(cond(154, seed=2), cond(77, seed=3), 0.5)  # from padded with zeros
    assert torch.allclose(short.embeds[:, 77:], 0.5 * cond(154, seed=2).embeds[:, 77:])
    xl = C.conditioning_average(cond(pooled=True, family="sdxl", width=48), cond(seed=5, pooled=True, family="sdxl", width=48), 0.5)
    assert xl.pooled is not None
    with pytest.raises(NodeError, match="same text encoder"):
        C.conditioning_concat(cond(), cond(width=48, family="sdxl"))


def test_image_batch_and_empty_image():
    red = I.empty_image(width=8, height=6, batch_size=2, color=0xFF0000)
    assert red.shape == (2, 6, 8, 3) and torch.equal(red[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    wide = I.empty_image(width=16, height=6, color=0x00FF00)
    out = I.image_batch(red, wide)
    assert out.shape == (3, 6, 8, 3) and torch.allclose(out[2], torch.tensor([0.0, 1.0, 0.0]).expand(6, 8, 3))


def test_comfy_prompts_translate_to_these_nodes():
    from engine.compat.comfy import prompt_to_workflow

    wf = prompt_to_workflow({
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 4}},
        "2": {"class_type": "LatentFromBatch", "inputs": {"samples": ["1", 0], "batch_index": 1, "length": 2}},
        "3": {"class_type": "LatentComposite", "inputs": {"samples_to": ["1", 0], "samples_from": ["2", 0], "x": 8, "y": 8, "feather": 0}},
        "4": {"class_type": "LatentBlend", "inputs": {"samples1": ["3", 0], "samples2": ["1", 0], "blend_factor": 0.5}},
    })
    assert wf["nodes"]["2"] == {"type": "LatentFromBatch", "inputs": {"batch_index": 1, "length": 2, "latent": {"node": "1", "output": "latent"}},
                                "ui": {"comfy_class": "LatentFromBatch"}}
    assert set(wf["nodes"]["3"]["inputs"]) == {"latent_to", "latent_from", "x", "y", "feather"}
    assert set(wf["nodes"]["4"]["inputs"]) == {"latent1", "latent2", "blend_factor"}


def test_save_latent_then_load_latent_round_trip(tmp_path):
    """SaveLatent writes ComfyUI's .latent (safetensors, latent_tensor + format marker, workflow metadata);
    LoadLatent reads it back exactly (and an old-format file is rescaled as ComfyUI does)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from engine.node import Folders, NodeContext

    folders = Folders(models=tmp_path, input=tmp_path / "in", output=tmp_path / "out", temp=tmp_path / "tmp")
    ctx = NodeContext(node_id="s", node_type="SaveLatent", folders=folders, workflow={"nodes": {"x": 1}})
    src = lat(2, family="sdxl")
    ui = N.save_latent(src, ctx, filename_prefix="latents/test")
    again = N.save_latent(src, ctx, filename_prefix="latents/test")
    assert ui.text == ["latents/test_00001_.latent"] and again.text == ["latents/test_00002_.latent"]
    path = folders.output / ui.text[0]
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"latent_tensor", "latent_format_version_0"}
        assert json.loads(f.metadata()["workflow"]) == {"nodes": {"x": 1}}
    folders.input.mkdir()
    path.replace(folders.input / "mine.latent")
    back = N.load_latent("mine.latent", NodeContext(folders=folders))
    assert torch.equal(back.samples, src.samples) and back.family == "sdxl"
    save_file({"latent_tensor": src.samples.contiguous()}, str(folders.input / "old.latent"))  # before format version 0
    assert torch.allclose(N.load_latent("old.latent", NodeContext(folders=folders)).samples, src.samples / 0.18215)
    assert N._input_latents(SimpleSettings(folders)) == ["mine.latent", "old.latent"]
    with pytest.raises(NodeError, match="not found"):
        N.load_latent("nope.latent", NodeContext(folders=folders))
    with pytest.raises(NodeError, match="inside|outside"):
        N.save_latent(src, ctx, filename_prefix="../escape")


class SimpleSettings:
    def __init__(self, folders):
        self._folders = folders

    def folders(self):
        return self._folders


def test_image_scale_to_total_pixels_and_its_comfy_form():
    from engine.compat.comfy import prompt_to_workflow

    img = I.empty_image(width=200, height=100)
    out = I.image_scale_to_total_pixels(img, "bilinear", megapixels=0.02)  # 0.02 * 2^20 = 20,971 px
    assert out.shape[1:3] == (102, 205) and abs(out.shape[1] * out.shape[2] - 20971) < 150
    wf = prompt_to_workflow({"1": {"class_type": "ImageScaleToTotalPixels",
                                   "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "megapixels": 1.0}}})
    assert wf["nodes"]["1"]["type"] == "ImageScaleToTotalPixels"
    assert wf["nodes"]["1"]["inputs"]["method"] == "nearest" and wf["nodes"]["1"]["inputs"]["megapixels"] == 1.0


@pytest.mark.parametrize("mode,expect", [("normal", lambda a, b: b), ("multiply", lambda a, b: a * b),
                                         ("screen", lambda a, b: 1 - (1 - a) * (1 - b)), ("difference", lambda a, b: a - b)])
def test_image_blend_modes(mode, expect):
    g = torch.Generator().manual_seed(9)
    a, b = torch.rand(1, 4, 6, 3, generator=g), torch.rand(1, 4, 6, 3, generator=g)
    out = I.image_blend(a, b, 0.7, mode)
    assert torch.allclose(out, (a * 0.3 + expect(a, b) * 0.7).clamp(0, 1))


def test_image_blend_overlay_and_soft_light_at_the_halves():
    a = torch.tensor([0.25, 0.75]).reshape(1, 1, 2, 1).expand(1, 1, 2, 3)
    b = torch.full_like(a, 0.5)
    assert torch.allclose(I.image_blend(a, b, 1.0, "overlay"), torch.tensor([0.25, 0.75]).reshape(1, 1, 2, 1).expand(1, 1, 2, 3))
    assert torch.allclose(I.image_blend(a, b, 1.0, "soft_light"), a)  # b = 0.5 leaves soft light neutral
    wide = I.image_blend(a, torch.rand(1, 2, 8, 3), 0.5, "normal")
    assert wide.shape == a.shape
