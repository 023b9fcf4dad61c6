"""LoRA nodes equal diffusers' `load_lora_weights` + `fuse_lora` exactly, for every file format built by hand,
and a cached base model is never left patched."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.nodes.sd_helpers import L, executor, gen, output_of, txt2img_nodes, wf, quick

TOL = 1e-6
STEPS = 3
QUICK = 2  # steps for runs that are compared with each other, not with diffusers
REPO = Path(__file__).resolve().parents[2]
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "resnets.0.conv1")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def fresh_pipeline(folder: Path, steps: int = STEPS):
    """diffusers' pipeline over its own copy of the weights (LoRA loading mutates it; the shared cached models
    our nodes use must stay untouched), with the scheduler our table picks."""
    import diffusers

    from nodes.sd import loading
    from nodes.sd.schedulers import instantiate, make_spec

    ck = loading.load_checkpoint(folder)
    spec = make_spec("euler", dict(ck.scheduler_config, prediction_type=ck.prediction_type), steps)
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(folder), scheduler=instantiate(spec), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pair(w: torch.Tensor, rank: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if w.ndim == 2:
        return torch.randn(rank, w.shape[1], generator=g) * 0.1, torch.randn(w.shape[0], rank, generator=g) * 0.1
    k = w.shape[2]
    return torch.randn(rank, w.shape[1], k, k, generator=g) * 0.1, torch.randn(w.shape[0], rank, 1, 1, generator=g) * 0.1


def _modules(model, targets):
    return [(n, m) for n, m in model.named_modules() if n.endswith(targets) and hasattr(m, "weight")]


def kohya_sd15(unet, te, seed: int = 0, rank: int = 4, alpha: float = 2.0, te_prefix: str = "lora_te_",
               vary_alpha: bool = False) -> dict:
    """kohya file: lora_unet_<diffusers name>, lora_te_text_model_<name>, with .alpha (ranks vary per layer)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for prefix, model, targets in (("lora_unet_", unet, UNET_TARGETS), (te_prefix + "text_model_", te, TE_TARGETS)):
        for i, (n, m) in enumerate(_modules(model, targets)):
            r = rank + (i % 2) * 4  # mixed ranks
            down, up = _pair(m.weight, r, g)
            key = prefix + n.replace(".", "_")
            sd.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(alpha + (i % 3 if vary_alpha else 0))})
    return sd


def peft_sd15(unet, te, seed: int = 0, rank: int = 4, te_prefix: str = "text_encoder.") -> dict:
    """diffusers/peft keys: unet.<name>.lora_A/B.weight, text_encoder.<name>.lora_A/B.weight (transformers 5
    module names) or text_encoder.text_model.<name> (older transformers)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for prefix, model, targets in (("unet.", unet, UNET_TARGETS), (te_prefix, te, TE_TARGETS)):
        for n, m in _modules(model, targets):
            down, up = _pair(m.weight, rank, g)
            sd.update({f"{prefix}{n}.lora_A.weight": down, f"{prefix}{n}.lora_B.weight": up})
    return sd


def peft_metadata(unet, te, sd: dict) -> dict:
    """diffusers' adapter metadata: alpha 8 for the UNet (one module 2), alpha 2 for the text encoder, rank 4."""
    special = _modules(unet, ("to_k",))[0][0]
    unet_targets = sorted({k[len("unet."):].split(".lora_")[0] for k in sd if k.startswith("unet.")})
    te_targets = sorted({k[len("text_encoder."):].split(".lora_")[0] for k in sd if k.startswith("text_encoder.")})
    meta = {"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {special: 2}, "unet.rank_pattern": {},
            "unet.target_modules": unet_targets, "text_encoder.r": 4, "text_encoder.lora_alpha": 2,
            "text_encoder.alpha_pattern": {}, "text_encoder.rank_pattern": {}, "text_encoder.target_modules": te_targets}
    return {"lora_adapter_metadata": json.dumps(meta, indent=2, sort_keys=True)}


