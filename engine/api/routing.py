"""The route table: one list of `Route`s that both registers handlers and generates the OpenAPI document.

Each module of the API declares its routes with their pydantic body, query and response models; the
app factory adds them to aiohttp (ComfyUI routes twice: at `/` and under `/api`), and `openapi.py` reads
the same table, so the document can never drift from what is served.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .errors import Handler


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    tag: str = "native"
    comfy: bool = False  # also served under /api
    produces: str = "application/json"  # what a 200 holds, when it is not JSON
    body_kind: str = "json"  # json | multipart
    extra: dict[str, Any] = field(default_factory=dict)

    def served_paths(self) -> list[str]:
        return [self.path, "/api" + self.path] if self.comfy else [self.path]
