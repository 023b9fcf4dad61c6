"""Viewing output/input/temp files and uploading images: the two routes that touch the disk by client name.

Both resolve names with `security.inside` (no traversal, no symlink escapes). `/view` serves HTML,
JavaScript, SVG and XML as downloads with `nosniff`, so a file a workflow wrote can never run as a page
of this origin. Uploads are size-limited while streaming, must be real images (Pillow opens and verifies
them) with an image file suffix, and are written atomically.
"""

from __future__ import annotations

import asyncio
import io
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


async def view(request: web.Request) -> web.StreamResponse:
    q = parse_query(request, m.ViewQuery)
    path = inside(_folder(request, q.type), q.subfolder, q.filename)
    if not path.is_file():
        raise ApiError(404, "not_found", f"no file {q.filename!r} in {q.type}/{q.subfolder}".rstrip("/"))
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    if path.suffix.lower() in RISKY_SUFFIXES or path.suffix.lower() not in IMAGE_SUFFIXES | {".json", ".txt", ".webm", ".mp4"}:
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


async def upload(request: web.Request) -> web.Response:
    loom = loom_of(request)
    limit = int(loom.config.max_upload_mb * 1024 * 1024)
    fields, data, filename = await _read_form(request, limit)
    form = parse_model(m.UploadForm, {
        "image": b"", "kind": fields.get("kind", "image"), "subfolder": fields.get("subfolder", ""),
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
    root.mkdir(parents=True, exist_ok=True)
    folder = inside(root, form.subfolder) if form.subfolder else root.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    final = name if form.overwrite else await asyncio.to_thread(_free_name, folder, name, data)
    target = inside(root, form.subfolder, final)
    if target.is_dir():
        raise ApiError(409, "conflict", f"{final!r} is a folder")
    await asyncio.to_thread(_write_atomic, target, data)
    return json_response({"name": final, "subfolder": form.subfolder.strip("/"), "type": form.type})


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
    Route("POST", "/upload/mask", upload, "ComfyUI: upload a mask image (stored as given)", body=m.UploadForm,
          body_kind="multipart", response=m.UploadResult, tag="comfyui", comfy=True),
]
