"""The saved-workflow library: the shipped `workflows/` (read-only) and the user's folder (read-write).

Paths are relative, end in `.json`, have no hidden parts and stay inside their folder. Loading prefers
the user's copy when both exist (`?source=` picks one); saving checks the envelope (format, version,
nodes), not the graph, so a half-built workflow can be saved.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

from aiohttp import web

from ..workflow import WorkflowError, check_envelope
from . import models as m
from .errors import ApiError, json_response, parse_query, read_json, read_model
from .routing import Route
from .security import check_relative, inside
from .state import loom_of

MAX_PATH = 512


def check_workflow_path(path: str) -> str:
    if len(path) > MAX_PATH:
        raise ApiError(400, "unsafe_path", "workflow path is too long")
    parts = check_relative(path, "workflow path")
    if any(p.startswith(".") for p in parts):
        raise ApiError(400, "unsafe_path", f"workflow path {path!r} has a hidden part")
    if not parts[-1].endswith(".json") or parts[-1] == ".json":
        raise ApiError(400, "invalid_name", f"workflow path {path!r} must end in .json")
    return "/".join(parts)


def _roots(request: web.Request) -> dict[str, Path]:
    cfg = loom_of(request).config
    return {"user": cfg.user_workflows(), "builtin": cfg.workflows_dir}


def _scan(roots: dict[str, Path]) -> list[dict]:
    items = []
    for source in ("builtin", "user"):
        root = roots[source]
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith(".json") and not name.startswith("."):
                    p = Path(dirpath) / name
                    try:
                        mtime = p.stat().st_mtime
                    except OSError:
                        continue
                    items.append({"path": p.relative_to(root).as_posix(), "source": source, "modified": mtime})
    return items


async def list_workflows(request: web.Request) -> web.Response:
    return json_response({"items": await asyncio.to_thread(_scan, _roots(request))})


def _locate(request: web.Request, path: str, source: str | None) -> tuple[Path, str]:
    roots = _roots(request)
    for src in ([source] if source else ["user", "builtin"]):
        target = inside(roots[src], path)
        if target.is_file():
            return target, src
    raise ApiError(404, "not_found", f"no workflow {path!r}" + (f" in {source}" if source else ""))


async def get_workflow(request: web.Request) -> web.Response:
    path = check_workflow_path(request.match_info["path"])
    q = parse_query(request, m.WorkflowQuery)
    target, _ = _locate(request, path, q.source)
    try:
        data = json.loads(await asyncio.to_thread(target.read_text, encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(422, "unreadable", f"{path} is not valid JSON: {exc}") from None
    return json_response(data)


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".save-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def put_workflow(request: web.Request) -> web.Response:
    path = check_workflow_path(request.match_info["path"])
    data = await read_json(request)
    try:
        check_envelope(data)
    except WorkflowError as exc:
        raise ApiError(400, "invalid_workflow", str(exc)) from None
    target = inside(_roots(request)["user"], path)
    await asyncio.to_thread(_write_json, target, data)
    return json_response({"path": path})


def _user_file(request: web.Request, path: str) -> Path:
    roots = _roots(request)
    target = inside(roots["user"], path)
    if not target.is_file():
        if inside(roots["builtin"], path).is_file():
            raise ApiError(403, "read_only", f"{path!r} is a built-in workflow; built-in workflows cannot be changed")
        raise ApiError(404, "not_found", f"no user workflow {path!r}")
    return target


async def rename_workflow(request: web.Request) -> web.Response:
    path = check_workflow_path(request.match_info["path"])
    body = await read_model(request, m.RenameRequest)
    new = check_workflow_path(body.to)
    source = _user_file(request, path)
    target = inside(_roots(request)["user"], new)
    if target.exists():
        raise ApiError(409, "exists", f"a user workflow {new!r} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    return json_response({"path": new})


async def delete_workflow(request: web.Request) -> web.Response:
    path = check_workflow_path(request.match_info["path"])
    _user_file(request, path).unlink()
    return json_response({"path": path})


ROUTES = [
    Route("GET", "/api/v1/workflows", list_workflows, "The workflow library (built-in and user)", response=m.WorkflowList,
          tag="workflows"),
    Route("POST", "/api/v1/workflows/{path:.+}/rename", rename_workflow, "Rename a user workflow",
          body=m.RenameRequest, response=m.SavedWorkflow, tag="workflows"),
    Route("GET", "/api/v1/workflows/{path:.+}", get_workflow, "Load a workflow", query=m.WorkflowQuery, tag="workflows"),
    Route("PUT", "/api/v1/workflows/{path:.+}", put_workflow, "Save a workflow to the user folder",
          response=m.SavedWorkflow, tag="workflows"),
    Route("DELETE", "/api/v1/workflows/{path:.+}", delete_workflow, "Delete a user workflow", response=m.SavedWorkflow,
          tag="workflows"),
]
