"""Core image nodes (nodes/image.py, nodes/impl/): load, save, preview, and numerically checked transforms."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cache import OutputCache
from engine.executor import Executor
from engine.node import NodeContext, NodeError
from engine.registry import Registry
from engine.settings import Settings
from nodes import image as N
from nodes.impl import images as IM

ROOT = Path(__file__).resolve().parents[2]


def ctx(folders, **kw):
    return NodeContext(node_id=kw.pop("node_id", "n1"), node_type="Test", run_id=kw.pop("run_id", "abcdef0123"),
                       folders=folders, **kw)


def ramp(h=4, w=6, c=3, b=1):
    return torch.arange(b * h * w * c, dtype=torch.float32).reshape(b, h, w, c) / (b * h * w * c)


# --- LoadImage ----------------------------------------------------------------------------------------
def test_load_rgba_alpha_becomes_mask(folders):
    arr = np.zeros((3, 4, 4), dtype=np.uint8)
    arr[..., 0] = 255  # red
    arr[..., 3] = 255
    arr[0, 0, 3] = 0  # one fully transparent pixel
    arr[1, 1, 3] = 51  # 20 % opaque
    Image.fromarray(arr, "RGBA").save(folders.input / "a.png")
    out = N.load_image("a.png", ctx(folders))
    assert out.image.shape == (1, 3, 4, 3) and out.image.dtype == torch.float32
    assert out.mask.shape == (1, 3, 4)
    assert torch.allclose(out.image[0, :, :, 0], torch.ones(3, 4))
    assert out.mask[0, 0, 0] == 1.0 and out.mask[0, 2, 3] == 0.0  # transparent = 1 (to change)
    assert out.mask[0, 1, 1] == pytest.approx(0.8)


def test_load_rgb_has_empty_mask(folders):
    Image.new("RGB", (5, 2), (0, 255, 0)).save(folders.input / "g.jpg", quality=100)
    out = N.load_image("g.jpg", ctx(folders))
    assert out.image.shape == (1, 2, 5, 3) and torch.count_nonzero(out.mask) == 0
    assert out.image[0, :, :, 1].min() > 0.95


def test_load_palette_with_transparency_gives_mask(folders):
    img = Image.new("P", (2, 2), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.info["transparency"] = 1
    img.save(folders.input / "p.png", transparency=1)
    out = N.load_image("p.png", ctx(folders))
    assert out.mask[0, 1, 1] == 1.0 and out.mask[0, 0, 0] == 0.0


def test_load_palette_with_partial_alpha_entries(folders):
    """tRNS with one alpha per palette entry (not just one transparent index) gives fractional masks."""
    img = Image.new("P", (3, 1), 0)
    img.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * 759)
    img.putpixel((1, 0), 1)
    img.putpixel((2, 0), 2)
    img.save(folders.input / "pa.png", transparency=bytes([255, 0, 128]))
    out = N.load_image("pa.png", ctx(folders))
    assert torch.allclose(out.mask[0, 0], torch.tensor([0.0, 1.0, 1 - 128 / 255]))
    assert torch.allclose(out.image[0, 0], torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]]))
    Image.new("P", (2, 2), 1).save(folders.input / "opaque.png")  # a palette without tRNS: no mask
    assert torch.count_nonzero(N.load_image("opaque.png", ctx(folders)).mask) == 0


def test_load_grey_with_transparent_value_gives_mask(folders):
    img = Image.new("L", (2, 1), 7)
    img.putpixel((1, 0), 200)
    img.save(folders.input / "l.png", transparency=7)
    out = N.load_image("l.png", ctx(folders))
    assert out.mask[0, 0].tolist() == [1.0, 0.0]


GREY16 = np.array([[0, 1, 255, 256, 257], [1000, 32767, 32768, 65534, 65535]], dtype=np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_load_16_bit_greyscale_keeps_its_precision(folders, suffix):
    Image.fromarray(GREY16).save(folders.input / f"deep{suffix}")
    with Image.open(folders.input / f"deep{suffix}") as img:
        assert img.mode == "I;16"  # what Pillow gives; 8-bit conversion of it clips at 255
    out = N.load_image(f"deep{suffix}", ctx(folders))
    assert out.image.shape == (1, 2, 5, 3) and out.image.dtype == torch.float32
    expected = torch.from_numpy(GREY16.astype(np.float64) / 65535.0).float()
    for c in range(3):
        torch.testing.assert_close(out.image[0, ..., c], expected, atol=1e-6, rtol=0)
    assert 0 < out.image[0, 0, 1, 0] < 1 / 255  # finer than 8 bits
    assert torch.count_nonzero(out.mask) == 0


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_pil_to_tensor_high_bit_grey_modes(mode):
    if mode == "I":
        img = Image.fromarray(GREY16.astype(np.int32))
    else:
        img = Image.frombytes(mode, (5, 2), GREY16.astype(">u2" if mode.endswith("B") else "<u2").tobytes())
    assert img.mode == mode
    image, mask = IM.pil_to_tensor(img)
    torch.testing.assert_close(image[0, ..., 1], torch.from_numpy(GREY16 / 65535.0).float(), atol=1e-6, rtol=0)
    assert mask.shape == (1, 2, 5) and torch.count_nonzero(mask) == 0
    clipped, _ = IM.pil_to_tensor(Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)))
    assert clipped[0, 0, :, 0].tolist() == [0.0, 1.0]


def test_load_16_bit_greyscale_transparent_value_and_rotation(folders):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    Image.fromarray(GREY16).save(folders.input / "t.png", transparency=1000, exif=exif)
    out = N.load_image("t.png", ctx(folders))
    rotated = np.rot90(GREY16, -1)
    assert out.image.shape == (1, 5, 2, 3)
    torch.testing.assert_close(out.image[0, ..., 0], torch.from_numpy(rotated / 65535.0).float(), atol=1e-6, rtol=0)
    assert out.mask[0].tolist() == (rotated == 1000).astype(np.float32).tolist()


@pytest.mark.parametrize("alpha", [False, True])
def test_load_16_bit_colour_png_at_full_precision(folders, alpha):
    """Pillow keeps only the high byte of 16-bit colour PNGs; these are decoded at full precision (value / 65535),
    alpha included. 1000 / 65535 would be 0 or 4/255 at 8 bits."""
    import cv2

    rgb = np.zeros((2, 3, 4 if alpha else 3), dtype=np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1000, 40000, 65535
    if alpha:
        rgb[..., 3] = 65535
        rgb[0, 1, 3] = 16384
    bgr = rgb[..., [2, 1, 0, 3]] if alpha else rgb[..., ::-1]
    assert cv2.imwrite(str(folders.input / "rgb16.png"), np.ascontiguousarray(bgr))  # OpenCV writes BGR(A)
    out = N.load_image("rgb16.png", ctx(folders))
    torch.testing.assert_close(out.image[0], torch.from_numpy(rgb[..., :3] / 65535.0).float(), atol=1e-6, rtol=0)
    want_mask = np.zeros((2, 3), dtype=np.float32)
    if alpha:
        want_mask[0, 1] = 1 - 16384 / 65535
    torch.testing.assert_close(out.mask[0], torch.from_numpy(want_mask), atol=1e-6, rtol=0)


def test_load_missing_file_lists_the_folder(folders):
    Image.new("RGB", (2, 2)).save(folders.input / "there.png")
    with pytest.raises(NodeError) as info:
        N.load_image("absent.png", ctx(folders))
    assert "absent.png" in str(info.value) and "there.png" in str(info.value) and str(folders.input) in str(info.value)


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd", "sub/../../x.png", ""])
def test_load_refuses_traversal(folders, name):
    (folders.input.parent / "secret.png").write_bytes(b"x")
    with pytest.raises(NodeError):
        N.load_image(name, ctx(folders))


def test_load_refuses_symlink_out_of_the_folder(folders):
    outside = folders.input.parent / "outside.png"
    Image.new("RGB", (2, 2)).save(outside)
    (folders.input / "link.png").symlink_to(outside)
    with pytest.raises(NodeError, match="outside"):
        N.load_image("link.png", ctx(folders))


def test_load_not_an_image(folders):
    (folders.input / "fake.png").write_text("hello")
    with pytest.raises(NodeError, match="not an image"):
        N.load_image("fake.png", ctx(folders))


def test_load_validation_lists_choices_and_fingerprint_tracks_the_file(folders, tmp_path):
    settings = Settings(input_dir=folders.input, output_dir=folders.output)
    Image.new("RGB", (2, 2)).save(folders.input / "one.png")
    (folders.input / "sub").mkdir()
    Image.new("RGB", (2, 2)).save(folders.input / "sub" / "two.png")
    (folders.input / ".hidden.png").write_bytes(b"")
    spec = N.load_image.__loom_node__.inputs["image"]
    assert spec.validate_literal("sub/two.png", settings) is None
    code, msg = spec.validate_literal("../one.png", settings)
    assert code == "not_in_choices" and "one.png" in msg and "sub/two.png" in msg and ".hidden" not in msg
    fp = N.load_image.__loom_node__.fingerprint
    first = fp({"image": "one.png"}, settings)
    Image.new("RGB", (3, 3)).save(folders.input / "one.png")
    assert fp({"image": "one.png"}, settings) != first
    assert fp({"image": "gone.png"}, settings).startswith("missing")


# --- SaveImage / PreviewImage ----------------------------------------------------------------------------
WORKFLOW = {"format": "latentloom.workflow", "version": 1, "nodes": {"a": {"type": "X", "inputs": {"text": "ünïcode"}}}}


def test_save_embeds_workflow_and_prompt(folders):
    prompt = {"1": {"class_type": "SaveImage", "inputs": {}}}
    ui = N.save_image(ramp(), ctx(folders, workflow=WORKFLOW, prompt=prompt), "shot")
    (ref,) = ui.images
    assert (ref.filename, ref.subfolder, ref.type) == ("shot_00001_.png", "", "output")
    img = Image.open(folders.output / ref.filename)
    assert json.loads(img.text["workflow"]) == WORKFLOW
    assert json.loads(img.text["prompt"]) == prompt
    back = np.asarray(img, dtype=np.float32) / 255
    assert np.abs(back - ramp()[0].numpy()).max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only


def test_save_without_prompt_writes_no_prompt_chunk(folders):
    ui = N.save_image(ramp(), ctx(folders, workflow=WORKFLOW), "w")
    img = Image.open(folders.output / ui.images[0].filename)
    assert "prompt" not in img.text and "workflow" in img.text


def test_save_counter_naming_and_batches(folders):
    c = ctx(folders, workflow=WORKFLOW)
    first = N.save_image(ramp(b=2), c, "batch")
    second = N.save_image(ramp(), c, "batch")
    assert [r.filename for r in first.images] == ["batch_00001_.png", "batch_00002_.png"]
    assert [r.filename for r in second.images] == ["batch_00003_.png"]
    other = N.save_image(ramp(), c, "batch_extra")  # a longer prefix has its own counter
    assert other.images[0].filename == "batch_extra_00001_.png"
    sub = N.save_image(ramp(), c, "day1/pic")
    assert (sub.images[0].subfolder, sub.images[0].filename) == ("day1", "pic_00001_.png")
    assert (folders.output / "day1" / "pic_00001_.png").is_file()


def test_save_refuses_prefix_leaving_the_output_folder(folders):
    with pytest.raises(NodeError):
        N.save_image(ramp(), ctx(folders), "../escape")


def test_save_is_complete_or_absent(folders, monkeypatch):
    N.save_image(ramp(), ctx(folders), "ok")  # one good file first
    real_save = Image.Image.save

    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n partial")  # some bytes reach the disk, then the disk fills up
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        N.save_image(ramp(b=2), ctx(folders), "ok")
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert sorted(p.name for p in folders.output.iterdir()) == ["ok_00001_.png"]  # no partial file, no temp file
    N.save_image(ramp(), ctx(folders), "ok")
    assert sorted(p.name for p in folders.output.iterdir()) == ["ok_00001_.png", "ok_00002_.png"]


def test_save_never_overwrites_an_existing_file(folders, monkeypatch):
    N.save_image(ramp(), ctx(folders), "race")
    before = (folders.output / "race_00001_.png").read_bytes()
    monkeypatch.setattr(IM, "next_counter", lambda folder, stem: 1)  # another process picked the same counter
    ui = N.save_image(ramp(h=2), ctx(folders), "race")
    assert (folders.output / "race_00001_.png").read_bytes() == before
    assert ui.images[0].filename != "race_00001_.png"
    assert (folders.output / ui.images[0].filename).is_file()


def test_preview_goes_to_temp(folders):
    ui = N.preview_image(ramp(), ctx(folders, node_id="prev", run_id="0123456789"))
    (ref,) = ui.images
    assert ref.type == "temp" and ref.filename == "preview_01234567_prev_00001_.png"
    assert (folders.temp / ref.filename).is_file()
    assert not list(folders.output.glob("*.png"))


def test_save_through_the_executor_embeds_the_run_workflow(tmp_path):
    settings = Settings(input_dir=ROOT / "workflows" / "input", output_dir=tmp_path / "out")
    ex = Executor(Registry.default(), settings, OutputCache())
    wf = json.loads((ROOT / "workflows" / "image-basics.json").read_text())
    r = ex.run(wf)
    assert r.status == "success", r.error
    paths = r.output_paths(settings)
    (saved,) = paths["save"]
    img = Image.open(saved)
    assert img.size == (128 + 32, 128 + 32)
    assert json.loads(img.text["workflow"]) == wf
    (preview,) = paths["preview"]
    assert "/temp/" in preview and Image.open(preview).size == (128, 128)


# --- transforms, numerically ---------------------------------------------------------------------------
def test_invert():
    x = ramp()
    assert torch.allclose(N.image_invert(x), 1 - x)


def test_resize_nearest_upscale_repeats_pixels():
    x = torch.tensor([[0.0, 1.0], [0.25, 0.5]]).reshape(1, 2, 2, 1).repeat(1, 1, 1, 3)
    y = N.image_resize(x, 4, 4, "nearest", "disabled")
    assert y.shape == (1, 4, 4, 3)
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0.25, 0.25, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5]])
    assert torch.allclose(y[0, :, :, 0], expected)


def test_resize_area_downscale_is_block_mean():
    x = ramp(4, 4, 3)
    y = N.image_resize(x, 2, 2, "area", "disabled")
    expected = x.reshape(1, 2, 2, 2, 2, 3).mean(dim=(2, 4))
    assert torch.allclose(y, expected, atol=1e-6)


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "lanczos"])
def test_resize_keeps_constant_images_and_range(method):
    x = torch.full((2, 5, 7, 3), 0.4)
    y = N.image_resize(x, 9, 3, method, "disabled")
    assert y.shape == (2, 3, 9, 3)
    assert torch.allclose(y, torch.full_like(y, 0.4), atol=1 / 255)
    z = N.image_resize(torch.rand(1, 8, 8, 3), 20, 20, method, "disabled")
    assert z.min() >= 0 and z.max() <= 1  # bicubic overshoot clamped


def test_resize_center_crop_keeps_the_middle():
    x = torch.zeros(1, 4, 8, 3)
    x[:, :, 2:6] = 1.0  # a white band in the middle half
    y = N.image_resize(x, 4, 4, "nearest", "center")
    assert torch.allclose(y, torch.ones(1, 4, 4, 3))  # the black sides were cut, not squeezed in
    tall = torch.zeros(1, 8, 4, 3)
    tall[:, 2:6] = 1.0
    assert torch.allclose(N.image_resize(tall, 4, 4, "nearest", "center"), torch.ones(1, 4, 4, 3))


def test_scale_by():
    y = N.image_scale_by(ramp(4, 6), 0.5, "area")
    assert y.shape == (1, 2, 3, 3)


def test_crop_exact_and_clipped():
    x = ramp(4, 6)
    y = N.image_crop(x, 2, 3, 1, 1)
    assert torch.equal(y, x[:, 1:4, 1:3])
    clipped = N.image_crop(x, 100, 100, 4, 2)
    assert torch.equal(clipped, x[:, 2:, 4:])
    y[...] = 0
    assert x.sum() > 0  # the crop is a copy, not a view into a cached input
    with pytest.raises(NodeError, match="outside"):
        N.image_crop(x, 2, 2, 6, 0)


def test_pad_constant_and_mask():
    x = torch.full((1, 2, 3, 3), 0.5)
    out = N.image_pad(x, left=1, top=2, right=0, bottom=1, value=1.0, mode="constant")
    assert out.image.shape == (1, 5, 4, 3) and out.mask.shape == (1, 5, 4)
    assert torch.allclose(out.image[0, 2:4, 1:], torch.full((2, 3, 3), 0.5))
    assert out.image[0, 0, 0, 0] == 1.0 and out.image[0, 4, 3, 2] == 1.0
    expected_mask = torch.ones(5, 4)
    expected_mask[2:4, 1:] = 0
    assert torch.equal(out.mask[0], expected_mask)


def test_pad_edge_and_reflect():
    x = torch.tensor([0.0, 0.5, 1.0]).reshape(1, 1, 3, 1).repeat(1, 1, 1, 3)
    edge = N.image_pad(x, left=2, right=1, mode="edge")
    assert edge.image[0, 0, :, 0].tolist() == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    refl = N.image_pad(x, left=2, right=1, mode="reflect")
    assert refl.image[0, 0, :, 0].tolist() == [1.0, 0.5, 0.0, 0.5, 1.0, 0.5]
    with pytest.raises(NodeError, match="reflect"):
        N.image_pad(x, left=5, mode="reflect")  # wider than the image: a clear error, not a torch traceback


def test_composite_offsets_clipping_and_mask():
    dest = torch.zeros(1, 4, 4, 3)
    src = torch.ones(1, 2, 2, 3)
    out = N.image_composite(dest, src, x=3, y=-1)
    expected = torch.zeros(4, 4)
    expected[0, 3] = 1  # only the part that overlaps is pasted
    assert torch.equal(out[0, :, :, 0], expected)
    assert dest.sum() == 0  # the destination input is not modified
    mask = torch.tensor([[1.0, 0.5], [0.0, 0.25]]).reshape(1, 2, 2)
    out = N.image_composite(dest, src, x=1, y=1, mask=mask)
    assert out[0, 1:3, 1:3, 0].tolist() == [[1.0, 0.5], [0.0, 0.25]]
    assert out[0, 0].sum() == 0 and out[0, 3].sum() == 0
    big_mask = torch.ones(1, 4, 4)  # a mask of another size is resized to the source
    assert torch.equal(N.image_composite(dest, src, 0, 0, big_mask)[0, :2, :2], torch.ones(2, 2, 3))
    off = N.image_composite(dest, src, x=10, y=10)
    assert torch.equal(off, dest)


def test_composite_batch_broadcast():
    dest = torch.zeros(3, 2, 2, 3)
    src = torch.ones(1, 2, 2, 3)
    assert torch.equal(N.image_composite(dest, src, 0, 0), torch.ones(3, 2, 2, 3))
    out = N.image_composite(torch.zeros(1, 2, 2, 3), torch.ones(2, 1, 1, 3), 0, 0)
    assert out.shape[0] == 2 and out[:, 0, 0].sum() == 6


def _reference_blur(img: np.ndarray, radius: int, sigma: float) -> np.ndarray:
    k = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    k /= k.sum()
    out = np.empty_like(img)
    for c in range(img.shape[-1]):
        p = np.pad(img[..., c], radius, mode="reflect")
        rows = np.stack([np.convolve(r, k, mode="valid") for r in p])
        out[..., c] = np.stack([np.convolve(col, k, mode="valid") for col in rows.T]).T
    return out


def test_blur_matches_a_separable_gaussian():
    torch.manual_seed(0)
    x = torch.rand(1, 9, 11, 3)
    y = N.image_blur(x, 3, 1.5)
    assert y.shape == x.shape
    ref = _reference_blur(x[0].numpy().astype(np.float64), 3, 1.5)
    assert np.abs(y[0].numpy() - ref).max() < 1e-5


def test_blur_keeps_constant_images_and_small_images():
    x = torch.full((1, 6, 6, 3), 0.7)
    assert torch.allclose(N.image_blur(x, 2, 1.0), x, atol=1e-6)  # reflected edges: borders do not darken
    tiny = torch.full((1, 3, 3, 3), 0.2)
    y = N.image_blur(tiny, 8, 4.0)  # a radius larger than the image still works
    assert y.shape == tiny.shape and torch.allclose(y, tiny, atol=1e-6)


def test_image_nodes_declared_in_catalog():
    reg = Registry.default()
    schema = reg.get("ImageResize").schema().model_dump()
    by = {i["name"]: i for i in schema["inputs"]}
    assert by["method"]["choices"] == ["nearest", "bilinear", "bicubic", "area", "lanczos"]
    assert by["width"]["min"] == 1 and by["width"]["max"] == N.MAX_SIZE
    assert reg.get("LoadImage").schema().inputs[0].upload == "image"
    assert [o.name for o in reg.get("LoadImage").outputs] == ["image", "mask"]
    assert [o.name for o in reg.get("ImagePad").outputs] == ["image", "mask"]


# --- SaveImage filename placeholders ---------------------------------------------------------------------------
def test_filename_placeholders_expand_as_in_comfyui():
    from datetime import datetime

    from nodes.impl.filenames import expand_prefix

    now = datetime(2026, 3, 4, 5, 6, 7)
    wf = {"nodes": {"s": {"type": "Sample", "inputs": {"seed": 42, "unet": {"node": "c", "output": "unet"}},
                          "ui": {"title": "KSampler"}},
                    "c": {"type": "LoadCheckpoint", "inputs": {"name": "loom-shapes"}},
                    "t": {"type": "EncodeText", "inputs": {"text": {"value": {"x": 1}}}}}}
    got = expand_prefix("%date:yyyy-MM-dd%/%date:yy M d hh-mm-ss%_%year%%month%%day%_%hour%%minute%%second%_"
                        "%width%x%height%_%KSampler.seed%_%LoadCheckpoint.name%_%c.name%_%s.unet%_%nope%",
                        width=96, height=64, workflow=wf, now=now)
    assert got == ("2026-03-04/26 3 4 05-06-07_20260304_050607_96x64_42_loom-shapes_loom-shapes_%s.unet%_%nope%")
    assert expand_prefix("plain/name", width=1, height=1) == "plain/name"


def test_save_image_expands_the_prefix(folders):
    out = N.save_image(torch.rand(1, 4, 6, 3), ctx(folders, workflow={"nodes": {"n1": {"type": "Seed", "inputs": {"seed": 9}}}}),
                       filename_prefix="sub/%Seed.seed%_%width%x%height%")
    assert out.images[0].subfolder == "sub" and out.images[0].filename == "9_6x4_00001_.png"
    assert (folders.output / "sub" / "9_6x4_00001_.png").is_file()


# --- image size and batch utilities (ComfyUI's GetImageSize, RepeatImageBatch, ImageFromBatch) -------------------
def test_image_size_feeds_other_nodes_and_batch_utilities(tmp_path):
    from engine.compat.comfy import prompt_to_workflow

    settings = Settings(input_dir=tmp_path, output_dir=tmp_path / "out")
    Image.new("RGB", (24, 16), (10, 20, 30)).save(tmp_path / "small.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "small.png"}},
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 3}},
        "4": {"class_type": "ImageFromBatch", "inputs": {"image": ["3", 0], "batch_index": 5, "length": 4}},
        "5": {"class_type": "EmptyImage", "inputs": {"width": ["2", 1], "height": ["2", 0], "batch_size": ["2", 2],
                                                    "color": 0}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "size"}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    ex = Executor(Registry.default(), settings, OutputCache())
    r = ex.run(prompt_to_workflow(prompt, ex.registry))
    assert r.status == "success", r.error
    size = ex.cache.peek(r.signatures["2"])
    assert (size["width"], size["height"], size["batch_size"]) == (24, 16, 1)
    assert ex.cache.peek(r.signatures["3"])["image"].shape == (3, 16, 24, 3)
    assert ex.cache.peek(r.signatures["4"])["image"].shape == (1, 16, 24, 3)  # index past the end: the last one
    assert Image.open(r.output_paths(settings)["6"][0]).size == (16, 24)  # width and height swapped by the links
    batch = torch.arange(5.0).reshape(5, 1, 1, 1).expand(5, 2, 2, 3)
    assert N.image_from_batch(batch, 1, 2)[:, 0, 0, 0].tolist() == [1.0, 2.0]
    assert N.image_from_batch(batch, 3, 9)[:, 0, 0, 0].tolist() == [3.0, 4.0]


def test_scale_to_max_dimension_keeps_the_aspect_ratio():
    from engine.compat.comfy import prompt_to_workflow

    assert N.image_scale_to_max_dimension(torch.rand(1, 30, 60, 3), "area", 40).shape == (1, 20, 40, 3)
    assert N.image_scale_to_max_dimension(torch.rand(1, 60, 45, 3), "bilinear", 40).shape == (1, 40, 30, 3)
    assert N.image_scale_to_max_dimension(torch.rand(1, 7, 7, 3), "nearest", 5).shape == (1, 5, 5, 3)
    node = prompt_to_workflow({"1": {"class_type": "ImageScaleToMaxDimension",
                                     "inputs": {"image": ["2", 0], "upscale_method": "nearest-exact", "largest_size": 64}},
                               "2": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}})["nodes"]["1"]
    assert node["type"] == "ImageScaleToMaxDimension"
    assert {k: v for k, v in node["inputs"].items() if k != "image"} == {"method": "nearest", "largest_size": 64}