@pytest.fixture(scope="module")
def base_models(models_dir):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = models_dir / "checkpoints" / "tiny-sd15"
    return (UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet"),
            CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder"))


@pytest.fixture(scope="module")
def lora_dir(models_dir, base_models):
    unet, te = base_models
    d = models_dir / "loras"
    d.mkdir(exist_ok=True)
    save_file(kohya_sd15(unet, te, seed=1), str(d / "kohya.safetensors"))
    save_file(kohya_sd15(unet, te, seed=2, rank=2, alpha=1.0), str(d / "kohya-2.safetensors"))
    peft = peft_sd15(unet, te, seed=3)
    save_file(peft, str(d / "peft-meta.safetensors"), metadata=peft_metadata(unet, te, peft))
    save_file(peft_sd15(unet, te, seed=4, te_prefix="text_encoder.text_model."), str(d / "peft-plain.safetensors"))
    junk = {"foo.bar.lora_down.weight": torch.zeros(2, 8), "foo.bar.lora_up.weight": torch.zeros(8, 2),
            "lora_unet_nowhere_block.lora_down.weight": torch.zeros(2, 8), "lora_unet_nowhere_block.lora_up.weight": torch.zeros(8, 2)}
    save_file(junk, str(d / "junk.safetensors"))
    partial = kohya_sd15(unet, te, seed=5)
    partial.update({"lora_unet_down_blocks_9_nothing.lora_down.weight": torch.zeros(2, 8),
                    "lora_unet_down_blocks_9_nothing.lora_up.weight": torch.zeros(8, 2),
                    "lora_unet_mid_block_resnets_0_conv1.bias_indices": torch.zeros(4)})  # a sparse bias: not applied
    save_file(partial, str(d / "partial.safetensors"))
    te_only = {k: v for k, v in kohya_sd15(unet, te, seed=6).items() if k.startswith("lora_te_")}
    save_file(te_only, str(d / "te-only.safetensors"))
    return models_dir


def _lora_nodes(loras: list[tuple[str, float, float]], steps: int = STEPS, prompt: str = "a red circle") -> dict:
    nodes = txt2img_nodes("tiny-sd15", prompt=prompt, steps=steps)
    unet, te = L("ckpt", "unet"), L("ckpt", "text_encoder")
    for i, (name, su, st) in enumerate(loras):
        nodes[f"lora{i}"] = {"type": "LoadLora", "inputs": {"unet": unet, "text_encoder": te, "name": name,
                                                            "unet_strength": su, "text_encoder_strength": st}}
        unet, te = L(f"lora{i}", "unet"), L(f"lora{i}", "text_encoder")
    nodes["pos"]["inputs"]["text_encoder"] = te
    nodes["neg"]["inputs"]["text_encoder"] = te
    nodes["sample"]["inputs"]["unet"] = unet
    return nodes


def _ref_image(models_dir, loras: list[tuple[str, float, float]], fuse: bool = True):
    pipe = fresh_pipeline(models_dir / "checkpoints" / "tiny-sd15")
    for i, (name, su, st) in enumerate(loras):
        pipe.load_lora_weights(str(models_dir / "loras" / name), adapter_name=f"a{i}")
    if fuse:  # one fuse per component over all adapters (they share its strength)
        names = [f"a{i}" for i in range(len(loras))]
        pipe.set_adapters(names)
        pipe.fuse_lora(components=["unet"], lora_scale=loras[0][1], adapter_names=names)
        pipe.fuse_lora(components=["text_encoder"], lora_scale=loras[0][2], adapter_names=names)
    out = pipe("a red circle", negative_prompt="", height=64, width=64, num_inference_steps=STEPS, guidance_scale=7.5,
               generator=gen(42), output_type="np").images
    return torch.from_numpy(out)


def test_kohya_lora_equals_diffusers(lora_dir, tmp_path):
    """kohya (mixed ranks and alphas; attention, 1x1-conv proj, feed-forward, 3x3 resnet conv, text MLP) at
    UNet 0.8 / text 0.6 equals diffusers' load_lora_weights + fuse_lora; unfused peft layers agree closely."""
    ex = executor(lora_dir, tmp_path)
    ours = output_of(ex, ex.run(wf(_lora_nodes([("kohya.safetensors", 0.8, 0.6)]))), "dec", "image")
    assert (_ref_image(lora_dir, [("kohya.safetensors", 0.8, 0.6)]) - ours).abs().max().item() <= TOL


def test_kohya_per_module_alphas(lora_dir, base_models, tmp_path):
    """Each module's own .alpha scales it (kohya / ComfyUI / A1111 semantics). diffusers 0.42.1 builds broken
    alpha_pattern keys for such files and peft ignores them (it warns), so diffusers is not the reference here:
    the patched weights are checked against W + strength * alpha_i / rank_i * up @ down directly."""
    from nodes.sd.lora_apply import apply_patches, load_patches

    unet, te = base_models
    sd = kohya_sd15(unet, te, seed=8, vary_alpha=True)
    path = tmp_path / "alphas.safetensors"
    save_file(sd, str(path))
    loaded = load_patches(path, unet, {"text_encoder": te}, 0.5, 1.0)
    for model, patch, target, prefix in ((unet, loaded.unet_patch, "unet", "lora_unet_"),
                                         (te, loaded.text_patch, "text_encoder", "lora_te_text_model_")):
        before = {n: m.weight.detach().clone() for n, m in model.named_modules() if hasattr(m, "weight")}
        restore = apply_patches(model, (patch,), target)
        strength = 0.5 if target == "unet" else 1.0
        for n, m in _modules(model, UNET_TARGETS if target == "unet" else TE_TARGETS):
            key = prefix + n.replace(".", "_")
            down, up, alpha = sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"], sd[f"{key}.alpha"].item()
            delta = (up.flatten(1) @ down.flatten(1)) if down.ndim == 2 or down.shape[2:] == (1, 1) else \
                torch.nn.functional.conv2d(down.transpose(0, 1), up).transpose(0, 1)
            want = before[n] + delta.reshape(before[n].shape) * (alpha / down.shape[0] * strength)
            assert (m.weight - want).abs().max().item() <= 1e-6, key
        restore()


def _fused_weights(models_dir, name: str, unet_scale: float, te_scale: float):
    pipe = fresh_pipeline(models_dir / "checkpoints" / "tiny-sd15")
    pipe.load_lora_weights(str(models_dir / "loras" / name))
    pipe.fuse_lora(components=["unet"], lora_scale=unet_scale)
    pipe.fuse_lora(components=["text_encoder"], lora_scale=te_scale)

    def clean(sd):
        return {k.replace(".base_layer", ""): v for k, v in sd.items() if "lora_" not in k}

    return clean(pipe.unet.state_dict()), clean(pipe.text_encoder.state_dict())


def _our_weights(base_models, path: Path, unet_scale: float, te_scale: float):
    from nodes.sd.lora_apply import apply_patches, load_patches

    unet, te = base_models
    loaded = load_patches(path, unet, {"text_encoder": te}, unet_scale, te_scale)
    out = []
    for model, patch, target in ((unet, loaded.unet_patch, "unet"), (te, loaded.text_patch, "text_encoder")):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        restore = apply_patches(model, (patch,), target)
        out.append({k: v.clone() for k, v in model.state_dict().items()})
        restore()
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # restored bit for bit
    return out


@pytest.mark.parametrize("name", ["peft-meta.safetensors", "peft-plain.safetensors", "kohya-2.safetensors"])
def test_patched_weights_equal_fused_diffusers_weights(lora_dir, base_models, name):
    """peft keys with adapter metadata (alpha 8 / rank 4 and an alpha_pattern entry: alpha from the metadata) and
    without (alpha = rank), kohya at rank 2, with a negative UNet strength: every weight equals diffusers' fused one."""
    ref_u, ref_t = _fused_weights(lora_dir, name, -0.7, 1.3)
    ours_u, ours_t = _our_weights(base_models, lora_dir / "loras" / name, -0.7, 1.3)
    assert set(ours_u) == set(ref_u) and set(ours_t) == set(ref_t)
    assert all(torch.equal(ours_u[k], ref_u[k]) for k in ref_u)
    assert all(torch.equal(ours_t[k], ref_t[k]) for k in ref_t)
    changed = sum(not torch.equal(ours_u[k], v) for k, v in base_models[0].state_dict().items())
    assert changed >= 10


def test_sdxl_kohya_lora_equals_diffusers(sdxl_models_dir, tmp_path):
    """SDXL kohya file: UNet in the LDM/SGM naming (input_blocks_4_1_...), lora_te1_ and lora_te2_."""
    from nodes.sd.ldm_convert import unet_to_ldm
    from nodes.sd.lora_apply import apply_patches, load_patches

    pipe = fresh_pipeline(sdxl_models_dir / "checkpoints" / "tiny-sdxl")
    unet, te1, te2 = pipe.unet, pipe.text_encoder, pipe.text_encoder_2
    ldm_of = {v[: -len(".weight")]: k[: -len(".weight")] for k, v in unet_to_ldm({k: k for k in unet.state_dict()}).items()
              if v.endswith(".weight")}
    g = torch.Generator().manual_seed(9)
    sd = {}
    for prefix, model, targets, names in (("lora_unet_", unet, UNET_TARGETS, ldm_of), ("lora_te1_text_model_", te1, TE_TARGETS, None),
                                          ("lora_te2_text_model_", te2, TE_TARGETS, None)):
        for n, m in _modules(model, targets):
            down, up = _pair(m.weight, 4, g)
            key = prefix + (names[n] if names else n.removeprefix("text_model.")).replace(".", "_")
            sd.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(3.0)})
    assert any(k.startswith("lora_unet_input_blocks_") for k in sd)
    path = tmp_path / "sdxl-kohya.safetensors"
    save_file(sd, str(path))
    loaded = load_patches(path, unet, {"text_encoder": te1, "text_encoder_2": te2}, 0.9, 1.1)
    assert loaded.warning is None, loaded.warning
    ours = {}
    for model, patch, target in ((unet, loaded.unet_patch, "unet"), (te1, loaded.text_patch, "text_encoder"),
                                 (te2, loaded.text_patch, "text_encoder_2")):
        restore = apply_patches(model, (patch,), target)
        ours[target] = {k: v.clone() for k, v in model.state_dict().items()}
        restore()
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora(components=["unet"], lora_scale=0.9)
    pipe.fuse_lora(components=["text_encoder", "text_encoder_2"], lora_scale=1.1)
    for target, model in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder), ("text_encoder_2", pipe.text_encoder_2)):
        ref = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
        assert set(ref) == set(ours[target])
        diff = [k for k in ref if not torch.equal(ref[k], ours[target][k])]
        assert not diff, (target, diff[:3])


