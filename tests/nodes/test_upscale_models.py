"""Model-based upscaling (nodes/upscale.py, nodes/impl/upscale_arch.py): tiny random ESRGAN / Real-ESRGAN / Compact
models saved in each key layout are detected and give the same pictures; tiling, OOM retry, progress, the engine
run and ComfyUI's prompts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from engine.compat.comfy import litegraph_to_prompt, prompt_to_workflow
from engine.devices import DeviceManager
from engine.executor import Executor
from engine.node import NodeContext, NodeError
from engine.registry import Registry
from engine.settings import Settings
from engine.types import export_types
from nodes import upscale as U
from nodes.impl import upscale_arch as A

CPU = DeviceManager("cpu")


def _seeded(module: torch.nn.Module, seed: int, gain: float) -> torch.nn.Module:
    """Random weights that carry the picture through (not the saturated output of a default init), small biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            u = torch.rand(p.shape, generator=g) * 2 - 1
            p.copy_(u * (gain / p[0].numel() ** 0.5 if p.ndim > 1 else 0.05))
    return module.eval()


def tiny_rrdb(num_upsample: int = 2, unshuffle: int = 1, num_block: int = 2, seed: int = 0) -> A.RRDBNet:
    m = _seeded(A.RRDBNet(3, 3, num_feat=8, num_block=num_block, num_grow_ch=4, num_upsample=num_upsample,
                          unshuffle=unshuffle), seed, gain=2.0)
    with torch.no_grad():
        m.conv_last.bias.fill_(0.5)  # outputs around mid-grey, some beyond 0..1
    return m


def tiny_compact(scale: int = 4, num_conv: int = 3, seed: int = 1) -> A.SRVGGNetCompact:
    return _seeded(A.SRVGGNetCompact(3, 3, num_feat=8, num_conv=num_conv, scale=scale), seed, gain=1.5)


