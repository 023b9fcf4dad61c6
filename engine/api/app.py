"""The app factory: one `LoomApp`, the middlewares, every route of the table, start and stop hooks."""

from __future__ import annotations

import asyncio
import gc
import logging

from aiohttp import web

from . import comfy, convert, files, library, models_dir, outputs, runs, static, system
from .errors import JSON_LIMIT, error_middleware, json_response
from .hub import LoopBridge, serve_socket
from .openapi import build_openapi
from .routing import Route
from .security import make_security_middleware
from .state import LOOM, LoomApp, ServerConfig, loom_of

log = logging.getLogger(__name__)


async def ws_native(request: web.Request) -> web.StreamResponse:
    return await serve_socket(request, loom_of(request).hub, "native")


async def ws_comfy(request: web.Request) -> web.StreamResponse:
    return await serve_socket(request, loom_of(request).hub, "comfy")


async def get_openapi(request: web.Request) -> web.Response:
    loom = loom_of(request)
    if "openapi" not in loom.documents:  # built on first use: app start stays fast
        loom.documents["openapi"] = build_openapi(all_routes())
    return json_response(loom.documents["openapi"])


WS_ROUTES = [
    Route("GET", "/api/v1/ws", ws_native, "WebSocket of run events and queue status (?clientId=)", tag="websocket",
          extra={"websocket": True}),
    Route("GET", "/ws", ws_comfy, "ComfyUI: WebSocket with ComfyUI's messages (?clientId=)", tag="comfyui", comfy=True,
          extra={"websocket": True}),
]


def all_routes() -> list[Route]:
    """Every documented route, in registration order (specific paths before catch-alls)."""
    return [*runs.ROUTES, *outputs.ROUTES, *files.ROUTES, *convert.ROUTES, *library.ROUTES, *models_dir.ROUTES, *system.ROUTES,
            *comfy.ROUTES, *files.COMFY_ROUTES, *models_dir.COMFY_ROUTES, *system.COMFY_ROUTES, *WS_ROUTES,
            Route("GET", "/api/openapi.json", get_openapi, "This document", tag="meta")]


async def _start(app: web.Application) -> None:
    loom = app[LOOM]
    loom.queue.listener = LoopBridge(asyncio.get_running_loop(), loom.hub)
    stale = loom.queue.restore()
    if stale:
        log.warning("marked %d run(s) left running by a stopped server as failed: %s", len(stale), ", ".join(stale))
    pending = loom.queue.remaining()
    if pending:
        log.info("resuming %d queued run(s)", pending)
    loom.queue.start()
    if loom.config.warm_up:
        asyncio.get_running_loop().run_in_executor(None, _warm_imports)


def _warm_imports() -> None:
    """torch takes seconds to import; do it off the event loop before the first run or validation needs it."""
    try:
        import nodes.impl.images  # noqa: F401  (imports torch, numpy, PIL)
    except Exception:  # a missing optional dependency shows up, with its message, when a node needs it
        pass
    # torch leaves about a million long-lived objects; a full garbage collection walks them all (100+ ms,
    # a pause of every request). Freezing moves what exists now out of the collector's sight.
    gc.freeze()


async def _close_sockets(app: web.Application) -> None:
    await app[LOOM].hub.close_all()


async def _stop(app: web.Application) -> None:
    loom = app[LOOM]
    await asyncio.to_thread(loom.queue.stop)
    loom.store.close()


def create_app(config: ServerConfig, loom: LoomApp | None = None) -> web.Application:
    loom = loom or LoomApp(config)
    guard = make_security_middleware(config.token, loopback_only=config.loopback and not config.insecure)
    app = web.Application(middlewares=[error_middleware, guard], client_max_size=JSON_LIMIT + 1024)
    app[LOOM] = loom
    routes = all_routes()
    for r in routes:
        for path in r.served_paths():
            app.router.add_route(r.method, path, r.handler)
    app.router.add_get("/", static.index)
    app.router.add_get("/{tail:.+}", static.asset)
    app.on_startup.append(_start)
    app.on_shutdown.append(_close_sockets)
    app.on_cleanup.append(_stop)
    return app
