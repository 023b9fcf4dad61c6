"""Every native route over real HTTP: catalog, validation, runs, queue operations, history, outputs
previews, the workflow library, models, system stats, OpenAPI and the editor page."""

from __future__ import annotations

import json
import struct

import pytest

from .flows import count_flow, fail_flow, image_flow

pytestmark = pytest.mark.asyncio


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


async def test_catalog_schema_and_validate(live):
    status, cat = await live.get("/api/v1/nodes")
    assert status == 200 and "SlowCount" in cat["nodes"] and "LoadImage" in cat["nodes"]
    assert any(t["name"] == "IMAGE" for t in cat["types"])
    status, schema = await live.get("/api/v1/workflow-schema")
    assert status == 200 and "nodes" in schema["properties"]
    status, body = await live.post("/api/v1/validate", {"workflow": count_flow(1)})
    assert (status, body) == (200, {"valid": True, "errors": []})
    bad = count_flow(1)
    bad["nodes"]["show"]["inputs"]["value"] = {"node": "nowhere", "output": "int"}
    status, body = await live.post("/api/v1/validate", {"workflow": bad})
    assert status == 200 and body["valid"] is False
    assert body["errors"][0] == {"node_id": "show", "input": "value", "code": "link_unknown_node",
                                 "message": body["errors"][0]["message"]}


async def test_run_record_and_history(live):
    run_id = await live.submit(count_flow(4), client_id="me", run_id="my-run-1")
    assert run_id == "my-run-1"
    rec = await live.wait_run(run_id)
    assert rec["status"] == "success" and rec["client_id"] == "me" and rec["workflow"]["nodes"]["count"]["type"] == "SlowCount"
    assert rec["nodes"]["count"]["status"] == "success" and rec["created"] <= rec["started"] <= rec["finished"]
    assert rec["outputs"] == {"show": {"images": [], "text": ["value=5"]}} and rec["error"] is None
    status, body = await live.post("/api/v1/runs", {"workflow": count_flow(9), "run_id": "my-run-1"})
    assert status == 409 and body["error"]["type"] == "duplicate_run_id"
    failed = await live.submit(fail_flow())
    await live.wait_run(failed)
    status, page = await live.get("/api/v1/history?limit=1")
    assert status == 200 and page["total"] == 2 and [i["run_id"] for i in page["items"]] == [failed]
    assert "workflow" not in page["items"][0]
    status, page = await live.get("/api/v1/history?offset=1&limit=5")
    assert [i["run_id"] for i in page["items"]] == ["my-run-1"]
    status, page = await live.get("/api/v1/history?status=error")
    assert [i["run_id"] for i in page["items"]] == [failed]
    assert (await live.request("DELETE", f"/api/v1/history/{failed}"))[0] == 200
    assert (await live.request("DELETE", f"/api/v1/history/{failed}"))[0] == 404
    assert (await live.get(f"/api/v1/runs/{failed}"))[0] == 404
    status, body = await live.request("DELETE", "/api/v1/history")
    assert body == {"deleted": 1}
    assert (await live.get("/api/v1/runs/unknown"))[0] == 404


