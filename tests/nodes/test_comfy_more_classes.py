"""More ComfyUI classes: ImageFlip, ImageRotate, ImagePadForOutpaint, LatentFlip / LatentRotate / LatentCrop,
VAEDecodeTiled / VAEEncodeTiled, ConditioningZeroOut, ConditioningSetAreaPercentage / ConditioningSetAreaStrength.
API prompts and editor (LiteGraph) workflows translate, and run through the Executor (tiny SD 1.5 for the model ones)."""

from pathlib import Path

import pytest
import torch

from engine.cache import OutputCache
from engine.compat.comfy import litegraph_to_workflow, prompt_to_workflow
from engine.executor import Executor
from engine.registry import Registry
from engine.settings import Settings
from nodes import image as I
from nodes import latent as N
from tests.nodes.sd_helpers import L, output_of, wf

ROOT = Path(__file__).resolve().parents[2]
INPUT = ROOT / "workflows" / "input"  # example.png: 96 x 64


def _executor(tmp_path, models_dir=None):
    settings = Settings(models_dir=models_dir, input_dir=INPUT, output_dir=tmp_path / "out", device="cpu") if models_dir \
        else Settings(input_dir=INPUT, output_dir=tmp_path / "out")
    return Executor(Registry.default(), settings, OutputCache())


# --- image classes, no model ------------------------------------------------------------------------------------------
IMAGE_PROMPT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png", "upload": "image"}},
    "2": {"class_type": "ImageFlip", "inputs": {"image": ["1", 0], "flip_method": "y-axis: horizontally"}},
    "3": {"class_type": "ImageRotate", "inputs": {"image": ["2", 0], "rotation": "90 degrees"}},
    "4": {"class_type": "ImagePadForOutpaint", "inputs": {"image": ["3", 0], "left": 16, "top": 0, "right": 8, "bottom": 24,
                                                          "feathering": 10}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "outpaint"}},
}


def test_image_prompt_translates():
    mask_use = {"6": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["7", 0], "mask": ["4", 1]}},
                "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}
    n = prompt_to_workflow({**IMAGE_PROMPT, **mask_use}, Registry.default())["nodes"]
    assert n["2"]["type"] == "ImageFlip" and n["2"]["inputs"]["flip_method"] == "y-axis: horizontally"
    assert n["3"]["type"] == "ImageRotate" and n["3"]["inputs"]["rotation"] == "90 degrees"
    assert n["4"]["type"] == "ImagePad"
    assert n["4"]["inputs"] == {"image": L("3", "image"), "left": 16, "top": 0, "right": 8, "bottom": 24, "feathering": 10,
                                "value": 0.5, "mode": "constant"}
    assert n["6"]["inputs"]["mask"] == L("4", "mask")


def test_image_prompt_runs(tmp_path):
    ex = _executor(tmp_path)
    r = ex.run(prompt_to_workflow(IMAGE_PROMPT, ex.registry))
    loaded = output_of(ex, r, "1", "image")
    turned = torch.rot90(torch.flip(loaded, dims=[2]), 1, [2, 1])
    assert torch.equal(output_of(ex, r, "3", "image"), turned)
    assert turned.shape == (1, 96, 64, 3)
    padded, mask = output_of(ex, r, "4", "image"), output_of(ex, r, "4", "mask")
    assert padded.shape == (1, 96 + 24, 16 + 64 + 8, 3) and mask.shape == (1, 120, 88)
    assert torch.equal(padded[:, :96, 16:80], turned) and torch.all(padded[:, 96:] == 0.5)
    assert torch.equal(mask, I.image_pad(turned, 16, 0, 8, 24, 0.5, "constant", 10).mask)
    assert mask[0, 50, 16] == 1.0 and mask[0, 50, 20] == pytest.approx(0.36) and mask[0, 50, 40] == 0.0  # ((10-4)/10)^2
    assert mask[0, 0, 40] == 0.0  # top not padded: no fade there
    assert len(r.output_paths(ex.settings)["5"]) == 1


