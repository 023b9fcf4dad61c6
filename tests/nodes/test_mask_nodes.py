"""Mask nodes (nodes/mask.py, nodes/impl/masks.py): hand-worked numbers, loading, and ComfyUI prompts / editor files."""

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cache import OutputCache
from engine.compat.comfy import litegraph_to_workflow, prompt_to_workflow
from engine.executor import Executor
from engine.node import NodeContext, NodeError
from engine.registry import Registry
from engine.settings import Settings
from nodes import mask as M


def ctx(folders):
    return NodeContext(node_id="n1", node_type="LoadImageMask", run_id="abcdef0123", folders=folders)


def t(rows):
    """A batch-of-1 mask from nested lists."""
    return torch.tensor(rows, dtype=torch.float32)[None]


def close(a, b):
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-6)


# --- MaskComposite ----------------------------------------------------------------------------------------
DEST = [[0.2, 0.4, 0.6, 0.8],
        [1.0, 0.5, 0.9, 0.3],
        [0.9, 0.1, 0.7, 0.6]]
SRC = [[0.6, 1.0],
       [0.8, 0.2]]


@pytest.mark.parametrize("operation, region", [
    ("multiply", [[0.30, 0.90], [0.08, 0.14]]),
    ("add", [[1.0, 1.0], [0.9, 0.9]]),  # 1.1 and 1.9 clamp to 1
    ("subtract", [[0.0, 0.0], [0.0, 0.5]]),  # -0.1, -0.1, -0.7 clamp to 0
    # rounded first: destination [[0.5 -> 0, 0.9 -> 1], [0.1 -> 0, 0.7 -> 1]], source [[1, 1], [1, 0]]
    ("and", [[0.0, 1.0], [0.0, 0.0]]),
    ("or", [[1.0, 1.0], [1.0, 1.0]]),
    ("xor", [[1.0, 0.0], [1.0, 1.0]]),
])
def test_mask_composite_operations(operation, region):
    out = M.mask_composite(t(DEST), t(SRC), x=1, y=1, operation=operation)
    expected = [row[:] for row in DEST]
    expected[1][1:3] = region[0]
    expected[2][1:3] = region[1]
    assert close(out, t(expected)), out


def test_mask_composite_clips_the_source_to_the_destination():
    out = M.mask_composite(t(DEST), t(SRC), x=3, y=2, operation="multiply")  # only SRC[0][0] lands, on (2, 3)
    expected = [row[:] for row in DEST]
    expected[2][3] = 0.6 * 0.6
    assert close(out, t(expected))
    for x, y in ((4, 0), (0, 3), (100, 100)):  # no overlap at all: the destination as it was
        assert close(M.mask_composite(t(DEST), t(SRC), x=x, y=y, operation="add"), t(DEST))


def test_mask_composite_clamps_everywhere_and_keeps_its_inputs():
    dest = t([[1.5, -0.5], [0.25, 0.75]])
    before = dest.clone()
    out = M.mask_composite(dest, t([[0.5]]), x=1, y=1, operation="add")
    assert close(out, t([[1.0, 0.0], [0.25, 1.0]]))
    assert torch.equal(dest, before)


def test_mask_composite_broadcasts_a_batch_of_one():
    dest = torch.stack([torch.full((2, 2), 0.5), torch.full((2, 2), 1.0)])  # batch of 2
    src = torch.tensor([[[0.5, 0.0]]])  # batch of 1, 1x2
    out = M.mask_composite(dest, src, 0, 1, "multiply")
    assert close(out, torch.tensor([[[0.5, 0.5], [0.25, 0.0]], [[1.0, 1.0], [0.5, 0.0]]]))
    out = M.mask_composite(torch.zeros(2, 2), torch.stack([torch.ones(1, 1), torch.full((1, 1), 0.5)]), 1, 0, "add")
    assert close(out, torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.5], [0.0, 0.0]]]))  # 2-D destination too
    with pytest.raises(NodeError, match="destination holds 2 masks and source 3"):
        M.mask_composite(torch.zeros(2, 4, 4), torch.zeros(3, 2, 2), 0, 0, "add")


