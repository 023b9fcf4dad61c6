"""engine/compat/comfy.py: ComfyUI API prompts become our workflows (named outputs, mapped inputs)."""

import pytest

from engine.compat.comfy import (ComfyTranslationError, is_comfy_prompt, litegraph_to_prompt, litegraph_to_workflow,
                                  prompt_to_workflow)
from engine.graph import validate
from engine.registry import Registry
from engine.settings import Settings

PROMPT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png", "upload": "image"}},
    "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "width": 64,
                                                  "height": 32, "crop": "center"}},
    "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}, "_meta": {"title": "Out"}},
}


def test_detects_comfy_prompts():
    assert is_comfy_prompt(PROMPT)
    assert is_comfy_prompt({"prompt": PROMPT, "client_id": "abc"})
    assert not is_comfy_prompt({"format": "latentloom.workflow", "version": 1, "nodes": {}})
    assert not is_comfy_prompt({})
    assert not is_comfy_prompt([PROMPT])
    assert not is_comfy_prompt({"1": {"inputs": {}}})


def test_translation():
    wf = prompt_to_workflow(PROMPT)
    assert wf["format"] == "latentloom.workflow" and wf["version"] == 1
    n = wf["nodes"]
    assert n["1"]["type"] == "LoadImage" and n["1"]["inputs"] == {"image": "example.png"}  # upload dropped
    assert n["2"]["type"] == "ImageResize"
    assert n["2"]["inputs"] == {"image": {"node": "1", "output": "image"}, "method": "nearest", "width": 64, "height": 32,
                                "crop": "center"}
    assert n["3"]["inputs"] == {"image": {"node": "2", "output": "image"}}
    assert n["4"]["ui"] == {"comfy_class": "SaveImage", "title": "Out"}
    assert prompt_to_workflow({"prompt": PROMPT})["nodes"].keys() == n.keys()


def test_translated_prompt_validates(tmp_path):
    (tmp_path / "example.png").write_bytes((__import__("pathlib").Path(__file__).resolve().parents[2]
                                            / "workflows" / "input" / "example.png").read_bytes())
    graph, errors = validate(prompt_to_workflow(PROMPT), Registry.default(), Settings(input_dir=tmp_path))
    assert errors == [] and graph.order == ["1", "2", "3", "4"]


def test_mask_output_index_maps_to_name():
    wf = prompt_to_workflow({
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": [1, 1]}},  # integer ids are accepted
    })
    assert wf["nodes"]["2"]["inputs"]["images"] == {"node": "1", "output": "mask"}


