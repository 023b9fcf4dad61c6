"""Flip, rotate and crop for images and latents, and ImagePad's outpainting feather, against hand-computed tensors
(ComfyUI's semantics: comfy_extras/nodes_images.py ImageFlip / ImageRotate, nodes.py LatentFlip / LatentRotate /
LatentCrop / ImagePadForOutpaint)."""

import pytest
import torch

from engine.registry import Registry
from engine.settings import Settings
from nodes import image as I
from nodes import latent as N
from nodes.sd.handles import Latent

# a non-symmetric ramp, [1, 2, 3, 1]: every flip and turn moves its values somewhere else
RAMP = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def img(rows):
    return torch.tensor(rows).reshape(1, len(rows), len(rows[0]), 1)


def up8(t):
    """Latent rows and columns as a pixel-resolution mask (each latent pixel 8 x 8)."""
    return t.repeat_interleave(8, -2).repeat_interleave(8, -1)


def lat(rows, mask_dims=3):
    samples = torch.tensor(rows).reshape(1, 1, len(rows), len(rows[0]))
    mask = up8(samples[:, 0]) if mask_dims == 3 else up8(samples)
    inpaint = torch.cat([samples, -samples], dim=1)
    return Latent(samples=samples, family="sd15", noise_mask=mask, inpaint=inpaint)


# --- images ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, want", [
    ("x-axis: vertically", [[3.0, 4.0, 5.0], [0.0, 1.0, 2.0]]),  # upside down
    ("y-axis: horizontally", [[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]),  # mirrored left to right
])
def test_image_flip(method, want):
    assert torch.equal(I.image_flip(img(RAMP), method), img(want))


@pytest.mark.parametrize("rotation, want", [
    ("none", RAMP),
    ("90 degrees", [[3.0, 0.0], [4.0, 1.0], [5.0, 2.0]]),  # clockwise: the top-left value ends top-right
    ("180 degrees", [[5.0, 4.0, 3.0], [2.0, 1.0, 0.0]]),
    ("270 degrees", [[2.0, 5.0], [1.0, 4.0], [0.0, 3.0]]),
])
def test_image_rotate_is_clockwise(rotation, want):
    out = I.image_rotate(img(RAMP), rotation)
    assert torch.equal(out, img(want)) and out.is_contiguous()


def test_image_rotate_keeps_batch_and_channels():
    x = torch.rand(2, 4, 6, 3)
    out = I.image_rotate(x, "90 degrees")
    assert out.shape == (2, 6, 4, 3)
    assert torch.equal(out[1, :, :, 2], torch.rot90(x[1, :, :, 2], 1, [1, 0]))


# --- latents: the samples move as the image would, and the noise mask / inpainting latents with them -----------------
def _consistent(out: Latent, want):
    w = torch.tensor(want).reshape(1, 1, len(want), len(want[0]))
    assert torch.equal(out.samples, w)
    assert torch.equal(out.inpaint, torch.cat([w, -w], dim=1))
    m = out.noise_mask
    assert torch.equal(m, up8(w[:, 0]) if m.ndim == 3 else up8(w))


@pytest.mark.parametrize("mask_dims", [3, 4])
@pytest.mark.parametrize("method, want", [
    ("x-axis: vertically", [[3.0, 4.0, 5.0], [0.0, 1.0, 2.0]]),
    ("y-axis: horizontally", [[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]),
])
def test_latent_flip(method, want, mask_dims):
    _consistent(N.latent_flip(lat(RAMP, mask_dims), method), want)


@pytest.mark.parametrize("mask_dims", [3, 4])
@pytest.mark.parametrize("rotation, want", [
    ("90 degrees", [[3.0, 0.0], [4.0, 1.0], [5.0, 2.0]]),
    ("180 degrees", [[5.0, 4.0, 3.0], [2.0, 1.0, 0.0]]),
    ("270 degrees", [[2.0, 5.0], [1.0, 4.0], [0.0, 3.0]]),
])
def test_latent_rotate(rotation, want, mask_dims):
    _consistent(N.latent_rotate(lat(RAMP, mask_dims), rotation), want)


def test_latent_rotate_none_and_no_masks():
    src = lat(RAMP)
    assert N.latent_rotate(src, "none") is src
    plain = Latent(samples=torch.tensor(RAMP).reshape(1, 1, 2, 3))
    out = N.latent_flip(plain, "y-axis: horizontally")
    assert out.noise_mask is None and out.inpaint is None and out.family is None


def _grid(h, w):
    return (torch.arange(h * w, dtype=torch.float32).reshape(h, w)).tolist()


@pytest.mark.parametrize("width, height, x, y, rows, cols", [
    (64, 32, 40, 16, (2, 6), (5, 13)),  # inside: pixels // 8
    (512, 512, 0, 0, (0, 12), (0, 16)),  # larger than the latents: clipped
    (512, 512, 120, 200, (4, 12), (8, 16)),  # origin moved back so that 8 latent pixels (64 px) remain, as ComfyUI
    (8, 8, 120, 88, (4, 5), (8, 9)),
])
def test_latent_crop_bounds(width, height, x, y, rows, cols):
    src = lat(_grid(12, 16))  # 96 x 128 pixels
    out = N.latent_crop(src, width, height, x, y)
    want = torch.tensor(_grid(12, 16))[rows[0]:rows[1], cols[0]:cols[1]].tolist()
    _consistent(out, want)


def test_latent_crop_mask_at_another_resolution():
    """A noise mask of any size (SetLatentNoiseMask takes any MASK) is cut at the same fractions of its size."""
    src = Latent(samples=torch.zeros(1, 4, 12, 16), noise_mask=torch.arange(24 * 32.0).reshape(1, 24, 32))
    out = N.latent_crop(src, 64, 32, 40, 16)  # latent rows 2:6, cols 5:13 -> mask rows 4:12, cols 10:26
    assert out.samples.shape == (1, 4, 4, 8)
    assert torch.equal(out.noise_mask, src.noise_mask[:, 4:12, 10:26])


# --- ImagePad's feathering (ImagePadForOutpaint) -----------------------------------------------------------------------
def test_outpaint_mask_matches_comfyui_by_hand():
    """A 5 x 6 image padded top 1, bottom 1, left 2 with feathering 2. ComfyUI's distance to a padded side is i from
    the top but 5 - i from the bottom, and j from the left; the right side is not padded. v = ((2 - d) / 2)^2:
    d = 0 -> 1, d = 1 -> 0.25, d >= 2 -> 0."""
    image = torch.rand(1, 5, 6, 3)
    out = I.image_pad(image, left=2, top=1, right=0, bottom=1, value=0.5, mode="constant", feathering=2)
    q = 0.25
    want = torch.tensor([
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],  # image row 0: next to the top pad
        [1, 1, 1, q, q, q, q, q],
        [1, 1, 1, q, 0, 0, 0, 0],
        [1, 1, 1, q, 0, 0, 0, 0],
        [1, 1, 1, q, q, q, q, q],  # image row 4: 1 from the bottom pad, as ComfyUI counts it
        [1, 1, 1, 1, 1, 1, 1, 1],
    ], dtype=torch.float32)
    assert torch.equal(out.mask, want[None])
    assert torch.equal(out.image[:, 1:6, 2:8], image)
    assert torch.all(out.image[:, 0] == 0.5) and torch.all(out.image[:, :, :2] == 0.5) and torch.all(out.image[:, 6] == 0.5)