async def test_queue_cancel_move_clear(live):
    blocker = await live.submit(count_flow(0, steps=3000, delay=0.01))
    await live.wait_run(blocker, states=("running",))
    ids = [await live.submit(count_flow(i)) for i in range(1, 5)]
    status, q = await live.get("/api/v1/queue")
    assert [r["run_id"] for r in q["running"]] == [blocker]
    assert [r["run_id"] for r in q["pending"]] == ids and q["pending"][0]["node_count"] == 2
    assert q["pending"][0]["status"] == "queued"
    status, q = await live.post(f"/api/v1/queue/{ids[3]}/move", {"position": 0})
    assert status == 200 and [r["run_id"] for r in q["pending"]] == [ids[3], ids[0], ids[1], ids[2]]
    status, q = await live.post(f"/api/v1/queue/{ids[3]}/move", {"position": 99})
    assert [r["run_id"] for r in q["pending"]] == [ids[0], ids[1], ids[2], ids[3]]
    assert (await live.post(f"/api/v1/queue/{blocker}/move", {"position": 0}))[0] == 409
    assert (await live.post("/api/v1/queue/nope/move", {"position": 0}))[0] == 404
    assert (await live.post(f"/api/v1/queue/{ids[0]}/move", {"position": -1}))[0] == 400
    status, body = await live.request("DELETE", f"/api/v1/queue/{ids[1]}")
    assert (status, body) == (200, {"cancelled": True})
    assert (await live.request("DELETE", f"/api/v1/queue/{ids[1]}"))[0] == 409
    assert (await live.request("DELETE", f"/api/v1/queue/{blocker}"))[0] == 409
    assert (await live.request("DELETE", "/api/v1/queue/nope"))[0] == 404
    status, body = await live.request("DELETE", "/api/v1/queue")
    assert body == {"cancelled": 3}
    assert (await live.get(f"/api/v1/runs/{ids[2]}"))[1]["status"] == "cancelled"
    status, body = await live.post("/api/v1/interrupt")
    assert body == {"interrupted": True, "run_id": blocker}
    assert (await live.wait_run(blocker))["status"] == "interrupted"
    status, q = await live.get("/api/v1/queue")
    assert q == {"running": [], "pending": []}


async def test_front_of_queue(live):
    blocker = await live.submit(count_flow(0, steps=3000, delay=0.01))
    await live.wait_run(blocker, states=("running",))
    a = await live.submit(count_flow(1))
    b = await live.submit(count_flow(2), front=True)
    _, q = await live.get("/api/v1/queue")
    assert [r["run_id"] for r in q["pending"]] == [b, a]
    await live.post("/api/v1/interrupt")
    await live.wait_run(a)
    assert (await live.get(f"/api/v1/runs/{b}"))[1]["finished"] <= (await live.get(f"/api/v1/runs/{a}"))[1]["started"]


async def test_cached_output_previews(live):
    run_id = await live.submit(image_flow(40, 30))
    rec = await live.wait_run(run_id)
    assert rec["status"] == "success", rec
    status, info = await live.get(f"/api/v1/runs/{run_id}/nodes/resize")
    assert status == 200 and info["available"] is True
    out = info["outputs"]["image"]
    assert out["type"] == "IMAGE" and out["kind"] == "image"
    assert out["summary"]["shape"] == [1, 30, 40, 3] and out["summary"]["dtype"] == "float32"
    assert out["summary"]["device"] == "cpu" and 0.0 <= out["summary"]["min"] <= out["summary"]["mean"] <= out["summary"]["max"] <= 1.0
    assert out["value"] is None and out["preview_url"].endswith("/nodes/resize/outputs/image/preview")
    status, png = await live.get(out["preview_url"] + "?size=16")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert max(width, height) == 16
    status, body = await live.get(out["preview_url"] + "?index=3")
    assert status == 404 and body["error"]["type"] == "no_preview"
    status, info = await live.get(f"/api/v1/runs/{run_id}/nodes/load")
    assert info["outputs"]["mask"]["kind"] == "image" and info["outputs"]["mask"]["type"] == "MASK"
    assert (await live.get(info["outputs"]["mask"]["preview_url"]))[0] == 200
    assert (await live.get(f"/api/v1/runs/{run_id}/nodes/nope"))[0] == 404
    assert (await live.get(f"/api/v1/runs/{run_id}/nodes/resize/outputs/nope/preview"))[0] == 404
    assert (await live.get(f"/api/v1/runs/{run_id}/nodes/resize/outputs/image/preview?size=1"))[0] == 400

    value_run = await live.submit(count_flow(11))
    await live.wait_run(value_run)
    status, info = await live.get(f"/api/v1/runs/{value_run}/nodes/count")
    assert info["outputs"]["int"] == {"type": "INT", "kind": "value", "summary": None, "value": 12, "preview_url": None}
    live.loom.executor.cache.clear()
    status, info = await live.get(f"/api/v1/runs/{value_run}/nodes/count")
    assert info == {"node_id": "count", "available": False, "outputs": {}}


