"""Safe by default: traversal attacks on every file route, cross-origin and DNS-rebinding requests,
tokens, risky file types, upload limits, and malformed request bodies (never a 500)."""

from __future__ import annotations

import io
import json
import os

import aiohttp
import pytest
from yarl import URL

from .conftest import start_live, stop_live
from .flows import count_flow

pytestmark = pytest.mark.asyncio

SECRET = b"top secret, outside every served folder"

VIEW_ATTACKS = [
    "filename=../secret.txt",
    "filename=..%2Fsecret.txt",
    "filename=%2e%2e%2fsecret.txt",
    "filename=%2E%2E/secret.txt",
    "filename=%252e%252e%252fsecret.txt",
    "filename=..%252fsecret.txt",
    "filename=..%5Csecret.txt",
    "filename=..\\secret.txt",
    "filename=%2Fetc%2Fpasswd",
    "filename=/etc/passwd",
    "filename=C:%5Cwindows%5Cwin.ini",
    "filename=C:/secret.txt",
    "filename=secret.txt&subfolder=..",
    "filename=secret.txt&subfolder=..%2F",
    "filename=secret.txt&subfolder=%2e%2e",
    "filename=secret.txt&subfolder=x/../..",
    "filename=passwd&subfolder=/etc",
    "filename=passwd&subfolder=%2Fetc",
    "filename=secret.txt%00.png",
    "filename=out/secret.txt",
    "filename=secret.txt&type=../..",
    "filename=secret.txt&subfolder=escape",
]


