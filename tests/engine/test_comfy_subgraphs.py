"""ComfyUI editor workflows with subgraphs and legacy group nodes: inlined as ComfyUI's frontend runs them.

The workflows are built the way ComfyUI's frontend saves them: a subgraph once in `definitions.subgraphs` (links as
objects, -10/-20 its input and output nodes), instances typed by its id; a group node in `extra.groupNodes`.
"""

import copy
import re

import pytest

from engine.compat.comfy import ComfyTranslationError, litegraph_to_prompt, litegraph_to_workflow
from engine.graph import validate
from engine.registry import Registry
from engine.settings import Settings

PROMPTS = "3f6c2a7e-9b1d-4c58-8e2f-0a4b6d8c1e35"  # subgraph ids are UUIDs
GENERATE = "b71e04d9-52a8-4f3c-9d6e-c2f8a1b7e460"
INVERT = "0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f"
LOOP = "e5d4c3b2-a190-4f8e-9d7c-6b5a4f3e2d1c"


def _node(id, type, pos, inputs=(), outputs=(), widgets=None, mode=0, **extra):
    """A node as ComfyUI's editor saves it; an input (name, type, link[, True: a widget's input])."""
    node = {"id": id, "type": type, "pos": list(pos), "size": [270, 100], "flags": {}, "order": 0, "mode": mode,
            "inputs": [dict(localized_name=n, name=n, type=t, **({"widget": {"name": n}} if w else {}), link=l)
                       for n, t, l, *w in inputs],
            "outputs": [{"localized_name": n, "name": n, "type": t, "links": l} for n, t, l in outputs],
            "properties": {"Node name for S&R": type}, **extra}
    if widgets is not None:
        node["widgets_values"] = widgets
    return node


def _link(id, origin, slot, target, target_slot, type):
    """A link inside a subgraph: an object (at the top level, links are arrays)."""
    return {"id": id, "origin_id": origin, "origin_slot": slot, "target_id": target, "target_slot": target_slot, "type": type}


def _subgraph(id, name, inputs, outputs, nodes, links, x=0):
    """A definition as ComfyUI saves it; inputs/outputs (name, type, link ids)."""
    return {
        "id": id, "version": 1, "state": {"lastGroupId": 0, "lastNodeId": 40, "lastLinkId": 40, "lastRerouteId": 0},
        "revision": 0, "config": {}, "name": name,
        "inputNode": {"id": -10, "bounding": [x - 200, 200, 120, 88]},
        "outputNode": {"id": -20, "bounding": [x + 900, 200, 120, 88]},
        "inputs": [{"id": f"{id[:8]}-in-{i}", "name": n, "type": t, "linkIds": ids, "localized_name": n, "pos": [x - 100, 224 + 20 * i]}
                   for i, (n, t, ids) in enumerate(inputs)],
        "outputs": [{"id": f"{id[:8]}-out-{i}", "name": n, "type": t, "linkIds": ids, "localized_name": n, "pos": [x + 920, 224 + 20 * i]}
                    for i, (n, t, ids) in enumerate(outputs)],
        "widgets": [], "nodes": nodes, "groups": [], "links": links, "extra": {},
    }


# "Prompts": the CLIPTextEncode pair of ComfyUI's default graph; its `text` input is promoted from the positive one.
PROMPTS_DEF = _subgraph(PROMPTS, "Prompts", [("clip", "CLIP", [1, 2]), ("text", "STRING", [3])],
                        [("positive", "CONDITIONING", [4]), ("negative", "CONDITIONING", [5])], [
    _node(6, "CLIPTextEncode", (100, 200), inputs=[("clip", "CLIP", 1), ("text", "STRING", 3, True)],
          outputs=[("CONDITIONING", "CONDITIONING", [4])], widgets=["a photo of a cat"]),
    _node(7, "CLIPTextEncode", (100, 420), inputs=[("clip", "CLIP", 2), ("text", "STRING", None, True)],
          outputs=[("CONDITIONING", "CONDITIONING", [5])], widgets=["text, watermark"], title="Negative"),
], [_link(1, -10, 0, 6, 0, "CLIP"), _link(2, -10, 0, 7, 0, "CLIP"), _link(3, -10, 1, 6, 1, "STRING"),
    _link(4, 6, 0, -20, 0, "CONDITIONING"), _link(5, 7, 0, -20, 1, "CONDITIONING")])


