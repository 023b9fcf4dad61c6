"""Cached intermediate outputs served to the editor: a summary of each output of a node, and thumbnails.

A run records the cache signature of every node; the outputs are looked up in the executor's cache with
`peek` (recency untouched, so looking never changes what gets evicted). After an eviction or a restart
the outputs are simply `available: false`. Tensor statistics and image encoding run in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .. import preview as pv
from . import models as m
from .errors import ApiError, json_response, parse_query
from .routing import Route
from .runs import find_run
from .state import LoomApp, loom_of


def _entry(loom: LoomApp, row: Any, node_id: str) -> dict | None:
    """The workflow entry of `node_id`, or of `loop_id/body_id` inside a loop node's body (its own or the
    loop type's default body)."""
    nodes = row.workflow.get("nodes", {}) if isinstance(row.workflow, dict) else {}
    if "/" not in node_id:
        entry = nodes.get(node_id)
        return entry if isinstance(entry, dict) else None
    loop_id, body_id = node_id.split("/", 1)
    loop = nodes.get(loop_id)
    if not isinstance(loop, dict) or "/" in body_id:
        return None
    body = loop.get("body")
    if body is None:
        d = loom.registry.get(loop.get("type", ""))
        body = d.loop.default_body if d is not None and d.loop is not None else None
    entry = body.get("nodes", {}).get(body_id) if isinstance(body, dict) else None
    return entry if isinstance(entry, dict) else None


def _declared(loom: LoomApp, node_id: str, entry: dict, row: Any) -> list[tuple[str, str]]:
    ntype = entry.get("type", "")
    if ntype == "LoopInput" and "/" in node_id:  # its outputs are the loop type's per-iteration values
        loop = row.workflow["nodes"][node_id.split("/", 1)[0]]
        d = loom.registry.get(loop.get("type", ""))
        return [(o.name, o.type.name) for o in d.loop.inputs] if d is not None and d.loop is not None else []
    d = loom.registry.get(ntype)
    return [(o.name, o.type.name) for o in d.outputs] if d is not None else []


def _node_outputs(loom: LoomApp, row: Any, node_id: str) -> tuple[list[tuple[str, str]], dict | None]:
    entry = _entry(loom, row, node_id)
    if entry is None:
        raise ApiError(404, "not_found", f"run {row.run_id!r} has no node {node_id!r}")
    declared = _declared(loom, node_id, entry, row)
    sig = row.signatures.get(node_id)
    values = loom.executor.cache.peek(sig) if sig else None
    return declared, values


def _node_id(request: web.Request) -> str:
    """`node_id`, or `loop_id/body_id` for a node inside a loop's body."""
    info = request.match_info
    return f"{info['loop_id']}/{info['body_id']}" if "loop_id" in info else info["node_id"]


def _describe_all(declared: list[tuple[str, str]], values: dict, base: str) -> dict:
    out = {}
    for name, type_name in declared:
        if name not in values:
            continue
        info = pv.describe(values[name], type_name)
        previewable = info.pop("previewable")
        info["preview_url"] = f"{base}/outputs/{quote(name, safe='')}/preview" if previewable else None
        out[name] = info
    return out


async def get_node_outputs(request: web.Request) -> web.Response:
    loom = loom_of(request)
    run_id, node_id = request.match_info["run_id"], _node_id(request)
    row = find_run(request, run_id)
    declared, values = _node_outputs(loom, row, node_id)
    if values is None:
        return json_response({"node_id": node_id, "available": False, "outputs": {}})
    base = f"/api/v1/runs/{quote(run_id, safe='')}/nodes/" + "/".join(quote(p, safe="") for p in node_id.split("/"))
    outputs = await asyncio.to_thread(_describe_all, declared, values, base)
    return json_response({"node_id": node_id, "available": True, "outputs": outputs})


def _render_png(value: Any, type_name: str, index: int, size: int) -> bytes:
    return pv.png_bytes(pv.render(value, type_name, index, size))


async def get_output_preview(request: web.Request) -> web.Response:
    loom = loom_of(request)
    q = parse_query(request, m.PreviewQuery)
    run_id, node_id, name = request.match_info["run_id"], _node_id(request), request.match_info["name"]
    row = find_run(request, run_id)
    declared, values = _node_outputs(loom, row, node_id)
    types = dict(declared)
    if name not in types:
        raise ApiError(404, "not_found", f"node {node_id!r} has no output {name!r} (outputs: {sorted(types)})")
    if values is None or name not in values:
        raise ApiError(404, "not_available", f"the outputs of node {node_id!r} are no longer cached")
    try:
        data = await asyncio.to_thread(_render_png, values[name], types[name], q.index, q.size)
    except pv.NoPreview as exc:
        raise ApiError(404, "no_preview", str(exc)) from None
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "no-cache"})


ROUTES = [
    Route("GET", "/api/v1/runs/{run_id}/nodes/{node_id}", get_node_outputs,
          "Summaries of a node's cached outputs (shape, dtype, min/max/mean, values, preview links)",
          response=m.NodeOutputsPreview),
    Route("GET", "/api/v1/runs/{run_id}/nodes/{node_id}/outputs/{name}/preview", get_output_preview,
          "A PNG thumbnail of an IMAGE or MASK output, or a latent's RGB projection", query=m.PreviewQuery,
          produces="image/png"),
    Route("GET", "/api/v1/runs/{run_id}/nodes/{loop_id}/{body_id}", get_node_outputs,
          "Summaries of a loop body node's cached outputs (its last iteration)", response=m.NodeOutputsPreview),
    Route("GET", "/api/v1/runs/{run_id}/nodes/{loop_id}/{body_id}/outputs/{name}/preview", get_output_preview,
          "A PNG thumbnail of a loop body node's output (its last iteration)", query=m.PreviewQuery,
          produces="image/png"),
]
