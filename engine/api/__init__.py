"""The HTTP and WebSocket API (aiohttp): native routes under /api/v1, ComfyUI-compatible routes at / and /api."""

from .app import create_app
from .state import LoomApp, ServerConfig

__all__ = ["LoomApp", "ServerConfig", "create_app"]
