"""Server load benchmark: 500 small prompts from 8 concurrent clients, persisted to SQLite.

    .venv/bin/python benchmarks/server_load.py [--prompts 500] [--clients 8] [--api comfy|native] [--server URL] [--ws]

Starts `server.py` on a free port with fresh folders (unless --server is given), warms it up with one
run, then each client posts its share of prompts back to back. Prints submissions per second, p50/p99
submit latency, and the time from the first submission until the queue is empty (every run executed).
The prompts are ComfyUI API prompts (LoadImage -> ImageScale -> PreviewImage, each of a different size,
so every run really executes), posted to /prompt like a ComfyUI client would, or the same workflow in
our format to /api/v1/runs with --api native. With --ws each client also keeps the WebSocket of its client
id open (/ws, or /api/v1/ws with --api native) and reads everything the server sends, like the ComfyUI
editor does; the figures then include the status broadcasts and run events the server sends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def comfy_prompt(i: int) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png", "upload": "image"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear",
                                                     "width": 16 + i % 48, "height": 16 + (i // 48) % 48, "crop": "disabled"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }


def native_workflow(i: int) -> dict:
    return {"format": "latentloom.workflow", "version": 1, "nodes": {
        "load": {"type": "LoadImage", "inputs": {"image": "example.png"}},
        "scale": {"type": "ImageResize", "inputs": {"image": {"node": "load", "output": "image"}, "width": 16 + i % 48,
                                                    "height": 16 + (i // 48) % 48}},
        "show": {"type": "PreviewImage", "inputs": {"images": {"node": "scale", "output": "image"}}}}}


BASELINE = """
import json, sys
from aiohttp import web
async def prompt(request):
    json.loads(await request.read())
    return web.json_response({"prompt_id": "x", "run_id": "x", "number": 1, "node_errors": {}})
async def queue(request):
    return web.json_response({"exec_info": {"queue_remaining": 0}})
async def history(request):
    return web.json_response({"total": 0})
app = web.Application()
app.router.add_post("/prompt", prompt)
app.router.add_post("/api/v1/runs", prompt)
app.router.add_get("/prompt", queue)
app.router.add_get("/api/v1/history", history)
web.run_app(app, host="127.0.0.1", port=0, access_log=None, print=None)
"""


def start_baseline() -> tuple[subprocess.Popen, str]:
    """An aiohttp app that parses the JSON and answers, nothing else: the ceiling of this machine and client."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = BASELINE.replace("port=0", f"port={port}")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the baseline server did not start")


def thread_cpu(pid: int | None) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of a process, by thread name (Linux /proc).

    CPU time, unlike wall time, barely depends on what else the machine is doing, so these figures stay
    comparable on a busy machine: the event-loop thread's share per submission is the server's cost.
    """
    out: dict[str, float] = {}
    if pid is None:
        return out
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        name = "event loop" if task.name == str(pid) else f"thread {task.name}"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _cpu_split(before: dict[str, float], after: dict[str, float], prompts: int) -> dict[str, float]:
    """ms of CPU per submission: the event loop, the busiest other thread (the run worker), the rest."""
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    loop = spent.pop("event loop", 0.0)
    busiest = max(spent.values(), default=0.0)
    rest = sum(spent.values()) - busiest
    return {"event loop": round(loop / prompts * 1000, 3), "busiest other thread": round(busiest / prompts * 1000, 3),
            "all other threads": round(rest / prompts * 1000, 3)}


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    (folder / "input").mkdir(parents=True)
    shutil.copy(ROOT / "workflows" / "input" / "example.png", folder / "input" / "example.png")
    cmd = [sys.executable, str(ROOT / "server.py"), "--port", "0", "--input-dir", str(folder / "input"),
           "--output-dir", str(folder / "output"), "--user-dir", str(folder / "user"), "--models-dir", str(folder / "models")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            return proc, line.strip().rsplit(" ", 1)[-1]
    raise SystemExit("the server did not start")


async def post(session: aiohttp.ClientSession, url: str, api: str, i: int) -> str:
    if api == "comfy":
        body = {"prompt": comfy_prompt(i), "client_id": f"bench-{i % 8}"}
        async with session.post(url + "/prompt", json=body) as r:
            data = await r.json()
            assert r.status == 200, data
            return data["prompt_id"]
    async with session.post(url + "/api/v1/runs", json={"workflow": native_workflow(i), "client_id": f"bench-{i % 8}"}) as r:
        data = await r.json()
        assert r.status == 200, data
        return data["run_id"]


async def queue_remaining(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/prompt") as r:
        return (await r.json())["exec_info"]["queue_remaining"]


async def listen(session: aiohttp.ClientSession, url: str, api: str, client_id: str, seen: dict) -> None:
    """Read one client's WebSocket until it closes, counting messages by type and keeping the last queue size."""
    path = "/ws" if api == "comfy" else "/api/v1/ws"
    async with session.ws_connect(f"{url}{path}?clientId={client_id}") as ws:
        seen["open"] += 1
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            kind = data["type"]
            seen[kind] = seen.get(kind, 0) + 1
            if kind == "status":
                d = data["data"]
                seen["last_queue"][client_id] = d["status"]["exec_info"]["queue_remaining"] if "status" in d else d["queue_remaining"]