@pytest.mark.parametrize("prompt, says", [
    ({"1": {"class_type": "KSamplerFancy", "inputs": {}}}, "not supported"),
    ({"1": {"class_type": "ImageInvert", "inputs": {"image": ["9", 0]}}}, "does not exist"),
    ({"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
      "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 5]}}}, "has 2 outputs"),
])
def test_translation_errors_name_the_node(prompt, says):
    with pytest.raises(ComfyTranslationError, match=says) as info:
        prompt_to_workflow(prompt)
    assert str(info.value).startswith("node ")


def test_object_literals_are_wrapped():
    wf = prompt_to_workflow({"1": {"class_type": "SaveImage", "inputs": {"images": {"a": 1}}}})
    assert wf["nodes"]["1"]["inputs"]["images"] == {"value": {"a": 1}}


# -- ComfyUI editor (LiteGraph) workflows ----------------------------------------------------------------------

def _n(id, type, pos, inputs=(), outputs=(), widgets=None, mode=0, **extra):
    """A node as ComfyUI's editor saves it."""
    node = {"id": id, "type": type, "pos": list(pos), "size": [315, 98], "flags": {}, "order": 0, "mode": mode,
            "inputs": [dict(name=n, type=t, link=l, **({"widget": {"name": n}} if w else {})) for n, t, l, *w in inputs],
            "outputs": [o if isinstance(o, dict) else {"name": o[0], "type": o[1], "links": o[2], "slot_index": i}
                        for i, o in enumerate(outputs)],
            "properties": {"Node name for S&R": type}, **extra}
    if widgets is not None:
        node["widgets_values"] = widgets
    return node


# ComfyUI's default txt2img, plus: a Reroute on the VAE, a PrimitiveNode feeding KSampler's seed (a widget
# converted to an input), an Int node linked to EmptyLatentImage's batch_size (converted widget, real link),
# a bypassed ImageInvert, a muted PreviewImage, a Note, a title, and SaveImage's widgets_values as an object.
LITEGRAPH = {
    "last_node_id": 16, "last_link_id": 16,
    "nodes": [
        _n(4, "CheckpointLoaderSimple", (26, 474), outputs=[("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [3, 5]), ("VAE", "VAE", [10])],
           widgets=["v1-5-pruned-emaonly.safetensors"]),
        _n(6, "CLIPTextEncode", (415, 186), inputs=[("clip", "CLIP", 3)], outputs=[("CONDITIONING", "CONDITIONING", [4])],
           widgets=["beautiful scenery nature glass bottle landscape, , purple galaxy bottle,"]),
        _n(7, "CLIPTextEncode", (413, 389), inputs=[("clip", "CLIP", 5)], outputs=[("CONDITIONING", "CONDITIONING", [6])],
           widgets=["text, watermark"], title="Negative"),
        _n(5, "EmptyLatentImage", (473, 609), inputs=[("batch_size", "INT", 12, True)], outputs=[("LATENT", "LATENT", [2])],
           widgets=[512, 512, 1]),
        _n(3, "KSampler", (863, 186),
           inputs=[("model", "MODEL", 1), ("positive", "CONDITIONING", 4), ("negative", "CONDITIONING", 6),
                   ("latent_image", "LATENT", 2), ("seed", "INT", 11, True)],
           outputs=[("LATENT", "LATENT", [7])], widgets=[156680208700286, "randomize", 20, 8, "euler", "normal", 1]),
        _n(8, "VAEDecode", (1209, 188), inputs=[("samples", "LATENT", 7), ("vae", "VAE", 8)], outputs=[("IMAGE", "IMAGE", [9, 14])]),
        _n(13, "ImageInvert", (1300, 300), mode=4, inputs=[("image", "IMAGE", 9)], outputs=[("IMAGE", "IMAGE", [13])]),
        _n(9, "SaveImage", (1451, 189), inputs=[("images", "IMAGE", 13)], widgets={"filename_prefix": "ComfyUI"}),
        _n(14, "PreviewImage", (1451, 500), mode=2, inputs=[("images", "IMAGE", 14)]),
        _n(10, "Reroute", (700, 700), inputs=[("", "*", 10)], outputs=[("", "VAE", [8])], properties={"showOutputText": False}),
        _n(11, "PrimitiveNode", (500, 50), outputs=[{"name": "INT", "type": "INT", "links": [11], "widget": {"name": "seed"}}],
           widgets=[42, "fixed"]),
        _n(12, "PrimitiveInt", (200, 700), outputs=[("INT", "INT", [12])], widgets=[2, "fixed"]),
        _n(15, "Note", (0, 0), widgets=["generated with ComfyUI"]),
    ],
    "links": [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"], [4, 6, 0, 3, 1, "CONDITIONING"],
              [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"], [7, 3, 0, 8, 0, "LATENT"], [8, 10, 0, 8, 1, "VAE"],
              [9, 8, 0, 13, 0, "IMAGE"], [10, 4, 2, 10, 0, "*"], [11, 11, 0, 3, 4, "INT"], [12, 12, 0, 5, 0, "INT"],
              [13, 13, 0, 9, 0, "IMAGE"], [14, 8, 0, 14, 0, "IMAGE"]],
    "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}}, "version": 0.4,
}

# What ComfyUI's frontend sends for it (graphToPrompt): virtual nodes resolved, the bypassed node spliced out,
# the muted one left out, control_after_generate never sent.
COMFY_PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
                                               "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                               "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": ["12", 0]}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,",
                                                     "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}, "_meta": {"title": "Negative"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    "12": {"class_type": "PrimitiveInt", "inputs": {"value": 2}},
}


def test_litegraph_gives_the_prompt_comfyui_sends():
    prompt, positions, warnings = litegraph_to_prompt(LITEGRAPH, Registry.default(), bypass="splice")
    assert prompt == COMFY_PROMPT
    assert positions["3"] == [863, 186] and positions["9"] == [1451, 189] and "10" not in positions  # no Reroute
    assert any("node 14 (PreviewImage) is muted" in w for w in warnings), warnings


def test_litegraph_keeps_bypassed_nodes_as_our_bypass():
    prompt, _, warnings = litegraph_to_prompt(LITEGRAPH, Registry.default())
    assert prompt["13"] == {"class_type": "ImageInvert", "inputs": {"image": ["8", 0]}, "_meta": {"mode": "bypass"}}
    assert prompt["9"]["inputs"]["images"] == ["13", 0]
    assert {k: v for k, v in prompt.items() if k != "13"} == {**COMFY_PROMPT, "9": {**COMFY_PROMPT["9"], "inputs": {
        "filename_prefix": "ComfyUI", "images": ["13", 0]}}}
    wf, warnings = litegraph_to_workflow(LITEGRAPH, Registry.default())
    n = wf["nodes"]
    assert n["13"]["mode"] == "bypass" and n["13"]["ui"]["pos"] == [1300, 300]
    assert n["3"]["type"] == "Sample" and n["3"]["inputs"]["seed"] == 42 and n["3"]["inputs"]["unet"] == {"node": "4", "output": "unet"}
    assert n["8"]["inputs"]["vae"] == {"node": "4", "output": "vae"}
    assert n["5"]["inputs"]["batch_size"] == {"node": "12", "output": "value"}
    assert n["7"]["ui"] == {"comfy_class": "CLIPTextEncode", "title": "Negative", "pos": [413, 389]}
    assert set(n) == {"3", "4", "5", "6", "7", "8", "9", "12", "13"} and wf["ui"]["source"] == "comfyui"
    assert "mode" not in n["9"]


def test_litegraph_widget_order_per_class():
    """widgets_values are positional in ComfyUI's INPUT_TYPES order; control_after_generate and upload skipped."""
    lg = {"nodes": [
        _n(1, "LoadImage", (0, 0), outputs=[("IMAGE", "IMAGE", [1]), ("MASK", "MASK", [])], widgets=["example.png", "image"]),
        _n(2, "ImageScale", (0, 0), inputs=[("image", "IMAGE", 1)], outputs=[("IMAGE", "IMAGE", [])],
           widgets=["nearest-exact", 64, 32, "center"]),
        _n(3, "KSamplerAdvanced", (0, 0), widgets=["enable", 7, "fixed", 12, 6.5, "euler", "karras", 0, 10000, "disable"]),
        _n(4, "SamplerCustom", (0, 0), widgets=[True, 9, "increment", 7]),
        _n(5, "RandomNoise", (0, 0), widgets=[3, "randomize"]),
        _n(6, "CLIPTextEncodeSDXL", (0, 0), widgets=[1024, 1024, 0, 0, 1024, 1024, "g", "l"]),
        _n(7, "Canny", (0, 0), widgets=[0.4, 0.8]),
        _n(8, "KSampler", (0, 0), widgets=[5, 20, 8, "euler", "normal", 1]),  # from before the control widget
    ], "links": [[1, 1, 0, 2, 0, "IMAGE"]]}
    prompt, _, warnings = litegraph_to_prompt(lg)
    assert prompt["1"]["inputs"] == {"image": "example.png"}
    assert prompt["2"]["inputs"] == {"upscale_method": "nearest-exact", "width": 64, "height": 32, "crop": "center", "image": ["1", 0]}
    assert prompt["3"]["inputs"] == {"add_noise": "enable", "noise_seed": 7, "steps": 12, "cfg": 6.5, "sampler_name": "euler",
                                     "scheduler": "karras", "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable"}
    assert prompt["4"]["inputs"] == {"add_noise": True, "noise_seed": 9, "cfg": 7}
    assert prompt["5"]["inputs"] == {"noise_seed": 3}
    assert prompt["6"]["inputs"] == {"width": 1024, "height": 1024, "crop_w": 0, "crop_h": 0, "target_width": 1024,
                                     "target_height": 1024, "text_g": "g", "text_l": "l"}
    assert prompt["7"]["inputs"] == {"low_threshold": 0.4, "high_threshold": 0.8}
    assert prompt["8"]["inputs"] == {"seed": 5, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal", "denoise": 1}
    assert warnings == []


def test_every_translated_class_records_its_widgets():
    from engine.compat.comfy import COMFY_CLASSES, CONTROL_AFTER_GENERATE, UPLOAD, _ensure_tables

    _ensure_tables()
    no_widgets = {"PreviewImage", "ImageInvert", "VAEDecode", "VAEEncode", "SetLatentNoiseMask", "SamplerCustomAdvanced",
                  "LatentBatch", "ConditioningZeroOut", "ImageUpscaleWithModel"}
    for name, spec in COMFY_CLASSES.items():
        assert bool(spec.widgets) == (name not in no_widgets), name
        w = spec.widgets
        # ComfyUI's editor adds a control after each seed, an upload button after the last required widget of LoadImage*
        for i, widget in enumerate(w):
            if widget in ("seed", "noise_seed"):
                assert w[i + 1] == CONTROL_AFTER_GENERATE, name
            if widget == CONTROL_AFTER_GENERATE:
                assert w[i - 1] in ("seed", "noise_seed"), name
            if widget == UPLOAD:
                assert (name, w[i - 1]) in {("LoadImage", "image"), ("LoadImageMask", "channel")} and i == len(w) - 1


def test_litegraph_muted_sources_and_our_own_nodes():
    lg = {"nodes": [
        _n(1, "Seed", (0, 0), outputs=[("seed", "INT", [1])], widgets=[77, "fixed"]),  # one of ours, under its own name
        _n(2, "RandomNoise", (0, 0), inputs=[("noise_seed", "INT", 1, True)], widgets=[5, "randomize"]),
        _n(3, "LoadImage", (0, 0), mode=2, outputs=[("IMAGE", "IMAGE", [2])], widgets=["a.png", "image"]),
        _n(4, "SaveImage", (0, 0), inputs=[("images", "IMAGE", 2)], widgets=["x"]),
    ], "links": [[1, 1, 0, 2, 0, "INT"], [2, 3, 0, 4, 0, "IMAGE"]]}
    prompt, _, warnings = litegraph_to_prompt(lg, Registry.default())
    assert prompt == {"1": {"class_type": "Seed", "inputs": {"seed": 77}},
                      "2": {"class_type": "RandomNoise", "inputs": {"noise_seed": ["1", 0]}},
                      "4": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}  # as ComfyUI: the link to a muted node goes
    assert any("node 3 (LoadImage) is muted" in w for w in warnings)
    assert any("node 4: input 'images' links to node 3 (LoadImage), which is muted" in w for w in warnings)


@pytest.mark.parametrize("change, says", [
    ({"type": "FancySampler"}, "node 3: ComfyUI class_type 'FancySampler' is not supported"),
    ({"type": "workflow>MyGroup"}, "node 3: this is the ComfyUI group node 'workflow>MyGroup'"),
])
def test_litegraph_refusals_name_the_node(change, says):
    lg = {**LITEGRAPH, "nodes": [{**n, **change} if n["id"] == 3 else n for n in LITEGRAPH["nodes"]]}
    with pytest.raises(ComfyTranslationError, match=says) as info:
        litegraph_to_prompt(lg, Registry.default())
    assert info.value.node_id == "3"


def test_a_bypassed_class_we_cannot_translate_is_spliced_out():
    lg = {**LITEGRAPH, "nodes": [{**n, "type": "FancyInvert"} if n["id"] == 13 else n for n in LITEGRAPH["nodes"]]}
    prompt, _, warnings = litegraph_to_prompt(lg, Registry.default())
    assert "13" not in prompt and prompt["9"]["inputs"]["images"] == ["8", 0]
    assert any("node 13 (FancyInvert) is bypassed and has no translation here" in w for w in warnings)


def test_litegraph_refuses_a_subgraph_without_nodes_and_api_prompts():
    sub = "a1b2c3d4-0000-4000-8000-000000000000"
    lg = {"nodes": [_n(7, sub, (0, 0))], "links": [], "definitions": {"subgraphs": [{"id": sub, "name": "Upscaler"}]}}
    with pytest.raises(ComfyTranslationError, match="node 7: this is the ComfyUI subgraph 'Upscaler'"):
        litegraph_to_prompt(lg)
    with pytest.raises(ComfyTranslationError, match="no 'nodes' list"):
        litegraph_to_prompt({"1": {"class_type": "LoadImage"}})


def test_legacy_checkpoint_loader_drops_its_yaml():
    wf = prompt_to_workflow({"1": {"class_type": "CheckpointLoader",
                                   "inputs": {"config_name": "v1-inference.yaml", "ckpt_name": "sd15.safetensors"}}})
    assert wf["nodes"]["1"]["type"] == "LoadCheckpoint" and wf["nodes"]["1"]["inputs"] == {"name": "sd15.safetensors"}
    lg = {"nodes": [_n(1, "CheckpointLoader", (0, 0), widgets=["v1-inference.yaml", "sd15.safetensors"])], "links": []}
    prompt, _, warnings = litegraph_to_prompt(lg)
    assert prompt["1"]["inputs"] == {"config_name": "v1-inference.yaml", "ckpt_name": "sd15.safetensors"} and not warnings
