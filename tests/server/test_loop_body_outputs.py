"""The editor can inspect the nodes inside a loop's body after a run (their last iteration's values)."""

from __future__ import annotations

import json

import pytest

from engine.settings import REPO_ROOT

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(not (REPO_ROOT / "models" / "checkpoints" / "loom-shapes").is_dir(), reason="loom-shapes missing"),
]


async def test_body_node_outputs_and_latent_preview(live):
    wf = json.loads((REPO_ROOT / "workflows" / "txt2img-steps.json").read_text())
    wf["nodes"]["latent"]["inputs"]["batch_size"] = 1
    wf["nodes"]["scheduler"]["inputs"]["steps"] = 3
    run_id = await live.submit(wf)
    rec = await live.wait_run(run_id, timeout=120)
    assert rec["status"] == "success", rec.get("error")
    status, body = await live.get(f"/api/v1/runs/{run_id}/nodes/loop/step")
    assert status == 200 and body["available"] is True
    latent = body["outputs"]["latent"]
    assert latent["type"] == "LATENT" and latent["preview_url"].endswith("/nodes/loop/step/outputs/latent/preview")
    status, pred = await live.get(f"/api/v1/runs/{run_id}/nodes/loop/predict")
    assert status == 200 and pred["outputs"]["prediction"]["type"] == "NOISE_PRED"
    status, inputs = await live.get(f"/api/v1/runs/{run_id}/nodes/loop/in")
    assert status == 200 and {"latent", "timestep", "step"} <= set(inputs["outputs"])
    resp = await live.session.get(live.server.make_url(latent["preview_url"]))
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
    status, missing = await live.get(f"/api/v1/runs/{run_id}/nodes/loop/nope")
    assert status == 404
