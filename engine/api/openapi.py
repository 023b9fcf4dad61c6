"""The OpenAPI 3.1 document, generated from the route table and its pydantic models.

pydantic writes the JSON Schemas (one shared `components/schemas`), this module writes the paths:
path parameters from the route pattern, query parameters from the query model's fields, the body
(JSON or multipart) and the answers, with the common error body for 4xx.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from . import models as m
from .routing import Route

_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
REF = "#/components/schemas/{model}"


def _models(routes: Iterable[Route]) -> list[tuple[type[BaseModel], str]]:
    seen: dict[tuple[type[BaseModel], str], None] = {(m.ErrorResponse, "serialization"): None}
    for r in routes:
        if r.body is not None:
            seen[(r.body, "validation")] = None
        if r.response is not None:
            seen[(r.response, "serialization")] = None
    return list(seen)


def _query_params(model: type[BaseModel]) -> list[dict]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        param = {"name": name, "in": "query", "required": name in required, "schema": {k: v for k, v in prop.items() if k != "title"}}
        if "description" in prop:
            param["description"] = prop["description"]
        out.append(param)
    return out


def _operation_id(method: str, path: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", _PARAM.sub(r"by_\1", path)).strip("_")
    return f"{method.lower()}_{slug or 'root'}"


def build_openapi(routes: list[Route], version: str = "0.1.0") -> dict[str, Any]:
    refs, defs = models_json_schema(_models(routes), ref_template=REF)
    components = defs.get("$defs", {})
    error_ref = refs[(m.ErrorResponse, "serialization")]
    paths: dict[str, dict] = {}
    for r in routes:
        for served in r.served_paths():
            path = _PARAM.sub(r"{\1}", served)
            op: dict[str, Any] = {"summary": r.summary, "operationId": _operation_id(r.method, served), "tags": [r.tag]}
            params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in _PARAM.findall(served)]
            if r.query is not None:
                params += _query_params(r.query)
            if params:
                op["parameters"] = params
            if r.body is not None:
                media = "multipart/form-data" if r.body_kind == "multipart" else "application/json"
                op["requestBody"] = {"required": r.body_kind == "multipart", "content": {media: {"schema": refs[(r.body, "validation")]}}}
            if r.response is not None:
                ok = {"description": "OK", "content": {"application/json": {"schema": refs[(r.response, "serialization")]}}}
            elif r.produces != "application/json":
                ok = {"description": "OK", "content": {r.produces: {"schema": {"type": "string", "format": "binary"}}}}
            else:
                ok = {"description": "OK", "content": {"application/json": {"schema": {}}}}
            if r.extra.get("websocket"):
                ok = {"description": "Switching protocols to a WebSocket of JSON text messages"}
                op["responses"] = {"101": ok}
            else:
                op["responses"] = {"200": ok}
            op["responses"]["4XX"] = {"description": "A refused request", "content": {"application/json": {"schema": error_ref}}}
            paths.setdefault(path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Latent Loom API", "version": version,
                 "description": "Native API under /api/v1 and ComfyUI-compatible routes at / and /api (see docs/API.md)."},
        "paths": paths,
        "components": {"schemas": components},
    }