def test_restore_and_queued_workflows(lora_dir, tmp_path):
    """base -> LoRA A -> LoRA B (two stacked) -> base on one cached base model: base comes back bit for bit
    (recomputed, not from the output cache), and A and B queued in the other order give the same pictures."""
    ex = executor(lora_dir, tmp_path)
    plain = wf(txt2img_nodes("tiny-sd15", steps=QUICK))
    a_wf = wf(_lora_nodes([("kohya.safetensors", 1.0, 1.0)], steps=QUICK))
    b_wf = wf(_lora_nodes([("kohya-2.safetensors", 0.5, 1.0), ("kohya.safetensors", -0.3, 0.0)], steps=QUICK))
    result = ex.run(plain)
    unet_model = output_of(ex, result, "ckpt", "unet").model
    te_model = output_of(ex, result, "ckpt", "text_encoder").encoders[0]
    weights = {k: v.clone() for k, v in [*unet_model.state_dict().items(), *te_model.state_dict().items()]}
    first = {"plain": output_of(ex, result, "dec", "image")}
    first.update({name: output_of(ex, ex.run(w), "dec", "image") for name, w in (("a", a_wf), ("b", b_wf))})
    assert not torch.equal(first["plain"], first["a"]) and not torch.equal(first["a"], first["b"])
    after = dict([*unet_model.state_dict().items(), *te_model.state_dict().items()])
    assert set(after) == set(weights) and all(torch.equal(weights[k], v) for k, v in after.items())
    ex.cache.clear()  # outputs recomputed from here on; the models stay the shared cached ones
    again = {name: output_of(ex, ex.run(w), "dec", "image") for name, w in (("plain", plain), ("b", b_wf), ("a", a_wf))}
    assert all(torch.equal(again[k], first[k]) for k in first)
    assert output_of(ex, ex.run(plain), "ckpt", "unet").model is unet_model  # one shared base model throughout