# --- FeatherMask ------------------------------------------------------------------------------------------
def test_feather_edges():
    out = M.feather_mask(torch.ones(1, 4, 5), left=2, top=1, right=3, bottom=2)
    # columns: left 2 -> [1/2, 1, ...]; right 3 -> [..., 1, 2/3, 1/3]; rows: top 1 -> no change; bottom 2 -> [..., 1/2]
    assert close(out, t([[0.5, 1, 1, 2 / 3, 1 / 3],
                         [0.5, 1, 1, 2 / 3, 1 / 3],
                         [0.5, 1, 1, 2 / 3, 1 / 3],
                         [0.25, 0.5, 0.5, 1 / 3, 1 / 6]]))


def test_feather_overlapping_and_oversized_bands():
    row = torch.ones(1, 1, 3)
    assert close(M.feather_mask(row, 3, 0, 3, 0), t([[1 / 3, 4 / 9, 1 / 3]]))  # both ramps multiply
    assert close(M.feather_mask(row, 10, 0, 0, 0), t([[1 / 3, 2 / 3, 1.0]]))  # capped at the width
    assert close(M.feather_mask(t([[0.6, 0.6]]), 0, 0, 0, 0), t([[0.6, 0.6]]))
    values = torch.tensor([[[0.8, 0.4], [0.2, 1.0]]])
    assert close(M.feather_mask(values, 0, 2, 0, 0), t([[0.4, 0.2], [0.2, 1.0]]))  # scales the mask's own values


# --- GrowMask ---------------------------------------------------------------------------------------------
def dot():
    m = torch.zeros(1, 5, 5)
    m[0, 2, 2] = 1
    return m


@pytest.mark.parametrize("expand, tapered, expected", [
    (1, True, [[0, 0, 0, 0, 0],
               [0, 0, 1, 0, 0],
               [0, 1, 1, 1, 0],
               [0, 0, 1, 0, 0],
               [0, 0, 0, 0, 0]]),
    (1, False, [[0, 0, 0, 0, 0],
                [0, 1, 1, 1, 0],
                [0, 1, 1, 1, 0],
                [0, 1, 1, 1, 0],
                [0, 0, 0, 0, 0]]),
    (2, True, [[0, 0, 1, 0, 0],
               [0, 1, 1, 1, 0],
               [1, 1, 1, 1, 1],
               [0, 1, 1, 1, 0],
               [0, 0, 1, 0, 0]]),
    (2, False, [[1] * 5] * 5),
])
def test_grow(expand, tapered, expected):
    assert torch.equal(M.grow_mask(dot(), expand, tapered), t(expected))


def hole():
    """All ones but the top-left pixel: only the square window sees it diagonally."""
    m = torch.ones(1, 5, 5)
    m[0, 0, 0] = 0
    return m


@pytest.mark.parametrize("expand, tapered, zeros", [
    (-1, True, [(0, 0), (0, 1), (1, 0)]),
    (-1, False, [(0, 0), (0, 1), (1, 0), (1, 1)]),
    (-2, True, [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0)]),
    (-2, False, [(r, c) for r in range(3) for c in range(3)]),
])
def test_shrink(expand, tapered, zeros):
    expected = torch.ones(1, 5, 5)
    for r, c in zeros:
        expected[0, r, c] = 0
    # the border of the mask does not erode: pixels outside it take no part (scipy's reflect border does the same)
    assert torch.equal(M.grow_mask(hole(), expand, tapered), expected)


def test_grow_grey_values_and_limits():
    row = t([[0.2, 0.9, 0.4]])
    assert close(M.grow_mask(row, 1, True), t([[0.9, 0.9, 0.9]]))
    assert close(M.grow_mask(row, -1, False), t([[0.2, 0.2, 0.4]]))
    assert torch.equal(M.grow_mask(row, 0, True), row)
    assert torch.equal(M.grow_mask(dot(), 16384, True), torch.ones(1, 5, 5))  # saturates, quickly
    assert M.grow_mask(dot()[0], 1, True).shape == (1, 5, 5)  # a 2-D mask is a batch of 1


