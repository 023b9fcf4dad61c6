"""Native routes for the catalog, validation, runs, the queue, interrupts and history (`/api/v1/...`)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..store import DuplicateRun, RunRow
from ..workflow import json_schema
from . import models as m
from .errors import ApiError, json_response, parse_query, read_model
from .routing import Route
from .state import loom_of
from .submit import Rejected, new_ids, prepare


def record_json(row: RunRow, with_workflow: bool = True) -> dict:
    out = {
        "run_id": row.run_id, "number": row.number, "status": row.status, "client_id": row.client_id,
        "created": row.created, "started": row.started, "finished": row.finished,
        "nodes": row.nodes, "outputs": row.outputs, "error": row.error,
    }
    if with_workflow:
        out["workflow"] = row.workflow
    return out


def summary_json(row: RunRow) -> dict:
    nodes = row.workflow.get("nodes") if isinstance(row.workflow, dict) else None
    return {"run_id": row.run_id, "number": row.number, "status": row.status, "created": row.created,
            "client_id": row.client_id, "node_count": len(nodes) if isinstance(nodes, dict) else 0}


def find_run(request: web.Request, run_id: str) -> RunRow:
    loom = loom_of(request)
    row = loom.queue.live(run_id) or loom.store.get(run_id)
    if row is None:
        raise ApiError(404, "not_found", f"no run {run_id!r}")
    return row


# -- catalog ---------------------------------------------------------------------------------------------
async def get_nodes(request: web.Request) -> web.Response:
    loom = loom_of(request)
    return json_response(loom.registry.catalog_json(loom.settings))


async def get_workflow_schema(request: web.Request) -> web.Response:
    return json_response(json_schema())


async def post_validate(request: web.Request) -> web.Response:
    body = await read_model(request, m.ValidateRequest)
    try:
        prepare(loom_of(request), body.workflow, body.outputs)
    except Rejected as exc:
        return json_response({"valid": False, "errors": exc.errors})
    return json_response({"valid": True, "errors": []})


# -- runs ------------------------------------------------------------------------------------------------
async def post_run(request: web.Request) -> web.Response:
    body = await read_model(request, m.SubmitRun)
    loom = loom_of(request)
    try:
        ready = prepare(loom, body.workflow, body.outputs)
    except Rejected as exc:
        raise ApiError(400, exc.type, exc.message, errors=exc.errors) from None
    row = RunRow(run_id=body.run_id or new_ids.hex(), number=0, workflow=ready.workflow, client_id=body.client_id,
                 prompt=ready.prompt, targets=ready.targets, extra={"client_id": body.client_id} if body.client_id else {})
    await submit_row(request, row, body.front, chosen_id=body.run_id is not None)
    return json_response({"run_id": row.run_id, "number": row.number})


async def submit_row(request: web.Request, row: RunRow, front: bool, chosen_id: bool) -> None:
    """Queue the run and wait until it is committed to the database (nothing acknowledged is lost).

    Runs submitted together are written together (`SubmitBatcher`); a run whose row could not be written
    has already been taken out of the queue when this raises.
    """
    try:
        await loom_of(request).submitter.submit(row, front, check_duplicate=chosen_id)
    except DuplicateRun as exc:
        raise ApiError(409, "duplicate_run_id", str(exc)) from None
    except Exception as exc:  # the database refused the write: the run was not queued
        raise ApiError(503, "not_persisted", f"the run could not be saved, so it was not queued: {exc}") from None


async def committed(request: web.Request) -> None:
    await asyncio.wrap_future(loom_of(request).store.barrier())


async def get_run(request: web.Request) -> web.Response:
    return json_response(record_json(find_run(request, request.match_info["run_id"])))


# -- queue -----------------------------------------------------------------------------------------------
def queue_json(request: web.Request) -> dict:
    running, pending = loom_of(request).queue.snapshot()
    return {"running": [summary_json(running)] if running else [], "pending": [summary_json(r) for r in pending]}


async def get_queue(request: web.Request) -> web.Response:
    return json_response(queue_json(request))


async def delete_queued(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    result = loom_of(request).queue.cancel(run_id)
    if result == "ok":
        await committed(request)
        return json_response({"cancelled": True})
    if result == "unknown":
        raise ApiError(404, "not_found", f"no run {run_id!r}")
    if result == "running":
        raise ApiError(409, "running", f"run {run_id!r} is running; interrupt it instead (POST /api/v1/interrupt)")
    raise ApiError(409, "finished", f"run {run_id!r} is not queued (it is {result})")


async def post_move(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    body = await read_model(request, m.MoveRequest)
    if not loom_of(request).queue.move(run_id, body.position):
        find_run(request, run_id)  # 404 when unknown
        raise ApiError(409, "not_pending", f"run {run_id!r} is not waiting in the queue")
    await committed(request)
    return json_response(queue_json(request))


async def delete_queue(request: web.Request) -> web.Response:
    count = loom_of(request).queue.clear()
    await committed(request)
    return json_response({"cancelled": count})


async def post_interrupt(request: web.Request) -> web.Response:
    body = await read_model(request, m.InterruptRequest, empty_ok=True)
    done = loom_of(request).queue.interrupt(body.run_id)
    return json_response({"interrupted": done is not None, "run_id": done})


# -- history ---------------------------------------------------------------------------------------------
async def get_history(request: web.Request) -> web.Response:
    q = parse_query(request, m.HistoryQuery)
    store = loom_of(request).store
    statuses = (q.status,) if q.status else ("success", "error", "interrupted", "cancelled")
    rows, total = store.history(q.offset, q.limit, statuses)
    return json_response({"items": [record_json(r, with_workflow=False) for r in rows], "total": total})


async def delete_history_item(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    loom = loom_of(request)
    if await asyncio.to_thread(loom.store.delete, run_id):
        return json_response({"deleted": 1})
    if loom.store.status_of(run_id) is None:
        raise ApiError(404, "not_found", f"no run {run_id!r}")
    raise ApiError(409, "not_finished", f"run {run_id!r} is still queued or running")


async def delete_history(request: web.Request) -> web.Response:
    return json_response({"deleted": await asyncio.to_thread(loom_of(request).store.clear_history)})


ROUTES = [
    Route("GET", "/api/v1/nodes", get_nodes, "The node catalog (what the editor's palette shows)", response=m.Catalog),
    Route("GET", "/api/v1/workflow-schema", get_workflow_schema, "JSON Schema of the workflow file"),
    Route("POST", "/api/v1/validate", post_validate, "Validate a workflow without running it",
          body=m.ValidateRequest, response=m.ValidateResponse),
    Route("POST", "/api/v1/runs", post_run, "Queue a run", body=m.SubmitRun, response=m.RunAccepted),
    Route("GET", "/api/v1/runs/{run_id}", get_run, "A run: status, node states, outputs, error", response=m.RunRecord),
    Route("GET", "/api/v1/queue", get_queue, "The running and pending runs", response=m.QueueState),
    Route("DELETE", "/api/v1/queue/{run_id}", delete_queued, "Cancel a pending run", response=m.Cancelled),
    Route("POST", "/api/v1/queue/{run_id}/move", post_move, "Move a pending run (0 = next)",
          body=m.MoveRequest, response=m.QueueState),
    Route("DELETE", "/api/v1/queue", delete_queue, "Cancel every pending run", response=m.ClearedCount),
    Route("POST", "/api/v1/interrupt", post_interrupt, "Interrupt the running run",
          body=m.InterruptRequest, response=m.InterruptResult),
    Route("GET", "/api/v1/history", get_history, "Finished runs, newest first", query=m.HistoryQuery, response=m.HistoryPage),
    Route("DELETE", "/api/v1/history/{run_id}", delete_history_item, "Delete one history record (files stay)",
          response=m.Deleted),
    Route("DELETE", "/api/v1/history", delete_history, "Delete every history record (files stay)", response=m.Deleted),
]