def test_stacked_loras_equal_diffusers_two_adapters(lora_dir, tmp_path):
    ex = executor(lora_dir, tmp_path)
    loras = [("kohya.safetensors", 1.0, 1.0), ("peft-meta.safetensors", 1.0, 1.0)]
    ours = output_of(ex, ex.run(wf(_lora_nodes(loras))), "dec", "image")
    assert (_ref_image(lora_dir, loras) - ours).abs().max().item() <= TOL


def test_lora_matching_nothing_names_file_and_keys(lora_dir, tmp_path):
    ex = executor(lora_dir, tmp_path)
    result = ex.run(wf(_lora_nodes([("junk.safetensors", 1.0, 1.0)], steps=1)))
    assert result.status == "error" and result.error["node_id"] == "lora0"
    msg = result.error["message"]
    assert "junk.safetensors" in msg and "foo.bar" in msg and "lora_unet_nowhere_block" in msg, msg


def test_partial_match_is_a_warning_with_counts(lora_dir, base_models, tmp_path):
    ex = executor(lora_dir, tmp_path)
    events = []
    result = ex.run(wf(_lora_nodes([("partial.safetensors", 1.0, 1.0)], steps=1)), on_event=events.append)
    assert result.status == "success", result.error
    warnings = [e for e in events if getattr(e, "type", "") == "node_warning"]
    assert len(warnings) == 1 and warnings[0].node_id == "lora0"
    n = len(kohya_sd15(*base_models)) // 3
    msg = warnings[0].message
    assert f"applied {n} of {n + 1} layers" in msg and "2 keys not applied" in msg, msg
    assert "lora_unet_down_blocks_9_nothing" in msg and "sparse bias difference" in msg