# --- threshold, colour, solid, invert, crop, conversions ----------------------------------------------------
def test_threshold_is_strictly_above():
    assert torch.equal(M.threshold_mask(t([[0.2, 0.5, 0.51, 1.0]]), 0.5), t([[0, 0, 1, 1]]))
    assert torch.equal(M.threshold_mask(t([[0.0, 0.01]]), 0.0), t([[0, 1]]))


def test_image_color_to_mask_rounds_like_comfyui():
    px = [[1.0, 0.0, 0.0],  # 0xFF0000
          [0.5, 0.5, 0.5],  # 127.5 rounds half to even: 128 -> 0x808080
          [128 / 255] * 3,  # 0x808080
          [127 / 255] * 3,  # 0x7F7F7F
          [1.2, -0.1, 0.0]]  # clamped first: 0xFF0000
    image = torch.tensor(px, dtype=torch.float32).reshape(1, 1, 5, 3)
    assert torch.equal(M.image_color_to_mask(image, 0x808080), t([[0, 1, 1, 0, 0]]))
    assert torch.equal(M.image_color_to_mask(image, 0xFF0000), t([[1, 0, 0, 0, 1]]))
    assert torch.equal(M.image_color_to_mask(image, 0x7F7F7F), t([[0, 0, 0, 1, 0]]))


def test_solid_invert_and_conversions():
    solid = M.solid_mask(0.25, width=3, height=2)
    assert solid.shape == (1, 2, 3) and solid.dtype == torch.float32 and torch.all(solid == 0.25)
    assert close(M.invert_mask(torch.tensor([[0.0, 0.25]])), t([[1.0, 0.75]]))  # 2-D in, batch of 1 out
    image = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]]]).reshape(1, 1, 2, 4)
    assert close(M.image_to_mask(image, "green"), t([[0.2, 0.6]]))
    assert close(M.image_to_mask(image, "alpha"), t([[0.4, 0.8]]))  # the alpha value itself, not inverted
    with pytest.raises(NodeError, match="channel 'alpha' needs an image with 4 channels"):
        M.image_to_mask(image[..., :3], "alpha")
    as_image = M.mask_to_image(torch.tensor([[0.0, 0.5]]))
    assert as_image.shape == (1, 1, 2, 3) and close(as_image[..., 2], t([[0.0, 0.5]]))
    assert torch.equal(as_image[..., 0], as_image[..., 1])


def test_crop_clips_to_the_mask():
    m = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    assert torch.equal(M.crop_mask(m, x=2, y=1, width=5, height=5), torch.tensor([[[6.0, 7.0], [10.0, 11.0]]]))
    assert torch.equal(M.crop_mask(m, x=1, y=0, width=2, height=1), torch.tensor([[[1.0, 2.0]]]))
    out = M.crop_mask(m, 0, 0, 4, 3)
    out[0, 0, 0] = 99
    assert m[0, 0, 0] == 0  # a copy, not a view


@pytest.mark.parametrize("call, says", [
    (lambda: M.crop_mask(torch.zeros(1, 3, 4), x=4, y=0, width=1, height=1), r"^x 4 lies outside the 4x3 mask"),
    (lambda: M.crop_mask(torch.zeros(1, 3, 4), x=0, y=3, width=1, height=1), r"^y 3 lies outside"),
    (lambda: M.crop_mask(torch.zeros(1, 3, 4), x=0, y=0, width=0, height=1), r"^width must be at least 1, got 0"),
    (lambda: M.crop_mask(torch.zeros(1, 3, 4), x=-1, y=0, width=1, height=1), r"^x must be at least 0"),
    (lambda: M.solid_mask(1.0, width=-2, height=4), r"^width must be at least 1, got -2"),
    (lambda: M.feather_mask(torch.ones(1, 2, 2), 0, -1, 0, 0), r"^top must be at least 0"),
    (lambda: M.mask_composite(torch.ones(1, 2, 2), torch.ones(1, 2, 2), 0, -3, "add"), r"^y must be at least 0"),
    (lambda: M.mask_composite(torch.ones(1, 2, 2), torch.ones(1, 2, 2), 0, 0, "divide"), r"^operation 'divide' is not one of"),
    (lambda: M.mask_composite(torch.ones(1, 2, 2), torch.ones(4), 0, 0, "add"), r"^source must be a mask of shape"),
    (lambda: M.invert_mask(torch.ones(1, 1, 2, 2, 2)), r"^mask must be a mask of shape"),
    (lambda: M.image_to_mask(torch.ones(1, 2, 2, 3), "purple"), r"^channel 'purple' is not one of red, green, blue, alpha"),
    (lambda: M.image_to_mask(torch.ones(2, 2), "red"), r"^image must be an image of shape"),
    (lambda: M.image_color_to_mask(torch.ones(1, 2, 2, 1), 0), r"^image must have 3 colour channels"),
])
def test_errors_name_the_input(call, says):
    with pytest.raises(NodeError, match=says):
        call()


