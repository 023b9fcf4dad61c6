"""WebSocket event sequences, native and ComfyUI dialects: success, cache hit, node error, validation
error (at submission and at run time), interrupt, live previews, and routing to the right client."""

from __future__ import annotations

import asyncio
import struct

import pytest

from .conftest import read_until
from .flows import comfy_count, count_flow, fail_flow

pytestmark = pytest.mark.asyncio

TERMINAL_TYPES = ("run_finished", "run_failed", "run_interrupted")


def types(msgs: list[dict], run_id: str | None = None) -> list[str]:
    return [m["type"] for m in msgs if m["type"] != "status" and (run_id is None or m["data"].get("run_id") == run_id)]


async def test_success_sequence_then_cache_hit(live):
    ws = await live.ws("alice")
    run_id = await live.submit(count_flow(7, steps=3), client_id="alice")
    msgs = await read_until(ws, lambda m: m["type"] in TERMINAL_TYPES)
    seq = types(msgs, run_id)
    assert seq[0] == "run_started" and seq[-1] == "run_finished"
    assert seq.count("node_started") == 2 and seq.count("node_finished") == 2
    assert "node_progress" in seq and "nodes_cached" not in seq
    finished = [m["data"] for m in msgs if m["type"] == "node_finished"]
    show = next(f for f in finished if f["node_id"] == "show")
    assert show["ui"]["text"] == ["value=10"] and show["cached"] is False
    assert all(m["data"]["run_id"] == run_id for m in msgs if m["type"] != "status")
    rec = await live.wait_run(run_id)
    assert rec["status"] == "success" and rec["outputs"]["show"]["text"] == ["value=10"]

    again = await live.submit(count_flow(7, steps=3), client_id="alice")
    msgs = await read_until(ws, lambda m: m["type"] in TERMINAL_TYPES)
    seq = types(msgs, again)
    assert seq[:2] == ["run_started", "nodes_cached"] and seq[-1] == "run_finished"
    cached = next(m for m in msgs if m["type"] == "nodes_cached")["data"]["nodes"]
    assert sorted(cached) == ["count", "show"]
    assert "node_started" not in seq and "node_progress" not in seq
    rec = await live.wait_run(again)
    assert {n["status"] for n in rec["nodes"].values()} == {"cached"}
    await ws.close()


async def test_node_error_sequence(live):
    ws = await live.ws("bob")
    run_id = await live.submit(fail_flow("it broke"), client_id="bob")
    msgs = await read_until(ws, lambda m: m["type"] in TERMINAL_TYPES)
    assert types(msgs, run_id) == ["run_started", "node_started", "run_failed"]
    failed = msgs[-1]["data"]
    assert failed["node_id"] == "bad" and failed["node_type"] == "FailNode" and failed["message"] == "it broke"
    rec = await live.wait_run(run_id)
    assert rec["status"] == "error" and rec["error"]["node_id"] == "bad"
    assert rec["nodes"]["bad"]["status"] == "error" and rec["nodes"]["show"]["status"] == "pending"
    await ws.close()


async def test_validation_error_at_submission_sends_no_events(live):
    ws = await live.ws("carol")
    bad = count_flow(1)
    bad["nodes"]["count"]["inputs"]["steps"] = -4
    status, body = await live.post("/api/v1/runs", {"workflow": bad, "client_id": "carol"})
    assert status == 400
    assert body["error"]["type"] == "invalid_workflow"
    assert body["errors"][0]["node_id"] == "count" and body["errors"][0]["input"] == "steps"
    assert body["errors"][0]["code"] == "out_of_range"
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.3)
    await ws.close()


async def test_validation_error_at_run_time(live):
    """Valid when queued, invalid when it starts (its input image was deleted meanwhile)."""
    ws = await live.ws("dave")
    blocker = await live.submit(count_flow(0, steps=2000, delay=0.01), client_id="dave")
    await live.wait_run(blocker, states=("running",))
    wf = {"format": "latentloom.workflow", "version": 1, "nodes": {
        "load": {"type": "LoadImage", "inputs": {"image": "example.png"}},
        "prev": {"type": "PreviewImage", "inputs": {"images": {"node": "load", "output": "image"}}}}}
    doomed = await live.submit(wf, client_id="dave")
    (live.dirs.input / "example.png").unlink()
    await live.post("/api/v1/interrupt", {"run_id": blocker})
    msgs = await read_until(ws, lambda m: m["type"] in TERMINAL_TYPES and m["data"]["run_id"] == doomed)
    assert types(msgs, doomed) == ["run_failed"]
    failed = msgs[-1]["data"]
    assert failed["error_type"] == "InvalidWorkflow" and failed["errors"][0]["code"] == "not_in_choices"
    assert (await live.wait_run(blocker))["status"] == "interrupted"
    assert (await live.wait_run(doomed))["status"] == "error"
    await ws.close()


async def test_interrupt_sequence(live):
    ws = await live.ws("erin")
    run_id = await live.submit(count_flow(0, steps=400, delay=0.01), client_id="erin")
    await read_until(ws, lambda m: m["type"] == "node_progress")
    status, body = await live.post("/api/v1/interrupt", {"run_id": "someone-else"})
    assert status == 200 and body == {"interrupted": False, "run_id": None}
    status, body = await live.post("/api/v1/interrupt", {"run_id": run_id})
    assert body == {"interrupted": True, "run_id": run_id}
    msgs = await read_until(ws, lambda m: m["type"] in TERMINAL_TYPES)
    assert msgs[-1]["type"] == "run_interrupted" and msgs[-1]["data"]["node_id"] == "count"
    rec = await live.wait_run(run_id)
    assert rec["status"] == "interrupted" and rec["nodes"]["count"]["status"] == "interrupted"
    await ws.close()


