"""Unit tests of the server's parts that need no HTTP: previews, the store, ComfyUI message mapping,
the security helpers, safetensors headers and the OpenAPI generator."""

from __future__ import annotations

import json
import struct
import time

import pytest

from engine import preview as pv
from engine.api import security
from engine.api.comfy_events import ComfyMapper, preview_frame
from engine.api.errors import ApiError
from engine.api.models_dir import read_safetensors_header
from engine.store import RunRow, Store


class FakeLatent:
    def __loom_preview__(self, index: int = 0):
        from PIL import Image

        return [Image.new("RGB", (64, 32), (255, 0, 0)), Image.new("RGB", (64, 32), (0, 255, 0))][index]

    def __loom_summary__(self):
        return {"family": "sd15", "shape": [2, 4, 8, 8]}


class Handle:
    def __repr__(self):
        return "UNetHandle(sd15, loras=1)"


def test_describe_values_tensors_handles():
    import torch

    img = torch.rand(2, 10, 12, 3)
    d = pv.describe(img, "IMAGE")
    assert d["kind"] == "image" and d["previewable"] and d["summary"]["shape"] == [2, 10, 12, 3]
    assert d["summary"]["device"] == "cpu" and d["summary"]["dtype"] == "float32"
    t = pv.describe(torch.tensor([[1.0, 3.0]], dtype=torch.float16), "CONDITIONING")
    assert t["kind"] == "tensor" and not t["previewable"]
    assert (t["summary"]["min"], t["summary"]["max"], t["summary"]["mean"]) == (1.0, 3.0, 2.0)
    assert pv.describe(torch.zeros(0), "CONDITIONING")["summary"]["min"] is None
    assert pv.describe(5, "INT") == {"type": "INT", "kind": "value", "summary": None, "value": 5, "previewable": False}
    assert pv.describe("x" * 5000, "STRING")["value"].endswith("...")
    assert pv.describe(float("nan"), "FLOAT")["kind"] == "handle"
    h = pv.describe(Handle(), "UNET")
    assert h["kind"] == "handle" and h["summary"] == {"kind": "handle", "repr": "UNetHandle(sd15, loras=1)", "class": "Handle"}
    lat = pv.describe(FakeLatent(), "LATENT")
    assert lat["kind"] == "latent" and lat["previewable"] and lat["summary"] == {"family": "sd15", "shape": [2, 4, 8, 8]}


def test_render_images_masks_latents():
    import torch

    img = pv.render(torch.ones(1, 100, 50, 3), "IMAGE", 0, 20)
    assert img.size == (10, 20) and img.getpixel((0, 0)) == (255, 255, 255)
    mask = pv.render(torch.zeros(2, 8, 8), "MASK", 1, 256)
    assert mask.mode == "L" and mask.size == (8, 8)
    assert pv.render(FakeLatent(), "LATENT", 1, 16).getpixel((0, 0)) == (0, 255, 0)
    with pytest.raises(pv.NoPreview):
        pv.render(torch.ones(1, 4, 4, 3), "IMAGE", 5, 16)
    with pytest.raises(pv.NoPreview):
        pv.render(3, "INT", 0, 16)
    assert pv.png_bytes(img)[:4] == b"\x89PNG"
    assert pv.jpeg_bytes(img.convert("RGBA"))[:2] == b"\xff\xd8"


