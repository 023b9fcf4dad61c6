"""A bounded load test: 50 clients each listen on their own WebSocket and submit concurrently; every run
completes, none is lost, and no client ever sees an event of another client's run."""

from __future__ import annotations

import asyncio
import time

import pytest

from .conftest import read_until
from .flows import comfy_count, count_flow

pytestmark = pytest.mark.asyncio

CLIENTS = 50


async def one_client(live, i: int) -> tuple[str, list[dict]]:
    client_id = f"load-{i}"
    comfy = i % 5 == 0  # every fifth client speaks ComfyUI
    ws = await live.ws(client_id, path="/ws" if comfy else "/api/v1/ws")
    try:
        if comfy:
            status, body = await live.post("/prompt", {"prompt": comfy_count(1000 + i, steps=2), "client_id": client_id})
            run_id = body["prompt_id"]
            msgs = await read_until(ws, lambda m: m["type"] == "executing" and m["data"]["node"] is None, timeout=25)
        else:
            status, body = await live.post("/api/v1/runs", {"workflow": count_flow(1000 + i, steps=2), "client_id": client_id})
            run_id = body["run_id"]
            msgs = await read_until(ws, lambda m: m["type"] in ("run_finished", "run_failed", "run_interrupted"), timeout=25)
        assert status == 200, body
        return run_id, msgs
    finally:
        await ws.close()


async def test_fifty_concurrent_clients(live):
    t0 = time.monotonic()
    results = await asyncio.gather(*(one_client(live, i) for i in range(CLIENTS)))
    run_ids = [r for r, _ in results]
    assert len(set(run_ids)) == CLIENTS
    for i, (run_id, msgs) in enumerate(results):
        seen = {m["data"].get("run_id") or m["data"].get("prompt_id") for m in msgs if m["type"] != "status"}
        assert seen == {run_id}, f"client {i} saw events of {seen - {run_id}}"
    for i, run_id in enumerate(run_ids):
        rec = await live.wait_run(run_id)
        assert rec["status"] == "success" and rec["outputs"]["show" if i % 5 else "2"]["text"] == [f"value={1002 + i}"]
    status, page = await live.get("/api/v1/history?limit=1000")
    assert page["total"] == CLIENTS
    assert (await live.get("/api/v1/queue"))[1] == {"running": [], "pending": []}
    assert time.monotonic() - t0 < 30