# --- translations of the other classes ------------------------------------------------------------------------------
def test_latent_vae_and_conditioning_classes_translate():
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 128, "batch_size": 1}},
        "2": {"class_type": "LatentFlip", "inputs": {"samples": ["1", 0], "flip_method": "x-axis: vertically"}},
        "3": {"class_type": "LatentRotate", "inputs": {"samples": ["2", 0], "rotation": "270 degrees"}},
        "4": {"class_type": "LatentCrop", "inputs": {"samples": ["3", 0], "width": 64, "height": 64, "x": 8, "y": 0}},
        "5": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["4", 0], "vae": ["9", 2], "tile_size": 256, "overlap": 64,
                                                          "temporal_size": 64, "temporal_overlap": 8}},
        "6": {"class_type": "VAEEncodeTiled", "inputs": {"pixels": ["5", 0], "vae": ["9", 2], "tile_size": 512, "overlap": 64,
                                                          "temporal_size": 64, "temporal_overlap": 8}},
        "7": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["6", 0], "vae": ["9", 2], "tile_size": 320}},  # older ComfyUI
        "8": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["10", 0]}},
        "9": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
        "10": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["9", 1], "text": "a"}},
        "11": {"class_type": "ConditioningSetAreaPercentage", "inputs": {"conditioning": ["8", 0], "width": 0.5, "height": 0.25,
                                                                         "x": 0.5, "y": 0.75, "strength": 0.8}},
        "12": {"class_type": "ConditioningSetAreaStrength", "inputs": {"conditioning": ["11", 0], "strength": 2.0}},
    }
    n = prompt_to_workflow(prompt, Registry.default())["nodes"]
    assert (n["2"]["type"], n["2"]["inputs"]) == ("LatentFlip", {"latent": L("1", "latent"), "flip_method": "x-axis: vertically"})
    assert (n["3"]["type"], n["3"]["inputs"]) == ("LatentRotate", {"latent": L("2", "latent"), "rotation": "270 degrees"})
    assert (n["4"]["type"], n["4"]["inputs"]) == ("LatentCrop", {"latent": L("3", "latent"), "width": 64, "height": 64, "x": 8, "y": 0})
    assert (n["5"]["type"], n["5"]["inputs"]) == ("VAEDecode", {"latent": L("4", "latent"), "vae": L("9", "vae"), "tile_size": 256,
                                                                "tiled": True})  # overlap and temporal ones dropped
    assert (n["6"]["type"], n["6"]["inputs"]) == ("VAEEncode", {"image": L("5", "image"), "vae": L("9", "vae"), "tile_size": 512,
                                                                "tiled": True})
    assert n["7"]["inputs"] == {"latent": L("6", "latent"), "vae": L("9", "vae"), "tile_size": 320, "tiled": True}
    assert (n["8"]["type"], n["8"]["inputs"]) == ("ZeroConditioning", {"conditioning": L("10", "conditioning")})
    assert n["11"]["type"] == "ConditioningSetAreaPercentage"
    assert n["11"]["inputs"] == {"conditioning": L("8", "conditioning"), "width": 0.5, "height": 0.25, "x": 0.5, "y": 0.75,
                                 "strength": 0.8}
    assert (n["12"]["type"], n["12"]["inputs"]) == ("ConditioningSetAreaStrength", {"conditioning": L("11", "conditioning"),
                                                                                    "strength": 2.0})


# --- LiteGraph: widgets_values in ComfyUI's order ----------------------------------------------------------------------
def _node(id, type, inputs=(), outputs=(), widgets=None):
    return {"id": id, "type": type, "pos": [id * 100, 0], "mode": 0,
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": n, "type": t, "links": links} for n, t, links in outputs],
            **({"widgets_values": widgets} if widgets is not None else {})}


