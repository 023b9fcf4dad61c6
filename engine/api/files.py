"""Viewing output/input/temp files and uploading images: the two routes that touch the disk by client name.

Both resolve names with `security.inside` (no traversal, no symlink escapes). `/view` serves HTML,
JavaScript, SVG and XML as downloads with `nosniff`, so a file a workflow wrote can never run as a page
of this origin; for images it also takes ComfyUI's `channel` (rgb / a / rgba) and `preview` (webp or
jpeg;quality) and answers a re-encoded image. Uploads are size-limited while streaming, must be real
images (Pillow opens and verifies them) with an image file suffix, and are written atomically. ComfyUI's
mask upload puts the uploaded image's alpha onto a copy of the original image it names (`original_ref`).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import tempfile
from pathlib import Path

from aiohttp import BodyPartReader, web

from . import models as m
from .errors import ApiError, json_response, parse_model, parse_query
from .routing import Route
from .security import check_relative, inside
from .state import loom_of

RISKY_SUFFIXES = {".html", ".htm", ".xhtml", ".js", ".mjs", ".svg", ".svgz", ".xml", ".xsl", ".css", ".wasm", ".swf"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
_FORM_FIELD_LIMIT = 4096


def _folder(request: web.Request, kind: str) -> Path:
    return loom_of(request).settings.folders().folder_of(kind)


def _disposition(kind: str, name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "._- ()" else "_" for c in name)
    return f'{kind}; filename="{safe}"'


_HIGH_BIT_GREY = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # 16-bit greyscale PNGs and TIFFs open as these
_PREVIEW_FORMATS = {"webp": "webp", "jpeg": "jpeg", "jpg": "jpeg"}


def _has_alpha(img) -> bool:
    return "A" in img.getbands() or "transparency" in img.info


def _rgba(img):
    """Any Pillow image as 8-bit RGBA. 16-bit greys ("I" taken as 16-bit too) are scaled to 0..255 (Pillow's
    own conversion clips them at 255: nearly every pixel white) and their tRNS grey value becomes alpha 0."""
    if img.mode not in _HIGH_BIT_GREY:
        return img.convert("RGBA")
    import numpy as np
    from PIL import Image

    raw = np.asarray(img)
    out = Image.fromarray(np.clip(np.rint(raw / 257.0), 0, 255).astype(np.uint8)).convert("RGBA")
    key = img.info.get("transparency")
    if isinstance(key, int):
        out.putalpha(Image.fromarray(np.where(raw == key, 0, 255).astype(np.uint8)))
    return out


def _open_image(path: Path, what: str):
    """(image, PNG text chunks): the image EXIF-rotated the way browsers show the file; 400 when not one."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.load()
            text = dict(getattr(img, "text", None) or {})  # before the rotation: its copy has no `text`
            return ImageOps.exif_transpose(img), text
    except Exception as exc:  # UnidentifiedImageError, truncated files, decompression bombs
        raise ApiError(400, "not_an_image", f"{what} {path.name!r} is not an image Pillow can read: "
                       f"{type(exc).__name__}: {exc}") from None


def _parse_preview(value: str) -> tuple[str, int]:
    """ComfyUI's `preview=format;quality` ('webp;90', 'jpeg;75'); the quality is clamped to 1..100."""
    fmt, _, quality = value.partition(";")
    fmt = fmt.strip().lower() or "webp"
    if fmt not in _PREVIEW_FORMATS:
        raise ApiError(400, "invalid_request", f"preview format {fmt!r} is not one of webp, jpeg "
                       "(preview=webp;90 or preview=jpeg;75)")
    if not quality.strip():
        return _PREVIEW_FORMATS[fmt], 90
    try:
        q = int(quality)
    except ValueError:
        raise ApiError(400, "invalid_request", f"preview quality {quality!r} is not a whole number "
                       "(1..100, as in preview=webp;90)") from None
    return _PREVIEW_FORMATS[fmt], min(100, max(1, q))


def _render(path: Path, channel: str | None, preview: tuple[str, int] | None) -> tuple[bytes, str]:
    """The image at `path` with one channel selection and/or re-encoded: (bytes, format for Pillow)."""
    from PIL import Image

    img, _ = _open_image(path, "file")
    if channel == "rgb":
        out = _rgba(img).convert("RGB")
    elif channel == "a":
        alpha = _rgba(img).getchannel("A")
        out = Image.new("RGBA", img.size, (0, 0, 0, 0))  # ComfyUI's shape: black, the mask in the alpha
        out.putalpha(alpha)
    else:
        out = _rgba(img) if _has_alpha(img) else _rgba(img).convert("RGB")
    buf = io.BytesIO()
    if preview is None:
        out.save(buf, format="PNG", compress_level=4)
        return buf.getvalue(), "png"
    fmt, quality = preview
    if fmt == "jpeg":
        if channel in ("a", "rgba"):  # the caller asked for alpha that JPEG cannot carry: WebP, as ComfyUI does
            fmt = "webp"
        else:
            out = out.convert("RGB")
    try:
        out.save(buf, format=fmt.upper(), quality=quality)
    except (OSError, ValueError) as exc:  # e.g. WebP's 16383-pixel limit
        raise ApiError(400, "invalid_request", f"{path.name!r} ({out.size[0]}x{out.size[1]}) cannot be re-encoded "
                       f"as {fmt}: {exc}") from None
    return buf.getvalue(), fmt