def test_model_only_and_text_only_files(lora_dir, tmp_path):
    ex = executor(lora_dir, tmp_path)
    nodes = txt2img_nodes("tiny-sd15", steps=1)
    nodes["lora"] = {"type": "LoadLoraModelOnly", "inputs": {"unet": L("ckpt", "unet"), "name": "kohya.safetensors", "strength": 0.5}}
    nodes["sample"]["inputs"]["unet"] = L("lora", "unet")
    events = []
    result = ex.run(wf(nodes), on_event=events.append)
    assert result.status == "success", result.error
    assert not [e for e in events if getattr(e, "type", "") == "node_warning"]  # text-encoder layers are skipped quietly
    patch = output_of(ex, result, "lora", "unet").patches[0]
    assert set(patch.parts) == {"unet"} and "x0.5" in repr(patch)
    nodes["lora"]["inputs"]["name"] = "te-only.safetensors"
    result = ex.run(wf(nodes))
    assert result.status == "error" and "te-only.safetensors" in result.error["message"]
    assert "text encoder" in result.error["message"], result.error["message"]


def test_lora_timings(lora_dir, base_models, capsys):
    """Load (parse + match) and apply (deltas + swap) times on the tiny model, printed for the record."""
    from nodes.sd import lora_apply as la

    unet, te = base_models
    path = lora_dir / "loras" / "kohya.safetensors"
    la.clear_file_cache()
    t0 = time.perf_counter()
    loaded = la.load_patches(path, unet, {"text_encoder": te}, 1.0, 1.0)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    la.load_patches(path, unet, {"text_encoder": te}, 1.0, 1.0)
    t_cached = time.perf_counter() - t0
    la.clear_applied_cache()
    t0 = time.perf_counter()
    restore = la.apply_patches(unet, (loaded.unet_patch,), "unet")
    t_apply = time.perf_counter() - t0
    restore()
    t0 = time.perf_counter()
    restore = la.apply_patches(unet, (loaded.unet_patch,), "unet")
    t_reapply = time.perf_counter() - t0
    t0 = time.perf_counter()
    restore()
    t_restore = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\nLoRA tiny SD1.5 ({loaded.resolution.matched} layers): load {t_load * 1e3:.1f} ms (cached {t_cached * 1e3:.1f} ms), "
              f"first apply {t_apply * 1e3:.1f} ms, re-apply {t_reapply * 1e3:.2f} ms, restore {t_restore * 1e3:.2f} ms")
    assert t_reapply < t_apply


def test_shipped_lora_workflow_runs(lora_dir, base_models, tmp_path):
    """workflows/lora.json with a tiny stand-in for loom-shapes and a hand-built example-lora.safetensors."""
    import os
    import shutil

    root = tmp_path / "models"
    shutil.copytree(lora_dir / "checkpoints" / "tiny-sd15", root / "checkpoints" / "loom-shapes", copy_function=os.link)
    data = json.loads((REPO / "workflows" / "lora.json").read_text())
    names = [n["inputs"]["name"] for n in data["nodes"].values() if n["type"].startswith("LoadLora")]
    (root / "loras").mkdir()
    for name in names:
        save_file(kohya_sd15(*base_models, seed=7), str(root / "loras" / name))
    quick(data)
    ex = executor(root, tmp_path / "out")
    result = ex.run(data)
    assert result.status == "success", result.error


