"""Servers for the tests: in-process on a free loopback port (fast), or a real `server.py` subprocess
(restart and kill tests). Each gets its own temporary input/output/user folders and the test nodes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from engine.api import ServerConfig, create_app
from engine.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CUSTOM_NODES = Path(__file__).resolve().parent / "custom_nodes"
EXAMPLE = ROOT / "workflows" / "input" / "example.png"
TERMINAL = ("success", "error", "interrupted", "cancelled")


@dataclass
class Dirs:
    root: Path
    input: Path
    output: Path
    user: Path
    models: Path


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    d = Dirs(tmp_path, tmp_path / "input", tmp_path / "output", tmp_path / "user", tmp_path / "models")
    for p in (d.input, d.output, d.user, d.models):
        p.mkdir()
    shutil.copy(EXAMPLE, d.input / "example.png")
    return d


def make_config(dirs: Dirs, **kw: Any) -> ServerConfig:
    settings = Settings(models_dir=dirs.models, input_dir=dirs.input, output_dir=dirs.output, user_dir=dirs.user)
    kw.setdefault("custom_nodes", [CUSTOM_NODES])
    kw.setdefault("web_dir", dirs.root / "no-web")
    kw.setdefault("warm_up", False)  # torch is imported by the first test that needs it
    return ServerConfig(settings=settings, **kw)


class Live:
    """An in-process server on a real loopback port, with an aiohttp session and small helpers."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession, dirs: Dirs) -> None:
        self.server = server
        self.session = session
        self.dirs = dirs
        self.base = f"http://127.0.0.1:{server.port}"

    @property
    def loom(self):
        from engine.api.state import LOOM

        return self.server.app[LOOM]

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, **kw) as r:
            body = await r.read()
            try:
                return r.status, json.loads(body)
            except ValueError:
                return r.status, body

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, data: Any = None, **kw: Any) -> tuple[int, Any]:
        if data is not None:
            kw["json"] = data
        return await self.request("POST", path, **kw)

    async def submit(self, workflow: dict, **extra: Any) -> str:
        status, body = await self.post("/api/v1/runs", {"workflow": workflow, **extra})
        assert status == 200, body
        return body["run_id"]

    async def wait_run(self, run_id: str, timeout: float = 20.0, states: tuple[str, ...] = TERMINAL) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status, rec = await self.get(f"/api/v1/runs/{run_id}")
            if status == 200 and rec["status"] in states:
                return rec
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {rec} after {timeout}s")
            await asyncio.sleep(0.02)

    async def ws(self, client_id: str, path: str = "/api/v1/ws") -> aiohttp.ClientWebSocketResponse:
        ws = await self.session.ws_connect(f"{self.base}{path}?clientId={client_id}")
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "status", first
        return ws


async def start_live(dirs: Dirs, **config: Any) -> Live:
    app = create_app(make_config(dirs, **config))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    return Live(server, aiohttp.ClientSession(), dirs)


async def stop_live(live: Live) -> None:
    await live.session.close()
    await live.server.close()


@pytest_asyncio.fixture
async def live(dirs: Dirs):
    server = await start_live(dirs)
    try:
        yield server
    finally:
        await stop_live(server)


async def read_until(ws: aiohttp.ClientWebSocketResponse, stop: Any, timeout: float = 20.0,
                     binary: list | None = None) -> list[dict]:
    """JSON messages until `stop(msg)` is true (that message included); binary frames go to `binary`."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no stop message within {timeout}s; got {[m['type'] for m in out]}")
        msg = await ws.receive(timeout=left)
        if msg.type == aiohttp.WSMsgType.BINARY:
            if binary is not None:
                binary.append(msg.data)
            continue
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"socket ended: {msg}")
        data = json.loads(msg.data)
        out.append(data)
        if stop(data):
            return out


# -- a real server process ---------------------------------------------------------------------------------
class ServerProcess:
    def __init__(self, dirs: Dirs, *extra: str) -> None:
        self.dirs = dirs
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None
        self.base = ""
        self.log = dirs.root / "server.log"

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        cmd = [sys.executable, str(ROOT / "server.py"), "--port", "0", "--input-dir", str(self.dirs.input),
               "--output-dir", str(self.dirs.output), "--user-dir", str(self.dirs.user), "--models-dir", str(self.dirs.models),
               "--custom-nodes", str(CUSTOM_NODES), *self.extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=open(self.log, "ab"), text=True, env=env)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"server exited: {self.log.read_text()[-3000:]}")
            if "listening on" in line:
                self.base = line.strip().rsplit(" ", 1)[-1]
                return self
        raise AssertionError("server did not start")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def call(self, method: str, path: str, body: Any = None, headers: dict | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def wait_run(self, run_id: str, states: tuple[str, ...] = TERMINAL, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status, rec = self.call("GET", f"/api/v1/runs/{run_id}")
            if status == 200 and rec["status"] in states:
                return rec
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id}: {rec}")
            time.sleep(0.02)


@pytest.fixture
def server_process(dirs: Dirs):
    started: list[ServerProcess] = []

    def start(*extra: str) -> ServerProcess:
        p = ServerProcess(dirs, *extra).start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
