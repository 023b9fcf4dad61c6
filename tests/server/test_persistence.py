"""Nothing lost: a server killed with SIGKILL in the middle of a run comes back with its queue, marks the
interrupted run as failed with a reason, resumes the pending runs in order, and still serves history
and output files. Also: a crashing run never takes the queue down."""

from __future__ import annotations

import time

import pytest

from .flows import count_flow, png_flow


def test_kill_mid_run_then_restart(server_process):
    a = server_process("--no-warmup")
    status, body = a.call("POST", "/api/v1/runs", {"workflow": png_flow(1)})
    done = body["run_id"]
    first = a.wait_run(done)
    assert first["status"] == "success"
    image = first["outputs"]["png"]["images"][0]
    slow = a.call("POST", "/prompt", {"prompt": {"1": {"class_type": "SlowCount", "inputs": {"steps": 5000, "delay": 0.01}},
                                                  "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}},
                                       "prompt_id": "slow-one"})[1]["prompt_id"]
    a.wait_run(slow, states=("running",))
    pending = [a.call("POST", "/api/v1/runs", {"workflow": png_flow(v)})[1]["run_id"] for v in (2, 3, 4)]
    a.call("POST", f"/api/v1/queue/{pending[2]}/move", {"position": 0})
    expected_order = [pending[2], pending[0], pending[1]]
    time.sleep(0.05)
    a.kill9()

    b = server_process("--no-warmup")
    crashed = b.wait_run(slow)
    assert crashed["status"] == "error" and crashed["error"]["message"] == "server stopped during the run"
    assert crashed["error"]["error_type"] == "ServerStopped"
    records = [b.wait_run(r) for r in expected_order]
    assert [r["status"] for r in records] == ["success"] * 3
    starts = [r["started"] for r in records]
    assert starts == sorted(starts), "pending runs resume in their queue order"
    assert records[0]["outputs"]["png"]["images"][0]["filename"].startswith("test_00005_")  # value 4 + 1 step

    status, page = b.call("GET", "/api/v1/history?limit=10")
    assert page["total"] == 5
    assert b.call("GET", f"/api/v1/runs/{done}")[1]["outputs"]["png"]["images"][0] == image
    status, data = b.call("GET", f"/view?filename={image['filename']}&type=output")
    assert status == 200 and data[:4] == b"\x89PNG"
    status, hist = b.call("GET", f"/history/{slow}")
    assert hist[slow]["status"]["status_str"] == "error"
    assert hist[slow]["status"]["messages"][-1][1]["exception_message"] == "server stopped during the run"
    assert b.call("GET", "/api/v1/queue")[1] == {"running": [], "pending": []}


def test_graceful_stop_keeps_pending_runs(server_process):
    a = server_process("--no-warmup")
    slow = a.call("POST", "/api/v1/runs", {"workflow": count_flow(0, steps=5000, delay=0.01)})[1]["run_id"]
    a.wait_run(slow, states=("running",))
    later = a.call("POST", "/api/v1/runs", {"workflow": count_flow(5)})[1]["run_id"]
    a.stop()
    b = server_process("--no-warmup")
    assert b.wait_run(slow)["error"]["message"] == "server stopped during the run"
    assert b.wait_run(later)["status"] == "success"


@pytest.mark.asyncio
async def test_crashing_run_never_stops_the_queue(live):
    exiting = await live.submit({"format": "latentloom.workflow", "version": 1, "nodes": {
        "x": {"type": "ExitNode", "inputs": {}}, "s": {"type": "ShowValue", "inputs": {"value": {"node": "x", "output": "int"}}}}})
    after = await live.submit(count_flow(1))
    rec = await live.wait_run(exiting)
    assert rec["status"] == "error" and rec["error"]["error_type"] == "SystemExit"
    assert (await live.wait_run(after))["status"] == "success"