async def bench(url: str, prompts: int, clients: int, api: str, pid: int | None = None, ws: bool = False) -> dict:
    connector = aiohttp.TCPConnector(limit=clients * (3 if ws else 2))  # --ws: a WebSocket per client besides
    async with aiohttp.ClientSession(connector=connector) as session:
        seen: dict = {"open": 0, "last_queue": {}}
        listeners = [asyncio.create_task(listen(session, url, api, f"bench-{k}", seen)) for k in range(clients)] if ws else []
        while ws and seen["open"] < clients:
            await asyncio.sleep(0.01)
        await post(session, url, api, 10_000)  # warm-up: imports, caches of the loaded image
        while await queue_remaining(session, url):
            await asyncio.sleep(0.05)
        for i in range(clients * 4):  # warm the connections and the handlers
            await post(session, url, api, 20_000 + i)
        while await queue_remaining(session, url):
            await asyncio.sleep(0.05)
        latencies: list[float] = []
        cpu0 = thread_cpu(pid)

        async def client(k: int) -> None:
            for i in range(k, prompts, clients):
                t = time.perf_counter()
                await post(session, url, api, i)
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        submitted = time.perf_counter() - t0
        cpu1 = thread_cpu(pid)
        while await queue_remaining(session, url):
            await asyncio.sleep(0.02)
        drained = time.perf_counter() - t0
        async with session.get(url + "/api/v1/history?limit=1&status=success") as r:
            total_ok = (await r.json())["total"]
        if ws:
            await asyncio.sleep(0.2)  # the last status messages
            for t in listeners:
                t.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
    latencies.sort()
    extra = {}
    if ws:
        last = seen.pop("last_queue")
        seen.pop("open")
        extra["websocket_messages"] = seen
        extra["last_queue_remaining_seen"] = sorted(set(last.values()))
    return {
        "api": api, "prompts": prompts, "clients": clients,
        "submissions_per_s": round(prompts / submitted, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2),
        "submit_seconds": round(submitted, 3),
        "queue_empty_seconds": round(drained, 3),
        "runs_succeeded": total_ok - 1 - clients * 4,
        "server_cpu_ms_per_submission": _cpu_split(cpu0, cpu1, prompts),
        **extra,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=500)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--api", choices=["comfy", "native"], default="comfy")
    p.add_argument("--server", help="benchmark a running server instead of starting one (its history must be empty)")
    p.add_argument("--ws", action="store_true", help="each client also reads its WebSocket, like the ComfyUI editor")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--baseline", action="store_true",
                   help="also measure a bare aiohttp app that only parses the JSON (this machine's ceiling)")
    args = p.parse_args()
    proc = None
    folder = Path(tempfile.mkdtemp(prefix="loom-bench-"))
    try:
        url = args.server
        if url is None:
            proc, url = start_server(folder)
        result = asyncio.run(bench(url.rstrip("/"), args.prompts, args.clients, args.api, proc.pid if proc else None, args.ws))
        if args.baseline:
            base, base_url = start_baseline()
            try:
                ceiling = asyncio.run(bench(base_url, args.prompts, args.clients, args.api, base.pid))
            finally:
                base.terminate()
                base.wait(10)
            result["baseline"] = {"submissions_per_s": ceiling["submissions_per_s"], "p50_ms": ceiling["p50_ms"],
                                  "p99_ms": ceiling["p99_ms"],
                                  "event_loop_cpu_ms": ceiling["server_cpu_ms_per_submission"]["event loop"]}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['prompts']} prompts, {result['clients']} clients, {result['api']} API, SQLite-persisted queue")
        print(f"  submissions/s        {result['submissions_per_s']}")
        print(f"  submit latency       p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms")
        print(f"  queue empty after    {result['queue_empty_seconds']} s ({result['runs_succeeded']} runs succeeded)")
        cpu = ", ".join(f"{k} {v}" for k, v in result["server_cpu_ms_per_submission"].items())
        print(f"  server CPU, ms per submission while submitting, by thread: {cpu}")
        if "websocket_messages" in result:
            print(f"  WebSocket messages   {result['websocket_messages']}, last queue size seen {result['last_queue_remaining_seen']}")
        if "baseline" in result:
            b = result["baseline"]
            print(f"  bare aiohttp app     {b['submissions_per_s']}/s, p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms, "
                  f"event loop {b['event_loop_cpu_ms']} ms CPU per request (parse JSON and answer: the ceiling of this "
                  f"machine and client, measured right after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
