"""ComfyUI-compatible routes with ComfyUI's shapes, and a ComfyUI client script run unchanged."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
import uuid

import aiohttp
import pytest

from . import miniws as websocket  # the script below is ComfyUI's example, with this one import changed
from .conftest import read_until
from .flows import comfy_count, comfy_image

pytestmark = pytest.mark.asyncio


def comfy_script(server_address: str, prompt: dict) -> tuple[str, dict, dict]:
    """ComfyUI's websockets_api_example.py, as written for ComfyUI (urllib + a websocket client)."""
    client_id = str(uuid.uuid4())

    def queue_prompt(prompt, prompt_id):
        p = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        data = json.dumps(p).encode("utf-8")
        req = urllib.request.Request("http://{}/prompt".format(server_address), data=data)
        urllib.request.urlopen(req).read()

    def get_image(filename, subfolder, folder_type):
        data = {"filename": filename, "subfolder": subfolder, "type": folder_type}
        url_values = urllib.parse.urlencode(data)
        with urllib.request.urlopen("http://{}/view?{}".format(server_address, url_values)) as response:
            return response.read()

    def get_history(prompt_id):
        with urllib.request.urlopen("http://{}/history/{}".format(server_address, prompt_id)) as response:
            return json.loads(response.read())

    def get_images(ws, prompt):
        prompt_id = str(uuid.uuid4())
        queue_prompt(prompt, prompt_id)
        output_images = {}
        while True:
            out = ws.recv()
            if isinstance(out, str):
                message = json.loads(out)
                if message["type"] == "executing":
                    data = message["data"]
                    if data["node"] is None and data["prompt_id"] == prompt_id:
                        break  # Execution is done
            else:
                continue  # previews are binary data
        history = get_history(prompt_id)[prompt_id]
        for node_id in history["outputs"]:
            node_output = history["outputs"][node_id]
            images_output = []
            if "images" in node_output:
                for image in node_output["images"]:
                    image_data = get_image(image["filename"], image["subfolder"], image["type"])
                    images_output.append(image_data)
            output_images[node_id] = images_output
        return prompt_id, output_images, history

    ws = websocket.WebSocket()
    ws.connect("ws://{}/ws?clientId={}".format(server_address, client_id))
    try:
        return get_images(ws, prompt)
    finally:
        ws.close()


async def test_comfyui_script_runs_unchanged(live):
    address = live.base.removeprefix("http://")
    pid, images, history = await asyncio.to_thread(comfy_script, address, comfy_image(48, 32, "script"))
    assert list(images) == ["12"] and len(images["12"]) == 1 and images["12"][0][:8] == b"\x89PNG\r\n\x1a\n"
    assert history["status"] == {"status_str": "success", "completed": True, "messages": history["status"]["messages"]}
    assert history["prompt"][1] == pid and history["prompt"][4] == ["12"]
    saved = list(live.dirs.output.glob("script_*.png"))
    assert len(saved) == 1 and saved[0].read_bytes() == images["12"][0]
    from PIL import Image

    with Image.open(saved[0]) as img:
        assert img.size == (48, 32) and json.loads(img.text["prompt"])["11"]["class_type"] == "ImageScale"

    # the same prompt again: every node reported cached, nothing runs
    pid2, images2, history2 = await asyncio.to_thread(comfy_script, address, comfy_image(48, 32, "script"))
    cached = next(m for t, m in history2["status"]["messages"] if t == "execution_cached")
    assert sorted(cached["nodes"]) == ["10", "11", "12"] and pid2 != pid
    assert images2["12"][0] == images["12"][0]


