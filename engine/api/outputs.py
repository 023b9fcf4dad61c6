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


def _node_outputs(loom: LoomApp, row: Any, node_id: str) -> tuple[list[tuple[str, str]], dict | None]:
    nodes = row.workflow.get("nodes", {}) if isinstance(row.workflow, dict) else {}
    entry = nodes.get(node_id)
    if not isinstance(entry, dict):
        raise ApiError(404, "not_found", f"run {row.run_id!r} has no node {node_id!r}")
    d = loom.registry.get(entry.get("type", ""))
    declared = [(o.name, o.type.name) for o in d.outputs] if d is not None else []
    sig = row.signatures.get(node_id)
    values = loom.executor.cache.peek(sig) if sig else None
    return declared, values


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
    run_id, node_id = request.match_info["run_id"], request.match_info["node_id"]
    row = find_run(request, run_id)
    declared, values = _node_outputs(loom, row, node_id)
    if values is None:
        return json_response({"node_id": node_id, "available": False, "outputs": {}})
    base = f"/api/v1/runs/{quote(run_id, safe='')}/nodes/{quote(node_id, safe='')}"
    outputs = await asyncio.to_thread(_describe_all, declared, values, base)
    return json_response({"node_id": node_id, "available": True, "outputs": outputs})


def _render_png(value: Any, type_name: str, index: int, size: int) -> bytes:
    return pv.png_bytes(pv.render(value, type_name, index, size))


async def get_output_preview(request: web.Request) -> web.Response:
    loom = loom_of(request)
    q = parse_query(request, m.PreviewQuery)
    run_id, node_id, name = request.match_info["run_id"], request.match_info["node_id"], request.match_info["name"]
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
]
