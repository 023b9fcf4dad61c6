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