def _png(size=(8, 8), color=(1, 2, 3)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def secret(dirs):
    (dirs.root / "secret.txt").write_bytes(SECRET)
    (dirs.output / "out").symlink_to(dirs.root)  # a symlink inside output/ that leads out of it
    (dirs.output / "escape").symlink_to(dirs.root)
    return dirs.root / "secret.txt"


@pytest.mark.parametrize("prefix", ["/view", "/api/view", "/api/v1/view"])
async def test_view_traversal_refused(live, secret, prefix):
    for attack in VIEW_ATTACKS:
        async with live.session.get(URL(f"{live.base}{prefix}?{attack}", encoded=True)) as r:
            body = await r.read()
            assert r.status in (400, 403, 404), (attack, r.status)
            assert SECRET not in body, attack
            assert json.loads(body)["error"]["type"] in ("unsafe_path", "invalid_request", "not_found"), attack


async def test_url_path_traversal_refused(live, secret):
    for path in ["/api/v1/workflows/..%2F..%2Fsecret.txt", "/api/v1/workflows/%2e%2e/%2e%2e/secret.json",
                 "/api/v1/workflows/..%252f..%252fsecret.json", "/..%2Fsecret.txt", "/%2e%2e/secret.txt",
                 "/api/v1/workflows/%2Fetc%2Fpasswd.json", "/api/v1/workflows/..%5C..%5Csecret.json"]:
        async with live.session.get(URL(live.base + path, encoded=True)) as r:
            body = await r.read()
            assert r.status in (400, 403, 404), (path, r.status)
            assert SECRET not in body
    for path in ["/api/v1/workflows/..%2F..%2Fplanted.json", "/api/v1/workflows/%2e%2e%2Fplanted.json",
                 "/api/v1/workflows/sub%2F..%2F..%2F..%2Fplanted.json"]:
        async with live.session.put(URL(live.base + path, encoded=True), json=count_flow(1)) as r:
            assert r.status in (400, 403, 404), (path, r.status)
    assert not any(p.name == "planted.json" for p in live.dirs.root.rglob("planted.json"))
    status, body = await live.post("/api/v1/workflows/ok.json/rename", {"to": "../../escaped.json"})
    assert status in (400, 404)
    (live.dirs.user / "workflows").mkdir()
    (live.dirs.user / "workflows" / "ok.json").write_text(json.dumps(count_flow(1)))
    for target in ["../../escaped.json", "/tmp/escaped.json", "a\\..\\..\\escaped.json", "%2e%2e/escaped.json"]:
        status, body = await live.post("/api/v1/workflows/ok.json/rename", {"to": target})
        assert status == 400, target
    assert not list(live.dirs.root.rglob("escaped.json"))


async def test_upload_traversal_refused(live, secret):
    png = _png()
    attacks = [({"filename": "../evil.png"}, {}), ({"filename": "..\\evil.png"}, {}), ({"filename": "/tmp/evil.png"}, {}),
               ({"filename": ".hidden.png"}, {}), ({"filename": "ok.png"}, {"subfolder": "../.."}),
               ({"filename": "ok.png"}, {"subfolder": "/tmp"}), ({"filename": "ok.png"}, {"subfolder": "%2e%2e"}),
               ({"filename": "ok.png"}, {"subfolder": "a\\..\\.."}), ({"filename": "ok.png"}, {"type": "../x"})]
    os.symlink(live.dirs.root, live.dirs.input / "link")
    attacks.append(({"filename": "ok.png"}, {"subfolder": "link"}))
    for file_kw, fields in attacks:
        form = aiohttp.FormData()
        form.add_field("image", png, content_type="image/png", **file_kw)
        for k, v in fields.items():
            form.add_field(k, v)
        for route in ("/api/v1/upload", "/upload/image"):
            status, body = await live.request("POST", route, data=form)
            assert status in (400, 403), (file_kw, fields, status, body)
            form = aiohttp.FormData()
            form.add_field("image", png, content_type="image/png", **file_kw)
            for k, v in fields.items():
                form.add_field(k, v)
    planted = [p for p in live.dirs.root.rglob("*.png") if p.parent != live.dirs.input]
    assert planted == [], planted


async def test_risky_files_download_as_attachments(live):
    for name in ("page.html", "app.js", "icon.svg", "data.xml", "blob.bin"):
        (live.dirs.output / name).write_text("<script>alert(1)</script>")
    for name in ("page.html", "app.js", "icon.svg", "data.xml", "blob.bin"):
        async with live.session.get(f"{live.base}/view?filename={name}") as r:
            assert r.status == 200
            assert r.headers["Content-Disposition"].startswith("attachment;"), name
            assert r.headers["Content-Type"] == "application/octet-stream"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
    (live.dirs.output / "pic.png").write_bytes(_png())
    async with live.session.get(f"{live.base}/api/v1/view?filename=pic.png") as r:
        assert r.headers["Content-Disposition"].startswith("inline;") and r.headers["Content-Type"] == "image/png"


async def test_uploads_must_be_real_images_within_the_limit(dirs):
    live = await start_live(dirs, max_upload_mb=0.02)
    try:
        cases = [(b"GIF89a not really", "fake.gif", "not_an_image"), (b"<html><script>x</script></html>", "x.png", "not_an_image"),
                 (_png(), "x.html", "not_an_image"), (_png(), "x.svg", "not_an_image"), (b"", "empty.png", "not_an_image")]
        for data, name, kind in cases:
            form = aiohttp.FormData()
            form.add_field("image", data, filename=name, content_type="image/png")
            status, body = await live.request("POST", "/api/v1/upload", data=form)
            assert (status, body["error"]["type"]) == (400, kind), name
        big = os.urandom(40_000)
        form = aiohttp.FormData()
        form.add_field("image", big, filename="big.png", content_type="image/png")
        status, body = await live.request("POST", "/upload/image", data=form)
        assert status == 413 and body["error"]["type"] == "too_large"
        status, body = await live.request("POST", "/api/v1/upload", data=b"plain", headers={"Content-Type": "text/plain"})
        assert status == 400
        form = aiohttp.FormData()
        form.add_field("other", "x")
        status, body = await live.request("POST", "/api/v1/upload", data=form)
        assert status == 400
        assert sorted(p.name for p in dirs.input.iterdir()) == ["example.png"]
    finally:
        await stop_live(live)


async def test_cross_origin_requests_refused(live):
    port = live.server.port
    evil = [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": f"http://127.0.0.1:{port + 1}"},
            {"Origin": f"http://localhost:{port}"}, {"Origin": f"https://127.0.0.1"}, {"Origin": "garbage"},
            {"Origin": f"http://127.0.0.1:{port}@evil.example"}]
    for headers in evil:
        status, body = await live.request("POST", "/prompt", json={"prompt": {}}, headers=headers)
        assert status == 403 and body["error"]["type"] == "forbidden_origin", headers
        status, _ = await live.request("POST", "/api/v1/runs", json={"workflow": count_flow(1)}, headers=headers)
        assert status == 403
        status, _ = await live.get("/api/v1/queue", headers=headers)
        assert status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await live.session.ws_connect(f"{live.base}/ws?clientId=x", headers=headers)
        assert exc.value.status == 403
    assert (await live.get("/api/v1/history"))[1]["total"] == 0
    status, _ = await live.get("/api/v1/queue", headers={"Origin": f"http://127.0.0.1:{port}"})
    assert status == 200
    ws = await live.session.ws_connect(f"{live.base}/ws?clientId=x", headers={"Origin": f"http://127.0.0.1:{port}"})
    await ws.close()


async def test_dns_rebinding_host_refused(live):
    port = live.server.port
    for host in (f"evil.example:{port}", f"192.168.1.5:{port}", "evil.example"):
        status, body = await live.get("/api/v1/queue", headers={"Host": host, "Origin": f"http://{host}"})
        assert status == 403 and body["error"]["type"] == "forbidden_host", host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        status, _ = await live.get("/api/v1/queue", headers={"Host": host})
        assert status == 200, host


async def test_token_required_everywhere(dirs):
    token = "s3cret-token-value"
    live = await start_live(dirs, token=token)
    try:
        for path in ("/api/v1/queue", "/queue", "/object_info", "/view?filename=x.png", "/"):
            assert (await live.get(path))[0] == 401, path
        assert (await live.get("/api/v1/queue", headers={"Authorization": "Bearer wrong-token-value"}))[0] == 401
        assert (await live.get("/api/v1/queue", headers={"Authorization": f"Bearer {token}"}))[0] == 200
        assert (await live.get("/api/v1/queue", headers={"Cookie": f"loom_token={token}"}))[0] == 200
        assert (await live.get(f"/api/v1/queue?token={token}"))[0] == 200
        assert (await live.post(f"/api/v1/runs?token={token}", {"workflow": count_flow(1)}))[0] == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await live.session.ws_connect(f"{live.base}/api/v1/ws?clientId=t")
        assert exc.value.status == 401
        ws = await live.session.ws_connect(f"{live.base}/api/v1/ws?clientId=t&token={token}")
        assert (await ws.receive_json(timeout=5))["type"] == "status"
        await ws.close()
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as fresh:  # IP hosts
            async with fresh.get(f"{live.base}/?token={token}") as r:
                assert r.status == 200 and "loom_token" in r.cookies
            async with fresh.get(f"{live.base}/api/v1/queue") as r:
                assert r.status == 200, "the cookie set by the editor page authenticates later calls"
    finally:
        await stop_live(live)


async def test_non_loopback_needs_token_or_insecure(capsys):
    import importlib.util

    from .conftest import ROOT

    spec = importlib.util.spec_from_file_location("loom_server_entry", ROOT / "server.py")  # `server` is this package
    server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server)

    assert server.main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--token" in capsys.readouterr().err
    assert server.main(["--host", "0.0.0.0", "--token", "short"]) == 2