async def view(request: web.Request) -> web.StreamResponse:
    q = parse_query(request, m.ViewQuery)
    path = inside(_folder(request, q.type), q.subfolder, q.filename)
    if not path.is_file():
        raise ApiError(404, "not_found", f"no file {q.filename!r} in {q.type}/{q.subfolder}".rstrip("/"))
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    suffix = path.suffix.lower()
    if q.preview is not None or q.channel in ("rgb", "a"):
        preview = _parse_preview(q.preview) if q.preview is not None else None
        if suffix not in IMAGE_SUFFIXES:
            raise ApiError(400, "not_an_image", f"channel and preview apply to images; {path.name!r} is not one")
        data, fmt = await asyncio.to_thread(_render, path, q.channel, preview)
        headers["Content-Type"] = f"image/{fmt}"
        headers["Content-Disposition"] = _disposition("inline", f"{path.stem}.{fmt}")
        return web.Response(body=data, headers=headers)
    if suffix in RISKY_SUFFIXES or suffix not in IMAGE_SUFFIXES | {".json", ".txt", ".webm", ".mp4"}:
        headers["Content-Disposition"] = _disposition("attachment", path.name)
        headers["Content-Type"] = "application/octet-stream"
    else:
        headers["Content-Disposition"] = _disposition("inline", path.name)
    return web.FileResponse(path, headers=headers)


async def _read_form(request: web.Request, limit: int) -> tuple[dict[str, str], bytes, str]:
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise ApiError(413, "too_large", f"upload of {request.content_length} bytes is over the limit of {limit}")
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "invalid_request", "an upload is multipart/form-data with an 'image' file field")
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as exc:
        raise ApiError(400, "invalid_request", f"malformed multipart body: {exc}") from None
    fields: dict[str, str] = {}
    data = b""
    filename = ""
    while True:
        try:
            part = await reader.next()
        except (ValueError, AssertionError) as exc:
            raise ApiError(400, "invalid_request", f"malformed multipart body: {exc}") from None
        if part is None:
            break
        if not isinstance(part, BodyPartReader):  # a nested multipart: not something we take
            continue
        if part.name == "image":
            filename = part.filename or ""
            buf = bytearray()
            while chunk := await part.read_chunk(256 * 1024):
                buf += chunk
                if len(buf) > limit:
                    raise ApiError(413, "too_large", f"the image is over the upload limit of {limit} bytes")
            data = bytes(buf)
        elif part.name:
            raw = await part.read(decode=False)
            if len(raw) > _FORM_FIELD_LIMIT:
                raise ApiError(400, "invalid_request", f"form field {part.name!r} is too long")
            fields[part.name] = raw.decode("utf-8", "replace")
    if not filename and not data:
        raise ApiError(400, "invalid_request", "no 'image' file field in the form")
    return fields, data, filename