async def test_outputs_of_a_running_run(live):
    run_id = await live.submit(count_flow(2, steps=1))
    await live.wait_run(run_id)
    slow = count_flow(2, steps=1)
    slow["nodes"]["wait"] = {"type": "SlowCount", "inputs": {"steps": 3000, "delay": 0.01}}
    slow["nodes"]["show2"] = {"type": "ShowValue", "inputs": {"value": {"node": "wait", "output": "int"}}}
    running = await live.submit(slow)
    await live.wait_run(running, states=("running",))
    status, info = await live.get(f"/api/v1/runs/{running}/nodes/count")
    assert info["available"] is True and info["outputs"]["int"]["value"] == 3
    await live.post("/api/v1/interrupt", {"run_id": running})
    await live.wait_run(running)


async def test_upload_and_view(live):
    png = (live.dirs.input / "example.png").read_bytes()
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("image", png, filename="pic.png", content_type="image/png")
    form.add_field("subfolder", "uploads")
    status, body = await live.request("POST", "/api/v1/upload", data=form)
    assert (status, body) == (200, {"name": "pic.png", "subfolder": "uploads", "type": "input"})
    form = aiohttp.FormData()
    form.add_field("image", png_bytes((9, 9, 9)), filename="pic.png", content_type="image/png")
    form.add_field("subfolder", "uploads")
    form.add_field("kind", "mask")
    status, body = await live.request("POST", "/api/v1/upload", data=form)
    assert body["name"] == "pic (1).png"
    status, data = await live.get("/api/v1/view?filename=pic.png&subfolder=uploads&type=input")
    assert status == 200 and data == png
    status, body = await live.get("/api/v1/view?filename=missing.png")
    assert status == 404 and body["error"]["type"] == "not_found"


async def test_workflow_library(live, tmp_path):
    status, body = await live.get("/api/v1/workflows")
    builtin = [i for i in body["items"] if i["source"] == "builtin"]
    assert any(i["path"] == "image-basics.json" for i in builtin)
    status, wf = await live.get("/api/v1/workflows/image-basics.json")
    assert status == 200 and wf["format"] == "latentloom.workflow"
    status, body = await live.request("PUT", "/api/v1/workflows/mine/first.json", json=count_flow(3))
    assert (status, body) == (200, {"path": "mine/first.json"})
    assert (live.dirs.user / "workflows" / "mine" / "first.json").is_file()
    status, body = await live.get("/api/v1/workflows")
    assert {"path": "mine/first.json", "source": "user"}.items() <= next(i for i in body["items"] if i["source"] == "user").items()
    status, wf = await live.get("/api/v1/workflows/mine/first.json")
    assert wf == count_flow(3)
    status, body = await live.post("/api/v1/workflows/mine/first.json/rename", {"to": "second.json"})
    assert (status, body) == (200, {"path": "second.json"})
    assert (await live.get("/api/v1/workflows/mine/first.json"))[0] == 404
    assert (await live.post("/api/v1/workflows/image-basics.json/rename", {"to": "x.json"}))[0] == 403
    assert (await live.request("DELETE", "/api/v1/workflows/image-basics.json"))[0] == 403
    status, body = await live.request("PUT", "/api/v1/workflows/bad.json", json={"nodes": {}})
    assert status == 400 and body["error"]["type"] == "invalid_workflow"
    status, body = await live.request("PUT", "/api/v1/workflows/notes.txt", json=count_flow(3))
    assert status == 400 and body["error"]["type"] == "invalid_name"
    assert (await live.request("PUT", "/api/v1/workflows/second.json", data=b"{not json"))[0] == 400
    assert (await live.request("DELETE", "/api/v1/workflows/second.json"))[1] == {"path": "second.json"}
    assert (await live.request("DELETE", "/api/v1/workflows/second.json"))[0] == 404
    status, _ = await live.request("PUT", "/api/v1/workflows/image-basics.json", json=count_flow(1))
    status, wf = await live.get("/api/v1/workflows/image-basics.json")
    assert wf == count_flow(1), "the user's copy shadows the built-in one"
    status, wf = await live.get("/api/v1/workflows/image-basics.json?source=builtin")
    assert wf["nodes"]["load"]["type"] == "LoadImage"


