"""ComfyUI-compatible routes, with ComfyUI's request and response shapes, so its clients run unchanged.

The same queue and store serve both APIs: a prompt posted here is a run like any other, its id is the
`prompt_id` (the client's own when it sends one), and `/history` entries are built from run records.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from ..compat.comfy import COMFY_CLASSES
from ..store import RunRow
from . import models as m
from .errors import ApiError, json_response, parse_model, parse_query, read_json
from .object_info import node_info, object_info
from .routing import Route
from .runs import committed, submit_row
from .state import LoomApp, loom_of
from .submit import Rejected, new_ids, prepare

FINISHED = ("success", "error", "interrupted")


def _ms(t: float | None) -> int:
    return int((t or time.time()) * 1000)


# -- POST /prompt ------------------------------------------------------------------------------------------
def _links_of(entry: Any) -> list[str]:
    inputs = entry.get("inputs") if isinstance(entry, dict) else None
    if not isinstance(inputs, dict):
        return []
    return [str(v[0]) for v in inputs.values() if isinstance(v, list) and len(v) == 2 and isinstance(v[1], int)]


def _is_output(loom: LoomApp, class_type: Any) -> bool:
    spec = COMFY_CLASSES.get(class_type)
    if spec is not None:
        return spec.output_node
    d = loom.registry.get(class_type) if isinstance(class_type, str) else None
    return bool(d and d.output_node)


def _dependent_outputs(loom: LoomApp, prompt: dict) -> dict[str, list[str]]:
    """node id -> the output nodes that need it (ComfyUI reports these with each node error)."""
    needed_by: dict[str, list[str]] = {}
    for out_id, entry in prompt.items():
        if not isinstance(entry, dict) or not _is_output(loom, entry.get("class_type")):
            continue
        seen, stack = set(), [str(out_id)]
        while stack:
            nid = stack.pop()
            if nid in seen:
                continue
            seen.add(nid)
            needed_by.setdefault(nid, []).append(str(out_id))
            stack.extend(_links_of(prompt.get(nid)))
    return needed_by


def comfy_rejection(loom: LoomApp, exc: Rejected, prompt: dict) -> dict:
    """ComfyUI's 400 body: a top-level error and node_errors grouped by node id."""
    if exc.type == "invalid_prompt":  # ComfyUI reports unreadable prompts without node errors
        first = exc.errors[0] if exc.errors else {}
        details = f"Node ID '#{first['node_id']}'" if first.get("node_id") else ""
        return {"error": {"type": "invalid_prompt", "message": exc.message, "details": details, "extra_info": {}},
                "node_errors": {}, "errors": exc.errors}
    deps = _dependent_outputs(loom, prompt)
    node_errors: dict[str, dict] = {}
    for e in exc.errors:
        nid = e.get("node_id")
        if nid is None:
            continue
        entry = prompt.get(nid) if isinstance(prompt.get(nid), dict) else {}
        class_type = entry.get("class_type")
        back = {ours: theirs for theirs, ours in (COMFY_CLASSES[class_type].inputs.items() if class_type in COMFY_CLASSES else [])}
        input_name = back.get(e.get("input"), e.get("input"))
        slot = node_errors.setdefault(nid, {"errors": [], "dependent_outputs": deps.get(nid, []), "class_type": class_type})
        slot["errors"].append({"type": e["code"], "message": e["message"],
                               "details": f"{input_name}: {e['message']}" if input_name else e["message"],
                               "extra_info": {"input_name": input_name} if input_name else {}})
    codes = {e["code"] for e in exc.errors}
    if node_errors:
        top = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"}
    elif "no_output" in codes:
        top = {"type": "prompt_no_outputs", "message": "Prompt has no outputs"}
    else:
        top = {"type": exc.type, "message": exc.message}
    top.update(details=exc.message, extra_info={})
    return {"error": top, "node_errors": node_errors, "errors": exc.errors}


