"""Noise schedules against diffusers' DDPMScheduler, and the PIL chart and grid renderers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.metrics.grid import grid_size, image_grid
from nodes.metrics.schedules import make_schedule, nice_ticks, plot_schedules


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize(
    "options",
    [{}, {"beta_start": 0.00085, "beta_end": 0.012}, {"rescale_zero_terminal_snr": True}, {"num_train_timesteps": 50}],
)
def test_alpha_bar_is_bit_identical_to_diffusers(name: str, options: dict) -> None:
    from diffusers import DDPMScheduler

    reference_options = dict(options)
    if "rescale_zero_terminal_snr" in reference_options:
        reference_options["rescale_betas_zero_snr"] = reference_options.pop("rescale_zero_terminal_snr")
    reference = DDPMScheduler(beta_schedule=name, **reference_options)
    ours = make_schedule(name, **options)
    assert torch.equal(ours.betas, reference.betas)
    assert torch.equal(ours.alphas_cumprod, reference.alphas_cumprod)
    expected_sigma = ((1 - reference.alphas_cumprod) / reference.alphas_cumprod) ** 0.5
    assert torch.equal(ours.sigmas, expected_sigma)


def test_cosine_alias_and_schedule_shape() -> None:
    cosine = make_schedule("cosine")
    assert torch.equal(cosine.alphas_cumprod, make_schedule("squaredcos_cap_v2").alphas_cumprod)
    sd = make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert float(sd.alphas_cumprod[-1]) == pytest.approx(0.0047, abs=2e-4)  # SD's terminal alpha_bar
    assert (sd.alphas_cumprod[1:] < sd.alphas_cumprod[:-1]).all()
    zsnr = make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True)
    assert float(zsnr.alphas_cumprod[-1]) == 0.0 and math.isinf(float(zsnr.sigmas[-1]))
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_schedule("sigmoidal")


def test_nice_ticks() -> None:
    assert nice_ticks(0, 999) == [0, 200, 400, 600, 800]
    assert nice_ticks(0, 0.9999, cover=True) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


@pytest.mark.parametrize(("quantity", "log_y"), [("alpha_bar", False), ("sigma", True), ("log_snr", False)])
def test_plot_renders_an_image_of_the_requested_size(quantity: str, log_y: bool) -> None:
    schedules = [
        make_schedule("linear"),
        make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012),
        make_schedule("cosine"),
        make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True),
    ]
    image = plot_schedules(schedules, quantity=quantity, log_y=log_y)
    assert isinstance(image, Image.Image) and image.size == (768, 512) and image.mode == "RGB"
    pixels = np.array(image).reshape(-1, 3).astype(int)
    near_first_line_color = np.abs(pixels - [31, 119, 180]).sum(axis=1) < 30
    assert near_first_line_color.sum() > 500  # the first schedule's curve is drawn
    assert (pixels.sum(axis=1) < 200).sum() > 500  # dark axis, tick and label ink
    assert plot_schedules(schedules[:1], size=(400, 300), supersample=1).size == (400, 300)


def test_grid_layout_and_size() -> None:
    images = torch.rand(6, 40, 50, 3, generator=torch.Generator().manual_seed(0))
    plain = image_grid(images, cols=3, padding=4)
    assert plain.size == grid_size(6, (50, 40), cols=3, padding=4) == (4 + 3 * 54, 4 + 2 * 44)
    # the first cell holds the first image, untouched
    first = torch.from_numpy(np.array(plain.crop((4, 4, 54, 44)))).float() / 255
    assert torch.allclose(first, images[0], atol=1 / 255)

    labelled = image_grid(
        images,
        row_labels=["Euler a", "DPM++ 2M Karras"],
        col_labels=["seed 1", "seed 2", "a long column label that has to wrap"],
        captions=[f"CLIP {20 + i}.0" for i in range(6)],
    )
    assert labelled.width > plain.width and labelled.height > plain.height
    mixed = image_grid([Image.new("RGB", (30, 20), "red"), Image.new("RGB", (10, 60), "blue")], padding=0)
    assert mixed.size == (60, 60)
    with pytest.raises(ValueError, match="row_labels has 3 entries for 2 rows"):
        image_grid(images, cols=3, row_labels=["a", "b", "c"], rows=2)