def _check_image(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or "?"
            img.verify()
    except Exception as exc:  # UnidentifiedImageError, truncated files, decompression bombs
        raise ApiError(400, "not_an_image", f"the upload is not an image Pillow can read: {type(exc).__name__}: {exc}") from None
    return fmt


def _free_name(folder: Path, name: str, data: bytes) -> str:
    """ComfyUI's rule: reuse an identical file, else add ' (1)', ' (2)', ... before the suffix."""
    stem, suffix = os.path.splitext(name)
    candidate, i = name, 1
    while (folder / candidate).exists():
        p = folder / candidate
        if p.is_file() and p.stat().st_size == len(data) and p.read_bytes() == data:
            return candidate
        candidate = f"{stem} ({i}){suffix}"
        i += 1
    return candidate


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _original_ref(fields: dict[str, str]) -> tuple[str, str, str]:
    """(type, subfolder, filename) of the image a mask belongs to, from ComfyUI's `original_ref` field."""
    raw = fields.get("original_ref")
    if raw is None or not raw.strip():
        raise ApiError(400, "invalid_request", "form field 'original_ref' is missing: a mask upload names its image "
                       'as JSON {"filename", "subfolder", "type"}')
    try:
        ref = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_request", f"form field 'original_ref' is not valid JSON: {exc}") from None
    if not isinstance(ref, dict):
        raise ApiError(400, "invalid_request", 'form field \'original_ref\' must be a JSON object {"filename", '
                       '"subfolder", "type"}')
    filename, subfolder, kind = ref.get("filename"), ref.get("subfolder") or "", ref.get("type")
    if not isinstance(filename, str) or not filename.strip():
        raise ApiError(400, "invalid_request", "original_ref.filename is missing or not a string")
    if not isinstance(subfolder, str):
        raise ApiError(400, "invalid_request", "original_ref.subfolder must be a string")
    for annotated in ("input", "output", "temp"):  # ComfyUI's 'name.png [input]' form names the folder
        if filename.endswith(f" [{annotated}]"):
            filename, kind = filename[: -len(annotated) - 3], annotated
            break
    kind = kind or "output"  # ComfyUI's default for a reference without a type
    if kind not in ("input", "output", "temp"):
        raise ApiError(400, "invalid_request", f"original_ref.type {kind!r} is not one of input, output, temp")
    return kind, subfolder, filename


def _compose_mask(original: Path, mask_data: bytes) -> bytes:
    """The original as RGBA PNG with the mask image's alpha, keeping its PNG text chunks (the workflow)."""
    from PIL import Image, PngImagePlugin

    base, text = _open_image(original, "the original image")
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    try:
        with Image.open(io.BytesIO(mask_data)) as mask_img:
            alpha = _rgba(mask_img).getchannel("A")
    except Exception as exc:  # verified but not decodable (truncated pixel data)
        raise ApiError(400, "not_an_image", f"the mask is not an image Pillow can read: "
                       f"{type(exc).__name__}: {exc}") from None
    rgba = _rgba(base)
    if alpha.size != rgba.size:
        raise ApiError(400, "invalid_request", f"the mask is {alpha.size[0]}x{alpha.size[1]} but the original "
                       f"{original.name!r} is {rgba.size[0]}x{rgba.size[1]}; they must be the same size")
    rgba.putalpha(alpha)
    buf = io.BytesIO()
    rgba.save(buf, format="PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


async def _store(request: web.Request, mask: bool) -> web.Response:
    loom = loom_of(request)
    limit = int(loom.config.max_upload_mb * 1024 * 1024)
    fields, data, filename = await _read_form(request, limit)
    form = parse_model(m.UploadForm, {
        "image": b"", "kind": fields.get("kind", "mask" if mask else "image"), "subfolder": fields.get("subfolder", ""),
        "type": fields.get("type", "input"), "overwrite": fields.get("overwrite", "false").lower() in ("1", "true", "yes", "on"),
    }, "form")
    name = filename or ""
    if "/" in name or "\\" in name:
        raise ApiError(400, "unsafe_path", f"file name {name!r} must be a plain name, without folders")
    check_relative(name, "file name")
    if name.startswith("."):
        raise ApiError(400, "unsafe_path", f"file name {name!r} must not start with a dot")
    if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
        raise ApiError(400, "not_an_image", f"file name {name!r} must end in one of {sorted(IMAGE_SUFFIXES)}")
    if not data:
        raise ApiError(400, "not_an_image", "the uploaded file is empty")
    await asyncio.to_thread(_check_image, data)
    root = _folder(request, form.type)
    folder = inside(root, form.subfolder) if form.subfolder else root.resolve()  # refused before any work
    if mask:
        kind, subfolder, original_name = _original_ref(fields)
        original = inside(_folder(request, kind), subfolder, original_name)
        if not original.is_file():
            where = f"{kind}/{subfolder.strip('/')}".rstrip("/")
            raise ApiError(404, "not_found", f"original_ref names {original_name!r} in {where}, which does not exist")
        data = await asyncio.to_thread(_compose_mask, original, data)
        stem, suffix = os.path.splitext(name)
        if suffix.lower() != ".png":  # the result is a PNG (it has alpha), whatever the upload was
            name = stem + ".png"
    root.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    final = name if form.overwrite else await asyncio.to_thread(_free_name, folder, name, data)
    target = inside(root, form.subfolder, final)
    if target.is_dir():
        raise ApiError(409, "conflict", f"{final!r} is a folder")
    await asyncio.to_thread(_write_atomic, target, data)
    return json_response({"name": final, "subfolder": form.subfolder.strip("/"), "type": form.type})


async def upload(request: web.Request) -> web.Response:
    return await _store(request, mask=False)


async def upload_mask(request: web.Request) -> web.Response:
    """ComfyUI's mask editor: the original image (`original_ref`) with the uploaded image's alpha, as PNG."""
    return await _store(request, mask=True)


ROUTES = [
    Route("GET", "/api/v1/view", view, "A file of the output, input or temp folder", query=m.ViewQuery,
          produces="application/octet-stream"),
    Route("POST", "/api/v1/upload", upload, "Upload an image or mask to the input folder", body=m.UploadForm,
          body_kind="multipart", response=m.UploadResult),
]

COMFY_ROUTES = [
    Route("GET", "/view", view, "ComfyUI: a file of the output, input or temp folder", query=m.ViewQuery,
          produces="application/octet-stream", tag="comfyui", comfy=True),
    Route("POST", "/upload/image", upload, "ComfyUI: upload an image", body=m.UploadForm, body_kind="multipart",
          response=m.UploadResult, tag="comfyui", comfy=True),
    Route("POST", "/upload/mask", upload_mask, "ComfyUI: the original image (original_ref) with the uploaded "
          "image's alpha, saved as PNG", body=m.UploadMaskForm, body_kind="multipart", response=m.UploadResult,
          tag="comfyui", comfy=True),
]
