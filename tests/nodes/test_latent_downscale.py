"""Latents know their VAE's downscale (pixels per latent pixel): 8 for every SD VAE, 4 for loom-shapes. Nodes that
take sizes in pixels convert with it, and regional areas and the sampler's image size follow it."""

from __future__ import annotations

import shutil

import torch

from engine.node import NodeContext
from nodes import latent as N
from nodes.sd.handles import Latent


def _loom(h: int = 16, w: int = 16, **kw) -> Latent:
    return Latent(samples=torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w).repeat(1, 4, 1, 1),
                  family="loom-shapes", downscale=4, **kw)


def test_pixel_sizes_convert_with_the_latents_downscale():
    up = N.latent_upscale(_loom(), width=128, height=96, method="nearest-exact")
    assert up.samples.shape[-2:] == (24, 32) and up.downscale == 4
    sd = N.latent_upscale(Latent(samples=torch.zeros(1, 4, 8, 8), family="sd15"), width=128, height=96)
    assert sd.samples.shape[-2:] == (12, 16)
    crop = N.latent_crop(_loom(), width=32, height=16, x=8, y=4)
    assert torch.equal(crop.samples, _loom().samples[..., 1:5, 2:10])
    to = Latent(samples=torch.zeros(1, 4, 16, 16), family="loom-shapes", downscale=4)
    pasted = N.latent_composite(to, Latent(samples=torch.ones(1, 4, 4, 4), family="loom-shapes", downscale=4), x=32, y=8)
    assert torch.equal(pasted.samples[0, 0].nonzero().amin(0), torch.tensor([2, 8]))


def test_empty_latent_records_the_vaes_downscale(models_dir):
    from diffusers import AutoencoderKL

    from nodes.sd.handles import VAEHandle
    from nodes.sd.loading import load_checkpoint

    sd = VAEHandle(load_checkpoint(models_dir / "checkpoints" / "tiny-sd15").vae, "sd15")
    three_levels = VAEHandle(AutoencoderKL(block_out_channels=(8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
                                           up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=4), "loom-shapes")
    assert N.empty_latent(64, 64, 1, sd).samples.shape[-1] == 8 and N.empty_latent(64, 64, 1, sd).downscale == 8
    small = N.empty_latent(64, 64, 1, three_levels)
    assert small.samples.shape[-1] == 16 and small.downscale == 4


def test_save_and_load_keep_the_downscale(tmp_path, folders):
    ctx = NodeContext(node_id="s", node_type="SaveLatent", run_id="r", folders=folders)
    shown = N.save_latent(_loom(), ctx, filename_prefix="x")
    name = shown.text[0]
    shutil.copy(folders.output / name, folders.input / "x.latent")
    back = N.load_latent("x.latent", NodeContext(node_id="l", node_type="LoadLatent", run_id="r", folders=folders))
    assert back.downscale == 4 and back.family == "loom-shapes" and torch.equal(back.samples, _loom().samples)


def test_the_sampler_sees_the_image_size_and_pixel_areas_in_latent_pixels(models_dir, tmp_path):
    """A pixel area covering the whole image of a downscale-4 latent predicts what the plain prompt predicts; the
    sampler's image size is latent size x 4 (it was x 8 for every model)."""
    from nodes import conditioning as C
    from nodes.sd.denoise import predict_noise, prepare
    from nodes.sd.handles import NoiseSpec
    from nodes.sd.schedulers import make_spec
    from tests.nodes.sd_helpers import L, executor, wf

    ex = executor(models_dir, tmp_path)
    nodes = {"ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd15"}},
             "a": {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text": "a red circle"}}}
    r = ex.run(wf(nodes), targets=["a"])
    unet = ex.cache.peek(r.signatures["ckpt"])["unet"]
    a = ex.cache.peek(r.signatures["a"])["conditioning"]
    devices = ex.settings.devices()
    latent = Latent(samples=torch.zeros(1, 4, 16, 16), family="sd15", downscale=4)
    state, x = prepare(unet, latent, NoiseSpec(3), make_spec("euler", unet.scheduler_config, 4), devices)
    assert state.image_size == (64, 64)
    t = state.timesteps[0]
    plain = predict_noise(unet, x, t, a, None, state, devices, guidance=False).cond
    whole = C.conditioning_combine(C.conditioning_set_area(a, width=64, height=64, x=0, y=0), a)
    assert torch.allclose(predict_noise(unet, x, t, whole, None, state, devices, guidance=False).cond, plain, atol=1e-5)
    left = C.conditioning_combine(C.conditioning_set_area(a, width=32, height=64, x=0, y=0),
                                  C.conditioning_set_area(a, width=32, height=64, x=32, y=0))
    halves = predict_noise(unet, x, t, left, None, state, devices, guidance=False).cond
    alone = predict_noise(unet, x[..., :8], t, a, None, state, devices, guidance=False).cond
    assert torch.allclose(halves[..., :8], alone, atol=1e-5)  # 32 pixels = 8 latent pixels here, not 4