async def test_prompt_shapes_and_errors(live):
    status, body = await live.post("/prompt", {"prompt": comfy_count(1), "prompt_id": "mine-1", "client_id": "c1",
                                               "extra_data": {"extra_pnginfo": {"x": 1}}})
    assert status == 200 and body == {"prompt_id": "mine-1", "number": body["number"], "node_errors": {}}
    assert isinstance(body["number"], int)
    status, body = await live.post("/api/prompt", {"prompt": comfy_count(1), "prompt_id": "mine-1"})
    assert status == 409

    bad = comfy_count(1)
    bad["1"]["inputs"]["steps"] = 0
    status, body = await live.post("/prompt", {"prompt": bad})
    assert status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation" and body["error"]["message"]
    err = body["node_errors"]["1"]
    assert err["class_type"] == "SlowCount" and err["dependent_outputs"] == ["2"]
    assert err["errors"][0]["type"] == "out_of_range" and err["errors"][0]["extra_info"] == {"input_name": "steps"}

    scale = comfy_image()
    scale["11"]["inputs"]["width"] = "wide"
    status, body = await live.post("/prompt", {"prompt": scale})
    assert status == 400 and body["node_errors"]["11"]["errors"][0]["extra_info"]["input_name"] == "width"
    assert body["node_errors"]["11"]["class_type"] == "ImageScale"

    status, body = await live.post("/prompt", {"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})
    assert status == 400 and body["error"]["type"] == "invalid_prompt" and "NoSuchNode" in body["error"]["message"]
    assert body["error"]["details"] == "Node ID '#1'" and body["node_errors"] == {}
    status, body = await live.post("/prompt", {"prompt": {"1": {"inputs": {}}}})
    assert status == 400 and body["error"]["type"] == "invalid_prompt"
    status, body = await live.post("/prompt", {"prompt": {"1": {"class_type": "SlowCount", "inputs": {}}}})
    assert status == 400 and body["error"]["type"] == "prompt_no_outputs" and body["node_errors"] == {}
    status, body = await live.post("/prompt", {"client_id": "x"})
    assert status == 400 and body["error"]["type"] == "no_prompt"
    status, body = await live.post("/prompt", {"prompt": "not an object"})
    assert status == 400 and body["error"]["type"] == "invalid_request"
    status, body = await live.request("POST", "/prompt", data=b"{nope")
    assert status == 400 and body["error"]["type"] == "invalid_json" and "node_errors" in body
    status, body = await live.get("/prompt")
    assert status == 200 and "queue_remaining" in body["exec_info"]


async def test_queue_interrupt_and_history(live):
    ws = await live.ws("q", path="/ws")
    status, body = await live.post("/prompt", {"prompt": comfy_count(0, steps=3000, delay=0.01), "client_id": "q"})
    running = body["prompt_id"]
    await read_until(ws, lambda m: m["type"] == "executing" and m["data"]["node"] == "1")
    pending = [(await live.post("/prompt", {"prompt": comfy_count(i)}))[1]["prompt_id"] for i in (1, 2, 3)]
    status, q = await live.get("/queue")
    assert [item[1] for item in q["queue_running"]] == [running]
    assert [item[1] for item in q["queue_pending"]] == pending
    number, pid, prompt, extra, outputs = q["queue_running"][0]
    assert prompt["1"]["class_type"] == "SlowCount" and extra == {"client_id": "q"} and outputs == ["2"]
    status, body = await live.post("/queue", {"delete": [pending[0]]})
    assert status == 200
    status, q = await live.get("/api/queue")
    assert [item[1] for item in q["queue_pending"]] == pending[1:]
    await live.post("/queue", {"clear": True})
    assert (await live.get("/queue"))[1]["queue_pending"] == []
    status, _ = await live.post("/interrupt", {"prompt_id": "not-running"})
    assert (await live.get("/queue"))[1]["queue_running"] != []
    await live.post("/api/interrupt", {"prompt_id": running})
    await read_until(ws, lambda m: m["type"] == "executing" and m["data"]["node"] is None)
    await ws.close()

    status, hist = await live.get(f"/history/{running}")
    entry = hist[running]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert (await live.get("/history/unknown"))[1] == {}
    done = (await live.post("/prompt", {"prompt": comfy_count(8)}))[1]["prompt_id"]
    await live.wait_run(done)
    status, hist = await live.get("/history")
    assert list(hist) == [running, done], "oldest first, cancelled runs left out"
    assert hist[done]["outputs"] == {"2": {"images": [], "text": ["value=9"]}}
    status, hist = await live.get("/history?max_items=1")
    assert list(hist) == [done]
    await live.post("/history", {"delete": [running]})
    assert list((await live.get("/api/history"))[1]) == [done]
    await live.post("/history", {"clear": True})
    assert (await live.get("/history"))[1] == {}


async def test_object_info_shape(live):
    status, info = await live.get("/object_info")
    assert status == 200 and {"LoadImage", "SaveImage", "SlowCount", "ImageResize"} <= set(info)
    resize = info["ImageResize"]
    assert resize["input"]["required"]["image"] == ["IMAGE"]
    assert resize["input"]["required"]["width"] == ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}]
    assert resize["input"]["required"]["method"][0] == ["nearest", "bilinear", "bicubic", "area", "lanczos"]
    assert resize["input"]["required"]["method"][1] == {"default": "bilinear"}
    assert resize["output"] == ["IMAGE"] and resize["output_name"] == ["image"] and resize["output_is_list"] == [False]
    assert resize["category"] == "image/transform" and resize["output_node"] is False and resize["name"] == "ImageResize"
    assert info["SaveImage"]["output_node"] is True and info["SaveImage"]["output"] == []
    load = info["LoadImage"]["input"]["required"]["image"]
    assert load[0] == ["example.png"] and load[1]["image_upload"] is True
    blur = info["ImageBlur"]["input"]["required"]["sigma"]
    assert blur[0] == "FLOAT" and blur[1]["min"] == 0.1 and blur[1]["step"] == 0.1
    assert info["ImageComposite"]["input"]["optional"]["mask"] == ["MASK"]
    assert info["Seed"]["input"]["required"]["seed"][1]["control_after_generate"] is True
    assert info["PrimitiveString"]["input"]["required"]["value"] == ["STRING", {"default": "", "multiline": True}]
    assert info["PrimitiveBoolean"]["input"]["required"]["value"] == ["BOOLEAN", {"default": False}]
    status, one = await live.get("/object_info/ImageResize")
    assert one == {"ImageResize": resize}
    assert (await live.get("/api/object_info/Nope"))[1] == {}