async def post_prompt(request: web.Request) -> web.Response:
    loom = loom_of(request)
    raw = await read_json(request)
    if not isinstance(raw, dict) or "prompt" not in raw:
        raise ApiError(400, "no_prompt", "No prompt provided: the body must be {\"prompt\": {...}, \"client_id\": ...}")
    body = parse_model(m.ComfyPrompt, raw, "body")
    data = body.prompt
    try:
        ready = prepare(loom, data, body.partial_execution_targets, force_comfy="format" not in data)
    except Rejected as exc:
        return json_response(comfy_rejection(loom, exc, data), 400)
    extra = dict(body.extra_data)
    if body.client_id:
        extra["client_id"] = body.client_id
    row = RunRow(run_id=body.prompt_id or new_ids.dashed(), number=0, workflow=ready.workflow, client_id=body.client_id,
                 prompt=ready.prompt, targets=ready.targets, extra=extra)
    await submit_row(request, row, body.front, chosen_id=body.prompt_id is not None)
    return json_response({"prompt_id": row.run_id, "number": row.number, "node_errors": {}})


async def get_prompt(request: web.Request) -> web.Response:
    return json_response({"exec_info": {"queue_remaining": loom_of(request).queue.remaining()}})


# -- queue and interrupt ---------------------------------------------------------------------------------
def queue_item(row: RunRow) -> list:
    return [row.number, row.run_id, row.prompt if row.prompt is not None else row.workflow, row.extra, row.targets]


async def get_queue(request: web.Request) -> web.Response:
    running, pending = loom_of(request).queue.snapshot()
    return json_response({"queue_running": [queue_item(running)] if running else [],
                          "queue_pending": [queue_item(r) for r in pending]})


async def post_queue(request: web.Request) -> web.Response:
    body = parse_model(m.ComfyQueueAction, await read_json(request), "body")
    queue = loom_of(request).queue
    cancelled = queue.clear() if body.clear else 0
    for run_id in body.delete:
        cancelled += queue.cancel(str(run_id)) == "ok"
    await committed(request)
    return json_response({"cancelled": cancelled})


async def post_interrupt(request: web.Request) -> web.Response:
    body = m.ComfyInterrupt()
    if request.can_read_body:
        raw = await read_json(request)
        body = parse_model(m.ComfyInterrupt, raw if isinstance(raw, dict) else {}, "body")
    done = loom_of(request).queue.interrupt(body.prompt_id)
    return json_response({"interrupted": done is not None, "prompt_id": done})


# -- history -----------------------------------------------------------------------------------------------
def history_entry(row: RunRow) -> dict:
    pid = row.run_id
    cached = [nid for nid, n in row.nodes.items() if n.get("cached")]
    executed = [nid for nid, n in row.nodes.items() if n.get("status") in ("success", "cached")]
    messages: list[list] = [["execution_start", {"prompt_id": pid, "timestamp": _ms(row.started)}],
                            ["execution_cached", {"nodes": cached, "prompt_id": pid, "timestamp": _ms(row.started)}]]
    err = row.error or {}
    if row.status == "success":
        messages.append(["execution_success", {"prompt_id": pid, "timestamp": _ms(row.finished)}])
    elif row.status == "interrupted":
        messages.append(["execution_interrupted", {"prompt_id": pid, "node_id": err.get("node_id"), "node_type": err.get("node_type"),
                                                   "executed": executed, "timestamp": _ms(row.finished)}])
    else:
        messages.append(["execution_error", {"prompt_id": pid, "node_id": err.get("node_id"), "node_type": err.get("node_type"),
                                             "executed": executed, "exception_message": err.get("message", ""),
                                             "exception_type": err.get("error_type", ""), "traceback": [],
                                             "current_inputs": {}, "current_outputs": {}, "timestamp": _ms(row.finished)}])
    outputs = {}
    for nid, ui in row.outputs.items():
        out: dict[str, Any] = {"images": ui.get("images", [])}
        if ui.get("text"):
            out["text"] = ui["text"]
        outputs[nid] = out
    return {
        "prompt": queue_item(row),
        "outputs": outputs,
        "status": {"status_str": "success" if row.status == "success" else "error",
                   "completed": row.status == "success", "messages": messages},
        "meta": {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid} for nid in outputs},
    }