def test_outpaint_feather_values_with_a_wider_ramp():
    """feathering 3: d = 0, 1, 2 give 1, (2/3)^2, (1/3)^2 (the double rounded to float32, as ComfyUI stores it)."""
    out = I.image_pad(torch.zeros(2, 8, 8, 3), left=8, feathering=3)
    assert out.mask.shape == (2, 8, 16)
    v1, v2 = 2 / 3, 1 / 3
    assert torch.equal(out.mask[0, 4, 8:], torch.tensor([1.0, v1 * v1, v2 * v2, 0, 0, 0, 0, 0], dtype=torch.float32))
    assert torch.equal(out.mask[0], out.mask[1])


@pytest.mark.parametrize("feathering", [0, 3, 10])
def test_outpaint_feather_off_keeps_the_hard_mask(feathering):
    """No feathering, or too much for the image (2 x feathering >= a side: ComfyUI skips it), gives the old mask."""
    image = torch.rand(1, 6, 9, 3)
    out = I.image_pad(image, left=1, top=2, right=3, bottom=4, feathering=feathering)
    want = torch.ones(1, 12, 13)
    want[:, 2:8, 1:10] = 0
    assert torch.equal(out.mask, want) and torch.equal(out.image[:, 2:8, 1:10], image)
    assert torch.all(out.image[:, :2] == 0.0)  # ImagePad's own default fill stays black


def test_pad_without_pads_and_with_feathering_masks_nothing():
    out = I.image_pad(torch.rand(1, 8, 8, 3), feathering=2)
    assert out.mask.shape == (1, 8, 8) and not out.mask.any()


# --- errors name the input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("node, inputs, bad, says", [
    ("ImageFlip", {"flip_method": "z-axis"}, "flip_method", "x-axis: vertically"),
    ("ImageRotate", {"rotation": "45 degrees"}, "rotation", "90 degrees"),
    ("LatentCrop", {"width": 60}, "width", "multiple of 8"),
    ("LatentCrop", {"x": -8}, "x", "greater than or equal to 0"),
    ("ImagePad", {"feathering": -1}, "feathering", "greater than or equal to 0"),
    ("VAEDecode", {"tile_size": 100}, "tile_size", "multiple of 32"),
    ("ConditioningSetAreaPercentage", {"width": 1.5}, "width", "less than or equal to 1"),
])
def test_bad_values_name_the_input(node, inputs, bad, says):
    sources = {"ImageFlip": "image", "ImageRotate": "image", "ImagePad": "image", "LatentCrop": "latent",
               "VAEDecode": "latent", "ConditioningSetAreaPercentage": "conditioning"}
    src = {"image": ("LoadImage", {"image": "example.png"}, "image"),
           "latent": ("EmptyLatent", {"width": 64, "height": 64}, "latent")}.get(sources[node])
    nodes = {"n": {"type": node, "inputs": dict(inputs)}}
    if src is not None:
        nodes["src"] = {"type": src[0], "inputs": src[1]}
        nodes["n"]["inputs"][sources[node]] = {"node": "src", "output": src[2]}
    from engine.graph import validate

    _, errors = validate({"format": "latentloom.workflow", "version": 1, "nodes": nodes}, Registry.default(), Settings())
    mine = [e for e in errors if e.node_id == "n" and e.input == bad]
    assert mine, errors
    assert says in mine[0].message
