"""`loom submit`: send a workflow to a running server, optionally wait for it and download its images.

    loom submit WORKFLOW.json --server http://127.0.0.1:8188 [--wait] [--out DIR] [--token T] [--set N.I=V]

The file is sent as is (ours or ComfyUI API format; the server translates). With `--wait` (or `--out`)
the client listens on the WebSocket with its own client id, prints progress on stderr, and prints one
JSON object on stdout at the end. Exit codes: 0 success (or queued), 1 the run failed or was
interrupted, 2 the workflow is invalid, 3 the server could not be reached or refused the request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

TERMINAL = ("run_finished", "run_failed", "run_interrupted")


class ClientError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("submit", help="send a workflow to a running server (loom serve)")
    p.add_argument("workflow", help="workflow file (ours or ComfyUI API format)")
    p.add_argument("--server", default=os.environ.get("LOOM_SERVER", "http://127.0.0.1:8188"), help="server URL")
    p.add_argument("--wait", action="store_true", help="wait for the run to end and print its result")
    p.add_argument("--out", help="download the run's images into this folder (implies --wait)")
    p.add_argument("--token", default=os.environ.get("LOOM_TOKEN"), help="the server's token (or $LOOM_TOKEN)")
    p.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE", help="override an input (our format)")
    p.add_argument("--outputs", nargs="*", help="output node ids to run (default: all)")
    p.add_argument("--timeout", type=float, default=0, help="give up waiting after this many seconds (0: never)")
    p.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    from .cli import UsageError, apply_sets
    from .workflow import WorkflowError, read_json

    try:
        workflow = read_json(args.workflow)
        if args.set:
            apply_sets(workflow, args.set)
    except (WorkflowError, UsageError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    try:
        result = asyncio.run(submit(workflow, args.server.rstrip("/"), token=args.token, wait=bool(args.wait or args.out),
                                    out=Path(args.out) if args.out else None, outputs=args.outputs,
                                    timeout=args.timeout or None))
    except ClientError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.code
    print(json.dumps(result))
    status = result.get("status", "queued")
    return 0 if status in ("queued", "success") else 1


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _check(resp: Any) -> Any:
    try:
        body = await resp.json(content_type=None)
    except ValueError:
        body = {"error": {"message": (await resp.text())[:500]}}
    if resp.status == 400:
        errors = body.get("errors") or []
        lines = [body.get("error", {}).get("message", "invalid workflow")]
        lines += [f"  node {e.get('node_id')}, input {e.get('input')}: {e.get('message')}" for e in errors[:20]]
        raise ClientError(2, "\n".join(lines))
    if resp.status >= 400:
        raise ClientError(3, f"HTTP {resp.status}: {body.get('error', {}).get('message', body)}")
    return body


async def submit(workflow: dict, server: str, *, token: str | None = None, wait: bool = False, out: Path | None = None,
                 outputs: list[str] | None = None, timeout: float | None = None) -> dict:
    import aiohttp

    client_id = "loom-submit-" + uuid.uuid4().hex[:12]
    body: dict[str, Any] = {"workflow": workflow, "client_id": client_id}
    if outputs:
        body["outputs"] = outputs
    try:
        async with aiohttp.ClientSession(headers=_headers(token)) as session:
            ws = None
            if wait:
                query = urlencode({"clientId": client_id, **({"token": token} if token else {})})
                ws = await session.ws_connect(f"{server}/api/v1/ws?{query}".replace("http", "ws", 1))
            async with session.post(f"{server}/api/v1/runs", json=body) as resp:
                accepted = await _check(resp)
            run_id = accepted["run_id"]
            if ws is None:
                return {"run_id": run_id, "number": accepted["number"], "status": "queued"}
            try:
                await asyncio.wait_for(_follow(ws, run_id), timeout)
            except asyncio.TimeoutError:
                raise ClientError(1, f"run {run_id} did not finish within {timeout}s") from None
            finally:
                await ws.close()
            async with session.get(f"{server}/api/v1/runs/{run_id}") as resp:
                record = await _check(resp)
            files = await _download(session, server, record, out) if out else {}
    except aiohttp.ClientError as exc:
        raise ClientError(3, f"cannot reach {server}: {exc}") from None
    return {"run_id": run_id, "status": record["status"], "nodes": record["nodes"], "outputs": record["outputs"],
            "files": files, "error": record["error"]}


async def _follow(ws: Any, run_id: str) -> None:
    """Print progress on stderr until the run's terminal event."""
    import aiohttp

    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
            continue
        event = json.loads(msg.data)
        data = event.get("data", {})
        if data.get("run_id") != run_id:
            continue
        kind = event["type"]
        if kind == "node_started":
            sys.stderr.write(f"> {data['node_id']} ({data['node_type']})\n")
        elif kind == "node_progress" and data.get("max"):
            sys.stderr.write(f"  {data['node_id']}: {data['value']:g}/{data['max']:g}\n")
        elif kind == "nodes_cached":
            sys.stderr.write(f"cached: {', '.join(data['nodes'])}\n")
        elif kind == "run_failed":
            sys.stderr.write(f"error in node {data.get('node_id')}: {data.get('message')}\n")
        if kind in TERMINAL:
            return
    raise ClientError(3, "the server closed the WebSocket before the run ended")


async def _download(session: Any, server: str, record: dict, out: Path) -> dict[str, list[str]]:
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {}
    for node_id, ui in record.get("outputs", {}).items():
        for ref in ui.get("images", []):
            query = urlencode({"filename": ref["filename"], "subfolder": ref.get("subfolder", ""), "type": ref.get("type", "output")})
            async with session.get(f"{server}/api/v1/view?{query}") as resp:
                if resp.status != 200:
                    raise ClientError(3, f"cannot download {ref['filename']}: HTTP {resp.status}")
                data = await resp.read()
            target = out / Path(ref["filename"]).name
            target.write_bytes(data)
            files.setdefault(node_id, []).append(str(target.resolve()))
    return files