async def get_history(request: web.Request) -> web.Response:
    q = parse_query(request, m.ComfyHistoryQuery)
    store = loom_of(request).store
    _, total = store.history(0, 1, FINISHED)
    offset = q.offset
    if offset < 0:  # ComfyUI: no offset means "the last max_items"
        offset = total - q.max_items if q.max_items is not None else 0
    limit = q.max_items if q.max_items is not None else total
    rows, _ = store.history(max(0, offset), max(0, limit), FINISHED, oldest_first=True)
    return json_response({r.run_id: history_entry(r) for r in rows})


async def get_history_item(request: web.Request) -> web.Response:
    row = loom_of(request).store.get(request.match_info["prompt_id"])
    if row is None or row.status not in FINISHED:
        return json_response({})
    return json_response({row.run_id: history_entry(row)})


async def post_history(request: web.Request) -> web.Response:
    body = parse_model(m.ComfyQueueAction, await read_json(request), "body")
    store = loom_of(request).store
    deleted = await asyncio.to_thread(store.clear_history) if body.clear else 0
    for run_id in body.delete:
        deleted += await asyncio.to_thread(store.delete, str(run_id))
    return json_response({"deleted": deleted})


# -- catalog -----------------------------------------------------------------------------------------------
async def get_object_info(request: web.Request) -> web.Response:
    loom = loom_of(request)
    return json_response(object_info(loom.registry.catalog_json(loom.settings)))


async def get_object_info_one(request: web.Request) -> web.Response:
    loom = loom_of(request)
    name = request.match_info["node_class"]
    d = loom.registry.get(name)
    if d is None:
        from ..compat.comfy import COMFY_CLASSES, _ensure_tables
        from .object_info import comfy_class_info

        _ensure_tables()
        spec = COMFY_CLASSES.get(name)
        info = comfy_class_info(name, spec, loom.registry.catalog_json(loom.settings)) if spec is not None else None
        return json_response({name: info} if info is not None else {})
    return json_response({name: node_info(d.schema(loom.settings).model_dump())})


async def get_embeddings(request: web.Request) -> web.Response:
    from .models_dir import list_models

    loom = loom_of(request)
    items = list_models(loom.settings, "embeddings", loom.model_meta)
    return json_response([e["name"].rsplit(".", 1)[0] if e["format"] != "diffusers" else e["name"] for e in items])


ROUTES = [
    Route("POST", "/prompt", post_prompt, "ComfyUI: queue a prompt", body=m.ComfyPrompt, response=m.ComfyPromptAccepted,
          tag="comfyui", comfy=True),
    Route("GET", "/prompt", get_prompt, "ComfyUI: queue size", tag="comfyui", comfy=True),
    Route("GET", "/queue", get_queue, "ComfyUI: running and pending prompts", response=m.ComfyQueue, tag="comfyui", comfy=True),
    Route("POST", "/queue", post_queue, "ComfyUI: clear the queue or delete prompts from it", body=m.ComfyQueueAction,
          tag="comfyui", comfy=True),
    Route("POST", "/interrupt", post_interrupt, "ComfyUI: interrupt the running prompt", body=m.ComfyInterrupt,
          tag="comfyui", comfy=True),
    Route("GET", "/history", get_history, "ComfyUI: finished prompts, oldest first", query=m.ComfyHistoryQuery,
          tag="comfyui", comfy=True),
    Route("GET", "/history/{prompt_id}", get_history_item, "ComfyUI: one finished prompt", tag="comfyui", comfy=True),
    Route("POST", "/history", post_history, "ComfyUI: clear history or delete entries", body=m.ComfyQueueAction,
          tag="comfyui", comfy=True),
    Route("GET", "/object_info", get_object_info, "ComfyUI: every node type", tag="comfyui", comfy=True),
    Route("GET", "/object_info/{node_class}", get_object_info_one, "ComfyUI: one node type", tag="comfyui", comfy=True),
    Route("GET", "/embeddings", get_embeddings, "ComfyUI: embedding names", tag="comfyui", comfy=True),
]
