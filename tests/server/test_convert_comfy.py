"""POST /api/v1/convert/comfy: the editor's way to open a ComfyUI API prompt exactly as POST /prompt runs it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.asyncio

PROMPT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png", "upload": "image"}, "_meta": {"title": "source"}},
    "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                 "width": 24, "height": 16, "crop": "disabled"}},
    "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
}


async def test_translates_with_input_renames_and_output_names(live):
    status, body = await live.post("/api/v1/convert/comfy", {"prompt": PROMPT})
    assert status == 200, body
    wf = body["workflow"]
    assert wf["format"] == "latentloom.workflow" and set(wf["nodes"]) == {"1", "2", "3"}
    scale = wf["nodes"]["2"]
    assert scale["inputs"]["image"] == {"node": "1", "output": "image"}  # output index 0 -> its name
    assert scale["inputs"]["method"] == "nearest"  # ComfyUI's upscale_method, renamed and mapped
    assert "upscale_method" not in scale["inputs"]
    assert wf["nodes"]["1"]["ui"]["title"] == "source"
    status, check = await live.post("/api/v1/validate", {"workflow": wf})
    assert status == 200 and check["valid"], check  # it runs as it converts


async def test_refusals_name_the_node(live):
    bad = {**PROMPT, "2": {**PROMPT["2"], "class_type": "NoSuchComfyNode"}}
    status, body = await live.post("/api/v1/convert/comfy", {"prompt": bad})
    assert status == 400 and body["errors"][0]["node_id"] == "2" and "NoSuchComfyNode" in body["error"]["message"]
    status, body = await live.post("/api/v1/convert/comfy", {"prompt": {"1": {"inputs": {}}}})
    assert status == 400 and "class_type" in body["error"]["message"]
    status, body = await live.post("/api/v1/convert/comfy", {"workflow": {}})
    assert status == 400
    status, body = await live.post("/api/v1/convert/comfy", {"prompt": {}})
    assert status == 400 and "no nodes" in body["error"]["message"]


# the same graph as ComfyUI's editor saves it: positions, positional widget values (LoadImage's upload value),
# a Reroute, a bypassed node and a muted one
LITEGRAPH = {
    "last_node_id": 6, "last_link_id": 5,
    "nodes": [
        {"id": 1, "type": "LoadImage", "pos": [10, 20], "mode": 0, "title": "source",
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}, {"name": "MASK", "type": "MASK", "links": None}],
         "widgets_values": ["example.png", "image"]},
        {"id": 4, "type": "Reroute", "pos": [200, 20], "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
         "outputs": [{"name": "", "type": "IMAGE", "links": [2]}]},
        {"id": 2, "type": "ImageScale", "pos": [300, 20], "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 2}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3, 5]}], "widgets_values": ["nearest-exact", 24, 16, "disabled"]},
        {"id": 5, "type": "ImageInvert", "pos": [500, 20], "mode": 4, "inputs": [{"name": "image", "type": "IMAGE", "link": 3}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4]}]},
        {"id": 3, "type": "PreviewImage", "pos": [700, 20], "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 4}]},
        {"id": 6, "type": "SaveImage", "pos": [700, 300], "mode": 2, "inputs": [{"name": "images", "type": "IMAGE", "link": 5}],
         "widgets_values": ["x"]},
    ],
    "links": [[1, 1, 0, 4, 0, "IMAGE"], [2, 4, 0, 2, 0, "IMAGE"], [3, 2, 0, 5, 0, "IMAGE"], [4, 5, 0, 3, 0, "IMAGE"],
              [5, 2, 0, 6, 0, "IMAGE"]],
    "groups": [], "config": {}, "extra": {}, "version": 0.4,
}


async def test_translates_a_litegraph_workflow_like_its_prompt(live):
    status, body = await live.post("/api/v1/convert/comfy", {"workflow": LITEGRAPH})
    assert status == 200, body
    wf = body["workflow"]
    assert wf["format"] == "latentloom.workflow" and set(wf["nodes"]) == {"1", "2", "3", "5"}  # Reroute followed, muted 6 left out
    assert wf["nodes"]["1"]["inputs"] == {"image": "example.png"}  # the upload button's value is no input
    assert wf["nodes"]["1"]["ui"] == {"comfy_class": "LoadImage", "title": "source", "pos": [10, 20]}
    scale = wf["nodes"]["2"]
    assert scale["type"] == "ImageResize" and scale["ui"]["pos"] == [300, 20]
    assert scale["inputs"] == {"image": {"node": "1", "output": "image"}, "method": "nearest", "width": 24, "height": 16, "crop": "disabled"}
    assert wf["nodes"]["5"]["mode"] == "bypass" and wf["nodes"]["3"]["inputs"]["images"] == {"node": "5", "output": "image"}
    assert any("node 6 (SaveImage) is muted" in w for w in body["warnings"]), body["warnings"]
    status, check = await live.post("/api/v1/validate", {"workflow": wf})
    assert status == 200 and check["valid"], check
    # the same translation as the API prompt of that graph
    status, from_prompt = await live.post("/api/v1/convert/comfy", {"prompt": PROMPT})
    assert from_prompt["warnings"] == []
    assert from_prompt["workflow"]["nodes"]["2"]["inputs"] == scale["inputs"]


async def test_litegraph_refusals_name_the_node(live):
    bad = {**LITEGRAPH, "nodes": [{**n, "type": "NoSuchComfyNode"} if n["id"] == 2 else n for n in LITEGRAPH["nodes"]]}
    status, body = await live.post("/api/v1/convert/comfy", {"workflow": bad})
    assert status == 400 and body["errors"][0]["node_id"] == "2" and "NoSuchComfyNode" in body["error"]["message"]
    group = {**LITEGRAPH, "nodes": [{**n, "type": "workflow>upscale"} if n["id"] == 2 else n for n in LITEGRAPH["nodes"]]}
    status, body = await live.post("/api/v1/convert/comfy", {"workflow": group})
    assert status == 400 and body["errors"][0]["node_id"] == "2" and "group node" in body["error"]["message"]
    status, body = await live.post("/api/v1/convert/comfy", {"workflow": {"nodes": []}})
    assert status == 400 and "no nodes" in body["error"]["message"]
    status, body = await live.post("/api/v1/convert/comfy", {"prompt": PROMPT, "workflow": LITEGRAPH})
    assert status == 400 and "either" in body["error"]["message"]
