"""Every failure becomes a JSON body with a 4xx status: `{"error": {"type", "message"}, ...}`.

Handlers raise `ApiError`; the middleware turns it (and aiohttp's own HTTP errors, and request-body
problems) into JSON. Only a bug in the server itself gives a 500, and even that is JSON.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

# compact JSON; the encoder is built once (json.dumps with these options builds one per call)
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
M = TypeVar("M", bound=BaseModel)

JSON_LIMIT = 16 * 1024 * 1024  # request bodies that are JSON (a workflow of many thousand nodes fits)


class ApiError(Exception):
    """A refusal with its HTTP status, error type, message and optional extra top-level fields."""

    def __init__(self, status: int, type: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.extra = extra


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json", headers=headers)


def error_body(type: str, message: str, comfy: bool = False, **extra: Any) -> dict:
    err: dict[str, Any] = {"type": type, "message": message}
    if comfy:  # ComfyUI clients read these two as well
        err.update(details=extra.pop("details", ""), extra_info=extra.pop("extra_info", {}))
        extra.setdefault("node_errors", {})
    return {"error": err, **extra}


def is_comfy_path(path: str) -> bool:
    return not path.startswith("/api/v1/")


def validation_message(exc: ValidationError, where: str = "body") -> tuple[str, list[dict]]:
    """One readable line and the list of problems in the API's error shape."""
    problems = []
    for e in exc.errors()[:20]:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        problems.append({"node_id": None, "input": loc or None, "code": "invalid_request", "message": f"{where}.{loc}: {e['msg']}" if loc else f"{where}: {e['msg']}"})
    return "; ".join(p["message"] for p in problems[:5]), problems


async def read_json(request: web.Request, limit: int = JSON_LIMIT) -> Any:
    """The request body as JSON, or a clear 400 / 413."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"request body of {request.content_length} bytes is over the limit of {limit}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "too_large", f"request body is over the limit of {limit} bytes") from None
    if len(raw) > limit:
        raise ApiError(413, "too_large", f"request body of {len(raw)} bytes is over the limit of {limit}")
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the request body is empty; expected a JSON object")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the request body is nested too deeply") from None


async def read_model(request: web.Request, model: type[M], *, empty_ok: bool = False) -> M:
    if empty_ok and not request.can_read_body:
        data: Any = {}
    else:
        data = await read_json(request)
    return parse_model(model, data, "body")


def parse_model(model: type[M], data: Any, where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, problems = validation_message(exc, where)
        raise ApiError(400, "invalid_request", message, errors=problems) from None


def parse_query(request: web.Request, model: type[M]) -> M:
    return parse_model(model, dict(request.query), "query")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    comfy = is_comfy_path(request.path)
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(error_body(exc.type, exc.message, comfy, **exc.extra), exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "http_error")
        message = exc.reason if exc.status != 404 else f"no route {request.method} {request.path}"
        return json_response(error_body(kind, message, comfy), exc.status,
                             headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    except ValidationError as exc:  # a model built inside a handler from request data
        message, problems = validation_message(exc)
        return json_response(error_body("invalid_request", message, comfy, errors=problems), 400)
    except ConnectionResetError:
        raise
    except Exception as exc:
        log.exception("server error on %s %s", request.method, request.path)
        return json_response(error_body("internal", f"{type(exc).__name__}: {exc}", comfy), 500)
