"""InpaintModelConditioning, ImageCompositeMasked (ImageComposite's resize_source), SplitImageWithAlpha and
JoinImageWithAlpha: ComfyUI's classes, against our own inpainting path and hand-computed images."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from engine.compat.comfy import prompt_to_workflow
from engine.registry import Registry
from nodes import image as I
from nodes import mask as M
from tests.nodes.sd_helpers import L, executor, gen, output_of, txt2img_nodes, wf, with_source


def _inpaint_nodes(ckpt: str, kind: str, **extra) -> dict:
    nodes = txt2img_nodes(ckpt, steps=5)
    nodes["src"] = {"type": "TestImageSource"}
    if kind == "InpaintModelConditioning":
        nodes["enc"] = {"type": kind, "inputs": {"positive": L("pos", "conditioning"), "negative": L("neg", "conditioning"),
                                                 "vae": L("ckpt", "vae"), "image": L("src", "image"),
                                                 "mask": L("src", "mask"), **extra}}
        nodes["sample"]["inputs"].update(positive=L("enc", "positive"), negative=L("enc", "negative"))
    else:
        nodes["enc"] = {"type": kind, "inputs": {"vae": L("ckpt", "vae"), "image": L("src", "image"),
                                                 "mask": L("src", "mask")}}
    nodes["sample"]["inputs"]["latent"] = L("enc", "latent")
    return nodes


def _source(ex):
    image = torch.rand(1, 64, 64, 3, generator=gen(5))
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 20:44] = 1.0
    with_source(ex, image=image, mask=mask)


def test_inpaint_model_conditioning_equals_vae_encode_for_inpaint_on_an_inpainting_unet(inpaint_models_dir, tmp_path):
    ex = executor(inpaint_models_dir, tmp_path)
    _source(ex)
    a = output_of(ex, ex.run(wf(_inpaint_nodes("tiny-inpaint", "InpaintModelConditioning"))), "dec", "image")
    b = output_of(ex, ex.run(wf(_inpaint_nodes("tiny-inpaint", "VAEEncodeForInpaint"))), "dec", "image")
    assert torch.equal(a, b)


def test_noise_mask_switch_on_a_regular_unet(models_dir, tmp_path):
    """noise_mask on: only the masked area is repainted; off: the whole image is resampled from its latent."""
    ex = executor(models_dir, tmp_path)
    _source(ex)
    on = ex.run(wf(_inpaint_nodes("tiny-sd15", "InpaintModelConditioning", noise_mask=True)))
    latent = output_of(ex, on, "enc", "latent")
    assert latent.noise_mask is not None and latent.inpaint is not None
    out = output_of(ex, on, "sample", "latent").samples
    outside = latent.noise_mask[0, ::8, ::8] == 0  # latent pixels fully outside the mask
    assert (out[0][:, outside] - latent.samples[0][:, outside]).abs().max() <= 1e-6
    off = ex.run(wf(_inpaint_nodes("tiny-sd15", "InpaintModelConditioning", noise_mask=False)))
    assert output_of(ex, off, "enc", "latent").noise_mask is None
    assert (output_of(ex, off, "sample", "latent").samples[0][:, outside] - latent.samples[0][:, outside]).abs().max() > 1e-3


def test_comfyui_prompt_translates():
    prompt = {"3": {"class_type": "InpaintModelConditioning",
                    "inputs": {"positive": ["1", 0], "negative": ["2", 0], "vae": ["4", 2], "pixels": ["5", 0],
                               "mask": ["5", 1], "noise_mask": False}},
              "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
              "1": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a"}},
              "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": ""}},
              "5": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
              "6": {"class_type": "ImageCompositeMasked", "inputs": {"destination": ["5", 0], "source": ["5", 0],
                                                                     "x": 8, "y": 0, "resize_source": True,
                                                                     "mask": ["5", 1]}}}
    nodes = prompt_to_workflow(prompt)["nodes"]
    assert nodes["3"]["type"] == "InpaintModelConditioning"
    assert nodes["3"]["inputs"]["image"] == L("5", "image") and nodes["3"]["inputs"]["noise_mask"] is False
    assert nodes["6"]["type"] == "ImageComposite" and nodes["6"]["inputs"]["resize_source"] is True
    assert set(prompt_to_workflow(prompt, Registry.default())["nodes"]) == set(prompt)


def test_composite_resize_source_scales_it_to_the_destination():
    dest = torch.zeros(1, 4, 6, 3)
    src = torch.ones(1, 2, 3, 3)
    assert I.image_composite(dest, src, 0, 0).sum() == 2 * 3 * 3  # pasted at its own size
    assert torch.equal(I.image_composite(dest, src, 0, 0, resize_source=True), torch.ones(1, 4, 6, 3))
    half = torch.zeros(1, 4, 6)
    half[..., 3:] = 1.0
    out = I.image_composite(dest, src, 0, 0, mask=half, resize_source=True)
    assert torch.equal(out[0, :, :3], torch.zeros(4, 3, 3)) and torch.equal(out[0, :, 3:], torch.ones(4, 3, 3))


def test_split_and_join_alpha(folders):
    rgba = torch.rand(2, 3, 4, 4)
    split = M.split_image_with_alpha(rgba)
    assert torch.equal(split.image, rgba[..., :3]) and torch.allclose(split.mask, 1 - rgba[..., 3])
    assert torch.equal(M.join_image_with_alpha(split.image, split.mask), torch.cat([rgba[..., :3], 1 - split.mask[..., None]], -1))
    rgb = torch.rand(1, 3, 4, 3)
    assert torch.count_nonzero(M.split_image_with_alpha(rgb).mask) == 0
    small = torch.zeros(1, 1, 2)
    small[..., 1] = 1.0  # right half transparent, resized bilinearly to the image
    joined = M.join_image_with_alpha(torch.rand(1, 2, 4, 3), small)
    assert joined.shape == (1, 2, 4, 4) and joined[0, 0, 0, 3] == 1.0 and joined[0, 0, 3, 3] == 0.0
    from engine.node import NodeContext

    ctx = NodeContext(node_id="s", node_type="SaveImage", run_id="r", folders=folders)
    ui = I.save_image(joined, ctx, filename_prefix="alpha")
    saved = Image.open(folders.output / ui.images[0].filename)
    assert saved.mode == "RGBA" and np.asarray(saved)[0, 3, 3] == 0 and np.asarray(saved)[0, 0, 3] == 255
