"""Browser tests of the editor: the real server (server.py) on a free port with its own folders, and
Debian's Chromium driven by Playwright (Playwright's own browser download does not work here)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
RESULTS = ROOT / "test-results"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    if not CHROMIUM.exists():
        reason = "Debian's chromium is not installed (make browser installs it)"
    elif not (ROOT / "server.py").exists():
        reason = "server.py does not exist yet"
    elif not (ROOT / "web" / "dist" / "index.html").exists():
        reason = "web/dist is not built (cd web && npm ci && npm run build)"
    for item in items:
        if "tests/web" in str(item.fspath) and item.get_closest_marker("browser") and reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    return {"executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS, "headless": True}


@pytest.fixture(scope="session")
def browser_context_args() -> dict[str, Any]:
    return {"viewport": {"width": 1440, "height": 900}, "accept_downloads": True}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: str, root: Path):
        self.base = base
        self.root = root
        self.input = root / "in"
        self.output = root / "out"
        self.user = root / "user"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("loom-web")
    for d in ("in", "out", "user"):
        (root / d).mkdir()
    shutil.copy(ROOT / "workflows" / "input" / "example.png", root / "in" / "example.png")
    port = _free_port()
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "server.py", "--port", str(port), "--output-dir", str(root / "out"),
         "--input-dir", str(root / "in"), "--user-dir", str(root / "user"), "--no-warmup"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/api/v1/nodes", timeout=2) as r:
                if r.status == 200:
                    break
        except Exception:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.close()
            raise RuntimeError(f"the server did not start: {(root / 'server.log').read_text()[-3000:]}")
        time.sleep(0.2)
    try:
        yield Server(base, root)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class Console:
    """Console errors and uncaught page errors seen during a test."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))


@pytest.fixture
def editor(page: Any, server: Server, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The editor opened on the test server, fully loaded (catalog and default workflow)."""
    console = Console()
    console.attach(page)
    page.console = console
    page.goto(server.base + "/")
    page.wait_for_function("() => window.latentloom && window.latentloom.s.catalogStatus === 'ready'")
    page.wait_for_selector(".react-flow__node")
    yield page
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        RESULTS.mkdir(exist_ok=True)
        try:
            page.screenshot(path=str(RESULTS / f"{request.node.name}.png"), full_page=True)
        except Exception as exc:
            print(f"could not save a screenshot: {exc}")
