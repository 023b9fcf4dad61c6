"""Textual inversion: our encode equals diffusers' `load_textual_inversion` for every file format, and the cached
text encoder (and tokenizer) is never left modified."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.nodes.sd_helpers import L, executor, gen, output_of, txt2img_nodes, wf, quick

TOL = 1e-6
STEPS = 3
REPO = Path(__file__).resolve().parents[2]


def fresh_pipeline(folder: Path, steps: int = STEPS):
    """diffusers' pipeline over its own copy of the weights (load_textual_inversion grows its tokenizer and
    embedding table; the shared cached models our nodes use must stay untouched)."""
    import diffusers

    from nodes.sd import loading
    from nodes.sd.schedulers import instantiate, make_spec

    ck = loading.load_checkpoint(folder)
    spec = make_spec("euler", dict(ck.scheduler_config, prediction_type=ck.prediction_type), steps)
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(folder), scheduler=instantiate(spec), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def emb_dir(models_dir):
    d = models_dir / "embeddings"
    (d / "styles").mkdir(parents=True, exist_ok=True)
    g = gen(5)
    save_file({"<cat-toy>": torch.randn(3, 32, generator=g)}, str(d / "cat-toy.safetensors"))  # diffusers, 3 vectors
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(2, 32, generator=g)},
                "name": "a1111style", "step": 500, "sd_checkpoint_name": "tiny"}, str(d / "a1111.pt"))
    save_file({"emb_params": torch.randn(1, 32, generator=g)}, str(d / "styles" / "emb-params.safetensors"))
    save_file({"<wide>": torch.randn(1, 768, generator=g)}, str(d / "wide.safetensors"))
    return models_dir


def _snapshot(te_handle):
    enc = te_handle.encoders[0]
    return ({k: v.clone() for k, v in enc.state_dict().items()}, enc.get_input_embeddings().weight.shape,
            enc.get_input_embeddings().num_embeddings, len(te_handle.tokenizers[0]))


def _same(a, b) -> bool:
    return a[1:] == b[1:] and set(a[0]) == set(b[0]) and all(torch.equal(a[0][k], b[0][k]) for k in a[0])


def test_embedding_in_prompt_equals_diffusers(emb_dir, tmp_path):
    """`embedding:cat-toy` (3 vectors) equals diffusers' load_textual_inversion + "<cat-toy>", as does the token
    through LoadEmbedding; the cached encoder, its table and the tokenizer are unchanged afterwards."""
    ex = executor(emb_dir, tmp_path)
    base_wf = txt2img_nodes("tiny-sd15", prompt="a photo of a red circle", steps=STEPS)
    before_run = ex.run(wf(base_wf))
    te = output_of(ex, before_run, "ckpt", "text_encoder")
    before = _snapshot(te)
    ours = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", prompt="a photo of embedding:cat-toy", steps=STEPS))), "dec", "image")
    pipe = fresh_pipeline(emb_dir / "checkpoints" / "tiny-sd15")
    pipe.load_textual_inversion(str(emb_dir / "embeddings" / "cat-toy.safetensors"))
    ref = torch.from_numpy(pipe("a photo of <cat-toy>", negative_prompt="", height=64, width=64, num_inference_steps=STEPS,
                                guidance_scale=7.5, generator=gen(42), output_type="np").images)
    assert (ref - ours).abs().max().item() <= TOL
    nodes = txt2img_nodes("tiny-sd15", prompt="a photo of <cat-toy>", steps=STEPS)
    nodes["emb"] = {"type": "LoadEmbedding", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "name": "cat-toy.safetensors"}}
    nodes["pos"]["inputs"]["text_encoder"] = L("emb", "text_encoder")
    by_token = output_of(ex, ex.run(wf(nodes)), "dec", "image")
    assert torch.equal(by_token, ours)
    assert _same(_snapshot(te), before)
    ex.cache.clear()
    again = ex.run(wf(base_wf))
    assert torch.equal(output_of(ex, again, "dec", "image"), output_of(ex, before_run, "dec", "image"))


def _encode(ex, text: str, embedding: str | None = None, token: str = "", ckpt: str = "tiny-sd15"):
    nodes = {"ckpt": {"type": "LoadCheckpoint", "inputs": {"name": ckpt}},
             "enc": {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text": text}}}
    if embedding:
        nodes["emb"] = {"type": "LoadEmbedding", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "name": embedding, "token": token}}
        nodes["enc"]["inputs"]["text_encoder"] = L("emb", "text_encoder")
    result = ex.run(wf(nodes), targets=["enc"])
    return result, (output_of(ex, result, "enc", "conditioning") if result.status == "success" else None)


@pytest.mark.parametrize("case", ["a1111-pt", "emb-params"])
def test_a1111_formats_equal_diffusers(emb_dir, tmp_path, case):
    """A1111 .pt (string_to_param, loaded with weights_only=True; its `name` is the token) and A1111 emb_params
    safetensors (in a sub-folder), by `embedding:name` and by token, equal diffusers' encode_prompt."""
    ex = executor(emb_dir, tmp_path)
    pipe = fresh_pipeline(emb_dir / "checkpoints" / "tiny-sd15")
    if case == "a1111-pt":
        pipe.load_textual_inversion(str(emb_dir / "embeddings" / "a1111.pt"))
        ours_text, ref_text, name, token = "embedding:a1111, a blue square", "a1111style, a blue square", "a1111.pt", ""
    else:
        pipe.load_textual_inversion(str(emb_dir / "embeddings" / "styles" / "emb-params.safetensors"), token="<ep>")
        ours_text, ref_text, name, token = "a blue square, embedding:styles/emb-params", "a blue square, <ep>", "styles/emb-params.safetensors", "<ep>"
    ref = pipe.encode_prompt(ref_text, "cpu", 1, False)[0]
    _, by_name = _encode(ex, ours_text)
    assert (by_name.embeds - ref).abs().max().item() <= TOL
    _, by_token = _encode(ex, ref_text, embedding=name, token=token)
    assert torch.equal(by_token.embeds, by_name.embeds)