def test_store_round_trip_recover_and_history(tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    rows = [RunRow(run_id=f"r{i}", number=store.next_number(), workflow={"nodes": {"a": {}}}, position=float(i)) for i in range(4)]
    for r in rows:
        store.insert(r)
    store.barrier().result()
    store.mark_running("r0", time.time())
    rows[1].status, rows[1].finished, rows[1].outputs = "success", time.time(), {"a": {"images": []}}
    store.finish(rows[1])
    store.set_positions([(0.0, "r3"), (1.0, "r2")])
    store.barrier().result()
    assert store.get("r1").outputs == {"a": {"images": []}} and store.exists("r2") and not store.exists("zz")
    store.close()

    again = Store(tmp_path / "db.sqlite3")
    pending, stale = again.recover()
    assert stale == ["r0"] and [r.run_id for r in pending] == ["r3", "r2"]
    assert again.get("r0").status == "error" and again.get("r0").error["message"] == "server stopped during the run"
    assert again.next_number() == 5
    items, total = again.history(0, 10)
    assert total == 2 and [r.run_id for r in items] == ["r1", "r0"]
    with pytest.raises(Exception) as exc:
        again.insert(RunRow(run_id="r1", number=9, workflow={})).result()
    assert "already exists" in str(exc.value)
    assert again.delete("r1") and not again.delete("r2")
    assert again.clear_history() == 1
    again.close()


def test_comfy_mapper_order():
    m = ComfyMapper("p1")
    out = []
    for ev in [{"type": "run_started", "nodes": ["1", "2"]}, {"type": "node_started", "node_id": "1", "node_type": "X"},
               {"type": "node_progress", "node_id": "1", "value": 0, "max": None, "text": "compiling UNet"},  # no max: not sent
               {"type": "node_progress", "node_id": "1", "value": 1, "max": 2},
               {"type": "node_finished", "node_id": "1", "node_type": "X", "seconds": 0, "cached": False, "ui": None},
               {"type": "node_finished", "node_id": "2", "node_type": "Y", "seconds": 0, "cached": True,
                "ui": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}], "text": []}},
               {"type": "run_finished", "seconds": 1}]:
        out += m.map(ev)
    assert [o["type"] for o in out] == ["execution_start", "execution_cached", "executing", "progress", "executed",
                                        "execution_success", "executing"]
    assert out[4]["data"]["output"] == {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}
    assert out[-1]["data"] == {"node": None, "prompt_id": "p1"}
    assert preview_frame(b"JPEG") == struct.pack(">II", 1, 1) + b"JPEG"


def test_security_helpers(tmp_path):
    assert security.origin_matches("http://127.0.0.1:8188", "127.0.0.1:8188", "http")
    assert security.origin_matches("http://LOCALHOST", "localhost:80", "http")
    assert not security.origin_matches("http://127.0.0.1:8188", "127.0.0.1:8189", "http")
    assert not security.origin_matches("null", "127.0.0.1:8188", "http")
    assert not security.origin_matches("http://[::1]:x", "[::1]:8188", "http")
    assert security.is_loopback_host("127.3.4.5") and security.is_loopback_host("[::1]") and not security.is_loopback_host("10.0.0.1")
    assert security.check_relative("a/./b/c.png", "p") == ["a", "b", "c.png"]
    for bad in ("../x", "a/../../x", "/etc", "C:x", "a\\b", "%2e%2e", "a\x00b", ""):
        with pytest.raises(ApiError):
            security.check_relative(bad, "p")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "out").symlink_to(tmp_path)
    with pytest.raises(ApiError) as exc:
        security.inside(tmp_path / "root", "out", "secret")
    assert exc.value.status == 403


def test_safetensors_header(tmp_path):
    header = json.dumps({"__metadata__": {"k": "v"}, "t": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}).encode()
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
    assert read_safetensors_header(tmp_path / "m.safetensors") == {"metadata": {"k": "v"}, "tensors": 1}
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 10**12))
    with pytest.raises(ValueError):
        read_safetensors_header(tmp_path / "bad.safetensors")


def test_openapi_covers_every_route():
    from engine.api.app import all_routes
    from engine.api.openapi import build_openapi

    routes = all_routes()
    doc = build_openapi(routes)
    for r in routes:
        for path in r.served_paths():
            clean = path.replace("{path:.+}", "{path}")
            assert r.method.lower() in doc["paths"][clean], path
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    json.dumps(doc)