def test_litegraph_widgets_of_outpaint_and_tiled_decode():
    lg = {"nodes": [
        _node(1, "LoadImage", outputs=[("IMAGE", "IMAGE", [1])], widgets=["example.png", "image"]),
        _node(2, "ImagePadForOutpaint", inputs=[("image", "IMAGE", 1)], outputs=[("IMAGE", "IMAGE", [2]), ("MASK", "MASK", [3])],
              widgets=[8, 16, 0, 24, 12]),
        _node(3, "CheckpointLoaderSimple", outputs=[("MODEL", "MODEL", []), ("CLIP", "CLIP", []), ("VAE", "VAE", [4, 5, 6])],
              widgets=["tiny-sd15"]),
        _node(4, "VAEEncodeTiled", inputs=[("pixels", "IMAGE", 2), ("vae", "VAE", 4)], outputs=[("LATENT", "LATENT", [7, 8])],
              widgets=[512, 64, 64, 8]),
        _node(5, "VAEDecodeTiled", inputs=[("samples", "LATENT", 7), ("vae", "VAE", 5)], outputs=[("IMAGE", "IMAGE", [9])],
              widgets=[256, 64, 64, 8]),  # current ComfyUI: tile_size, overlap, temporal_size, temporal_overlap
        _node(6, "VAEDecodeTiled", inputs=[("samples", "LATENT", 8), ("vae", "VAE", 6)], outputs=[("IMAGE", "IMAGE", [10])],
              widgets=[320]),  # before overlap existed: tile_size alone
        _node(7, "LatentCrop", inputs=[("samples", "LATENT", None)], outputs=[("LATENT", "LATENT", [])], widgets=[128, 64, 8, 16]),
        _node(8, "ImageFlip", inputs=[("image", "IMAGE", None)], outputs=[("IMAGE", "IMAGE", [])], widgets=["y-axis: horizontally"]),
        _node(9, "ConditioningSetAreaPercentage", inputs=[("conditioning", "CONDITIONING", None)],
              outputs=[("CONDITIONING", "CONDITIONING", [])], widgets=[0.5, 1, 0.25, 0, 1.5]),
        _node(10, "SaveImage", inputs=[("images", "IMAGE", 9)], widgets=["a"]),
        _node(11, "SaveImage", inputs=[("images", "IMAGE", 10)], widgets=["b"]),
        _node(12, "PreviewImage", inputs=[("images", "IMAGE", 3)]),
    ], "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 4, 0, "IMAGE"], [3, 2, 1, 12, 0, "MASK"], [4, 3, 2, 4, 1, "VAE"],
                 [5, 3, 2, 5, 1, "VAE"], [6, 3, 2, 6, 1, "VAE"], [7, 4, 0, 5, 0, "LATENT"], [8, 4, 0, 6, 0, "LATENT"],
                 [9, 5, 0, 10, 0, "IMAGE"], [10, 6, 0, 11, 0, "IMAGE"]]}
    got, warnings = litegraph_to_workflow(lg, Registry.default())
    n = got["nodes"]
    assert n["2"]["type"] == "ImagePad"
    assert n["2"]["inputs"] == {"image": L("1", "image"), "left": 8, "top": 16, "right": 0, "bottom": 24, "feathering": 12,
                                "value": 0.5, "mode": "constant"}
    assert n["12"]["inputs"] == {"images": L("2", "mask")}
    assert n["4"]["inputs"] == {"image": L("2", "image"), "vae": L("3", "vae"), "tile_size": 512, "tiled": True}
    assert n["5"]["inputs"] == {"latent": L("4", "latent"), "vae": L("3", "vae"), "tile_size": 256, "tiled": True}
    assert n["6"]["inputs"] == {"latent": L("4", "latent"), "vae": L("3", "vae"), "tile_size": 320, "tiled": True}
    assert n["7"]["inputs"] == {"width": 128, "height": 64, "x": 8, "y": 16}
    assert n["8"]["inputs"] == {"flip_method": "y-axis: horizontally"}
    assert n["9"]["inputs"] == {"width": 0.5, "height": 1, "x": 0.25, "y": 0, "strength": 1.5}
    # the short VAEDecodeTiled leaves the inputs we drop anyway unset; the warning says their defaults apply
    assert [w for w in warnings if "node 6" not in w] == []