def _prompts_instance(id, pos, clip_link, out_links, text=None, **extra):
    """An instance of "Prompts": its `text` input carries the promoted widget (unlinked: its value is widgets_values[0])."""
    return _node(id, PROMPTS, pos, inputs=[("clip", "CLIP", clip_link), ("text", "STRING", None, True)],
                 outputs=[("positive", "CONDITIONING", out_links[0]), ("negative", "CONDITIONING", out_links[1])],
                 widgets=None if text is None else [text], **extra)


# ComfyUI's default txt2img with its two prompts in the subgraph "Prompts" (instance 10).
TXT2IMG = {
    "id": "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "revision": 0, "last_node_id": 10, "last_link_id": 20,
    "nodes": [
        _node(4, "CheckpointLoaderSimple", (26, 474), outputs=[("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [20]), ("VAE", "VAE", [8])],
              widgets=["v1-5-pruned-emaonly.safetensors"]),
        _prompts_instance(10, (400, 300), 20, ([4], [6]), text="a red fox in the snow"),
        _node(5, "EmptyLatentImage", (473, 609), outputs=[("LATENT", "LATENT", [2])], widgets=[512, 512, 1]),
        _node(3, "KSampler", (863, 186), inputs=[("model", "MODEL", 1), ("positive", "CONDITIONING", 4), ("negative", "CONDITIONING", 6),
                                                 ("latent_image", "LATENT", 2)],
              outputs=[("LATENT", "LATENT", [7])], widgets=[42, "fixed", 20, 8, "euler", "normal", 1]),
        _node(8, "VAEDecode", (1209, 188), inputs=[("samples", "LATENT", 7), ("vae", "VAE", 8)], outputs=[("IMAGE", "IMAGE", [9])]),
        _node(9, "SaveImage", (1451, 189), inputs=[("images", "IMAGE", 9)], widgets=["ComfyUI"]),
    ],
    "links": [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [4, 10, 0, 3, 1, "CONDITIONING"], [6, 10, 1, 3, 2, "CONDITIONING"],
              [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"], [9, 8, 0, 9, 0, "IMAGE"], [20, 4, 1, 10, 0, "CLIP"]],
    "groups": [], "definitions": {"subgraphs": [PROMPTS_DEF]}, "config": {},
    "extra": {"ds": {"scale": 1, "offset": [0, 0]}, "frontendVersion": "1.28.6"}, "version": 0.4,
}

TXT2IMG_PROMPT = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "10:6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in the snow", "clip": ["4", 1]}},
    "10:7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}, "_meta": {"title": "Negative"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
                                               "denoise": 1, "model": ["4", 0], "positive": ["10:6", 0], "negative": ["10:7", 0],
                                               "latent_image": ["5", 0]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "v1-5-pruned-emaonly.safetensors").write_bytes(b"")
    return Settings(models_dir=tmp_path, input_dir=tmp_path, output_dir=tmp_path / "out")


def _valid(wf, settings):
    graph, errors = validate(wf, Registry.default(), settings)
    assert errors == [], errors
    return graph


def test_a_subgraph_is_inlined_as_comfyui_runs_it(settings):
    prompt, positions, warnings = litegraph_to_prompt(TXT2IMG, Registry.default())
    assert prompt == TXT2IMG_PROMPT and warnings == []
    # inner nodes placed from the instance: its position + their offset from the subgraph's top-left node
    assert positions["10:6"] == [400, 300] and positions["10:7"] == [400, 520] and "10" not in positions
    wf, warnings = litegraph_to_workflow(TXT2IMG, Registry.default())
    n = wf["nodes"]
    assert set(n) == {"3", "4", "5", "8", "9", "10:6", "10:7"}
    assert n["10:6"]["type"] == "EncodeText" and n["10:6"]["inputs"] == {"text": "a red fox in the snow",
                                                                        "text_encoder": {"node": "4", "output": "text_encoder"}}
    assert n["10:7"]["ui"] == {"comfy_class": "CLIPTextEncode", "title": "Negative", "pos": [400, 520]}
    assert n["3"]["inputs"]["positive"] == {"node": "10:6", "output": "conditioning"}
    assert n["3"]["inputs"]["negative"] == {"node": "10:7", "output": "conditioning"}
    graph = _valid(wf, settings)
    assert graph.order.index("10:6") < graph.order.index("3")


def test_an_unlinked_promoted_input_without_a_value_uses_the_inner_widget():
    lg = copy.deepcopy(TXT2IMG)
    del lg["nodes"][1]["widgets_values"]
    prompt, _, warnings = litegraph_to_prompt(lg, Registry.default())
    assert prompt["10:6"]["inputs"] == {"text": "a photo of a cat", "clip": ["4", 1]} and warnings == []
    # ComfyUI gives every inner input the promoted input feeds the value of the first inner widget
    sg = lg["definitions"]["subgraphs"][0]
    sg["links"].append(_link(30, -10, 1, 7, 1, "STRING"))
    sg["inputs"][1]["linkIds"].append(30)
    sg["nodes"][1]["inputs"][1]["link"] = 30
    prompt, _, _ = litegraph_to_prompt(lg, Registry.default())
    assert prompt["10:6"]["inputs"]["text"] == prompt["10:7"]["inputs"]["text"] == "a photo of a cat"
    # an instance input with no promoted widget left unlinked: the inner input is unlinked, its widget stands
    lg["nodes"][1]["inputs"][1].pop("widget")
    prompt, _, _ = litegraph_to_prompt(lg, Registry.default())
    assert prompt["10:6"]["inputs"]["text"] == "a photo of a cat" and prompt["10:7"]["inputs"]["text"] == "text, watermark"


def test_a_linked_instance_input_wins_over_its_widget():
    lg = copy.deepcopy(TXT2IMG)
    primitive = _node(11, "PrimitiveNode", (0, 0), widgets=["from a primitive"])
    primitive["outputs"] = [{"name": "STRING", "type": "STRING", "links": [21], "widget": {"name": "text"}}]
    lg["nodes"].append(primitive)
    lg["nodes"][1]["inputs"][1]["link"] = 21
    lg["links"].append([21, 11, 0, 10, 1, "STRING"])
    prompt, _, _ = litegraph_to_prompt(lg, Registry.default())
    assert prompt["10:6"]["inputs"]["text"] == "from a primitive"


# "Generate": a KSampler whose prompts are the nested "Prompts" (instance 30); its seed is promoted.
GENERATE_DEF = _subgraph(GENERATE, "Generate", [("model", "MODEL", [10]), ("clip", "CLIP", [11]), ("latent", "LATENT", [14]),
                                                ("seed", "INT", [15])], [("LATENT", "LATENT", [16])], [
    _prompts_instance(30, (500, 900), 11, ([12], [13]), text="a lighthouse at dusk"),
    _node(31, "KSampler", (900, 800), inputs=[("model", "MODEL", 10), ("positive", "CONDITIONING", 12), ("negative", "CONDITIONING", 13),
                                              ("latent_image", "LATENT", 14), ("seed", "INT", 15, True)],
          outputs=[("LATENT", "LATENT", [16])], widgets=[1, "randomize", 25, 7.5, "euler", "karras", 1]),
], [_link(10, -10, 0, 31, 0, "MODEL"), _link(11, -10, 1, 30, 0, "CLIP"), _link(12, 30, 0, 31, 1, "CONDITIONING"),
    _link(13, 30, 1, 31, 2, "CONDITIONING"), _link(14, -10, 2, 31, 3, "LATENT"), _link(15, -10, 3, 31, 4, "INT"),
    _link(16, 31, 0, -20, 0, "LATENT")], x=500)

NESTED = {
    "nodes": [
        _node(4, "CheckpointLoaderSimple", (0, 0), outputs=[("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [2]), ("VAE", "VAE", [5])],
              widgets=["v1-5-pruned-emaonly.safetensors"]),
        _node(5, "EmptyLatentImage", (0, 300), outputs=[("LATENT", "LATENT", [3])], widgets=[768, 512, 2]),
        _node(20, GENERATE, (400, 100), inputs=[("model", "MODEL", 1), ("clip", "CLIP", 2), ("latent", "LATENT", 3),
                                                ("seed", "INT", None, True)],
              outputs=[("LATENT", "LATENT", [4])], widgets=[7]),
        _node(8, "VAEDecode", (800, 100), inputs=[("samples", "LATENT", 4), ("vae", "VAE", 5)], outputs=[("IMAGE", "IMAGE", [6])]),
        _node(9, "SaveImage", (1100, 100), inputs=[("images", "IMAGE", 6)], widgets=["nested"]),
    ],
    "links": [[1, 4, 0, 20, 0, "MODEL"], [2, 4, 1, 20, 1, "CLIP"], [3, 5, 0, 20, 2, "LATENT"], [4, 20, 0, 8, 0, "LATENT"],
              [5, 4, 2, 8, 1, "VAE"], [6, 8, 0, 9, 0, "IMAGE"]],
    "definitions": {"subgraphs": [GENERATE_DEF, PROMPTS_DEF]}, "extra": {}, "version": 0.4,
}


def test_nested_subgraphs(settings):
    prompt, positions, warnings = litegraph_to_prompt(NESTED, Registry.default())
    assert prompt == {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 768, "height": 512, "batch_size": 2}},
        "20:30:6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["4", 1]}},
        "20:30:7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]},
                    "_meta": {"title": "Negative"}},
        "20:31": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 25, "cfg": 7.5, "sampler_name": "euler",
                                                       "scheduler": "karras", "denoise": 1, "model": ["4", 0],
                                                       "positive": ["20:30:6", 0], "negative": ["20:30:7", 0],
                                                       "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["20:31", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "nested", "images": ["8", 0]}},
    }
    assert warnings == []
    # "Generate" is placed at (400, 100) from its top-left node (500, 800); "Prompts" inside it from its own
    assert positions["20:31"] == [800, 100] and positions["20:30:6"] == [400, 200] and positions["20:30:7"] == [400, 420]
    wf, _ = litegraph_to_workflow(NESTED, Registry.default())
    assert wf["nodes"]["8"]["inputs"]["latent"] == {"node": "20:31", "output": "latent"}
    assert wf["nodes"]["20:31"]["inputs"]["positive"] == {"node": "20:30:6", "output": "conditioning"}
    _valid(wf, settings)


