"""The shipped configs-only folders describe the published architectures exactly (checked on the meta device)."""

from __future__ import annotations

import json

import pytest
import torch

from nodes.sd import loading

# Published parameter counts (SD1.5 UNet 859.5M, SD2 865.9M, SDXL 2567.5M, VAE 83.65M, CLIP ViT-L text 123.06M,
# OpenCLIP ViT-H text 340.4M (the 23 layers SD2 uses), OpenCLIP bigG text with projection 694.7M).
# An inpainting UNet differs from its base only in conv_in, 9 input channels instead of 4: 5 x 320 x 3 x 3 = 14,400
# more weights (SD1.5: 859,520,964 -> 859,535,364, as published for sd-v1-5-inpainting; SD2: 865,910,724 ->
# 865,925,124; SDXL: 2,567,463,684 -> 2,567,478,084).
# The SDXL refiner UNet (384/768/1536/1536, 4 transformer blocks at levels 1-2 and in the middle, add-embedding
# 5 x 256 + 1280 = 2560 wide) has 2,259,526,660: 4.52 GB in fp16, in line with the published fp16 UNet file.
INPAINT_CONV_IN = 5 * 320 * 3 * 3
UNET = {"sd15": 859_520_964, "sd15-inpaint": 859_535_364, "sd2": 865_910_724, "sd2-v": 865_910_724,
        "sd2-inpaint": 865_925_124, "sdxl": 2_567_463_684, "sdxl-inpaint": 2_567_478_084,
        "sdxl-refiner": 2_259_526_660}
VAE = 83_653_863
TEXT = {"sd15": [123_060_480], "sd15-inpaint": [123_060_480], "sd2": [340_387_840], "sd2-v": [340_387_840],
        "sd2-inpaint": [340_387_840], "sdxl": [123_060_480, 694_659_840], "sdxl-inpaint": [123_060_480, 694_659_840],
        "sdxl-refiner": [694_659_840]}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("arch", loading.ARCHS)
def test_parameter_counts_on_meta_device(arch: str) -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    configs = loading.component_configs(arch)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        texts = []
        for name in loading.TEXT_ENCODER_NAMES:
            if name in configs:
                cls = CLIPTextModelWithProjection if "Projection" in configs[name]["architectures"][0] else CLIPTextModel
                texts.append(cls(CLIPTextConfig.from_dict(configs[name])))
    assert next(unet.parameters()).is_meta
    assert _count(unet) == UNET[arch]
    assert _count(vae) == VAE
    assert [_count(t) for t in texts] == TEXT[arch]


def test_inpainting_unets_differ_from_their_base_only_in_conv_in() -> None:
    for base in ("sd15", "sd2", "sdxl"):
        assert UNET[f"{base}-inpaint"] - UNET[base] == INPAINT_CONV_IN


@pytest.mark.parametrize("arch", loading.ARCHS)
def test_folder_is_configs_only_and_complete(arch: str) -> None:
    root = loading.config_dir(arch)
    index = json.loads((root / "model_index.json").read_text())
    for name, (library, cls) in ((k, v) for k, v in index.items() if isinstance(v, list)):
        if cls is None:
            continue
        if name.startswith("tokenizer"):
            continue  # built from the one shared vocabulary (tokenizers/clip)
        config = "scheduler_config.json" if name == "scheduler" else "config.json"
        assert (root / name / config).is_file(), f"{arch}: {name} has no {config}"
        assert library in ("diffusers", "transformers")
    weights = [p for p in root.rglob("*") if p.suffix in (".safetensors", ".bin", ".ckpt", ".pt")]
    assert weights == []