def test_sdxl_clip_l_clip_g_embedding_equals_diffusers(sdxl_models_dir, tmp_path):
    d = sdxl_models_dir / "embeddings"
    d.mkdir(exist_ok=True)
    g = gen(8)
    data = {"clip_l": torch.randn(2, 32, generator=g), "clip_g": torch.randn(2, 64, generator=g)}
    save_file(data, str(d / "xl-style.safetensors"))
    ex = executor(sdxl_models_dir, tmp_path)
    _, ours = _encode(ex, "a photo in embedding:xl-style style", ckpt="tiny-sdxl")
    pipe = fresh_pipeline(sdxl_models_dir / "checkpoints" / "tiny-sdxl")
    pipe.load_textual_inversion(data["clip_l"], token="<s>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(data["clip_g"], token="<s>", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    embeds, _, pooled, _ = pipe.encode_prompt("a photo in <s> style", device="cpu", num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    assert (ours.embeds - embeds).abs().max().item() <= TOL
    assert (ours.pooled - pooled).abs().max().item() <= TOL
    result, _ = _encode(ex, "embedding:cat-toy", ckpt="tiny-sdxl")  # a one-tensor SD1.x embedding on SDXL
    assert result.status == "error" and "clip_l and clip_g" in result.error["message"], result.error


def test_bad_embeddings_name_both_sides(emb_dir, tmp_path):
    ex = executor(emb_dir, tmp_path)
    result, _ = _encode(ex, "a embedding:wide cat")
    assert result.status == "error" and result.error["node_id"] == "enc"
    msg = result.error["message"]
    assert "'wide'" in msg and "768 wide" in msg and "32 wide" in msg and "SD 1.x" in msg, msg
    result, _ = _encode(ex, "a cat", embedding="wide.safetensors")  # fails early, on the LoadEmbedding node
    assert result.status == "error" and result.error["node_id"] == "emb" and "768" in result.error["message"]
    result, _ = _encode(ex, "a embedding:nope cat")
    msg = result.error["message"]
    assert result.status == "error" and "embedding:nope" in msg and "cat-toy" in msg, msg


def test_weights_and_token_layout(emb_dir, tmp_path):
    """Virtual ids follow the vocabulary, one per vector, where the word was; weights apply to them."""
    from nodes.sd.encode import tokenize_prompt

    ex = executor(emb_dir, tmp_path)
    result, plain = _encode(ex, "a embedding:cat-toy, red")
    te = output_of(ex, result, "ckpt", "text_encoder")
    tokens = tokenize_prompt(te, "a embedding:cat-toy, red")
    ids = tokens.windows[0].ids[0]
    plain_ids = tokenize_prompt(te, "a , red").windows[0].ids[0]
    assert ids[:5] == [plain_ids[0], plain_ids[1], 49408, 49409, 49410] and ids[5:8] == plain_ids[2:5]
    assert sorted(tokens.virtual[0]) == [49408, 49409, 49410]
    _, weighted = _encode(ex, "a (embedding:cat-toy:1.3), red")
    assert weighted.embeds.shape == plain.embeds.shape and not torch.equal(weighted.embeds, plain.embeds)


def test_shipped_textual_inversion_workflow_runs(emb_dir, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(emb_dir / "checkpoints" / "tiny-sd15", root / "checkpoints" / "loom-shapes", copy_function=os.link)
    data = json.loads((REPO / "workflows" / "textual-inversion.json").read_text())
    (root / "embeddings").mkdir()
    names = {m for n in data["nodes"].values() if n["type"] == "EncodeText"
             for m in __import__("re").findall(r"embedding:([^\s,()\[\]:]+)", n["inputs"]["text"])}
    assert names
    for name in names:
        save_file({f"<{name}>": torch.randn(2, 32, generator=gen(1))}, str(root / "embeddings" / f"{name}.safetensors"))
    quick(data)
    ex = executor(root, tmp_path / "out")
    result = ex.run(data)
    assert result.status == "success", result.error
