"""The diffusers -> LDM writer round-trips exactly through diffusers' own single-file reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nodes.sd import ldm_convert as lc
from nodes.sd import loading
from tests import tiny_models


def _flat(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k.removeprefix("text_model."): v for k, v in module.state_dict().items()}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = _flat(a), _flat(b)
    assert sa.keys() == sb.keys()
    worst = max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)
    assert worst == 0.0


@pytest.mark.parametrize("arch", ["sd15", "sd2", "sdxl", "sd15-inpaint", "sd2-inpaint", "sdxl-inpaint", "sdxl-refiner"])
def test_exact_round_trip_through_diffusers_from_single_file(arch: str, narrow_model, tmp_path: Path) -> None:
    import diffusers

    path, (unet, vae, encoders) = narrow_model(arch)
    config = loading.write_config_folder(arch, tmp_path / "cfg", tiny_models.NARROW_OVERRIDES[arch])
    cls = getattr(diffusers, loading.component_configs(arch)["model_index"]["_class_name"])
    names = lc.text_encoder_names(arch)
    tokenizers = {name.replace("text_encoder", "tokenizer"): loading.make_tokenizer(kind)
                  for name, (kind, _) in zip(names, lc.TEXT_ENCODER_LAYOUT[arch])}
    pipe = cls.from_single_file(str(path), config=str(config), local_files_only=True, **tokenizers)
    assert_same_weights(unet, pipe.unet)
    assert_same_weights(vae, pipe.vae)
    for name, encoder in zip(names, encoders):
        assert_same_weights(encoder, getattr(pipe, name))
    if arch == "sdxl-refiner":
        assert pipe.text_encoder is None and pipe.config.requires_aesthetics_score is True


@pytest.mark.parametrize("arch", ["sd15", "sd2", "sdxl", "sd15-inpaint", "sd2-inpaint", "sdxl-inpaint", "sdxl-refiner"])
def test_narrow_files_have_exactly_the_full_size_key_set(arch: str, narrow_model) -> None:
    path, _ = narrow_model(arch)
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    full = set(tiny_models.full_size_shapes("sd2-v" if arch == "sd2" else arch))
    assert keys == full


def test_layout_matches_the_original_sd15_key_set(narrow_model) -> None:
    path, _ = narrow_model("sd15")
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    count = {p: sum(k.startswith(p) for k in keys) for p in (lc.UNET_PREFIX, lc.VAE_PREFIX, lc.SD_CLIP_PREFIX)}
    assert count == {lc.UNET_PREFIX: 686, lc.VAE_PREFIX: 248, lc.SD_CLIP_PREFIX: 196}  # as in the real SD1.5 file
    for key in ("model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.time_embed.2.bias",
                "model.diffusion_model.input_blocks.3.0.op.weight",
                "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
                "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.output_blocks.2.1.conv.weight",
                "model.diffusion_model.output_blocks.5.2.conv.weight",
                "model.diffusion_model.output_blocks.11.0.skip_connection.weight", "model.diffusion_model.out.2.bias",
                "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight",
                "first_stage_model.decoder.up.3.upsample.conv.weight", "first_stage_model.decoder.mid.attn_1.q.weight",
                "first_stage_model.encoder.norm_out.weight", "first_stage_model.post_quant_conv.bias",
                "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
                "cond_stage_model.transformer.text_model.final_layer_norm.weight"):
        assert key in keys, key


def test_vae_attention_is_stored_as_1x1_convs(narrow_model) -> None:
    path, (_, vae, _) = narrow_model("sd15")
    with safe_open(str(path), "pt") as f:
        q = f.get_tensor("first_stage_model.encoder.mid.attn_1.q.weight")
        up = f.get_tensor("first_stage_model.decoder.up.0.block.0.conv1.weight")
    assert q.shape == (128, 128, 1, 1)
    assert torch.equal(q[:, :, 0, 0], vae.encoder.mid_block.attentions[0].to_q.weight)
    assert torch.equal(up, vae.decoder.up_blocks[-1].resnets[0].conv1.weight)  # LDM numbers up levels reversed


def test_openclip_layout_sd2_and_sdxl(narrow_model) -> None:
    path, (_, _, (h,)) = narrow_model("sd2")
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        fused = f.get_tensor("cond_stage_model.model.transformer.resblocks.3.attn.in_proj_weight")
        tail = [f.get_tensor(k) for k in keys if k.startswith("cond_stage_model.model.transformer.resblocks.23.")]
        projection = f.get_tensor("cond_stage_model.model.text_projection")
    attn = h.encoder.layers[3].self_attn
    assert torch.equal(fused, torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
    # 23 diffusers layers + one identity block = the 24 blocks of the original OpenCLIP-H layout
    assert lc.SD2_OPENCLIP_PREFIX + "transformer.resblocks.24.ln_1.weight" not in keys
    assert len(tail) == 12 and all(not t.any() for t in tail)
    assert torch.equal(projection, torch.eye(32))

    path, (_, _, (_, g)) = narrow_model("sdxl")
    with safe_open(str(path), "pt") as f:
        projection = f.get_tensor("conditioner.embedders.1.model.text_projection")
        assert "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight" in f.keys()
        assert "conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_fc.weight" in f.keys()
    assert torch.equal(projection, g.text_projection.weight.t())  # OpenCLIP stores x @ P


def test_identity_block_is_an_identity() -> None:
    from transformers import CLIPTextConfig
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer

    layer = CLIPEncoderLayer(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                            hidden_act="gelu"))
    for p in layer.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(2, 5, 32)
    out = layer(x, attention_mask=None)
    out = out[0] if isinstance(out, tuple) else out
    assert torch.equal(out, x)


@pytest.mark.parametrize("kind", ["clip", "openclip"])
def test_text_encoder_inverse_mapping(kind: str) -> None:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                                       num_attention_heads=4, projection_dim=16))
    original = {k.removeprefix("text_model."): v for k, v in model.state_dict().items()}
    if kind == "clip":
        original.pop("text_projection.weight")
        ldm = {"p." + k: v for k, v in lc.clip_to_ldm(model.state_dict()).items()}
    else:
        ldm = {"p." + k: v for k, v in lc.openclip_to_ldm(model.state_dict()).items()}
    back = lc.text_encoder_from_ldm(ldm, kind, "p.")
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in back)
    two = lc.text_encoder_from_ldm(ldm, kind, "p.", num_layers=2)
    assert not any(k.startswith("encoder.layers.2.") for k in two)


def test_writer_refuses_what_it_cannot_map() -> None:
    with pytest.raises(KeyError, match="no LDM name for UNet key 'mystery.weight'"):
        lc.unet_to_ldm({"mystery.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="VAE key"):
        lc.vae_to_ldm({"encoder.mystery.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="2 text encoder"):
        lc.to_single_file_state_dict({}, {}, [{}], "sdxl")
    with pytest.raises(ValueError, match="unknown architecture"):
        lc.to_single_file_state_dict({}, {}, [{}], "sd3")


def test_fp16_save_and_metadata(narrow_model, tmp_path: Path) -> None:
    _, (unet, vae, encoders) = narrow_model("sd15")
    path = lc.save_single_file(tmp_path / "half.safetensors", unet, vae, encoders, "sd15", dtype=torch.float16,
                               metadata={"note": "hello"})
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert f.get_tensor("model.diffusion_model.out.2.weight").dtype == torch.float16
    assert meta["note"] == "hello"
    config = loading._metadata_config(meta)
    assert config["arch"] == "sd15" and config["unet"]["block_out_channels"] == [32, 64, 128, 128]
    assert config["text_encoder"]["num_attention_heads"] == 4