def _safetensors(path, metadata: dict) -> None:
    header = {"__metadata__": metadata, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)


async def test_models_listing(live):
    models = live.dirs.models
    (models / "loras").mkdir()
    _safetensors(models / "loras" / "style.safetensors", {"ss_base_model": "sd15", "note": "x" * 5000})
    (models / "loras" / "nested").mkdir()
    (models / "loras" / "nested" / "old.pt").write_bytes(b"not really")
    (models / "loras" / "readme.txt").write_text("ignored")
    (models / "checkpoints" / "tiny-diffusers").mkdir(parents=True)
    (models / "checkpoints" / "tiny-diffusers" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (models / "vae").mkdir()
    (models / "vae" / "broken.safetensors").write_bytes(b"\xff" * 16)
    status, body = await live.get("/api/v1/models/loras")
    assert status == 200
    names = [i["name"] for i in body["items"]]
    assert "style.safetensors" in names and "nested/old.pt" in names and "readme.txt" not in names
    style = next(i for i in body["items"] if i["name"] == "style.safetensors")
    assert style["format"] == "safetensors" and style["metadata"]["metadata"]["ss_base_model"] == "sd15"
    assert style["metadata"]["tensors"] == 1 and len(style["metadata"]["metadata"]["note"]) < 5000
    status, body = await live.get("/api/v1/models")
    ckpts = {i["name"]: i for i in body["folders"]["checkpoints"]}
    assert ckpts["tiny-diffusers"]["format"] == "diffusers"
    assert ckpts["tiny-diffusers"]["metadata"] == {"_class_name": "StableDiffusionPipeline"}
    assert "error" in {i["name"]: i for i in body["folders"]["vae"]}["broken.safetensors"]["metadata"]
    assert set(body["folders"]) == {"checkpoints", "loras", "controlnet", "vae", "embeddings", "clip"}
    assert (await live.get("/api/v1/models/secrets"))[0] == 404


async def test_system_openapi_index(live):
    status, stats = await live.get("/api/v1/system")
    assert status == 200 and stats["versions"]["python"] and stats["versions"]["torch"]
    assert stats["memory"]["ram_total"] > 0 and any(d["type"] == "cpu" for d in stats["devices"])
    status, doc = await live.get("/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    run_op = doc["paths"]["/api/v1/runs"]["post"]
    assert run_op["requestBody"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/SubmitRun"
    assert "workflow" in doc["components"]["schemas"]["SubmitRun"]["properties"]
    assert "/prompt" in doc["paths"] and "/api/prompt" in doc["paths"]
    params = {p["name"] for p in doc["paths"]["/api/v1/history"]["get"]["parameters"]}
    assert {"offset", "limit"} <= params
    assert "{run_id}" in "".join(doc["paths"])
    status, page = await live.get("/")
    assert status == 200 and b"editor is not built" in page


async def test_serves_built_editor(dirs):
    from .conftest import start_live, stop_live

    dist = dirs.root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><div id=root></div>")
    (dist / "assets" / "app.js").write_text("console.log(1)")
    live = await start_live(dirs, web_dir=dist)
    try:
        status, page = await live.get("/")
        assert status == 200 and b"id=root" in page
        async with live.session.get(live.base + "/assets/app.js") as r:
            assert r.status == 200 and "javascript" in r.headers["Content-Type"]
        assert (await live.get("/assets/../../etc/passwd"))[0] == 404
        assert (await live.get("/nothing-here.js"))[0] == 404
    finally:
        await stop_live(live)