def test_nested_definitions_may_sit_inside_their_parent():
    lg = copy.deepcopy(NESTED)
    lg["definitions"]["subgraphs"] = [dict(GENERATE_DEF, definitions={"subgraphs": [PROMPTS_DEF]})]
    assert litegraph_to_prompt(lg, Registry.default())[0] == litegraph_to_prompt(NESTED, Registry.default())[0]


def test_proxy_widgets_give_values_to_inner_widgets():
    """Frontends of late 2025: `properties.proxyWidgets` orders the instance's widgets_values; "-1" is a promoted input."""
    lg = copy.deepcopy(TXT2IMG)
    lg["nodes"][1]["properties"]["proxyWidgets"] = [["-1", "text"], ["7", "text"]]
    lg["nodes"][1]["widgets_values"] = ["a heron in the reeds", "blurry"]
    prompt, _, _ = litegraph_to_prompt(lg, Registry.default())
    assert prompt["10:6"]["inputs"]["text"] == "a heron in the reeds" and prompt["10:7"]["inputs"]["text"] == "blurry"
    # through a nested instance: a path to the inner node; and as a JSON string, as some versions saved it
    lg = copy.deepcopy(NESTED)
    lg["nodes"][2]["properties"]["proxyWidgets"] = '[["-1", "seed"], ["30:7", "text"], ["31", "steps"]]'
    lg["nodes"][2]["widgets_values"] = [99, "lowres", 12]
    prompt, _, _ = litegraph_to_prompt(lg, Registry.default())
    assert prompt["20:31"]["inputs"]["seed"] == 99 and prompt["20:31"]["inputs"]["steps"] == 12
    assert prompt["20:30:7"]["inputs"]["text"] == "lowres" and prompt["20:30:6"]["inputs"]["text"] == "a lighthouse at dusk"


