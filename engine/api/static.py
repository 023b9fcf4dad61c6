"""The editor: `web/dist/` served at `/` when it has been built, else a short page that says how to build it."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .errors import ApiError
from .security import inside
from .state import loom_of

NOT_BUILT = """<!doctype html><html><head><meta charset="utf-8"><title>Latent Loom</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto">
<h1>Latent Loom</h1><p>The server is running, but the editor is not built: run <code>make web</code>
(or <code>npm ci &amp;&amp; npm run build</code> in <code>web/</code>) and reload.</p>
<p>The API is here: <a href="/api/openapi.json">/api/openapi.json</a>.</p></body></html>"""

_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def _dist(request: web.Request) -> Path:
    return loom_of(request).config.web_dir


async def index(request: web.Request) -> web.StreamResponse:
    page = _dist(request) / "index.html"
    if page.is_file():
        return web.FileResponse(page, headers={**_HEADERS, "Cache-Control": "no-cache"})
    return web.Response(text=NOT_BUILT, content_type="text/html", headers=_HEADERS)


async def asset(request: web.Request) -> web.StreamResponse:
    tail = request.match_info["tail"]
    dist = _dist(request)
    if not dist.is_dir():
        raise ApiError(404, "not_found", f"no route GET /{tail}")
    path = inside(dist, tail)
    if not path.is_file():
        raise ApiError(404, "not_found", f"no route GET /{tail}")
    cache = "public, max-age=31536000, immutable" if "/assets/" in "/" + tail else "no-cache"
    return web.FileResponse(path, headers={**_HEADERS, "Cache-Control": cache})