# --- through the Executor with a tiny SD 1.5 -------------------------------------------------------------------------
def test_model_classes_run_from_a_comfy_prompt(models_dir, tmp_path):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle"}},
        "3": {"class_type": "ConditioningSetAreaPercentage", "inputs": {"conditioning": ["2", 0], "width": 0.5, "height": 1.0,
                                                                        "x": 0.25, "y": 0.0, "strength": 0.8}},
        "4": {"class_type": "ConditioningSetAreaStrength", "inputs": {"conditioning": ["3", 0], "strength": 1.5}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "6": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["5", 0]}},
        "7": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "8": {"class_type": "ImageScale", "inputs": {"image": ["7", 0], "upscale_method": "bilinear", "width": 128,
                                                     "height": 96, "crop": "disabled"}},
        "9": {"class_type": "VAEEncodeTiled", "inputs": {"pixels": ["8", 0], "vae": ["1", 2], "tile_size": 64, "overlap": 16,
                                                          "temporal_size": 64, "temporal_overlap": 8}},
        "10": {"class_type": "LatentFlip", "inputs": {"samples": ["9", 0], "flip_method": "y-axis: horizontally"}},
        "11": {"class_type": "LatentRotate", "inputs": {"samples": ["10", 0], "rotation": "90 degrees"}},
        "12": {"class_type": "LatentCrop", "inputs": {"samples": ["11", 0], "width": 64, "height": 64, "x": 16, "y": 32}},
        "13": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["4", 0], "negative": ["6", 0],
                                                     "latent_image": ["12", 0], "seed": 3, "steps": 2, "cfg": 5.0,
                                                     "sampler_name": "euler", "scheduler": "normal", "denoise": 0.5}},
        "14": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["13", 0], "vae": ["1", 2], "tile_size": 64, "overlap": 64,
                                                           "temporal_size": 64, "temporal_overlap": 8}},
        "15": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": "more"}},
    }
    ex = _executor(tmp_path, models_dir)
    r = ex.run(prompt_to_workflow(prompt, ex.registry))
    assert r.status == "success", r.error
    encoded = output_of(ex, r, "9", "latent")
    assert encoded.samples.shape == (1, 4, 12, 16) and encoded.family == "sd15"
    turned = output_of(ex, r, "11", "latent").samples
    assert torch.equal(turned, torch.rot90(torch.flip(encoded.samples, dims=[3]), 1, [3, 2]))
    cropped = output_of(ex, r, "12", "latent").samples
    assert torch.equal(cropped, turned[..., 4:12, 2:10])
    zero = output_of(ex, r, "6", "conditioning")
    assert not zero.embeds.any() and zero.embeds.shape == output_of(ex, r, "5", "conditioning").embeds.shape
    area = output_of(ex, r, "4", "conditioning")
    assert area.area_fraction == (0.25, 0.0, 0.5, 1.0) and area.area is None and area.strength == 1.5
    image = output_of(ex, r, "14", "image")
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_area_percentage_and_strength_on_the_conditioning(models_dir, tmp_path):
    """The fractions are stored on every prompt of a combined conditioning; a pixel area replaces them (ComfyUI keeps
    one `area`); ConditioningSetAreaStrength changes the strength only."""
    from nodes import conditioning as C
    from nodes.sd.denoise import conditioning_parts

    ex = _executor(tmp_path, models_dir)
    nodes = {"ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd15"}},
             "a": {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text": "a"}},
             "b": {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text": "b"}},
             "mix": {"type": "ConditioningCombine", "inputs": {"conditioning_1": L("a", "conditioning"),
                                                               "conditioning_2": L("b", "conditioning")}},
             "pct": {"type": "ConditioningSetAreaPercentage", "inputs": {"conditioning": L("mix", "conditioning"), "width": 0.5,
                                                                         "height": 0.5, "x": 0.5, "y": 0.25}}}
    events = []
    r = ex.run(wf(nodes), targets=["pct"], on_event=events.append)
    assert r.status == "success", r.error
    assert [e.message for e in events if e.type == "node_warning"] == []
    mix, pct = output_of(ex, r, "mix", "conditioning"), output_of(ex, r, "pct", "conditioning")
    parts = conditioning_parts(pct)
    assert len(parts) == 2 and all(p.area_fraction == (0.5, 0.25, 0.5, 0.5) and p.strength == 1.0 for p in parts)
    assert [torch.equal(p.embeds, q.embeds) for p, q in zip(parts, conditioning_parts(mix))] == [True, True]
    strong = C.conditioning_set_area_strength(pct, 3.0)
    assert [(p.area_fraction, p.strength) for p in conditioning_parts(strong)] == [((0.5, 0.25, 0.5, 0.5), 3.0)] * 2
    pixels = C.conditioning_set_area(strong, 32, 16, 8, 0, 0.5)
    assert [(p.area_fraction, p.area, p.strength) for p in conditioning_parts(pixels)] == [
        (None, (8, 0, 32, 16), 0.5)] * 2
    masked = C.conditioning_set_area_strength(C.conditioning_set_mask(mix, torch.ones(1, 8, 8), 2.0), 0.7)
    assert all(p.mask is not None and p.strength == 0.7 for p in conditioning_parts(masked))


@pytest.mark.parametrize("size", [64, 128])
def test_a_fractional_area_samples_as_the_same_area_in_pixels(models_dir, tmp_path, size):
    """The right half as fractions equals the right half in pixels, at any image size (one graph for all sizes)."""
    from tests.nodes.sd_helpers import txt2img_nodes

    ex = _executor(tmp_path, models_dir)
    got = []
    for kind, inputs in (("ConditioningSetAreaPercentage", {"x": 0.5, "y": 0.0, "width": 0.5, "height": 1.0}),
                         ("ConditioningSetArea", {"x": size // 2, "y": 0, "width": size // 2, "height": size})):
        nodes = txt2img_nodes("tiny-sd15", steps=3, seed=5, size=size)
        nodes["blue"] = {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text": "blue square"}}
        nodes["area"] = {"type": kind, "inputs": {"conditioning": L("blue", "conditioning"), "strength": 0.8, **inputs}}
        nodes["mix"] = {"type": "ConditioningCombine", "inputs": {"conditioning_1": L("pos", "conditioning"),
                                                                  "conditioning_2": L("area", "conditioning")}}
        nodes["sample"]["inputs"]["positive"] = L("mix", "conditioning")
        r = ex.run(wf(nodes), targets=["sample"])
        got.append(output_of(ex, r, "sample", "latent").samples)
    plain = txt2img_nodes("tiny-sd15", steps=3, seed=5, size=size)
    whole = output_of(ex, ex.run(wf(plain), targets=["sample"]), "sample", "latent").samples
    assert torch.equal(got[0], got[1])
    assert (got[0] - whole).abs().max() > 1e-3  # the area really took part


def test_tiled_vae_against_untiled(models_dir, tmp_path):
    """With the tiny VAE, tiles change the result a lot (its GroupNorms and attention see one tile, not the image:
    there is no tolerance a random tiny VAE would meet), so: a tile at least as large as the image is exactly the
    untiled path, a smaller one runs with the right shape and a different result (the tiles were used), and the
    shared model's tiling is switched off again afterwards."""
    ex = _executor(tmp_path, models_dir)
    nodes = {"ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd15"}},
             "load": {"type": "LoadImage", "inputs": {"image": "example.png"}},
             "size": {"type": "ImageResize", "inputs": {"image": L("load", "image"), "width": 128, "height": 96}}}
    for name, tiled, tile in (("plain", False, 512), ("big", True, 256), ("small", True, 64)):
        nodes[f"enc_{name}"] = {"type": "VAEEncode", "inputs": {"vae": L("ckpt", "vae"), "image": L("size", "image"),
                                                                 "tiled": tiled, "tile_size": tile}}
        nodes[f"dec_{name}"] = {"type": "VAEDecode", "inputs": {"vae": L("ckpt", "vae"), "latent": L("enc_plain", "latent"),
                                                                 "tiled": tiled, "tile_size": tile}}
        nodes[f"save_{name}"] = {"type": "SaveImage", "inputs": {"images": L(f"dec_{name}", "image"), "filename_prefix": name}}
        nodes[f"keep_{name}"] = {"type": "SaveLatent", "inputs": {"latent": L(f"enc_{name}", "latent")}}
    r = ex.run(wf(nodes))
    assert r.status == "success", r.error
    enc = {k: output_of(ex, r, f"enc_{k}", "latent").samples for k in ("plain", "big", "small")}
    dec = {k: output_of(ex, r, f"dec_{k}", "image") for k in ("plain", "big", "small")}
    assert torch.equal(enc["big"], enc["plain"]) and torch.equal(dec["big"], dec["plain"])
    assert enc["small"].shape == (1, 4, 12, 16) and dec["small"].shape == (1, 96, 128, 3)
    assert torch.isfinite(enc["small"]).all() and torch.isfinite(dec["small"]).all()
    assert not torch.equal(enc["small"], enc["plain"]) and not torch.equal(dec["small"], dec["plain"])
    model = output_of(ex, r, "ckpt", "vae").model
    assert model.use_tiling is False


def test_latent_crop_of_a_rotated_inpainting_latent_keeps_the_mask_in_place():
    """What SetLatentNoiseMask then LatentRotate then LatentCrop leave: the mask still covers the same latents."""
    from nodes.sd.handles import Latent

    samples = torch.zeros(1, 4, 16, 24)
    samples[..., 2:4, 10:12] = 1.0  # a patch, and the mask over exactly it
    mask = torch.zeros(1, 128, 192)
    mask[:, 16:32, 80:96] = 1.0
    src = N.set_latent_noise_mask(Latent(samples=samples), mask)
    out = N.latent_crop(N.latent_rotate(src, "90 degrees"), 48, 48, 64, 64)  # the patch: rows 10:12, cols 12:14 after the turn
    hit = out.samples[0, 0] > 0
    assert hit.any()
    m = out.noise_mask[0].reshape(hit.shape[0], 8, hit.shape[1], 8).amax(dim=(1, 3)) > 0
    assert torch.equal(m, hit)