MALFORMED = [
    (b"", "invalid_json"), (b"{not json", "invalid_json"), (b"\xff\xfe\x00", "invalid_json"), (b"[]", "invalid_request"),
    (b"null", "invalid_request"), (b"42", "invalid_request"), (b'"workflow"', "invalid_request"),
    (b"[" * 100000 + b"]" * 100000, "invalid_json"), (b'{"workflow": "text"}', "invalid_request"),
    (b'{"workflow": []}', "invalid_request"), (b'{"workflow": {}, "outputs": "show"}', "invalid_request"),
    (b'{"workflow": {"format": "latentloom.workflow", "version": 1, "nodes": {}}, "bogus": 1}', "invalid_request"),
    (b'{"workflow": {"format": "latentloom.workflow", "version": 1, "nodes": {}}, "client_id": "a b/c"}', "invalid_request"),
    (b'{"workflow": {"format": "latentloom.workflow", "version": 1, "nodes": {}}, "run_id": "../x"}', "invalid_request"),
    (b'{"workflow": {"format": "latentloom.workflow", "version": "1", "nodes": {"a": 1}}}', "invalid_workflow"),
    (b'{"workflow": {"format": "latentloom.workflow", "version": 1, "nodes": {"a": [1, 2]}}}', "invalid_workflow"),
    (b'{"workflow": {"format": "latentloom.workflow", "version": 1, "nodes": {"a": {"type": 5}}}}', "invalid_workflow"),
    (b'{"workflow": {"format": "latentloom.workflow", "version": 1, "nodes": {"a": {"type": "SlowCount", "inputs": []}}}}', "invalid_workflow"),
    (b'{"workflow": {"format": "latentloom.workflow", "version": 99, "nodes": {}}}', "invalid_workflow"),
    (b'{"workflow": {"1": {"class_type": "SlowCount", "inputs": "x"}}}', "invalid_prompt"),
    (b'{"workflow": {"1": {"class_type": "ShowValue", "inputs": {"value": ["9", 0]}}}}', "invalid_prompt"),
    (b'{"workflow": {"1": {"class_type": "ShowValue", "inputs": {"value": ["1", 7]}}}}', "invalid_prompt"),
    (b'{"workflow": {"1": {"class_type": ["list"], "inputs": {}}}}', "invalid_prompt"),
]