# --- LoadImageMask ----------------------------------------------------------------------------------------
def test_load_image_mask_from_rgba(folders):
    arr = np.array([[[255, 0, 10, 255], [0, 51, 20, 0]],
                    [[102, 204, 30, 51], [0, 0, 40, 128]]], dtype=np.uint8)
    Image.fromarray(arr, "RGBA").save(folders.input / "rgba.png")
    alpha = M.load_image_mask("rgba.png", ctx(folders), "alpha")
    assert close(alpha, t([[0.0, 1.0], [1 - 51 / 255, 1 - 128 / 255]]))  # transparent = 1 (change)
    assert close(M.load_image_mask("rgba.png", ctx(folders), "red"), t([[1.0, 0.0], [0.4, 0.0]]))
    assert close(M.load_image_mask("rgba.png", ctx(folders), "green"), t([[0.0, 0.2], [0.8, 0.0]]))
    assert close(M.load_image_mask("rgba.png", ctx(folders), "blue"), t([[10 / 255, 20 / 255], [30 / 255, 40 / 255]]))


def test_load_image_mask_from_rgb(folders):
    arr = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    Image.fromarray(arr, "RGB").save(folders.input / "rgb.png")
    alpha = M.load_image_mask("rgb.png", ctx(folders), "alpha")
    assert alpha.shape == (1, 1, 3) and torch.count_nonzero(alpha) == 0  # no alpha: zeros of the image's size
    assert torch.equal(M.load_image_mask("rgb.png", ctx(folders), "green"), t([[0.0, 1.0, 0.0]]))


