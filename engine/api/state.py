"""The one application-level object: settings, registry, executor, store, queue and hub of one server.

Handlers reach it through `request.app[LOOM]`; nothing lives in module globals, so two servers (or two
tests) in one process never share a queue, a cache or a folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from ..executor import Executor
from ..queue import RunQueue
from ..registry import Registry
from ..settings import REPO_ROOT, Settings
from ..store import Store
from .hub import Hub
from .models_dir import MetadataCache
from .submit import SubmitBatcher
from .system import SystemProbe


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8188
    token: str | None = None
    insecure: bool = False
    max_upload_mb: float = 50.0
    settings: Settings = field(default_factory=Settings)
    custom_nodes: list[Path] = field(default_factory=list)
    web_dir: Path = REPO_ROOT / "web" / "dist"
    workflows_dir: Path = REPO_ROOT / "workflows"
    db_path: Path | None = None
    warm_up: bool = True  # import torch in a thread at start, so the first image run does not wait for it

    @property
    def loopback(self) -> bool:
        from .security import is_loopback_host

        return is_loopback_host(self.host)

    def database(self) -> Path:
        return self.db_path or Path(self.settings.user_dir) / "loom.sqlite3"

    def user_workflows(self) -> Path:
        return Path(self.settings.user_dir) / "workflows"


def build_registry(config: ServerConfig) -> Registry:
    reg = Registry.default()
    for folder in config.custom_nodes:
        reg.load_folder(Path(folder))
    return reg


class LoomApp:
    def __init__(self, config: ServerConfig, registry: Registry | None = None) -> None:
        self.config = config
        self.settings = config.settings
        self.registry = registry if registry is not None else build_registry(config)
        self.executor = Executor(self.registry, self.settings)
        self.store = Store(config.database())
        self.queue = RunQueue(self.executor, self.store)
        self.submitter = SubmitBatcher(self.queue)
        self.hub = Hub(self._status)
        self.system = SystemProbe()
        self.model_meta = MetadataCache()
        self.documents: dict[str, dict] = {}  # generated once per server (the OpenAPI document)

    def _status(self) -> tuple[int, str | None]:
        return self.queue.remaining(), self.queue.running_id()


LOOM = web.AppKey("loom", LoomApp)


def loom_of(request: web.Request) -> LoomApp:
    return request.app[LOOM]