async def test_malformed_bodies_get_clear_400s(live):
    for raw, kind in MALFORMED:
        status, body = await live.request("POST", "/api/v1/runs", data=raw, headers={"Content-Type": "application/json"})
        assert status == 400, (raw[:80], status, body)
        assert body["error"]["type"] == kind, (raw[:80], body)
        assert body["error"]["message"]
    for route in ("/prompt", "/api/v1/validate", "/api/v1/interrupt", "/queue", "/history", "/api/v1/queue/x/move"):
        for raw, _ in MALFORMED[:8]:  # not JSON, or JSON that is not an object
            status, body = await live.request("POST", route, data=raw)
            if route.endswith("interrupt") and raw == b"":
                assert status == 200  # an empty body is allowed there
                continue
            assert status == 400 and body["error"]["type"] in ("invalid_json", "invalid_request", "no_prompt"), (route, raw[:40], status)
    status, body = await live.post("/api/v1/queue/x/move", {"position": "first"})
    assert status == 400
    status, body = await live.get("/api/v1/history?limit=many")
    assert status == 400 and body["error"]["type"] == "invalid_request"
    status, body = await live.get("/api/v1/history?limit=0")
    assert status == 400
    status, body = await live.get("/view")
    assert status == 400
    status, body = await live.request("PATCH", "/api/v1/runs")
    assert status == 405 and body["error"]["type"] == "method_not_allowed"
    status, body = await live.get("/api/v1/nothing")
    assert status == 404 and body["error"]["type"] == "not_found"


async def test_huge_bodies_refused(live):
    huge = b'{"workflow": {"x": "' + b"a" * (17 * 1024 * 1024) + b'"}}'
    for route in ("/api/v1/runs", "/prompt", "/api/v1/validate"):
        status, body = await live.request("POST", route, data=huge, headers={"Content-Type": "application/json"})
        assert status == 413 and body["error"]["type"] == "too_large", route
    status, body = await live.request("PUT", "/api/v1/workflows/big.json", data=huge)
    assert status == 413
    many = {"format": "latentloom.workflow", "version": 1,
            "nodes": {f"n{i}": {"type": "PrimitiveInt", "inputs": {"value": "nope"}} for i in range(5000)}}
    status, body = await live.post("/api/v1/runs", {"workflow": many})
    assert status == 400 and len(body["errors"]) >= 5000
    assert (await live.get("/api/v1/queue"))[0] == 200, "the server is still alive"