async def test_progress_is_throttled_and_previews_arrive(live):
    ws = await live.ws("fred")
    comfy = await live.ws("fred", path="/ws")
    run_id = await live.submit(count_flow(0, steps=60, delay=0.01, preview=True), client_id="fred")
    msgs = await read_until(ws, lambda m: m["type"] in TERMINAL_TYPES)
    progress = [m for m in msgs if m["type"] == "node_progress"]
    assert 2 <= len(progress) <= 20, len(progress)  # 60 steps in ~0.6 s, throttled to ~10/s
    assert progress[-1]["data"]["value"] == 60
    previews = [m for m in msgs if m["type"] == "preview"]
    assert previews and previews[0]["data"]["image"].startswith("data:image/jpeg;base64,")
    assert previews[0]["data"]["run_id"] == run_id and previews[0]["data"]["node_id"] == "count"
    frames: list[bytes] = []
    await read_until(comfy, lambda m: m["type"] == "executing" and m["data"]["node"] is None, binary=frames)
    assert frames and struct.unpack(">II", frames[0][:8]) == (1, 1) and frames[0][8:10] == b"\xff\xd8"
    await ws.close()
    await comfy.close()


async def test_events_reach_only_their_client(live):
    a = await live.ws("client-a")
    b = await live.ws("client-b")
    run_a = await live.submit(count_flow(1), client_id="client-a")
    run_b = await live.submit(count_flow(2), client_id="client-b")
    msgs_a = await read_until(a, lambda m: m["type"] in TERMINAL_TYPES)
    msgs_b = await read_until(b, lambda m: m["type"] in TERMINAL_TYPES)
    assert {m["data"]["run_id"] for m in msgs_a if m["type"] != "status"} == {run_a}
    assert {m["data"]["run_id"] for m in msgs_b if m["type"] != "status"} == {run_b}
    statuses = [m for m in msgs_b if m["type"] == "status"]
    assert statuses, "queue status goes to everyone"
    await a.close()
    await b.close()


async def test_run_without_client_goes_to_everyone(live):
    a = await live.ws("x1")
    b = await live.ws("x2")
    run_id = await live.submit(count_flow(3))
    for ws in (a, b):
        msgs = await read_until(ws, lambda m: m["type"] in TERMINAL_TYPES)
        assert msgs[-1]["data"]["run_id"] == run_id
        await ws.close()


# -- ComfyUI dialect -------------------------------------------------------------------------------------
async def comfy_run(live, ws, prompt: dict, client_id: str) -> tuple[str, list[dict]]:
    status, body = await live.post("/prompt", {"prompt": prompt, "client_id": client_id})
    assert status == 200, body
    pid = body["prompt_id"]
    msgs = await read_until(ws, lambda m: m["type"] == "executing" and m["data"]["node"] is None and m["data"]["prompt_id"] == pid)
    return pid, [m for m in msgs if m["type"] != "status"]


async def test_comfy_success_and_cached_sequence(live):
    ws = await live.ws("cui", path="/ws")
    pid, msgs = await comfy_run(live, ws, comfy_count(5, steps=2), "cui")
    assert [m["type"] for m in msgs] == ["execution_start", "execution_cached", "executing", "progress", "progress",
                                         "executing", "executed", "execution_success", "executing"]
    assert msgs[1]["data"]["nodes"] == []
    assert msgs[2]["data"] == {"node": "1", "display_node": "1", "prompt_id": pid}
    assert msgs[3]["data"] == {"value": 1, "max": 2, "node": "1", "prompt_id": pid}
    assert msgs[6]["data"]["output"] == {"images": [], "text": ["value=7"]} and msgs[6]["data"]["node"] == "2"
    assert msgs[-1]["data"] == {"node": None, "prompt_id": pid}

    pid2, msgs = await comfy_run(live, ws, comfy_count(5, steps=2), "cui")
    assert [m["type"] for m in msgs] == ["execution_start", "execution_cached", "executed", "execution_success", "executing"]
    assert sorted(msgs[1]["data"]["nodes"]) == ["1", "2"] and pid2 != pid
    await ws.close()


async def test_comfy_error_and_interrupt_sequences(live):
    ws = await live.ws("cui2", path="/ws")
    prompt = {"1": {"class_type": "FailNode", "inputs": {"message": "nope"}}, "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    pid, msgs = await comfy_run(live, ws, prompt, "cui2")
    assert [m["type"] for m in msgs] == ["execution_start", "execution_cached", "executing", "execution_error", "executing"]
    err = msgs[3]["data"]
    assert err["node_id"] == "1" and err["node_type"] == "FailNode" and err["exception_message"] == "nope"
    assert err["prompt_id"] == pid

    status, body = await live.post("/prompt", {"prompt": comfy_count(0, steps=500, delay=0.01), "client_id": "cui2"})
    pid = body["prompt_id"]
    await read_until(ws, lambda m: m["type"] == "progress")
    status, _ = await live.post("/interrupt")
    assert status == 200
    msgs = await read_until(ws, lambda m: m["type"] == "executing" and m["data"]["node"] is None)
    kinds = [m["type"] for m in msgs if m["type"] != "status"]
    assert kinds[-2:] == ["execution_interrupted", "executing"]
    await ws.close()