def test_architecture_specifics() -> None:
    c = {arch: loading.component_configs(arch) for arch in loading.ARCHS}
    assert {a: c[a]["scheduler"]["prediction_type"] for a in loading.ARCHS if a != "sd2-v"} == dict.fromkeys(
        set(loading.ARCHS) - {"sd2-v"}, "epsilon")
    assert c["sd2-v"]["scheduler"]["prediction_type"] == "v_prediction"
    for arch, pipeline in (("sd15-inpaint", "StableDiffusionInpaintPipeline"),
                           ("sd2-inpaint", "StableDiffusionInpaintPipeline"),
                           ("sdxl-inpaint", "StableDiffusionXLInpaintPipeline")):
        base = arch.removesuffix("-inpaint")
        assert c[arch]["unet"] == c[base]["unet"] | {"in_channels": 9}, arch  # only conv_in differs
        assert c[arch]["model_index"]["_class_name"] == pipeline
        assert c[arch]["scheduler"] == c[base]["scheduler"] and c[arch]["vae"] == c[base]["vae"]
    assert c["sd2-inpaint"]["unet"]["sample_size"] == 64 and c["sd2-inpaint"]["text_encoder"]["num_hidden_layers"] == 23
    refiner = c["sdxl-refiner"]
    assert "text_encoder" not in refiner and refiner["text_encoder_2"] == c["sdxl"]["text_encoder_2"]
    assert refiner["model_index"]["text_encoder"] == [None, None] and refiner["model_index"]["tokenizer"] == [None, None]
    assert refiner["model_index"]["_class_name"] == "StableDiffusionXLImg2ImgPipeline"
    assert refiner["model_index"]["requires_aesthetics_score"] is True
    assert refiner["model_index"]["force_zeros_for_empty_prompt"] is False
    assert refiner["unet"]["block_out_channels"] == [384, 768, 1536, 1536]
    assert refiner["unet"]["cross_attention_dim"] == 1280 and refiner["unet"]["addition_time_embed_dim"] == 256
    assert refiner["unet"]["projection_class_embeddings_input_dim"] == 5 * 256 + 1280  # 5 time ids + pooled G
    assert refiner["vae"] == c["sdxl"]["vae"] and refiner["scheduler"] == c["sdxl"]["scheduler"]
    assert c["sd2"]["text_encoder"]["num_hidden_layers"] == 23  # SD2 conditions on the penultimate layer
    assert c["sd2-v"]["unet"]["sample_size"] == 96 and c["sd2"]["unet"]["sample_size"] == 64
    assert c["sdxl"]["vae"]["scaling_factor"] == 0.13025 and c["sd15"]["vae"]["scaling_factor"] == 0.18215
    assert c["sdxl"]["unet"]["transformer_layers_per_block"] == [1, 2, 10]


def test_write_config_folder_applies_overrides(tmp_path) -> None:
    dest = loading.write_config_folder("sd15", tmp_path / "cfg", {"unet": {"block_out_channels": [32, 64]}})
    unet = json.loads((dest / "unet" / "config.json").read_text())
    assert unet["block_out_channels"] == [32, 64] and unet["cross_attention_dim"] == 768
    assert (dest / "scheduler" / "scheduler_config.json").is_file() and (dest / "model_index.json").is_file()


def test_shared_clip_tokenizer() -> None:
    clip = loading.make_tokenizer("clip")
    openclip = loading.make_tokenizer("openclip")
    ids = [49406, 320, 1125, 539, 320, 2368, 49407]
    assert clip("a photo of a cat").input_ids == ids
    assert openclip("a photo of a cat").input_ids == ids
    assert clip.model_max_length == 77 and len(clip) == 49408
    padded = openclip("a cat", padding="max_length", max_length=8).input_ids
    assert padded == [49406, 320, 2368, 49407, 0, 0, 0, 0]
    assert clip("a cat", padding="max_length", max_length=6).input_ids == [49406, 320, 2368, 49407, 49407, 49407]
    assert loading.make_tokenizer("clip", 16).model_max_length == 16
    assert (loading.TOKENIZER_DIR / "LICENSE").read_text().count("Copyright (c) 2021 OpenAI") == 1
    assert "bpe_simple_vocab_16e6.txt.gz" in (loading.TOKENIZER_DIR / "README.md").read_text()
