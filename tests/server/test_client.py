"""`loom submit` against a live server: queue only, wait and download, invalid workflow, no server."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from .conftest import ROOT
from .flows import count_flow, png_flow

pytestmark = pytest.mark.asyncio


async def loom(*args: str) -> tuple[int, str, str]:
    code = "import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, *args, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_submit_wait_and_download(live, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(png_flow(7)))
    code, out, err = await loom("submit", str(wf), "--server", live.base, "--out", str(tmp_path / "got"), "--set", "count.value=9")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "success" and result["error"] is None
    (path,) = result["files"]["png"]
    assert path.startswith(str(tmp_path / "got")) and open(path, "rb").read(4) == b"\x89PNG"
    assert "test_00010_" in path and "> count (SlowCount)" in err

    code, out, err = await loom("submit", str(wf), "--server", live.base)
    assert code == 0 and json.loads(out)["status"] == "queued"
    await live.wait_run(json.loads(out)["run_id"])


async def test_submit_errors(live, tmp_path):
    bad = tmp_path / "bad.json"
    wf = count_flow(1)
    wf["nodes"]["count"]["inputs"]["steps"] = 0
    bad.write_text(json.dumps(wf))
    code, out, err = await loom("submit", str(bad), "--server", live.base, "--wait")
    assert code == 2 and "node count, input steps" in err
    failing = tmp_path / "fail.json"
    failing.write_text(json.dumps({"1": {"class_type": "FailNode", "inputs": {}},
                                   "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}))
    code, out, err = await loom("submit", str(failing), "--server", live.base, "--wait")
    assert code == 1 and json.loads(out)["status"] == "error"
    code, out, err = await loom("submit", str(tmp_path / "missing.json"), "--server", live.base)
    assert code == 2
    code, out, err = await loom("submit", str(bad), "--server", "http://127.0.0.1:9")
    assert code == 3 and "cannot reach" in err


async def test_loom_serve_starts_the_server(dirs):
    code = "import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "serve", "--port", "0", "--no-warmup", "--user-dir", str(dirs.user),
        "--input-dir", str(dirs.input), "--output-dir", str(dirs.output), cwd=dirs.root, stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"listening on http://127.0.0.1:" in line
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