def test_promoted_values_of_older_files_skip_a_seed_control():
    """One value per promoted input; files of mid 2025 also kept the seed's control_after_generate value after it."""
    lg = copy.deepcopy(NESTED)
    sg = _sg(lg)
    sg["inputs"].append({"id": "steps-in", "name": "steps", "type": "INT", "linkIds": [17], "localized_name": "steps", "pos": [0, 0]})
    sg["links"].append(_link(17, -10, 4, 31, 5, "INT"))
    sg["nodes"][1]["inputs"].append({"localized_name": "steps", "name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 17})
    lg["nodes"][2]["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": None})
    for values in ([7, "fixed", 33], [7, 33]):
        lg["nodes"][2]["widgets_values"] = values
        prompt, _, _ = litegraph_to_prompt(lg, Registry.default())
        assert (prompt["20:31"]["inputs"]["seed"], prompt["20:31"]["inputs"]["steps"]) == (7, 33), values


# "Invert": an ImageInvert between a LoadImage and a SaveImage.
INVERT_DEF = _subgraph(INVERT, "Invert", [("image", "IMAGE", [1])], [("IMAGE", "IMAGE", [2])], [
    _node(3, "ImageInvert", (0, 0), inputs=[("image", "IMAGE", 1)], outputs=[("IMAGE", "IMAGE", [2])]),
], [_link(1, -10, 0, 3, 0, "IMAGE"), _link(2, 3, 0, -20, 0, "IMAGE")])


def _invert_workflow(mode=0, inner_mode=0):
    definition = copy.deepcopy(INVERT_DEF)
    definition["nodes"][0]["mode"] = inner_mode
    return {"nodes": [
        _node(1, "LoadImage", (0, 0), outputs=[("IMAGE", "IMAGE", [1]), ("MASK", "MASK", [])], widgets=["example.png", "image"]),
        _node(2, INVERT, (300, 0), mode=mode, inputs=[("image", "IMAGE", 1)], outputs=[("IMAGE", "IMAGE", [2])]),
        _node(4, "SaveImage", (600, 0), inputs=[("images", "IMAGE", 2)], widgets=["inverted"]),
    ], "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 4, 0, "IMAGE"]], "definitions": {"subgraphs": [definition]}, "version": 0.4}


def test_bypassed_and_muted_instances():
    prompt, _, warnings = litegraph_to_prompt(_invert_workflow(), Registry.default())
    assert prompt["2:3"] == {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}} and prompt["4"]["inputs"]["images"] == ["2:3", 0]
    # bypassed: left out with what is inside, its output passed through from its input of the same type
    prompt, _, warnings = litegraph_to_prompt(_invert_workflow(mode=4), Registry.default())
    assert set(prompt) == {"1", "4"} and prompt["4"]["inputs"]["images"] == ["1", 0]
    assert any("node 2 (subgraph 'Invert') is bypassed: left out with the nodes inside it" in w for w in warnings), warnings
    wf, _ = litegraph_to_workflow(_invert_workflow(mode=4), Registry.default())
    assert wf["nodes"]["4"]["inputs"]["images"] == {"node": "1", "output": "image"}
    # muted: left out, and so is the input linked to it, as ComfyUI does
    prompt, _, warnings = litegraph_to_prompt(_invert_workflow(mode=2), Registry.default())
    assert set(prompt) == {"1", "4"} and prompt["4"]["inputs"] == {"filename_prefix": "inverted"}
    assert any("node 2 (subgraph 'Invert') is muted in ComfyUI: left out with the nodes inside it" in w for w in warnings)
    assert any("node 4: input 'images' links to node 2 (subgraph 'Invert'), which is muted" in w for w in warnings)
    # a bypassed node inside: as any bypassed node (kept as our bypass, or spliced)
    prompt, _, _ = litegraph_to_prompt(_invert_workflow(inner_mode=4), Registry.default())
    assert prompt["2:3"]["_meta"] == {"mode": "bypass"}
    prompt, _, _ = litegraph_to_prompt(_invert_workflow(inner_mode=4), Registry.default(), bypass="splice")
    assert set(prompt) == {"1", "4"} and prompt["4"]["inputs"]["images"] == ["1", 0]


# A legacy group node: a KSampler and a VAEDecode, the KSampler's seed converted to an input.
GROUP = {
    "nodes": [
        _node(0, "KSampler", (900, 200), inputs=[("model", "MODEL", None), ("positive", "CONDITIONING", None),
                                                 ("negative", "CONDITIONING", None), ("latent_image", "LATENT", None),
                                                 ("seed", "INT", None, True)],
              outputs=[("LATENT", "LATENT", [])], widgets=[5, "fixed", 20, 8, "euler", "normal", 1]),
        _node(1, "VAEDecode", (1250, 200), inputs=[("samples", "LATENT", None), ("vae", "VAE", None)], outputs=[("IMAGE", "IMAGE", [])]),
    ],
    "links": [[None, 0, 0, 0, 4, "MODEL"], [None, 0, 0, 1, 6, "CONDITIONING"], [None, 0, 0, 2, 7, "CONDITIONING"],
              [None, 0, 0, 3, 5, "LATENT"], [0, 0, 1, 0, 3, "LATENT"], [None, 2, 1, 1, 4, "VAE"]],
    "external": [],
}
GROUP_WORKFLOW = {
    "nodes": [
        _node(4, "CheckpointLoaderSimple", (0, 0), outputs=[("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [3, 5]), ("VAE", "VAE", [8])],
              widgets=["v1-5-pruned-emaonly.safetensors"]),
        _node(6, "CLIPTextEncode", (400, 0), inputs=[("clip", "CLIP", 3)], outputs=[("CONDITIONING", "CONDITIONING", [4])],
              widgets=["a red fox"]),
        _node(7, "CLIPTextEncode", (400, 200), inputs=[("clip", "CLIP", 5)], outputs=[("CONDITIONING", "CONDITIONING", [6])],
              widgets=["blurry"]),
        _node(5, "EmptyLatentImage", (400, 400), outputs=[("LATENT", "LATENT", [2])], widgets=[512, 512, 1]),
        _node(12, "workflow>Sample and decode", (800, 100),
              inputs=[("model", "MODEL", 1), ("positive", "CONDITIONING", 4), ("negative", "CONDITIONING", 6),
                      ("latent_image", "LATENT", 2), ("vae", "VAE", 8), ("seed", "INT", None, True)],
              outputs=[("IMAGE", "IMAGE", [9])], widgets=[30, 6.5, "dpmpp_2m", "karras", 0.9, 123, "fixed"]),
        _node(9, "SaveImage", (1200, 100), inputs=[("images", "IMAGE", 9)], widgets=["grouped"]),
    ],
    "links": [[1, 4, 0, 12, 0, "MODEL"], [2, 5, 0, 12, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"], [4, 6, 0, 12, 1, "CONDITIONING"],
              [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 12, 2, "CONDITIONING"], [8, 4, 2, 12, 4, "VAE"], [9, 12, 0, 9, 0, "IMAGE"]],
    "extra": {"groupNodes": {"Sample and decode": GROUP}}, "version": 0.4,
}


def test_a_group_node_is_inlined(settings):
    """Its inputs: the sockets left unlinked inside (KSampler's four, VAEDecode's vae), then the converted seed; its
    output: VAEDecode's IMAGE (KSampler's LATENT is used inside); its widgets_values: KSampler's widgets left, then
    the converted seed with its control."""
    prompt, positions, warnings = litegraph_to_prompt(GROUP_WORKFLOW, Registry.default())
    assert prompt["12:0"] == {"class_type": "KSampler", "inputs": {
        "seed": 123, "steps": 30, "cfg": 6.5, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 0.9,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
    assert prompt["12:1"] == {"class_type": "VAEDecode", "inputs": {"samples": ["12:0", 0], "vae": ["4", 2]}}
    assert prompt["9"]["inputs"]["images"] == ["12:1", 0] and "12" not in prompt and warnings == []
    assert positions["12:0"] == [800, 100] and positions["12:1"] == [1150, 100]
    # the seed linked on the instance: the link goes in
    lg = copy.deepcopy(GROUP_WORKFLOW)
    lg["nodes"].append(_node(13, "PrimitiveInt", (0, 600), outputs=[("INT", "INT", [10])], widgets=[77, "fixed"]))
    lg["nodes"][4]["inputs"][5]["link"] = 10
    lg["links"].append([10, 13, 0, 12, 5, "INT"])
    prompt, _, _ = litegraph_to_prompt(lg, Registry.default())
    assert prompt["12:0"]["inputs"]["seed"] == ["13", 0]
    wf, _ = litegraph_to_workflow(GROUP_WORKFLOW, Registry.default())
    assert wf["nodes"]["9"]["inputs"]["images"] == {"node": "12:1", "output": "image"}
    _valid(wf, settings)
    # muted: left out with its inner nodes, as a muted subgraph instance
    lg = copy.deepcopy(GROUP_WORKFLOW)
    lg["nodes"][4]["mode"] = 2
    prompt, _, warnings = litegraph_to_prompt(lg, Registry.default())
    assert set(prompt) == {"4", "5", "6", "7", "9"} and prompt["9"]["inputs"] == {"filename_prefix": "grouped"}
    assert any("node 12 (group node 'workflow>Sample and decode') is muted" in w for w in warnings), warnings


def _with(workflow, change):
    lg = copy.deepcopy(workflow)
    change(lg)
    return lg


def _sg(lg, i=0):
    return lg["definitions"]["subgraphs"][i]


def _self_nested(lg):
    sg = _sg(lg)
    sg["id"], sg["name"] = LOOP, "Loop"
    lg["nodes"][1]["type"] = LOOP
    sg["nodes"].append(_node(8, LOOP, (0, 0)))


@pytest.mark.parametrize("change, node, says", [
    (lambda lg: lg.pop("definitions"), "10", f"its type '{PROMPTS}' is a subgraph id, but the workflow defines no such subgraph"),
    (lambda lg: _sg(lg)["links"].__setitem__(0, _link(1, 99, 0, 6, 0, "CLIP")), "10:6",
     "input 'clip' comes through link 1 from node 99, which subgraph 'Prompts' (node 10) does not have"),
    (lambda lg: _sg(lg)["nodes"][0]["inputs"][0].__setitem__("link", 77), "10:6",
     "input 'clip' names link 77, which subgraph 'Prompts' (node 10) does not list"),
    (lambda lg: _sg(lg).pop("nodes"), "10", "this is the ComfyUI subgraph 'Prompts', whose definition has no 'nodes' list"),
    (_self_nested, "10:8", "subgraph 'Loop' contains itself ('Loop' > 'Loop')"),
    (lambda lg: _sg(lg)["nodes"][0].__setitem__("type", "FancyTextEncode"), "10:6", "'FancyTextEncode' is not supported"),
])
def test_subgraph_errors_name_the_node(change, node, says):
    with pytest.raises(ComfyTranslationError, match=re.escape(says)) as info:
        litegraph_to_prompt(_with(TXT2IMG, change), Registry.default())
    assert info.value.node_id == node and str(info.value).startswith(f"node {node}: ")


def test_a_subgraph_holding_itself_deeper_down_is_refused():
    lg = copy.deepcopy(NESTED)
    _sg(lg, 1)["nodes"].append(_node(9, GENERATE, (0, 0)))  # "Prompts" holds "Generate", which holds "Prompts"
    with pytest.raises(ComfyTranslationError, match="subgraph 'Generate' contains itself \\('Generate' > 'Prompts' > 'Generate'\\)") as info:
        litegraph_to_prompt(lg, Registry.default())
    assert info.value.node_id == "20:30:9"


@pytest.mark.parametrize("change, says", [
    (lambda lg: lg["extra"].pop("groupNodes"), "this is the ComfyUI group node 'workflow>Sample and decode', which cannot be "
                                               "imported: its definition is missing"),
    (lambda lg: lg["extra"]["groupNodes"]["Sample and decode"]["nodes"].append(_node(2, "PrimitiveNode", (0, 0))),
     "which holds a PrimitiveNode (its node 2) and cannot be imported"),
    (lambda lg: lg["extra"]["groupNodes"]["Sample and decode"]["nodes"][1].__setitem__("type", "FancyDecode"),
     "its node 1 in group node 'workflow>Sample and decode': ComfyUI class_type 'FancyDecode' is not supported"),
])
def test_group_node_errors_name_the_node(change, says):
    with pytest.raises(ComfyTranslationError, match=re.escape(says)) as info:
        litegraph_to_prompt(_with(GROUP_WORKFLOW, change), Registry.default())
    assert info.value.node_id == "12"


def test_an_output_nothing_inside_feeds_is_left_unlinked():
    lg = _with(TXT2IMG, lambda lg: _sg(lg)["links"].pop())  # the negative output: nothing feeds it now
    prompt, _, warnings = litegraph_to_prompt(lg, Registry.default())
    assert "negative" not in prompt["3"]["inputs"]
    assert any("node 3: input 'negative' links to output 1 (negative) of node 10 (subgraph 'Prompts'), which nothing inside "
               "the subgraph feeds; left unlinked" in w for w in warnings), warnings
