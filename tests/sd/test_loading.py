"""Architecture detection, offline loading of folders and single files, the shared cache, error messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes.sd import ldm_convert as lc
from nodes.sd import loading
from nodes.sd.loading import ModelNotFoundError, UnknownArchitectureError
from tests import tiny_models
from tests.tiny_models import full_size_shapes


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa = {k.removeprefix("text_model."): v for k, v in a.state_dict().items()}
    sb = {k.removeprefix("text_model."): v for k, v in b.state_dict().items()}
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].dtype)) for k in sa)


def config_of(module: torch.nn.Module) -> dict:
    cfg = module.config.to_dict() if hasattr(module.config, "to_dict") else dict(module.config)
    drop = {"transformers_version", "dtype", "torch_dtype", "architectures", "output_hidden_states"}
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k not in drop}


# ------------------------------------------------------------------------------------------------ detection

@pytest.mark.parametrize("arch", ["sd15", "sd15-inpaint", "sd2-v", "sd2-inpaint", "sdxl", "sdxl-inpaint", "sdxl-refiner"])
def test_detects_full_size_architectures(arch: str) -> None:
    shapes = full_size_shapes(arch)
    assert loading.detect_architecture(shapes) == arch
    assert loading.detect_architecture(shapes, prediction_type="epsilon") == ("sd2" if arch == "sd2-v" else arch)
    if arch != "sd15-inpaint":  # UNet + VAE only (no text encoder): decided by context width / projections
        assert loading.detect_architecture(full_size_shapes(arch, with_text=False)) == arch


@pytest.mark.parametrize("arch", ["sd15", "sd2", "sdxl", "sd2-inpaint", "sdxl-inpaint", "sdxl-refiner"])
def test_inferred_full_size_configs_match_the_shipped_ones(arch: str) -> None:
    inferred = loading.infer_config_overrides(full_size_shapes(arch), arch)
    shipped = loading.component_configs(arch)
    for component, values in inferred.items():
        for key, value in values.items():
            expected = shipped[component].get(key)
            if key == "transformer_layers_per_block" and expected is None:
                expected = 1
            if key in ("use_quant_conv", "use_post_quant_conv", "mid_block_add_attention") and expected is None:
                expected = True
            assert value == expected, (component, key)


def test_detects_narrow_files_and_reads_their_metadata(narrow_model) -> None:
    for arch in ("sd15", "sd2", "sdxl", "sd15-inpaint", "sd2-inpaint", "sdxl-inpaint", "sdxl-refiner"):
        path, _ = narrow_model(arch)
        shapes, meta = loading.read_keys_and_shapes(path)
        assert loading.detect_architecture(shapes, metadata=meta, source=path) == arch
        if arch != "sd2":  # the others need no hint; SD2 inpainting is the 512 epsilon model, never "-v"
            assert loading.detect_architecture(shapes) == arch
    path, _ = narrow_model("sd2")
    shapes, meta = loading.read_keys_and_shapes(path)
    assert loading.detect_architecture(shapes) == "sd2-v"  # no hints: SD2 defaults to 768 v-prediction
    assert loading.detect_architecture(shapes, prediction_type="v_prediction", metadata=meta) == "sd2-v"


def test_sd2_prediction_type_hints(tmp_path: Path) -> None:
    shapes = full_size_shapes("sd2-v")
    detect = loading.detect_architecture
    assert detect(shapes, source=tmp_path / "v2-1_768-ema-pruned.safetensors") == "sd2-v"
    assert detect(shapes, source=tmp_path / "v2-1_512-ema-pruned.safetensors") == "sd2"
    assert detect(shapes, source=tmp_path / "512-base-ema.safetensors") == "sd2"
    assert detect(shapes, metadata={"modelspec.prediction_type": "epsilon"}) == "sd2"
    assert detect(shapes, metadata={"modelspec.architecture": "stable-diffusion-v2-768-v"}) == "sd2-v"
    assert detect(shapes, metadata={"ss_v_parameterization": "False"}) == "sd2"
    sidecar = tmp_path / "my-model.safetensors"
    sidecar.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert detect(shapes, source=sidecar) == "sd2-v"
    assert detect(shapes, source=sidecar, prediction_type="epsilon") == "sd2"
    with pytest.raises(ValueError, match="prediction_type"):
        detect(shapes, prediction_type="x0")


def test_unknown_architecture_names_what_was_found() -> None:
    with pytest.raises(UnknownArchitectureError, match=r"key prefixes: transformer \(2\).*none"):
        loading.detect_architecture({"transformer.blocks.0.weight": (4, 4), "transformer.blocks.1.weight": (4, 4)})
    with pytest.raises(UnknownArchitectureError, match="standalone VAE, use load_vae"):
        loading.detect_architecture({"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_out.weight": (3,)})
    shapes = dict(full_size_shapes("sd15"))
    shapes["model.diffusion_model.input_blocks.0.0.weight"] = (320, 8, 3, 3)
    with pytest.raises(UnknownArchitectureError) as err:
        loading.detect_architecture(shapes)
    message = str(err.value)
    assert "8 input channels" in message and "context_dim=768" in message
    assert "model.diffusion_model (686)" in message and "cond_stage_model.transformer" in message


@pytest.mark.parametrize("arch, channels, what", [
    ("sd2-v", 5, "5 input channels on the sd2 architecture"),  # SD2 depth2img
    ("sdxl", 8, "8 input channels on the sdxl architecture"),  # e.g. an instruct-pix2pix SDXL
    ("sdxl-refiner", 9, "9 input channels on the sdxl-refiner architecture"),  # no refiner inpainting model
])
def test_other_input_channel_counts_are_refused_by_name(arch: str, channels: int, what: str) -> None:
    shapes = dict(full_size_shapes(arch))
    key = "model.diffusion_model.input_blocks.0.0.weight"
    shapes[key] = (shapes[key][0], channels, 3, 3)
    with pytest.raises(UnknownArchitectureError) as err:
        loading.detect_architecture(shapes)
    message = str(err.value)
    assert what in message and "9 (inpainting) for sd15, sd2, sdxl" in message
    assert f"in_channels={channels}" in message and "model.diffusion_model" in message


def test_unknown_conditioner_layout_names_the_embedders() -> None:
    refiner = full_size_shapes("sdxl-refiner")
    clip_l = {k: v for k, v in full_size_shapes("sdxl").items() if k.startswith(lc.SDXL_CLIP_PREFIX)}
    with pytest.raises(UnknownArchitectureError) as err:  # a refiner's G plus a base's L: neither layout
        loading.detect_architecture({**refiner, **clip_l})
    message = str(err.value)
    assert "conditioner.embedders.0.model, conditioner.embedders.0.transformer" in message
    assert "SDXL refiner" in message and "context_dim=1280" in message


# --------------------------------------------------------------------------------------------- single files

@pytest.mark.parametrize("arch", ["sd15", "sd2", "sdxl", "sd15-inpaint", "sd2-inpaint", "sdxl-inpaint", "sdxl-refiner"])
def test_narrow_single_file_loads_exactly(arch: str, narrow_model) -> None:
    path, (unet, vae, encoders) = narrow_model(arch)
    ck = loading.load_checkpoint(path)
    assert ck.arch == arch and ck.source == path.resolve()
    assert ck.prediction_type == ("v_prediction" if arch == "sd2-v" else "epsilon")
    for original, loaded in ((unet, ck.unet), (vae, ck.vae), *zip(encoders, ck.text_encoders)):
        assert same_weights(original, loaded)
        assert config_of(loaded) == config_of(original) | {k: v for k, v in config_of(loaded).items()
                                                            if k not in config_of(original)}
    assert len(ck.tokenizers) == len(encoders)
    pads = [t.pad_token for t in ck.tokenizers]
    assert pads == {"sd15": ["<|endoftext|>"], "sd2": ["!"], "sdxl": ["<|endoftext|>", "!"],
                    "sd15-inpaint": ["<|endoftext|>"], "sd2-inpaint": ["!"], "sdxl-inpaint": ["<|endoftext|>", "!"],
                    "sdxl-refiner": ["!"]}[arch]
    assert ck.text_encoder_names == (("text_encoder_2",) if arch == "sdxl-refiner" else
                                     ("text_encoder", "text_encoder_2")[:len(encoders)])
    assert ck.unet.config.in_channels == (9 if arch.endswith("-inpaint") else 4)
    assert ck.tokenizers[0]("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_sizes_are_inferred_without_metadata(tmp_path: Path) -> None:
    path = tiny_models.make_narrow_sd15_single_file(tmp_path / "bare.safetensors", seed=3, with_config=False)
    unet, vae, (text,) = tiny_models.build_models("sd15", tiny_models.NARROW_OVERRIDES["sd15"], seed=3)
    ck = loading.load_checkpoint(path)
    assert ck.arch == "sd15"
    assert same_weights(unet, ck.unet) and same_weights(vae, ck.vae) and same_weights(text, ck.text_encoders[0])
    for original, loaded in ((unet, ck.unet), (vae, ck.vae), (text, ck.text_encoders[0])):
        differing = {k for k, v in config_of(original).items() if config_of(loaded).get(k) != v}
        assert differing <= {"sample_size"}  # not in the weights; heads are guessed right for these widths


def test_sd2_inpainting_is_epsilon_whatever_the_file_name(tmp_path: Path) -> None:
    """No metadata: a "768" in the name makes a 4-channel SD2 file v-prediction, but SD2 inpainting is 512 epsilon."""
    path = tiny_models.make_narrow_single_file(tmp_path / "v2-768-inpainting.safetensors", "sd2-inpaint",
                                               with_config=False)
    ck = loading.load_checkpoint(path)
    assert (ck.arch, ck.prediction_type, ck.unet.config.in_channels) == ("sd2-inpaint", "epsilon", 9)
    assert ck.notes == ["prediction type: epsilon (shipped scheduler config)"]


def test_ckpt_pickle_with_state_dict_and_fp16(tiny_sd15_file, tmp_path: Path) -> None:
    path = tiny_sd15_file
    unet = loading.load_checkpoint(path).unet
    state = {k: v.half() for k, v in load_file(str(path)).items()}
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "global_step": 10}, ckpt)
    ck = loading.load_checkpoint(ckpt)
    assert ck.arch == "sd15" and ck.unet.dtype == torch.float32
    ours, theirs = unet.state_dict(), ck.unet.state_dict()
    assert all(torch.equal(ours[k].half().float(), theirs[k]) for k in ours)  # fp16 file, fp32 model
    half = loading.load_checkpoint(ckpt, dtype=torch.float16)
    assert half.unet.dtype == torch.float16 and half.text_encoders[0].dtype == torch.float16
    assert half is not ck


def test_incomplete_single_file_names_what_is_missing(tiny_sd15_file, tmp_path: Path) -> None:
    state = {k: v for k, v in load_file(str(tiny_sd15_file)).items() if not k.startswith(lc.VAE_PREFIX)}
    save_file(state, str(tmp_path / "no-vae.safetensors"))
    with pytest.raises(loading.CheckpointError, match="without VAE"):
        loading.load_checkpoint(tmp_path / "no-vae.safetensors")


# ------------------------------------------------------------------------------------------ diffusers folders

def test_tiny_folders_load_with_the_right_arch(tiny_sd15_dir, tiny_sd2v_dir, tiny_sdxl_dir, tiny_inpaint_dir) -> None:
    expected = {tiny_sd15_dir: ("sd15", "epsilon"), tiny_sd2v_dir: ("sd2-v", "v_prediction"),
                tiny_sdxl_dir: ("sdxl", "epsilon"), tiny_inpaint_dir: ("sd15-inpaint", "epsilon")}
    for folder, (arch, prediction) in expected.items():
        ck = loading.load_checkpoint(folder)
        assert (ck.arch, ck.prediction_type, ck.scheduler_config["prediction_type"]) == (arch, prediction, prediction)
        assert all(t.model_max_length == 77 for t in ck.tokenizers)
        assert ck.tokenizers[-1]("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert loading.load_checkpoint(tiny_inpaint_dir).unet.config.in_channels == 9
    sdxl = loading.load_checkpoint(tiny_sdxl_dir)
    assert [t.pad_token_id for t in sdxl.tokenizers] == [49407, 0]
    assert type(sdxl.text_encoders[1]).__name__ == "CLIPTextModelWithProjection"
    eps = loading.load_checkpoint(tiny_sd2v_dir, prediction_type="epsilon")
    assert (eps.arch, eps.scheduler_config["prediction_type"]) == ("sd2", "epsilon")


@pytest.mark.parametrize("which", ["sd15", "sdxl", "sd2-inpaint", "sdxl-inpaint", "sdxl-refiner"])
def test_folder_and_single_file_give_identical_models(which: str, tiny_sd15_dir, tiny_sdxl_dir, tiny_new_arch_dir,
                                                      tmp_path: Path) -> None:
    folder = {"sd15": tiny_sd15_dir, "sdxl": tiny_sdxl_dir}.get(which) or tiny_new_arch_dir(which)
    a = loading.load_checkpoint(folder)
    path = lc.save_single_file(tmp_path / f"{which}.safetensors", a.unet, a.vae, a.text_encoders, a.arch,
                               scheduler_config=a.scheduler_config)
    b = loading.load_checkpoint(path)
    assert (b.arch, b.prediction_type, b.scheduler_config) == (a.arch, a.prediction_type, a.scheduler_config)
    assert (b.pipeline_class, b.pipeline_options) == (a.pipeline_class, a.pipeline_options)
    for x, y in ((a.unet, b.unet), (a.vae, b.vae), *zip(a.text_encoders, b.text_encoders)):
        assert same_weights(x, y)
        assert config_of(x) == config_of(y)
    if which == "sd15":  # and the same image, end to end
        images = [ck.pipeline()("a red circle", num_inference_steps=2, height=64, width=64, output_type="pt",
                                generator=torch.Generator().manual_seed(0)).images for ck in (a, b)]
        assert images[0].shape == (1, 3, 64, 64) and torch.equal(images[0], images[1])


def test_new_architecture_folders_load(tiny_new_arch_dir) -> None:
    """SD2 / SDXL inpainting and the SDXL refiner as diffusers folders: arch, encoders, pipeline class."""
    expected = {"sd2-inpaint": ("StableDiffusionInpaintPipeline", ["CLIPTextModel"], [0]),
                "sdxl-inpaint": ("StableDiffusionXLInpaintPipeline", ["CLIPTextModel", "CLIPTextModelWithProjection"],
                                 [49407, 0]),
                "sdxl-refiner": ("StableDiffusionXLImg2ImgPipeline", ["CLIPTextModelWithProjection"], [0])}
    for arch, (pipeline, encoders, pads) in expected.items():
        ck = loading.load_checkpoint(tiny_new_arch_dir(arch))
        assert (ck.arch, ck.prediction_type, ck.pipeline_class) == (arch, "epsilon", pipeline)
        assert [type(te).__name__ for te in ck.text_encoders] == encoders
        assert [t.pad_token_id for t in ck.tokenizers] == pads
        assert ck.unet.config.in_channels == (9 if arch.endswith("-inpaint") else 4)
        pipe = ck.pipeline()
        assert type(pipe).__name__ == pipeline
        if arch == "sdxl-refiner":
            assert ck.text_encoder_names == ("text_encoder_2",)
            assert ck.pipeline_options == {"requires_aesthetics_score": True, "force_zeros_for_empty_prompt": False}
            assert pipe.text_encoder is None and pipe.tokenizer is None and pipe.text_encoder_2 is ck.text_encoders[0]
            assert pipe.config.requires_aesthetics_score is True and pipe.config.force_zeros_for_empty_prompt is False


def test_missing_folder_component_lists_the_folder(tiny_sd15_dir, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text((tiny_sd15_dir / "model_index.json").read_text())
    (broken / "scheduler").mkdir()
    (broken / "scheduler" / "scheduler_config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=r"no unet/config.json; it holds: model_index.json, scheduler/"):
        loading.load_checkpoint(broken)


def test_unsupported_pipeline_class(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text("{}")
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(UnknownArchitectureError, match="FluxPipeline"):
        loading.load_checkpoint(tmp_path)


def test_unsupported_folder_channel_count_is_named(tiny_new_arch_dir, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "refiner-9"
    shutil.copytree(tiny_new_arch_dir("sdxl-refiner"), folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**config, "in_channels": 9}))
    with pytest.raises(UnknownArchitectureError, match=r"9-channel UNet \(sdxl-refiner family\)"):
        loading.load_checkpoint(folder)


# ------------------------------------------------------------------------------------------ errors and cache

def test_missing_file_lists_the_folder(tmp_path: Path) -> None:
    (tmp_path / "other.safetensors").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ModelNotFoundError) as err:
        loading.load_checkpoint(tmp_path / "missing.safetensors")
    message = str(err.value)
    assert "missing.safetensors" in message and "other.safetensors, sub/" in message
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(ModelNotFoundError, match=f"{tmp_path} holds"):
        loading.load_checkpoint(tmp_path / "nope" / "deeper" / "x.safetensors")
    with pytest.raises(ModelNotFoundError, match="without model_index.json.*other.safetensors"):
        loading.load_checkpoint(tmp_path)
    with pytest.raises(loading.CheckpointError, match="not a checkpoint file"):
        (tmp_path / "notes.txt").write_text("hi")
        loading.load_checkpoint(tmp_path / "notes.txt")


def test_loaded_once_and_shared(tiny_sd15_file, tmp_path: Path) -> None:
    path = tiny_sd15_file
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(path.read_bytes())
    first = loading.load_checkpoint(copy)
    assert loading.load_checkpoint(str(copy)) is first
    assert loading.load_checkpoint(tmp_path / "." / "copy.safetensors") is first
    assert loading.load_checkpoint(copy, prediction_type="v_prediction") is not first
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # the file changed: load again
    second = loading.load_checkpoint(copy)
    assert second is not first and same_weights(first.unet, second.unet)
    loading.clear_cache()
    assert loading.load_checkpoint(copy) is not second


def test_concurrent_loads_share_one_object(tiny_sd15_file, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    copy = tmp_path / "threads.safetensors"
    copy.write_bytes(tiny_sd15_file.read_bytes())
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: loading.load_checkpoint(copy), range(3)))
    assert results[0] is results[1] is results[2]


def test_v_prediction_override_reaches_the_scheduler(tiny_sd15_file) -> None:
    ck = loading.load_checkpoint(tiny_sd15_file, prediction_type="v_prediction")
    assert (ck.arch, ck.prediction_type) == ("sd15", "v_prediction")
    assert ck.make_scheduler().config.prediction_type == "v_prediction"
    assert any("prediction_type argument" in note for note in ck.notes)


# ------------------------------------------------------------------------------------------------------ VAE

def test_load_vae_from_files_and_folders(tiny_sd15_file, tiny_sdxl_dir, tmp_path: Path) -> None:
    path = tiny_sd15_file
    vae = loading.load_checkpoint(path).vae
    state = load_file(str(path))
    standalone = {k.removeprefix(lc.VAE_PREFIX): v for k, v in state.items() if k.startswith(lc.VAE_PREFIX)}
    save_file(standalone, str(tmp_path / "vae-ft-mse.safetensors"))
    loaded = loading.load_vae(tmp_path / "vae-ft-mse.safetensors")
    assert same_weights(vae, loaded) and loaded.config.scaling_factor == 0.18215
    assert loading.load_vae(tmp_path / "vae-ft-mse.safetensors") is loaded
    assert same_weights(vae, loading.load_vae(path))  # a whole checkpoint's first_stage_model
    save_file(vae.state_dict(), str(tmp_path / "sdxl_vae.safetensors"))  # diffusers keys; "xl" in the name
    xl = loading.load_vae(tmp_path / "sdxl_vae.safetensors")
    assert same_weights(vae, xl) and xl.config.scaling_factor == 0.13025
    assert loading.load_vae(tmp_path / "vae-ft-mse.safetensors", scaling_factor=0.5).config.scaling_factor == 0.5
    folder_vae = loading.load_vae(tiny_sdxl_dir)
    assert same_weights(folder_vae, loading.load_checkpoint(tiny_sdxl_dir).vae)
    assert same_weights(folder_vae, loading.load_vae(tiny_sdxl_dir / "vae"))
    with pytest.raises(UnknownArchitectureError, match="no VAE weights"):
        save_file({"x.weight": torch.zeros(1)}, str(tmp_path / "junk.safetensors"))
        loading.load_vae(tmp_path / "junk.safetensors")