async def test_files_models_system(live):
    png = (live.dirs.input / "example.png").read_bytes()
    form = aiohttp.FormData()
    form.add_field("image", png, filename="up.png", content_type="image/png")
    form.add_field("type", "input")
    form.add_field("overwrite", "true")
    status, body = await live.request("POST", "/upload/image", data=form)
    assert (status, body) == (200, {"name": "up.png", "subfolder": "", "type": "input"})
    async with live.session.get(live.base + "/view?filename=up.png&type=input") as r:
        assert r.status == 200 and await r.read() == png and r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Content-Type"] == "image/png"
    status, _ = await live.get("/api/view?filename=up.png&type=input")
    assert status == 200
    status, stats = await live.get("/system_stats")
    assert status == 200 and stats["system"]["python_version"] and stats["devices"]
    assert {"ram_total", "ram_free", "pytorch_version", "os"} <= set(stats["system"])
    status, folders = await live.get("/models")
    assert "checkpoints" in folders and "loras" in folders
    (live.dirs.models / "loras").mkdir()
    (live.dirs.models / "loras" / "a.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    assert (await live.get("/models/loras"))[1] == ["a.safetensors"]
    assert (await live.get("/api/models/nope"))[0] == 404
    (live.dirs.models / "embeddings").mkdir()
    (live.dirs.models / "embeddings" / "neg.pt").write_bytes(b"x")
    assert (await live.get("/embeddings"))[1] == ["neg"]


async def test_object_info_describes_comfy_classes_in_comfy_terms():
    """Clients read /object_info for ComfyUI's own classes (sampler lists, checkpoint lists)."""
    from engine.api.object_info import object_info
    from engine.registry import Registry
    from engine.settings import Settings

    info = object_info(Registry.default().catalog_json(Settings()))
    ks = info["KSampler"]["input"]["required"]
    assert "euler_ancestral" in ks["sampler_name"][0] and "karras" in ks["scheduler"][0]
    assert {"seed", "model", "latent_image", "positive"} <= set(ks) | set(info["KSampler"]["input"]["optional"])
    assert "noise_seed" in info["KSamplerAdvanced"]["input"]["required"]
    ck = info["CheckpointLoaderSimple"]
    assert "loom-shapes" in ck["input"]["required"]["ckpt_name"][0]
    assert ck["output"] == ["MODEL", "CLIP", "VAE"]
    assert info["VAEDecode"]["name"] == "VAEDecode"  # our own node keeps its entry
    # widgets in ComfyUI's order (a ComfyUI frontend saves widgets_values in the order it is given)
    from engine.compat.comfy import COMFY_CLASSES

    for name in ("KSampler", "KSamplerAdvanced", "CLIPTextEncodeSDXL", "LatentUpscale"):
        listed = [n for part in ("required", "optional") for n in info[name]["input_order"][part]]
        widgets = [w for w in COMFY_CLASSES[name].widgets if w in listed]
        assert [n for n in listed if n in widgets] == widgets, (name, listed)
    # exactly the class's widgets: ours that it lacks (set by the translation) are not offered to a ComfyUI frontend
    listed = lambda name: [n for part in ("required", "optional") for n in info[name]["input_order"][part]]  # noqa: E731
    assert sorted(listed("VAEDecodeTiled")) == ["samples", "tile_size", "vae"]
    assert listed("ImagePadForOutpaint") == ["image", "left", "top", "right", "bottom", "feathering"]
    assert "guidance_rescale" not in listed("KSampler") and "eta" not in listed("KSampler")
