"""A real sampling run on the embedded model streams live latent previews to its client."""

from __future__ import annotations

import base64
import json

import pytest

from engine.settings import REPO_ROOT

from .conftest import read_until

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(not (REPO_ROOT / "models" / "checkpoints" / "loom-shapes").is_dir(), reason="loom-shapes missing"),
]


async def test_sample_node_sends_jpeg_previews(live):
    wf = json.loads((REPO_ROOT / "workflows" / "txt2img.json").read_text())
    wf["nodes"]["latent"]["inputs"]["batch_size"] = 1
    wf["nodes"]["sample"]["inputs"]["steps"] = 16
    live.loom.queue.preview_interval = 0.0  # every preview the sampler offers (default: at most 4 a second)
    ws = await live.ws("painter")
    run_id = await live.submit(wf, client_id="painter")
    msgs = await read_until(ws, lambda m: m["type"] in ("run_finished", "run_failed"), timeout=120)
    assert msgs[-1]["type"] == "run_finished", msgs[-1]
    previews = [m["data"] for m in msgs if m["type"] == "preview"]
    assert previews and all(p["node_id"] == "sample" and p["run_id"] == run_id for p in previews)
    head, data = previews[-1]["image"].split(",", 1)
    assert head == "data:image/jpeg;base64" and base64.b64decode(data)[:2] == b"\xff\xd8"
    await ws.close()