# ---------------------------------------------------------------------------------------------------------------
# LyCORIS: LoHa, LoKr (checked against peft's implementations of them), LoCon's Tucker core, full differences
# ---------------------------------------------------------------------------------------------------------------


def _lycoris_reference(unet, config, seed: int) -> tuple[dict, dict]:
    """A peft LoHa/LoKr adapter with random weights on a copy of `unet`: (the kohya-style LyCORIS file peft's
    weights make, {module name: weight merged by peft})."""
    import copy

    from peft import inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    model = inject_adapter_in_model(config, copy.deepcopy(unet))
    file: dict[str, torch.Tensor] = {}
    for key, value in get_peft_model_state_dict(model).items():
        module, part = key.rsplit(".", 1)
        base = "lora_unet_" + module.replace(".", "_")
        file[f"{base}.{part}"] = value.detach().clone()
        file[f"{base}.alpha"] = torch.tensor(float(config.alpha))
    merged = {}
    for name, m in model.named_modules():
        if hasattr(m, "get_delta_weight") and hasattr(m, "base_layer"):
            merged[name] = (m.base_layer.weight + m.get_delta_weight("default")).detach()
    assert merged
    return file, merged


def _patched(unet, file: dict, strength: float = 1.0, metadata: dict | None = None,
             param: str = "weight") -> tuple[dict, int]:
    """The UNet's weights (or biases) with `file` applied at `strength` (restored afterwards), and how many layers
    matched."""
    import tempfile

    from nodes.sd.lora_apply import apply_patches, load_patches

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lycoris.safetensors"
        save_file(file, str(path), metadata={"lora_adapter_metadata": json.dumps(metadata)} if metadata else None)
        loaded = load_patches(path, unet, {}, strength, 0.0)
        assert loaded.warning is None, loaded.warning
        restore = apply_patches(unet, (loaded.unet_patch,), "unet")
        try:
            values = {n: getattr(m, param).detach().clone() for n, m in unet.named_modules()
                      if isinstance(getattr(m, param, None), torch.Tensor)}
        finally:
            restore()
    return values, loaded.resolution.matched


@pytest.mark.parametrize("kind,conv_cp", [("loha", False), ("loha", True), ("lokr", False), ("lokr", True)])
def test_lycoris_loha_and_lokr_equal_peft(base_models, kind, conv_cp):
    """LoHa (Hadamard product of two low-rank pairs) and LoKr (Kronecker product) on attention projections and
    3x3 convolutions, with and without the Tucker (CP) form of the convolutions: our patched weights equal the
    weights peft's LoHa / LoKr layers merge (peft follows LyCORIS' formulas)."""
    from peft import LoHaConfig, LoKrConfig

    unet, _ = base_models
    targets = ["to_q", "to_v", "to_out.0", "conv1", "proj_in"]
    cfg = (LoHaConfig if kind == "loha" else LoKrConfig)(r=4, alpha=6, target_modules=targets, init_weights=False,
                                                          use_effective_conv2d=conv_cp)
    file, merged = _lycoris_reference(unet, cfg, seed=11)
    assert any(k.endswith("hada_t1" if kind == "loha" else "lokr_t2") for k in file) == conv_cp
    before = {n: m.weight.detach().clone() for n, m in unet.named_modules() if n in merged}
    ours, matched = _patched(unet, file)
    assert matched == len(merged)
    unscaled = 0
    for name, ref in merged.items():
        base = "lora_unet_" + name.replace(".", "_")
        if f"{base}.lokr_w1" in file and f"{base}.lokr_w2" in file:
            # neither side factorised: LyCORIS (and ComfyUI) apply scale 1 where peft keeps alpha / r
            ref = before[name] + (ref - before[name]) / (cfg.alpha / cfg.r)
            unscaled += 1
        assert torch.allclose(ours[name], ref, atol=1e-5, rtol=1e-5), name
        assert not torch.equal(ours[name], before[name])
    assert unscaled < len(merged)  # the factorised (scaled) case is covered too
    assert all(torch.equal(m.weight, before[n]) for n, m in unet.named_modules() if n in before)  # restored


