"""Live previews during sampling: a LATENT progress preview becomes a small JPEG (no VAE needed)."""

from __future__ import annotations

import io

import torch
from PIL import Image

from engine.preview import jpeg_bytes
from nodes.sd.handles import Latent


def test_latent_preview_encodes_to_jpeg():
    latent = Latent(samples=torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)), family="sd15")
    data = jpeg_bytes(latent, size=256)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"
        assert im.size == (128, 128)  # 16x16 latents enlarged for the editor


def test_pil_preview_is_thumbnailed():
    data = jpeg_bytes(Image.new("RGB", (1024, 512), (200, 10, 10)), size=256)
    with Image.open(io.BytesIO(data)) as im:
        assert max(im.size) == 256
