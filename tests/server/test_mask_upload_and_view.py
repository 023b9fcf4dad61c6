"""ComfyUI's mask editor routes: `POST /upload/mask` (the original image with the mask's alpha) and the
`channel` / `preview` options of `GET /view`, over HTTP against the in-process server."""

from __future__ import annotations

import io
import json

import aiohttp
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from .flows import wf

pytestmark = pytest.mark.asyncio

W, H = 12, 10


def _original() -> tuple[np.ndarray, bytes]:
    """An RGB picture (every pixel different) with ComfyUI's workflow text chunks."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 20, y * 25, (x + y) * 10], axis=-1).astype(np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", json.dumps({"nodes": [1, 2]}))
    info.add_text("prompt", json.dumps({"1": {"class_type": "LoadImage"}}))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", pnginfo=info)
    return rgb, buf.getvalue()


def _mask(size=(W, H)) -> tuple[np.ndarray, bytes]:
    """What the mask editor sends: black RGBA whose alpha is 0 where the user painted."""
    w, h = size
    alpha = np.full((h, w), 255, dtype=np.uint8)
    alpha[:, : w // 2] = 0
    alpha[0, -1] = 100
    arr = np.zeros((h, w, 4), dtype=np.uint8)
    arr[..., 3] = alpha
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return alpha, buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _form(data: bytes, filename: str, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=filename, content_type="image/png")
    for k, v in fields.items():
        form.add_field(k, v)
    return form


def _ref(filename: str, subfolder: str = "", type: str = "input") -> str:
    return json.dumps({"filename": filename, "subfolder": subfolder, "type": type})


async def _upload_mask(live, mask: bytes, name: str = "clipspace-mask-1.png", route: str = "/upload/mask", **fields: str):
    return await live.request("POST", route, data=_form(mask, name, **fields))


# -- /upload/mask ----------------------------------------------------------------------------------------
async def test_mask_alpha_goes_onto_the_original(live):
    rgb, original = _original()
    status, body = await live.request("POST", "/upload/image", data=_form(original, "orig.png", subfolder="clipspace"))
    assert (status, body) == (200, {"name": "orig.png", "subfolder": "clipspace", "type": "input"})
    alpha, mask = _mask()

    status, body = await _upload_mask(live, mask, type="input", subfolder="clipspace",
                                      original_ref=_ref("orig.png", "clipspace"))
    assert (status, body) == (200, {"name": "clipspace-mask-1.png", "subfolder": "clipspace", "type": "input"})
    saved = live.dirs.input / "clipspace" / "clipspace-mask-1.png"
    with Image.open(saved) as img:
        assert img.format == "PNG" and img.mode == "RGBA" and img.size == (W, H)
        assert json.loads(img.text["workflow"]) == {"nodes": [1, 2]}
        assert json.loads(img.text["prompt"]) == {"1": {"class_type": "LoadImage"}} and len(img.text) == 2
        arr = np.asarray(img)
    assert np.array_equal(arr[..., :3], rgb)  # the original's pixels, not the mask's black
    assert np.array_equal(arr[..., 3], alpha)

    # the same rules as /upload/image: an identical result reuses the name, another one gets " (1)"
    assert (await _upload_mask(live, mask, subfolder="clipspace", original_ref=_ref("orig.png", "clipspace")))[1]["name"] \
        == "clipspace-mask-1.png"
    other_alpha, other = _mask()
    other_alpha[...] = 7
    other = _png(np.dstack([np.zeros((H, W, 3), np.uint8), other_alpha]))
    status, body = await _upload_mask(live, other, route="/api/upload/mask", subfolder="clipspace",
                                      original_ref=_ref("orig.png", "clipspace"))
    assert (status, body["name"]) == (200, "clipspace-mask-1 (1).png")
    status, body = await _upload_mask(live, other, subfolder="clipspace", overwrite="true",
                                      original_ref=_ref("orig.png", "clipspace"))
    assert (status, body["name"]) == (200, "clipspace-mask-1.png")
    with Image.open(saved) as img:
        assert np.all(np.asarray(img)[..., 3] == 7)


async def test_loadimage_reads_the_uploaded_mask(live):
    rgb, original = _original()
    await live.request("POST", "/upload/image", data=_form(original, "orig.png"))
    alpha, mask = _mask()
    status, body = await _upload_mask(live, mask, name="painted.png", original_ref=_ref("orig.png"))
    assert status == 200, body
    run_id = await live.submit(wf({
        "load": {"type": "LoadImage", "inputs": {"image": "painted.png"}},
        "preview": {"type": "PreviewImage", "inputs": {"images": {"node": "load", "output": "image"}}},
    }))
    rec = await live.wait_run(run_id)
    assert rec["status"] == "success", rec
    status, info = await live.get(f"/api/v1/runs/{run_id}/nodes/load")
    summary = info["outputs"]["mask"]["summary"]
    expected = 1.0 - alpha.astype(np.float64) / 255.0  # painted (transparent) = 1
    assert summary["shape"] == [1, H, W] and summary["min"] == 0.0 and summary["max"] == 1.0
    assert summary["mean"] == pytest.approx(expected.mean(), abs=1e-5)
    image = info["outputs"]["image"]["summary"]  # the original's pixels, not the editor's black
    assert image["shape"] == [1, H, W, 3] and image["mean"] == pytest.approx(rgb.mean() / 255.0, abs=1e-5)


async def test_mask_original_in_output_by_default_and_annotated_names(live):
    rgb, original = _original()
    (live.dirs.output / "render.png").write_bytes(original)
    alpha, mask = _mask()
    # no type: ComfyUI's default is the output folder
    status, body = await _upload_mask(live, mask, name="m.png", original_ref=json.dumps({"filename": "render.png"}))
    assert (status, body) == (200, {"name": "m.png", "subfolder": "", "type": "input"})
    status, body = await _upload_mask(live, mask, name="n.png", original_ref=_ref("render.png [output]", type="input"))
    assert status == 200, body
    for name in ("m.png", "n.png"):
        with Image.open(live.dirs.input / name) as img:
            arr = np.asarray(img)
        assert np.array_equal(arr[..., :3], rgb) and np.array_equal(arr[..., 3], alpha)


async def test_mask_result_is_png_under_a_png_name(live):
    _, original = _original()
    (live.dirs.input / "orig.png").write_bytes(original)
    alpha, _ = _mask()
    webp = io.BytesIO()
    Image.fromarray(np.dstack([np.zeros((H, W, 3), np.uint8), alpha])).save(webp, format="WEBP", lossless=True)
    status, body = await _upload_mask(live, webp.getvalue(), name="mask.webp", original_ref=_ref("orig.png"))
    assert (status, body["name"]) == (200, "mask.png")
    with Image.open(live.dirs.input / "mask.png") as img:
        assert img.format == "PNG" and np.array_equal(np.asarray(img)[..., 3], alpha)
    assert not (live.dirs.input / "mask.webp").exists()


async def test_mask_follows_the_exif_rotation_of_the_original(live):
    rgb, _ = _original()
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees: the editor paints on an H x W picture
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", exif=exif)
    (live.dirs.input / "rotated.png").write_bytes(buf.getvalue())
    alpha, mask = _mask(size=(H, W))
    status, body = await _upload_mask(live, mask, name="rot-mask.png", original_ref=_ref("rotated.png"))
    assert status == 200, body
    with Image.open(live.dirs.input / "rot-mask.png") as img:
        arr = np.asarray(img)
    assert np.array_equal(arr[..., :3], np.rot90(rgb, -1)) and np.array_equal(arr[..., 3], alpha)


async def test_mask_upload_errors_are_clear(live):
    _, original = _original()
    (live.dirs.input / "orig.png").write_bytes(original)
    (live.dirs.input / "fake.png").write_text("not a picture")
    (live.dirs.root / "secret.png").write_bytes(original)
    (live.dirs.input / "link").symlink_to(live.dirs.root)
    _, mask = _mask()
    _, small = _mask(size=(4, 4))
    before = sorted(p.relative_to(live.dirs.root) for p in live.dirs.root.rglob("*"))
    cases = [
        ({}, mask, 400, "invalid_request", "original_ref"),
        ({"original_ref": "{nope"}, mask, 400, "invalid_request", "not valid JSON"),
        ({"original_ref": "[1, 2]"}, mask, 400, "invalid_request", "JSON object"),
        ({"original_ref": json.dumps({"subfolder": ""})}, mask, 400, "invalid_request", "original_ref.filename"),
        ({"original_ref": _ref("orig.png", type="models")}, mask, 400, "invalid_request", "'models'"),
        ({"original_ref": json.dumps({"filename": "orig.png", "subfolder": 3})}, mask, 400, "invalid_request", "subfolder"),
        ({"original_ref": _ref("absent.png", "sub")}, mask, 404, "not_found", "'absent.png' in input/sub"),
        ({"original_ref": _ref("fake.png")}, mask, 400, "not_an_image", "fake.png"),
        ({"original_ref": _ref("orig.png")}, small, 400, "invalid_request", "same size"),
        ({"original_ref": _ref("orig.png")}, b"GIF89a but not really", 400, "not_an_image", "Pillow"),
        ({"original_ref": _ref("../secret.png")}, mask, 400, "unsafe_path", ".."),
        ({"original_ref": _ref("secret.png", "../..")}, mask, 400, "unsafe_path", ".."),
        ({"original_ref": _ref("/etc/passwd")}, mask, 400, "unsafe_path", "relative"),
        ({"original_ref": _ref("secret.png", "%2e%2e")}, mask, 400, "unsafe_path", "encoded"),
        ({"original_ref": _ref("secret.png", "link")}, mask, 403, "unsafe_path", "outside"),
        ({"original_ref": _ref("orig.png"), "subfolder": "../.."}, mask, 400, "unsafe_path", ".."),
    ]
    for fields, data, status, kind, words in cases:
        got, body = await _upload_mask(live, data, name="out.png", **fields)
        assert (got, body["error"]["type"]) == (status, kind), (fields, body)
        assert words in body["error"]["message"], (fields, body)
    got, body = await _upload_mask(live, mask, name="../evil.png", original_ref=_ref("orig.png"))
    assert (got, body["error"]["type"]) == (400, "unsafe_path")
    assert sorted(p.relative_to(live.dirs.root) for p in live.dirs.root.rglob("*")) == before  # nothing written


# -- /view channel and preview ---------------------------------------------------------------------------
def _rgba_picture() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([x * 20, y * 25, (x * y) % 256, np.where(x < 4, 0, 200 - y)], axis=-1).astype(np.uint8)


async def _get(live, query: str, prefix: str = "/view") -> tuple[int, dict, bytes]:
    async with live.session.get(f"{live.base}{prefix}?{query}") as r:
        return r.status, dict(r.headers), await r.read()


def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


async def test_view_channels(live):
    arr = _rgba_picture()
    raw = _png(arr)
    (live.dirs.output / "pic.png").write_bytes(raw)
    for prefix in ("/view", "/api/v1/view"):
        status, headers, data = await _get(live, "filename=pic.png&channel=rgb", prefix)
        assert status == 200 and headers["Content-Type"] == "image/png" and headers["X-Content-Type-Options"] == "nosniff"
        img = _decode(data)
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), arr[..., :3])

        status, headers, data = await _get(live, "filename=pic.png&channel=a", prefix)
        assert status == 200 and headers["Content-Type"] == "image/png"
        out = np.asarray(_decode(data))
        assert out.shape == (H, W, 4) and not out[..., :3].any() and np.array_equal(out[..., 3], arr[..., 3])

        for query in ("filename=pic.png&channel=rgba", "filename=pic.png"):
            status, headers, data = await _get(live, query, prefix)
            assert status == 200 and data == raw and headers["Content-Type"] == "image/png"
    # an image without alpha: channel a is fully opaque
    (live.dirs.output / "flat.png").write_bytes(_png(arr[..., :3]))
    status, _, data = await _get(live, "filename=flat.png&channel=a")
    assert status == 200 and np.all(np.asarray(_decode(data))[..., 3] == 255)


async def test_view_preview_formats_and_quality(live):
    arr = _rgba_picture()
    (live.dirs.output / "pic.png").write_bytes(_png(arr))
    status, headers, data = await _get(live, "filename=pic.png&preview=webp;90")
    assert status == 200 and headers["Content-Type"] == "image/webp"
    assert headers["Content-Disposition"].startswith("inline;") and "pic.webp" in headers["Content-Disposition"]
    img = _decode(data)
    assert img.format == "WEBP" and img.size == (W, H) and img.mode == "RGBA"

    status, headers, data = await _get(live, "filename=pic.png&preview=jpeg;75")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    img = _decode(data)
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (W, H)

    async def jpeg(quality: str) -> bytes:
        status, headers, data = await _get(live, f"filename=pic.png&preview=jpeg;{quality}")
        assert status == 200 and headers["Content-Type"] == "image/jpeg", quality
        return data

    assert len(await jpeg("5")) < len(await jpeg("95"))
    assert await jpeg("500") == await jpeg("100") and await jpeg("0") == await jpeg("-3") == await jpeg("1")
    assert await jpeg("") == await jpeg("90")

    status, headers, data = await _get(live, "filename=pic.png&preview=jpeg;80&channel=rgb")
    assert headers["Content-Type"] == "image/jpeg" and _decode(data).mode == "RGB"
    # JPEG cannot carry alpha: asking for it gives WebP, as ComfyUI does
    status, headers, data = await _get(live, "filename=pic.png&preview=jpeg;80&channel=a")
    assert headers["Content-Type"] == "image/webp" and _decode(data).format == "WEBP"
    status, headers, _ = await _get(live, "filename=pic.png&preview=webp;50&channel=rgba", "/api/view")
    assert status == 200 and headers["Content-Type"] == "image/webp"


async def test_view_preview_and_channel_errors(live):
    (live.dirs.output / "pic.png").write_bytes(_png(_rgba_picture()))
    (live.dirs.output / "notes.txt").write_text("hello")
    (live.dirs.output / "page.html").write_text("<script>alert(1)</script>")
    (live.dirs.output / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for query, words in [("filename=pic.png&preview=gif;50", "'gif'"), ("filename=pic.png&preview=webp;abc", "'abc'"),
                         ("filename=pic.png&preview=png", "'png'")]:
        status, _, data = await _get(live, query)
        body = json.loads(data)
        assert status == 400 and body["error"]["type"] == "invalid_request" and words in body["error"]["message"], query
    status, _, data = await _get(live, "filename=pic.png&channel=xyz")
    assert status == 400 and "channel" in json.loads(data)["error"]["message"]
    for query in ("filename=notes.txt&channel=rgb", "filename=page.html&preview=webp", "filename=broken.png&channel=a"):
        status, headers, data = await _get(live, query)
        assert status == 400 and json.loads(data)["error"]["type"] == "not_an_image", query
        assert b"<script>" not in data
    status, _, data = await _get(live, "filename=../secret.png&preview=webp")
    assert status == 400 and json.loads(data)["error"]["type"] == "unsafe_path"
    status, _, data = await _get(live, "filename=absent.png&channel=rgb")
    assert status == 404


async def test_view_scales_16_bit_greyscale(live):
    grey = (np.arange(H * W).reshape(H, W) * 500).astype(np.uint16)
    Image.fromarray(grey).save(live.dirs.output / "deep.png")
    status, _, data = await _get(live, "filename=deep.png&channel=rgb")
    out = np.asarray(_decode(data)).astype(np.int32)
    expected = np.rint(grey / 257.0).astype(np.int32)
    assert status == 200 and np.array_equal(out[..., 0], expected) and np.array_equal(out[..., 2], expected)
