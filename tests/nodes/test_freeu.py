"""FreeU and FreeU v2 (nodes/unet_patches.py, nodes/sd/unet_hooks.py): the hook's maths against an independent
numpy version, which decoder resnets it changes (by channel count, as the official code and ComfyUI), that the
shared model is never left hooked, whole workflows in the default and the fast mode, and ComfyUI's classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.compat.comfy import litegraph_to_workflow, prompt_to_workflow
from engine.registry import Registry
from nodes.sd.unet_hooks import FreeU, HookError, decoder_resnets, freeu_inputs, installed
from tests.nodes.sd_helpers import L, executor, output_of, txt2img_nodes, wf


def numpy_freeu(x: np.ndarray, backbone: int, b: float, s: float, version: int) -> np.ndarray:
    """FreeU on one resnet input cat([h, skip]), written from the paper's description with numpy's FFT."""
    h, skip = x[:, :backbone].copy(), x[:, backbone:]
    half = backbone // 2
    if version == 1:
        factor = b
    else:
        mean = h.mean(axis=1, keepdims=True)
        lo = mean.min(axis=(1, 2, 3), keepdims=True)
        hi = mean.max(axis=(1, 2, 3), keepdims=True)
        factor = (b - 1) * (mean - lo) / (hi - lo) + 1
    h[:, :half] = h[:, :half] * factor
    freq = np.fft.fftshift(np.fft.fft2(skip, axes=(-2, -1)), axes=(-2, -1))
    H, W = skip.shape[-2:]
    cy, cx = H // 2, W // 2
    freq[..., cy - 1:cy + 1, cx - 1:cx + 1] *= s  # threshold 1: the 2x2 block at and before the centre
    filtered = np.fft.ifft2(np.fft.ifftshift(freq, axes=(-2, -1)), axes=(-2, -1)).real
    return np.concatenate([h, filtered], axis=1)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("size", [(6, 5), (8, 8)])
def test_hook_maths_equals_an_independent_numpy_version(version, size):
    g = torch.Generator().manual_seed(version)
    x = torch.randn(2, 12 + 10, *size, generator=g, dtype=torch.float64)
    got = freeu_inputs(x, 12, 1.3, 0.4, version)
    want = numpy_freeu(x.numpy(), 12, 1.3, 0.4, version)
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-6)  # the FFT runs in float32, as ComfyUI
    # the skip's mean (DC) is scaled by s; the untouched half of the backbone is unchanged
    assert torch.allclose(got[:, 12:].mean((-2, -1)), 0.4 * x[:, 12:].mean((-2, -1)))
    assert torch.equal(got[:, 6:12], x[:, 6:12])


def test_half_precision_keeps_its_dtype():
    x = torch.randn(1, 8, 4, 4).half()
    out = freeu_inputs(x, 4, 1.2, 0.5, 2)
    assert out.dtype == torch.float16
    ref = freeu_inputs(x.double(), 4, 1.2, 0.5, 2)
    assert torch.allclose(out.double(), ref, atol=2e-2)


def _unet(channels=(32, 64, 128)):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    n = len(channels)
    return UNet2DConditionModel(sample_size=8, block_out_channels=channels, layers_per_block=1, cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=16,
                                down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
                                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)).eval()


def test_resnets_are_chosen_by_backbone_channels_not_block_index():
    unet = _unet()  # base width 32: 128 channels -> (b1, s1), 64 -> (b2, s2)
    plan = [(name, c, b, s) for name, _, c, b, s in FreeU(1.1, 1.2, 0.9, 0.2).plan(unet)]
    # worked out by hand: up block 0 takes the mid block's 128 channels; the first resnet of each later block takes
    # the block below's width, the second its own block's width
    assert plan == [("up_blocks.0.resnets.0", 128, 1.1, 0.9), ("up_blocks.0.resnets.1", 128, 1.1, 0.9),
                    ("up_blocks.1.resnets.0", 128, 1.1, 0.9), ("up_blocks.1.resnets.1", 64, 1.2, 0.2),
                    ("up_blocks.2.resnets.0", 64, 1.2, 0.2)]
    # diffusers' enable_freeu would give up_blocks.1 (all of it) b2 and leave up_blocks.2 alone
    assert len(decoder_resnets(unet)) == 6
    with pytest.raises(HookError, match="no UNet decoder"):
        decoder_resnets(torch.nn.Linear(2, 2))


def _call(unet, hooks=()):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 5, 32, generator=g)
    with torch.no_grad(), installed(unet, hooks):
        return unet(x, torch.tensor([500, 500]), encoder_hidden_states=text).sample


def _hook_count(model) -> int:
    return sum(len(m._forward_pre_hooks) for m in model.modules())


def test_neutral_factors_change_nothing_and_the_model_is_never_left_hooked():
    unet = _unet()
    plain = _call(unet)
    assert torch.allclose(_call(unet, (FreeU(1.0, 1.0, 1.0, 1.0),)), plain, atol=1e-5)
    for version in (1, 2):
        changed = _call(unet, (FreeU(1.3, 1.4, 0.9, 0.2, version),))
        assert (changed - plain).abs().max() > 1e-3
    assert _hook_count(unet) == 0
    with pytest.raises(RuntimeError):  # a failing call still removes the hooks
        with torch.no_grad(), installed(unet, (FreeU(1.1, 1.2, 0.9, 0.2),)):
            assert _hook_count(unet) == 5
            unet(torch.randn(1, 3, 8, 8), torch.tensor([1]), encoder_hidden_states=torch.randn(1, 5, 32))
    assert _hook_count(unet) == 0
    assert torch.equal(_call(unet), plain)


def test_two_freeu_patches_apply_in_order():
    unet = _unet()
    once = _call(unet, (FreeU(1.2, 1.2, 1.0, 1.0),))
    twice = _call(unet, (FreeU(1.2, 1.2, 1.0, 1.0), FreeU(1.2, 1.2, 1.0, 1.0)))
    squared = _call(unet, (FreeU(1.44, 1.44, 1.0, 1.0),))
    assert not torch.allclose(once, twice, atol=1e-4)
    assert torch.allclose(twice, squared, atol=1e-5)


def _freeu_nodes(kind: str = "FreeU", scheduler: str = "euler", **factors) -> dict:
    nodes = txt2img_nodes("tiny-sd15", steps=6, seed=3, scheduler=scheduler)
    nodes["freeu"] = {"type": kind, "inputs": {"unet": L("ckpt", "unet"), **factors}}
    nodes["sample"]["inputs"]["unet"] = L("freeu", "unet")
    return nodes


def test_workflow_with_freeu_changes_the_picture_and_leaves_the_cached_model_alone(models_dir, tmp_path):
    ex = executor(models_dir, tmp_path)
    plain = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", steps=6, seed=3))), "dec", "image")
    got = {}
    for kind in ("FreeU", "FreeUV2"):
        events: list = []
        result = ex.run(wf(_freeu_nodes(kind, b1=1.5, b2=1.6, s1=0.5, s2=0.3)), on_event=events.append)
        got[kind] = output_of(ex, result, "dec", "image")
        assert not [e for e in events if type(e).__name__ == "NodeWarning"]
        assert (got[kind] - plain).abs().max() > 1e-3
        unet = ex.cache.peek(result.signatures["freeu"])["unet"]
        assert unet.__loom_summary__()["hooks"] == [repr(FreeU(1.5, 1.6, 0.5, 0.3, 1 if kind == "FreeU" else 2))]
    assert (got["FreeU"] - got["FreeUV2"]).abs().max() > 1e-4
    ex.cache.clear()
    again = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", steps=6, seed=3))), "dec", "image")
    assert torch.equal(again, plain)  # the shared model kept no hook


def test_freeu_on_a_unet_it_cannot_change_warns(models_dir, tmp_path, monkeypatch):
    from nodes.sd import unet_hooks

    ex = executor(models_dir, tmp_path)
    monkeypatch.setattr(unet_hooks.FreeU, "plan", lambda self, model: [])
    events: list = []
    ex.run(wf(_freeu_nodes()), on_event=events.append)
    said = [e.message for e in events if type(e).__name__ == "NodeWarning"]
    assert any("FreeU changes nothing on this UNet" in m for m in said), said


@pytest.mark.parametrize("scheduler,path", [("euler", "fused"), ("unipc", "stagewise")])
def test_fast_mode_gives_the_default_picture_and_compiles_freeu_separately(models_dir, tmp_path, monkeypatch, scheduler,
                                                                          path):
    from nodes.sd import fast

    monkeypatch.setenv("LOOM_FAST_BACKEND", "aot_eager_decomp_partition")
    ex = executor(models_dir, tmp_path)
    ex.settings.user_dir = tmp_path / "user"
    images = {}
    for mode in ("default", "fast"):
        ex.settings.fast = mode == "fast"
        for name, nodes in (("plain", txt2img_nodes("tiny-sd15", steps=6, seed=3, scheduler=scheduler)),
                            ("freeu", _freeu_nodes("FreeUV2", scheduler, b1=1.5, b2=1.6, s1=0.5, s2=0.3))):
            ex.cache.clear()
            images[mode, name] = output_of(ex, ex.run(wf(nodes)), "dec", "image")
            if mode == "fast":
                assert fast.LAST_RUN["path"] == path
    ex.settings.fast = False
    mse = torch.mean((images["default", "freeu"].double() - images["fast", "freeu"].double()) ** 2).item()
    assert mse == 0 or 10 * math.log10(1 / mse) >= 40
    # a graph compiled without the hook is never replayed for a FreeU run, nor the other way round
    assert (images["fast", "freeu"] - images["fast", "plain"]).abs().max() > 1e-3
    assert torch.allclose(images["fast", "plain"], images["default", "plain"], atol=1e-2)


def test_comfyui_prompt_and_editor_workflow_translate():
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15"}},
        "10": {"class_type": "FreeU_V2", "inputs": {"model": ["4", 0], "b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}},
        "11": {"class_type": "FreeU", "inputs": {"model": ["10", 0], "b1": 1.1, "b2": 1.2, "s1": 0.8, "s2": 0.3}},
    }
    nodes = prompt_to_workflow(prompt, Registry.default())["nodes"]
    assert nodes["10"]["type"] == "FreeUV2" and nodes["10"]["inputs"]["unet"] == L("4", "unet")
    assert nodes["11"]["type"] == "FreeU" and nodes["11"]["inputs"] == {"unet": L("10", "unet"), "b1": 1.1, "b2": 1.2,
                                                                         "s1": 0.8, "s2": 0.3}
    graph = {"nodes": [{"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["tiny-sd15"],
                        "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1]}]},
                       {"id": 5, "type": "FreeU_V2", "widgets_values": [1.3, 1.4, 0.9, 0.2],
                        "inputs": [{"name": "model", "type": "MODEL", "link": 1}], "outputs": []}],
             "links": [[1, 4, 0, 5, 0, "MODEL"]]}
    ours, warnings = litegraph_to_workflow(graph, Registry.default())
    assert ours["nodes"]["5"]["type"] == "FreeUV2"
    assert ours["nodes"]["5"]["inputs"] == {"unet": L("4", "unet"), "b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}