def test_locon_tucker_core_and_full_difference(base_models):
    """LoCon's Tucker core: the patched 3x3 convolution equals running down (1x1) -> mid (3x3) -> up (1x1) in
    a row, times alpha / rank; a `.diff` key adds its tensor as is."""
    import torch.nn.functional as F

    unet, _ = base_models
    g = gen(21)
    name = "down_blocks.0.resnets.0.conv1"
    conv = unet.get_submodule(name)
    out_c, in_c = conv.weight.shape[:2]
    down, mid, up = (torch.randn(3, in_c, 1, 1, generator=g) * 0.2, torch.randn(3, 3, 3, 3, generator=g) * 0.2,
                     torch.randn(out_c, 3, 1, 1, generator=g) * 0.2)
    other = "down_blocks.0.attentions.0.proj_in"
    diff = torch.randn(unet.get_submodule(other).weight.shape, generator=g) * 0.01
    base = "lora_unet_" + name.replace(".", "_")
    file = {f"{base}.lora_down.weight": down, f"{base}.lora_mid.weight": mid, f"{base}.lora_up.weight": up,
            f"{base}.alpha": torch.tensor(1.5), "lora_unet_" + other.replace(".", "_") + ".diff": diff}
    ours, matched = _patched(unet, file, strength=0.8)
    assert matched == 2
    x = torch.randn(1, in_c, 8, 8, generator=g)
    chained = F.conv2d(F.conv2d(F.conv2d(x, down), mid, padding=1), up) * (1.5 / 3) * 0.8
    delta = F.conv2d(x, ours[name] - conv.weight, padding=1)
    assert torch.allclose(delta, chained, atol=1e-5), (delta - chained).abs().max()
    assert torch.allclose(ours[other], unet.get_submodule(other).weight + 0.8 * diff, atol=1e-7)


def test_incomplete_lycoris_layers_are_named(base_models, tmp_path):
    from nodes.sd.lora_apply import LoraError, load_patches

    unet, _ = base_models
    path = tmp_path / "broken.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a": torch.zeros(4, 2)}, str(path))
    with pytest.raises(LoraError, match="hada_w1_a"):
        load_patches(path, unet, {}, 1.0, 0.0)


@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_dora_equals_peft_merge(base_models, layout):
    """DoRA (magnitude + direction): kohya/LyCORIS `.dora_scale` and peft `.lora_magnitude_vector` files give the
    weights peft's DoRA layers merge to; a strength s gives W + s * (DoRA weight - W), as ComfyUI does."""
    import copy

    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    unet, _ = base_models
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_v", "conv1", "proj_in"], use_dora=True,
                        init_lora_weights=False)
    torch.manual_seed(13)
    model = inject_adapter_in_model(config, copy.deepcopy(unet))
    g = gen(14)
    with torch.no_grad():  # a magnitude other than the weights' own norms, so the rescaling shows
        for name, p in model.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(1 + 0.2 * torch.rand(p.shape, generator=g))
    file: dict[str, torch.Tensor] = {}
    for key, value in get_peft_model_state_dict(model).items():
        module, part = key.split(".lora_", 1)
        if layout == "peft":
            file["unet." + key] = value.detach().clone()
            continue
        base = "lora_unet_" + module.replace(".", "_")
        if part.startswith("A"):
            file[f"{base}.lora_down.weight"] = value.detach().clone()
            file[f"{base}.alpha"] = torch.tensor(8.0)
        elif part.startswith("B"):
            file[f"{base}.lora_up.weight"] = value.detach().clone()
        else:  # the magnitude, as kohya stores it: [out, 1, ...]
            shape = dict(model.named_modules())[module].base_layer.weight.shape
            file[f"{base}.dora_scale"] = value.detach().clone().reshape(shape[0], *[1] * (len(shape) - 1))
    merged = {}
    for name, m in model.named_modules():
        if hasattr(m, "base_layer") and hasattr(m, "merge"):
            m.merge()
            merged[name] = m.base_layer.weight.detach().clone()
    assert len(merged) >= 8
    before = {n: m.weight.detach().clone() for n, m in unet.named_modules() if n in merged}
    # peft files carry alpha in the adapter metadata (without it alpha = rank)
    meta = {"unet.r": 4, "unet.lora_alpha": 8, "unet.use_dora": True} if layout == "peft" else None
    ours, matched = _patched(unet, file, metadata=meta)
    assert matched == len(merged)
    for name, ref in merged.items():
        assert torch.allclose(ours[name], ref, atol=1e-5, rtol=1e-4), (name, (ours[name] - ref).abs().max())
        assert not torch.equal(ours[name], before[name])
    half, _ = _patched(unet, file, strength=0.5, metadata=meta)
    for name, ref in merged.items():
        assert torch.allclose(half[name], before[name] + 0.5 * (ref - before[name]), atol=1e-5, rtol=1e-4), name