def test_load_image_mask_keeps_16_bit_precision(folders):
    raw = np.array([[0, 1, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(raw).save(folders.input / "deep.png")
    assert Image.open(folders.input / "deep.png").mode in ("I;16", "I")
    red = M.load_image_mask("deep.png", ctx(folders), "red")
    assert red.dtype == torch.float32 and red.shape == (1, 1, 4)
    assert torch.allclose(red, t([[0.0, 1 / 65535, 32768 / 65535, 1.0]]), atol=1e-9, rtol=0)
    assert red[0, 0, 1] > 0  # 8 bits would have rounded 1/65535 to 0
    assert torch.count_nonzero(M.load_image_mask("deep.png", ctx(folders), "alpha")) == 0


def test_load_image_mask_errors_and_fingerprint(folders):
    with pytest.raises(NodeError, match=r"^image 'nope.png' not found"):
        M.load_image_mask("nope.png", ctx(folders), "alpha")
    with pytest.raises(NodeError, match=r"^image: .*inside"):
        M.load_image_mask("../x.png", ctx(folders), "alpha")
    (folders.input / "fake.png").write_text("hello")
    with pytest.raises(NodeError, match=r"^image 'fake.png' is not an image"):
        M.load_image_mask("fake.png", ctx(folders), "alpha")
    Image.new("RGB", (2, 2)).save(folders.input / "one.png")
    with pytest.raises(NodeError, match=r"^channel 'purple' is not one of alpha, red, green, blue"):
        M.load_image_mask("one.png", ctx(folders), "purple")
    d = M.load_image_mask.__loom_node__
    settings = Settings(input_dir=folders.input, output_dir=folders.output)
    assert d.inputs["image"].schema(settings).upload == "image"
    assert d.inputs["image"].schema(settings).choices == ["fake.png", "one.png"]
    first = d.fingerprint({"image": "one.png", "channel": "red"}, settings)
    Image.new("RGB", (3, 3)).save(folders.input / "one.png")
    assert d.fingerprint({"image": "one.png", "channel": "red"}, settings) != first  # a changed file re-runs


# --- ComfyUI prompts and editor files -------------------------------------------------------------------------
def test_comfy_prompt_runs_through_the_executor(tmp_path):
    (tmp_path / "in").mkdir()
    rgba = np.full((4, 4, 4), 255, dtype=np.uint8)
    rgba[1, 1, 3] = 0  # one transparent pixel: the mask is 1 there
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in" / "hole.png")
    prompt = {
        "1": {"class_type": "LoadImageMask", "inputs": {"image": "hole.png", "channel": "alpha", "upload": "image"}},
        "2": {"class_type": "GrowMask", "inputs": {"mask": ["1", 0], "expand": 1, "tapered_corners": True}},
        "3": {"class_type": "InvertMask", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 6, "height": 6}},
        "5": {"class_type": "MaskComposite", "inputs": {"destination": ["4", 0], "source": ["3", 0], "x": 2, "y": 2,
                                                        "operation": "multiply"}},
        "6": {"class_type": "MaskToImage", "inputs": {"mask": ["5", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "mask"}},
    }
    registry = Registry.default()
    wf = prompt_to_workflow(prompt, registry)
    assert wf["nodes"]["1"] == {"type": "LoadImageMask", "inputs": {"image": "hole.png", "channel": "alpha"},
                                "ui": {"comfy_class": "LoadImageMask"}}
    assert wf["nodes"]["5"]["inputs"]["destination"] == {"node": "4", "output": "mask"}
    assert wf["nodes"]["6"]["type"] == "MaskToImage" and wf["nodes"]["7"]["inputs"]["images"] == {"node": "6", "output": "image"}
    settings = Settings(input_dir=tmp_path / "in", output_dir=tmp_path / "out")
    ex = Executor(registry, settings, OutputCache())
    r = ex.run(wf, prompt=prompt)
    assert r.status == "success", r.error
    # the grown dot is a plus around (1, 1); inverted, it cuts a plus out of the solid mask at (2, 2) + (1, 1)
    expected = torch.ones(1, 6, 6)
    for row, col in ((2, 3), (3, 2), (3, 3), (3, 4), (4, 3)):
        expected[0, row, col] = 0
    composite = ex.cache.peek(r.signatures["5"])["mask"]
    assert torch.equal(composite, expected)
    (saved,) = r.output_paths(settings)["7"]
    assert np.array_equal(np.asarray(Image.open(saved))[..., 0], (expected[0].numpy() * 255).astype(np.uint8))


def _lg(nid, type, widgets=None, inputs=(), outputs=()):
    n = {"id": nid, "type": type, "pos": [nid * 10, 0], "mode": 0,
         "inputs": [{"name": name, "type": typ, "link": link} for name, typ, link in inputs],
         "outputs": [{"name": name, "type": typ, "links": links} for name, typ, links in outputs]}
    if widgets is not None:
        n["widgets_values"] = widgets
    return n


def test_litegraph_workflow_widgets_land_on_the_right_inputs():
    lg = {"nodes": [
        _lg(1, "LoadImageMask", ["m.png", "red", "image"], outputs=[("MASK", "MASK", [1])]),
        _lg(2, "GrowMask", [-3, False], inputs=[("mask", "MASK", 1)], outputs=[("MASK", "MASK", [2])]),
        _lg(3, "FeatherMask", [1, 2, 3, 4], inputs=[("mask", "MASK", 2)], outputs=[("MASK", "MASK", [3, 4])]),
        _lg(4, "InvertMask", [], inputs=[("mask", "MASK", 3)], outputs=[("MASK", "MASK", [5])]),
        _lg(5, "MaskComposite", [5, 6, "xor"], inputs=[("destination", "MASK", 4), ("source", "MASK", 5)],
            outputs=[("MASK", "MASK", [6])]),
        _lg(6, "ThresholdMask", [0.25], inputs=[("mask", "MASK", 6)], outputs=[("MASK", "MASK", [7])]),
        _lg(7, "CropMask", [1, 2, 30, 40], inputs=[("mask", "MASK", 7)], outputs=[("MASK", "MASK", [8])]),
        _lg(8, "MaskToImage", [], inputs=[("mask", "MASK", 8)], outputs=[("IMAGE", "IMAGE", [9])]),
        _lg(9, "PreviewImage", [], inputs=[("images", "IMAGE", 9)]),
        _lg(10, "SolidMask", [0.5, 64, 32]),
        _lg(11, "ImageColorToMask", [0xFF00FF]),
        _lg(12, "ImageToMask", ["blue"]),
    ], "links": [[1, 1, 0, 2, 0, "MASK"], [2, 2, 0, 3, 0, "MASK"], [3, 3, 0, 4, 0, "MASK"], [4, 3, 0, 5, 0, "MASK"],
                 [5, 4, 0, 5, 1, "MASK"], [6, 5, 0, 6, 0, "MASK"], [7, 6, 0, 7, 0, "MASK"], [8, 7, 0, 8, 0, "MASK"],
                 [9, 8, 0, 9, 0, "IMAGE"]]}
    wf, warnings = litegraph_to_workflow(lg, Registry.default())
    n = wf["nodes"]
    assert n["1"]["inputs"] == {"image": "m.png", "channel": "red"}
    assert n["2"]["inputs"] == {"expand": -3, "tapered_corners": False, "mask": {"node": "1", "output": "mask"}}
    assert n["3"]["inputs"] == {"left": 1, "top": 2, "right": 3, "bottom": 4, "mask": {"node": "2", "output": "mask"}}
    assert n["4"]["inputs"] == {"mask": {"node": "3", "output": "mask"}}
    assert n["5"]["inputs"] == {"x": 5, "y": 6, "operation": "xor", "destination": {"node": "3", "output": "mask"},
                                "source": {"node": "4", "output": "mask"}}
    assert n["6"]["inputs"]["value"] == 0.25
    assert {k: v for k, v in n["7"]["inputs"].items() if k != "mask"} == {"x": 1, "y": 2, "width": 30, "height": 40}
    assert n["8"]["inputs"] == {"mask": {"node": "7", "output": "mask"}}
    assert n["10"]["inputs"] == {"value": 0.5, "width": 64, "height": 32}
    assert n["11"]["inputs"] == {"color": 0xFF00FF} and n["12"]["inputs"] == {"channel": "blue"}
    assert n["2"]["ui"]["pos"] == [20, 0]
    assert warnings == []  # LoadImageMask's trailing upload-button value ("image") is the UPLOAD placeholder's


def test_mask_nodes_in_the_catalog():
    reg = Registry.default()
    for name in ("LoadImageMask", "ImageToMask", "MaskToImage", "ImageColorToMask", "SolidMask", "InvertMask", "CropMask",
                 "MaskComposite", "FeatherMask", "GrowMask", "ThresholdMask"):
        d = reg.get(name)
        assert d is not None and d.category == "mask", name
    grow = {i.name: i for i in reg.get("GrowMask").schema().inputs}
    assert grow["expand"].min == -M.MAX_SIZE and grow["expand"].max == M.MAX_SIZE and grow["tapered_corners"].default is True
    assert [i.name for i in reg.get("MaskComposite").schema().inputs] == ["destination", "source", "x", "y", "operation"]
    assert reg.get("MaskComposite").schema().inputs[-1].choices == ["multiply", "add", "subtract", "and", "or", "xor"]
    assert reg.get("LoadImageMask").schema().inputs[1].choices == ["alpha", "red", "green", "blue"]
