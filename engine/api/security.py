"""Safe by default: the token check, the cross-origin (CSRF) check, and file paths that stay in their folder.

- Token: when the server has one, every request must carry it (`Authorization: Bearer T`, the cookie
  `loom_token`, or `?token=T` on GET requests such as the WebSocket handshake; opening the editor with
  `?token=` sets the cookie).
- Origin: a browser request whose `Origin` is not the `Host` it talks to comes from another site's page
  and is refused (the check ComfyUI does). On a loopback bind the `Host` itself must be a loopback name,
  which stops DNS-rebinding pages that make their own origin look local.
- Paths: client-given names are relative, plain and inside their folder once symlinks are resolved.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from .errors import ApiError, Handler, error_body, is_comfy_path, json_response

TOKEN_COOKIE = "loom_token"
_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost.") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host(value: str, default_port: int) -> tuple[str, int] | None:
    """'Host: a:8188' -> ('a', 8188); brackets of IPv6 kept off; None when unparsable."""
    try:
        parts = urlsplit("//" + value)
        return (parts.hostname or "").lower(), parts.port or default_port
    except ValueError:
        return None


def origin_matches(origin: str, host_header: str, scheme: str) -> bool:
    """Same host and port? Origin 'null' (sandboxed frames, file:// pages) never matches."""
    if not origin or origin == "null":
        return False
    try:
        o = urlsplit(origin)
        o_port = o.port
    except ValueError:
        return False
    if o.scheme not in ("http", "https") or not o.hostname:
        return False
    default = {"http": 80, "https": 443}
    o_pair = (o.hostname.lower(), o_port or default[o.scheme])
    h_pair = _split_host(host_header, default.get(scheme, 80))
    return h_pair is not None and o_pair == h_pair


def token_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    cookie = request.cookies.get(TOKEN_COOKIE)
    if cookie:
        return cookie
    if request.method in ("GET", "HEAD"):
        return request.query.get("token")
    return None


def _host_is_loopback(host: str) -> bool:
    pair = _split_host(host, 80)
    return pair is not None and is_loopback_host(pair[0])


def make_security_middleware(token: str | None, loopback_only: bool):
    """Build the middleware for one server's policy (no module state: two servers may differ)."""
    expected = token.encode() if token else None
    verdicts: dict[str, bool] = {}  # Host header -> loopback? (clients send the same few values every time)

    @web.middleware
    async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
        comfy = is_comfy_path(request.path)
        host = request.headers.get("Host", "")
        if loopback_only:
            ok = verdicts.get(host)
            if ok is None:
                ok = _host_is_loopback(host)
                if len(verdicts) >= 64:  # any client may send any Host: keep the memo small
                    verdicts.clear()
                verdicts[host] = ok
            if not ok:
                return json_response(error_body("forbidden_host", f"Host {host!r} is not this loopback server; "
                                                "start with --host and --token to serve other names", comfy), 403)
        origin = request.headers.get("Origin")
        if origin is not None and not origin_matches(origin, host, request.scheme):
            return json_response(error_body("forbidden_origin", f"cross-origin request from {origin!r} refused", comfy), 403)
        if expected is not None:
            given = token_of(request)
            if given is None or not hmac.compare_digest(given.encode(), expected):
                return json_response(error_body("unauthorized", "a valid token is needed (Authorization: Bearer, "
                                                "cookie loom_token, or ?token= on GET)", comfy), 401)
        response = await handler(request)
        if expected is not None and request.query.get("token") and request.path == "/" and not response.prepared:
            response.set_cookie(TOKEN_COOKIE, token or "", httponly=True, samesite="Strict")
        return response

    return security


# -- paths -------------------------------------------------------------------------------------------------
def check_relative(value: str, what: str, allow_empty: bool = False) -> list[str]:
    """Split a client-given relative path into plain parts, refusing anything that could escape.

    Refused: '..', absolute paths, drive letters, backslashes, NUL and control characters, and
    percent-encoded sequences left after the URL was decoded once (double-encoded attacks).
    """
    if not value:
        if allow_empty:
            return []
        raise ApiError(400, "unsafe_path", f"{what} is empty")
    if "\\" in value or _CONTROL.search(value) or _ENCODED.search(value):
        raise ApiError(400, "unsafe_path", f"{what} {value!r} has a backslash, control character or encoded sequence")
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise ApiError(400, "unsafe_path", f"{what} {value!r} must be relative")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ApiError(400, "unsafe_path", f"{what} {value!r} must not contain '..'")
    if not parts and not allow_empty:
        raise ApiError(400, "unsafe_path", f"{what} {value!r} names no file")
    return parts


def inside(root: Path, *relative: str) -> Path:
    """root/relative..., resolved (symlinks followed) and refused when it leads out of root."""
    parts: list[str] = []
    for i, rel in enumerate(relative):
        parts += check_relative(rel, "path", allow_empty=i < len(relative) - 1)
    root_r = root.resolve()
    target = root_r.joinpath(*parts).resolve()
    if target != root_r and root_r not in target.parents:
        raise ApiError(403, "unsafe_path", "the path leads outside its folder")
    return target