def test_lora_bias_equals_peft_merge(base_models):
    """peft's `lora_bias=True`: lora_B carries a bias, scaled by alpha / r like the weight; the patched weights and
    biases equal what peft merges (merge_and_unload), and restoring brings the originals back."""
    import copy

    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    unet, _ = base_models
    config = LoraConfig(r=4, lora_alpha=6, target_modules=["to_out.0", "proj_in", "ff.net.2"], lora_bias=True,
                        init_lora_weights=False)
    torch.manual_seed(17)
    model = inject_adapter_in_model(config, copy.deepcopy(unet))
    for name, p in model.named_parameters():
        if "lora_B" in name and name.endswith("bias"):
            p.data.normal_(0, 0.1)  # peft starts them at zero
    file = {"unet." + k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    assert any(k.endswith("lora_B.bias") for k in file)
    metadata = {"unet.r": 4, "unet.lora_alpha": 6}
    merged = {}
    for name, m in model.named_modules():
        if hasattr(m, "get_delta_weight") and hasattr(m, "base_layer"):
            bias = m.base_layer.bias + m.lora_B["default"].bias * m.scaling["default"]
            merged[name] = (m.base_layer.weight + m.get_delta_weight("default"), bias.detach())
    before = {n: (m.weight.detach().clone(), m.bias.detach().clone()) for n, m in unet.named_modules() if n in merged}
    biases, _ = _patched(unet, file, metadata=metadata, param="bias")
    for name, (w, b) in merged.items():
        assert torch.allclose(biases[name], b, atol=1e-6), name
        assert not torch.equal(biases[name], before[name][1])
    assert all(torch.equal(m.bias, before[n][1]) for n, m in unet.named_modules() if n in before)  # restored


def test_lycoris_bias_difference_beside_a_weight_and_alone(base_models):
    """LyCORIS `.diff_b`: added to the bias at the LoRA's strength, next to a weight difference, next to a LoRA
    pair, or alone; a bias difference for a layer without a bias is reported by name."""
    from nodes.sd.lora_apply import load_patches

    unet, _ = base_models
    g = gen(23)
    full, lora, alone = "down_blocks.0.attentions.0.proj_in", "down_blocks.0.attentions.0.proj_out", \
        "down_blocks.0.resnets.0.conv1"
    f = lambda n: "lora_unet_" + n.replace(".", "_")  # noqa: E731
    m_full, m_lora, m_alone = (unet.get_submodule(n) for n in (full, lora, alone))
    out_c, in_c = m_lora.weight.shape[:2]
    file = {f(full) + ".diff": torch.randn(m_full.weight.shape, generator=g) * 0.01,
            f(full) + ".diff_b": torch.randn(m_full.bias.shape, generator=g),
            f(lora) + ".lora_down.weight": torch.randn(2, in_c, 1, 1, generator=g),
            f(lora) + ".lora_up.weight": torch.randn(out_c, 2, 1, 1, generator=g), f(lora) + ".alpha": torch.tensor(1.0),
            f(lora) + ".diff_b": torch.randn(m_lora.bias.shape, generator=g),
            f(alone) + ".diff_b": torch.randn(m_alone.bias.shape, generator=g)}
    before = {n: unet.get_submodule(n).bias.detach().clone() for n in (full, lora, alone)}
    biases, _ = _patched(unet, file, strength=0.5, param="bias")
    for n in (full, lora, alone):
        assert torch.allclose(biases[n], before[n] + 0.5 * file[f(n) + ".diff_b"], atol=1e-6), n
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # to_q has no bias in SD's attention
        path = Path(tmp) / "b.safetensors"
        q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
        save_file({f(q) + ".diff_b": torch.zeros(unet.get_submodule(q).weight.shape[0]),
                   f(full) + ".diff_b": torch.zeros(m_full.bias.shape)}, str(path))
        loaded = load_patches(path, unet, {}, 1.0, 0.0)
        assert loaded.resolution.matched == 1 and f(q) in loaded.warning and "no bias" in loaded.warning