def trunk_layout(sd: dict) -> dict:
    """BasicSR RRDBNet keys -> ESRGAN's later repository (RRDB_trunk, trunk_conv, upconvN, HRconv)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("conv_body.", "trunk_conv.").replace("conv_hr.", "HRconv.").replace("conv_up", "upconv")
        if k.startswith("body."):
            k = "RRDB_trunk." + k[len("body."):].replace(".rdb", ".RDB")
        out[k] = v
    return out


@pytest.fixture(scope="module")
def models_root(tmp_path_factory) -> Path:
    """models/upscale_models with the same tiny x4 RRDBNet in each layout, x2/x1 Real-ESRGAN and a Compact."""
    root = tmp_path_factory.mktemp("upscale")
    folder = root / "upscale_models"
    folder.mkdir()
    x4 = tiny_rrdb().state_dict()
    torch.save({"params_ema": x4, "params": tiny_rrdb(seed=9).state_dict()}, folder / "tiny-x4-basicsr.pth")
    torch.save(A.basicsr_to_old_esrgan(x4), folder / "tiny-x4-old.pth")
    torch.save({k: v.clone() for k, v in trunk_layout(x4).items()}, folder / "tiny-x4-trunk.pth")
    save_file({k: v.contiguous() for k, v in x4.items()}, str(folder / "tiny-x4.safetensors"))
    torch.save({"params_ema": tiny_rrdb(unshuffle=2, seed=2).state_dict()}, folder / "tiny-x2.pth")
    torch.save(tiny_rrdb(unshuffle=4, seed=3).state_dict(), folder / "tiny-x1.pth")
    torch.save({"params": {"module." + k: v for k, v in tiny_compact().state_dict().items()}}, folder / "tiny-compact-x4.pth")
    (folder / "sub").mkdir()
    torch.save(A.basicsr_to_old_esrgan(tiny_rrdb(num_upsample=1, num_block=3, seed=4).state_dict()), folder / "sub" / "x2-old.pth")
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3), "conv.bias": torch.zeros(3)}, folder / "not-an-upscaler.pth")
    (folder / "garbage.pth").write_bytes(b"this is not a checkpoint")
    return root


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.default()


def _settings(models_root: Path, tmp: Path) -> Settings:
    return Settings(models_dir=models_root, input_dir=tmp / "input", output_dir=tmp / "output", device="cpu")


def _ctx(settings: Settings | None = None, events: list | None = None) -> NodeContext:
    emit = (lambda kind, data: events.append((kind, data))) if events is not None else None
    return NodeContext(node_id="up", node_type="Test", settings=settings, emit=emit)


def _load(models_root: Path, name: str) -> A.UpscaleModel:
    return A.load_upscale_model(models_root / "upscale_models" / name)


def _image(b: int = 1, h: int = 20, w: int = 24, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


# --- detection ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,layout,scale,blocks,unshuffle", [
    ("tiny-x4-basicsr.pth", "BasicSR", 4, 2, 1),
    ("tiny-x4-old.pth", "old ESRGAN", 4, 2, 1),
    ("tiny-x4-trunk.pth", "ESRGAN RRDB_trunk", 4, 2, 1),
    ("tiny-x4.safetensors", "BasicSR", 4, 2, 1),
    ("tiny-x2.pth", "BasicSR", 2, 2, 2),
    ("tiny-x1.pth", "BasicSR", 1, 2, 4),
    ("sub/x2-old.pth", "old ESRGAN", 2, 3, 1),
])
def test_rrdbnet_layouts_are_detected(models_root, name, layout, scale, blocks, unshuffle):
    h = _load(models_root, name)
    c = h.config
    assert (c.arch, c.layout, c.scale, c.num_block, c.unshuffle) == ("RRDBNet", layout, scale, blocks, unshuffle)
    assert (c.in_channels, c.out_channels, c.num_feat, c.num_grow_ch) == (3, 3, 8, 4)
    assert h.scale == scale and h.source == Path(name).name
    s = h.__loom_summary__()
    assert s["arch"] == "RRDBNet" and s["scale"] == scale and s["parameters"] == sum(p.numel() for p in h.model.parameters())
    assert h.__loom_nbytes__() < 1024


def test_compact_is_detected_through_params_and_module_prefix(models_root):
    c = _load(models_root, "tiny-compact-x4.pth").config
    assert (c.arch, c.scale, c.num_block, c.num_feat, c.in_channels) == ("SRVGGNetCompact", 4, 3, 8, 3)


def test_basicsr_file_prefers_params_ema(models_root):
    h = _load(models_root, "tiny-x4-basicsr.pth")
    assert torch.equal(h.model.conv_first.weight, tiny_rrdb().conv_first.weight)


def test_old_and_trunk_layouts_give_exactly_the_new_layouts_output(models_root):
    x = _image().movedim(-1, 1)
    with torch.inference_mode():
        want = _load(models_root, "tiny-x4-basicsr.pth").model(x)
        assert want.shape == (1, 3, 80, 96)
        for name in ("tiny-x4-old.pth", "tiny-x4-trunk.pth", "tiny-x4.safetensors"):
            assert torch.equal(_load(models_root, name).model(x), want), name
    assert A.old_esrgan_to_basicsr(A.basicsr_to_old_esrgan(tiny_rrdb().state_dict())).keys() == tiny_rrdb().state_dict().keys()


def test_old_layout_indices_follow_the_sequential():
    keys = set(A.basicsr_to_old_esrgan(tiny_rrdb().state_dict()))
    assert {"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight", "model.1.sub.1.RDB3.conv5.0.bias",
            "model.1.sub.2.weight", "model.3.weight", "model.6.weight", "model.8.weight", "model.10.bias"} <= keys
    assert not any(k.startswith(("model.2.", "model.4.", "model.11.")) for k in keys)


class _Shortcut(torch.nn.Module):
    def __init__(self, sub):
        super().__init__()
        self.sub = sub

    def forward(self, x):
        return x + self.sub(x)


class _OldRDB(torch.nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        lrelu = torch.nn.LeakyReLU(0.2)
        for i in range(4):
            setattr(self, f"conv{i + 1}", torch.nn.Sequential(torch.nn.Conv2d(nf + i * gc, gc, 3, 1, 1), lrelu))
        self.conv5 = torch.nn.Sequential(torch.nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1))

    def forward(self, x):
        x1 = self.conv1(x)
        x2 = self.conv2(torch.cat((x, x1), 1))
        x3 = self.conv3(torch.cat((x, x1, x2), 1))
        x4 = self.conv4(torch.cat((x, x1, x2, x3), 1))
        return self.conv5(torch.cat((x, x1, x2, x3, x4), 1)) * 0.2 + x


class _OldRRDB(torch.nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.RDB1, self.RDB2, self.RDB3 = _OldRDB(nf, gc), _OldRDB(nf, gc), _OldRDB(nf, gc)

    def forward(self, x):
        return self.RDB3(self.RDB2(self.RDB1(x))) * 0.2 + x


def _old_esrgan(nf=8, nb=2, gc=4, stages=2):
    """The old ESRGAN generator as its repository built it: one flattened nn.Sequential, written independently of
    the module under test, so that the old key layout is checked against the real layer indices."""
    conv = lambda i, o: torch.nn.Conv2d(i, o, 3, 1, 1)  # noqa: E731
    layers = [conv(3, nf), _Shortcut(torch.nn.Sequential(*[_OldRRDB(nf, gc) for _ in range(nb)], conv(nf, nf)))]
    for _ in range(stages):
        layers += [torch.nn.Upsample(scale_factor=2, mode="nearest"), conv(nf, nf), torch.nn.LeakyReLU(0.2)]
    layers += [conv(nf, nf), torch.nn.LeakyReLU(0.2), conv(nf, 3)]
    net = torch.nn.Module()
    net.model = torch.nn.Sequential(*layers)
    net.forward = net.model.forward
    return net


@pytest.mark.parametrize("stages,blocks", [(2, 2), (1, 3), (0, 1), (3, 1)])
def test_old_layout_matches_the_original_sequential(stages, blocks):
    new = tiny_rrdb(num_upsample=stages, num_block=blocks, seed=11)
    old = _old_esrgan(nb=blocks, stages=stages).eval()
    old.load_state_dict(A.basicsr_to_old_esrgan(new.state_dict()), strict=True)
    model, config = A.build_model(old.state_dict())
    assert (config.layout, config.scale, config.num_block) == ("old ESRGAN", 2 ** stages, blocks)
    x = _image(h=9, w=7).movedim(-1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), old(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name,scale", [("tiny-x2.pth", 2), ("tiny-x1.pth", 1), ("tiny-compact-x4.pth", 4)])
def test_unshuffle_and_compact_scales_on_odd_sizes(models_root, name, scale):
    h = _load(models_root, name)
    out = A.upscale_image(h, _image(h=13, w=10), CPU)
    assert out.shape == (1, 13 * scale, 10 * scale, 3)


def test_compact_adds_the_nearest_upsampled_input():
    m = tiny_compact()
    with torch.no_grad():
        m.body[-1].weight.zero_()
        m.body[-1].bias.zero_()
    x = _image(h=5, w=6).movedim(-1, 1)
    assert torch.equal(m(x), x.repeat_interleave(4, -2).repeat_interleave(4, -1))


# --- running ------------------------------------------------------------------------------------------------
def test_output_shape_channels_last_and_clamped(models_root):
    h = _load(models_root, "tiny-x4-basicsr.pth")
    img = _image(b=2)
    out = A.upscale_image(h, img, CPU)
    assert out.shape == (2, 80, 96, 3) and out.dtype == torch.float32 and out.is_contiguous()
    with torch.inference_mode():
        raw = h.model(img.movedim(-1, 1))
    assert raw.min() < 0 and raw.max() > 1 and raw.std() > 0.1  # the clamp matters for this model
    assert out.min() >= 0 and out.max() <= 1
    # one tile per image: the model's output, clamped (allclose: a batch of 2 may take other conv kernels than 1)
    assert torch.allclose(out, raw.clamp(0, 1).movedim(1, -1), atol=1e-6, rtol=0)


def test_alpha_is_resized_beside_the_model_and_grey_is_repeated(models_root):
    h = _load(models_root, "tiny-x2.pth")
    rgba = _image(c=4)
    out = A.upscale_image(h, rgba, CPU)
    assert out.shape == (1, 40, 48, 4)
    assert torch.equal(out[..., :3], A.upscale_image(h, rgba[..., :3], CPU))
    alpha = torch.nn.functional.interpolate(rgba[..., 3:].movedim(-1, 1), size=(40, 48), mode="bilinear")
    assert torch.allclose(out[..., 3:], alpha.movedim(1, -1))
    grey = _image(c=1)
    assert torch.equal(A.upscale_image(h, grey, CPU), A.upscale_image(h, grey.repeat(1, 1, 1, 3), CPU))
    with pytest.raises(A.UpscaleArchError, match="3-channel images, this one has 2"):
        A.upscale_image(h, _image(c=2), CPU)


@pytest.mark.parametrize("h,w,tile,overlap", [(70, 45, 32, 8), (33, 100, 40, 12), (64, 64, 32, 16), (20, 90, 64, 8)])
def test_tiles_blend_to_the_untiled_result_for_a_pointwise_model(h, w, tile, overlap):
    """A per-pixel 'model' gives every tile exact values, so the feathered blend must give them back exactly:
    this checks tile placement, the short edge tiles and the weight normalisation."""
    x = torch.rand(2, 3, h, w)

    def run(t):
        return (t ** 2 - 0.3 * t).repeat_interleave(3, -2).repeat_interleave(3, -1)

    calls = []
    out = A.tiled_scale(x, run, 3, tile, overlap, on_tile=lambda: calls.append(1))
    assert torch.allclose(out, run(x), atol=1e-6, rtol=0)
    assert len(calls) == 2 * A.count_tiles(h, w, tile, overlap) > 2


def test_comfy_tile_positions():
    assert A.tile_starts(1000, 512, 32) == [0, 480, 960]  # ComfyUI's: the last tile is 40 px
    assert A.tile_starts(512, 512, 32) == [0]
    assert A.tile_starts(513, 512, 32) == [0, 480]
    assert A.count_tiles(1000, 300, 512, 32) == 3
    w = A._feather(10, 4)
    assert torch.allclose(w, torch.tensor([.25, .5, .75, 1, 1, 1, 1, .75, .5, .25]))
    assert torch.equal(A._feather(4, 4), torch.ones(4))  # ComfyUI skips a feather as long as the tile


def test_tiled_rrdb_is_exact_away_from_seams_and_bounded_by_its_tiles_at_them(models_root):
    """A real network sees zero padding at a tile's inner edges, so tiles differ from the whole image within the
    network's receptive field of those edges. Elsewhere (farther than the receptive field from every inner edge of
    every tile covering the pixel) the tiled result equals the untiled one; at the seams the feathered blend is a
    convex combination of the tiles, so it is never farther from the untiled result than the worst tile there."""
    m = tiny_rrdb(num_upsample=1, num_block=1, seed=5)
    # receptive radius in input px: 17 convs at input resolution, and the three convs at x2 reach at most 2 more
    scale, tile, overlap, radius = 2, 64, 16, 20
    x = torch.rand(1, 3, 80, 150, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        full = m(x)
        tiled = A.tiled_scale(x, m, scale, tile, overlap)
    H, W = x.shape[-2:]
    exact = torch.ones(H, W, dtype=torch.bool)
    worst = torch.zeros(H * scale, W * scale)
    for y in A.tile_starts(H, tile, overlap):
        for x0 in A.tile_starts(W, tile, overlap):
            th, tw = min(tile, H - y), min(tile, W - x0)
            yy, xx = torch.arange(y, y + th)[:, None], torch.arange(x0, x0 + tw)[None, :]
            far = torch.ones(th, tw, dtype=torch.bool)
            if y > 0:
                far &= yy - y >= radius
            if y + th < H:
                far &= y + th - 1 - yy >= radius
            if x0 > 0:
                far &= xx - x0 >= radius
            if x0 + tw < W:
                far &= x0 + tw - 1 - xx >= radius
            exact[y:y + th, x0:x0 + tw] &= far
            with torch.inference_mode():
                err = (m(x[..., y:y + th, x0:x0 + tw]) - full[..., y * scale:(y + th) * scale, x0 * scale:(x0 + tw) * scale])
            region = worst[y * scale:(y + th) * scale, x0 * scale:(x0 + tw) * scale]
            torch.maximum(region, err.abs().amax(1)[0], out=region)
    exact_hr = exact.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    diff = (tiled - full).abs().amax(1)[0]
    assert exact_hr.float().mean() > 0.2  # the check covers a good part of the image
    assert diff[exact_hr].max() < 1e-5
    assert (diff <= worst + 1e-5).all()
    assert diff.max() > 1e-3  # the seams really differ: the test would notice a tile that ignores its context


def test_out_of_memory_halves_the_tile_and_gives_the_smaller_tiles_image(models_root, monkeypatch):
    m = tiny_compact(seed=6)
    h = A.UpscaleModel(m, A.detect(m.state_dict())[0], "oom.pth")
    img = _image(h=50, w=70)
    want = A.upscale_image(h, img, CPU, tile=32, overlap=8)
    real_forward = h.model.forward
    seen = []

    def hungry(x):
        seen.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(x)

    monkeypatch.setattr(h.model, "forward", hungry)
    warnings, progress = [], []
    got = A.upscale_image(h, img, CPU, tile=64, overlap=8, min_tile=16, warn=warnings.append,
                          progress=lambda i, n: progress.append((i, n)))
    assert torch.equal(got, want)
    assert seen[0] == 64 and max(seen[1:]) == 32
    assert warnings == ["out of memory with 64 px tiles; trying 32 px tiles"]
    assert progress[-1] == (A.count_tiles(50, 70, 32, 8),) * 2
    with pytest.raises(torch.OutOfMemoryError):  # ComfyUI gives up below 128 px tiles; here below min_tile
        A.upscale_image(h, img, CPU, tile=64, overlap=8, min_tile=64)


def test_half_precision_overflow_is_redone_in_fp32():
    m = tiny_compact(seed=7)
    with torch.no_grad():
        m.body[-1].bias.fill_(1e5)  # beyond fp16's 65504
    h = A.UpscaleModel(m, A.detect(m.state_dict())[0], "hot.pth")
    warnings = []
    out = A.upscale_image(h, _image(h=6, w=6), DeviceManager("cpu"), dtype=torch.float16, warn=warnings.append)
    assert torch.isfinite(out).all() and out.min() == 1.0
    assert warnings == ["hot.pth overflowed in float16; upscaled again in fp32"]


def test_compute_dtype_is_fp32_on_cpu_and_the_managers_dtype_on_gpu(models_root):
    h = _load(models_root, "tiny-compact-x4.pth")

    class Fake:
        device = torch.device("cuda", 0)
        dtype = torch.float16

    assert A.compute_dtype(h, Fake()) == torch.float16
    assert A.compute_dtype(h, DeviceManager("cpu", dtype=torch.bfloat16)) == torch.float32


def test_node_reports_progress_per_tile(models_root, tmp_path, monkeypatch):
    monkeypatch.setattr(A, "TILE_SIZE", 16)
    monkeypatch.setattr(A, "TILE_OVERLAP", 4)
    events: list = []
    h = _load(models_root, "tiny-compact-x4.pth")
    out = U.image_upscale_with_model(h, _image(b=2, h=20, w=30), _ctx(_settings(models_root, tmp_path), events))
    assert out.shape == (2, 80, 120, 3)
    steps = [(d["value"], d["max"]) for kind, d in events if kind == "progress"]
    total = 2 * A.count_tiles(20, 30, 16, 4)
    assert steps == [(i, total) for i in range(1, total + 1)]


# --- loading: cache, errors ------------------------------------------------------------------------------------
def test_loads_are_shared_until_the_file_changes(tmp_path):
    f = tmp_path / "m.pth"
    torch.save(tiny_compact().state_dict(), f)
    a = A.load_upscale_model(f)
    assert A.load_upscale_model(f) is a
    torch.save(tiny_compact(seed=8).state_dict(), f)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime even on a coarse-clock file system
    b = A.load_upscale_model(f)
    assert b is not a and not torch.equal(b.model.body[0].weight, a.model.body[0].weight)


def test_missing_file_names_it(models_root, tmp_path):
    with pytest.raises(NodeError, match=r"upscale_model 'nope\.pth' not found in .*available: .*tiny-x4-old\.pth"):
        U.load_upscale_model("nope.pth", _ctx(_settings(models_root, tmp_path)))


def test_unknown_layout_names_the_file_the_keys_and_what_is_supported(models_root, tmp_path):
    with pytest.raises(NodeError) as e:
        U.load_upscale_model("not-an-upscaler.pth", _ctx(_settings(models_root, tmp_path)))
    msg = str(e.value)
    assert "'not-an-upscaler.pth'" in msg and "unknown architecture" in msg and "conv.bias" in msg
    assert "RRDBNet" in msg and "SRVGGNetCompact" in msg
    with pytest.raises(NodeError, match=r"'garbage\.pth': cannot be read as weights"):
        U.load_upscale_model("garbage.pth", _ctx(_settings(models_root, tmp_path)))


def test_pickled_code_is_refused(tmp_path):
    f = tmp_path / "evil.pth"
    torch.save({"params": {"x": torch.zeros(1)}, "opt": Path("/")}, f)  # a non-tensor object: weights_only refuses it
    with pytest.raises(A.UpscaleArchError, match="cannot be read as weights"):
        A.load_upscale_model(f)


def test_weights_that_do_not_fit_are_an_error():
    sd = tiny_compact().state_dict()
    sd["body.2.weight"] = torch.zeros(8, 5, 3, 3)
    with pytest.raises(A.UpscaleArchError, match="weights do not fit"):
        A.build_model(sd)
    with pytest.raises(A.UpscaleArchError, match="ESRGAN\\+"):
        A.detect({"model.0.weight": torch.zeros(1), "model.1.sub.0.RDB1.conv1x1.weight": torch.zeros(1)})


# --- engine and ComfyUI -----------------------------------------------------------------------------------------
def _input_png(settings: Settings, name: str = "small.png", size=(24, 18)) -> torch.Tensor:
    settings.input_dir.mkdir(parents=True, exist_ok=True)
    arr = (np.random.default_rng(0).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(settings.input_dir / name)
    return torch.from_numpy(arr.astype(np.float32) / 255)[None]


def test_workflow_runs_through_the_executor(models_root, tmp_path, registry):
    settings = _settings(models_root, tmp_path)
    img = _input_png(settings)
    L = lambda n, o: {"node": n, "output": o}  # noqa: E731
    wf = {"format": "latentloom.workflow", "version": 1, "nodes": {
        "load": {"type": "LoadImage", "inputs": {"image": "small.png"}},
        "model": {"type": "LoadUpscaleModel", "inputs": {"name": "tiny-x4-old.pth"}},
        "up": {"type": "ImageUpscaleWithModel", "inputs": {"upscale_model": L("model", "upscale_model"),
                                                           "image": L("load", "image")}},
        "save": {"type": "SaveImage", "inputs": {"images": L("up", "image"), "filename_prefix": "up"}}}}
    ex = Executor(registry, settings)
    r = ex.run(wf)
    assert r.status == "success", r.error
    (saved,) = r.output_paths(settings)["save"]
    assert Image.open(saved).size == (96, 72)
    got = ex.cache.peek(r.signatures["up"])["image"]
    assert torch.equal(got, A.upscale_image(_load(models_root, "tiny-x4-basicsr.pth"), img, CPU))
    again = ex.run(wf)
    assert again.status == "success" and again.nodes["up"].cached


def test_comfy_prompt_translates_and_runs(models_root, tmp_path, registry):
    settings = _settings(models_root, tmp_path)
    _input_png(settings)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "small.png", "upload": "image"}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "tiny-x2.pth"}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "ComfyUI"}},
    }
    assert prompt_to_workflow(prompt)["nodes"]["3"]["type"] == "ImageUpscaleWithModel"  # no registry: `loom run`
    wf = prompt_to_workflow(prompt, registry)
    assert wf["nodes"]["2"]["type"] == "LoadUpscaleModel" and wf["nodes"]["2"]["inputs"] == {"name": "tiny-x2.pth"}
    assert wf["nodes"]["3"]["inputs"] == {"upscale_model": {"node": "2", "output": "upscale_model"},
                                          "image": {"node": "1", "output": "image"}}
    r = Executor(registry, settings).run(wf)
    assert r.status == "success", r.error
    assert Image.open(r.output_paths(settings)["4"][0]).size == (48, 36)


def test_comfy_editor_widgets(registry):
    lg = {"nodes": [
        {"id": 1, "type": "UpscaleModelLoader", "pos": [0, 0], "mode": 0, "inputs": [],
         "outputs": [{"name": "UPSCALE_MODEL", "type": "UPSCALE_MODEL", "links": [1], "slot_index": 0}],
         "widgets_values": ["RealESRGAN_x4plus.pth"]},
        {"id": 2, "type": "ImageUpscaleWithModel", "pos": [0, 0], "mode": 0,
         "inputs": [{"name": "upscale_model", "type": "UPSCALE_MODEL", "link": 1}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [], "slot_index": 0}], "widgets_values": []},
    ], "links": [[1, 1, 0, 2, 0, "UPSCALE_MODEL"]]}
    prompt, _, warnings = litegraph_to_prompt(lg, registry)
    assert prompt["1"]["inputs"] == {"model_name": "RealESRGAN_x4plus.pth"}
    assert prompt["2"]["inputs"] == {"upscale_model": ["1", 0]}
    assert warnings == []


def test_catalog_lists_the_socket_type_and_the_model_folder(models_root, tmp_path, registry):
    assert any(t["name"] == "UPSCALE_MODEL" for t in export_types())
    cat = registry.catalog_json(_settings(models_root, tmp_path))["nodes"]
    choices = cat["LoadUpscaleModel"]["inputs"][0]["choices"]
    assert "tiny-x4-old.pth" in choices and "sub/x2-old.pth" in choices
    assert cat["LoadUpscaleModel"]["outputs"] == [{"name": "upscale_model", "type": "UPSCALE_MODEL", "description": ""}]
    from engine.api.object_info import object_info

    info = object_info(registry.catalog_json(_settings(models_root, tmp_path)))
    assert "tiny-x2.pth" in info["UpscaleModelLoader"]["input"]["required"]["model_name"][0]
    assert info["UpscaleModelLoader"]["output"] == ["UPSCALE_MODEL"]
