"""Model folders listing: single files and diffusers folders, with safetensors metadata from the header.

A safetensors file starts with an 8-byte little-endian header length and a JSON header; its
`__metadata__` (training notes, base model, ...) is read from there without loading any tensor. Results
are cached by (path, size, mtime), so listing a folder of large models costs a few `stat` calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from . import models as m
from .errors import ApiError, json_response
from ..model_files import iter_models
from .routing import Route

MODEL_FOLDERS = ("checkpoints", "loras", "controlnet", "vae", "embeddings", "clip")
FILE_FORMATS = {".safetensors": "safetensors", ".sft": "safetensors", ".ckpt": "ckpt", ".pt": "pt", ".bin": "bin", ".pth": "pth"}
MAX_HEADER = 64 * 1024 * 1024
_MAX_TEXT = 2048


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """{"metadata": __metadata__, "tensors": count}; raises ValueError for a file that is not safetensors."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("file too short for a safetensors header")
        (size,) = struct.unpack("<Q", head)
        if size < 2 or size > MAX_HEADER:
            raise ValueError(f"implausible safetensors header size {size}")
        header = json.loads(f.read(size))
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not an object")
    meta = header.pop("__metadata__", None) or {}
    meta = {str(k): (v[:_MAX_TEXT] + "..." if isinstance(v, str) and len(v) > _MAX_TEXT else v) for k, v in meta.items()}
    return {"metadata": meta, "tensors": len(header)}


def _diffusers_metadata(path: Path) -> dict:
    for name in ("model_index.json", "config.json"):
        p = path / name
        if p.is_file():
            try:
                cfg = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}
            keep = ("_class_name", "_diffusers_version", "architectures", "model_type")
            return {k: cfg[k] for k in keep if k in cfg}
    return {}


def _folder_size(path: Path) -> tuple[int, float]:
    total, newest = 0, 0.0
    for dirpath, _, filenames in os.walk(path):
        for n in filenames:
            try:
                st = os.stat(os.path.join(dirpath, n))
            except OSError:
                continue
            total += st.st_size
            newest = max(newest, st.st_mtime)
    return total, newest


class MetadataCache:
    """(path, size, mtime) -> listing entry; thread-safe because listings run in worker threads."""

    def __init__(self, limit: int = 4096) -> None:
        self._entries: dict[tuple[str, int, int], dict] = {}
        self._lock = threading.Lock()
        self.limit = limit

    def entry(self, path: Path, name: str) -> dict | None:
        try:
            st = path.stat()
        except OSError:
            return None
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None:
            return {**hit, "name": name}
        if path.is_dir():
            size, mtime = _folder_size(path)
            info = {"size": size, "modified": mtime or st.st_mtime, "format": "diffusers", "metadata": _diffusers_metadata(path)}
        else:
            fmt = FILE_FORMATS[path.suffix.lower()]
            meta: dict[str, Any] = {}
            if fmt == "safetensors":
                try:
                    meta = read_safetensors_header(path)
                except (OSError, ValueError) as exc:
                    meta = {"error": str(exc)}
            info = {"size": st.st_size, "modified": st.st_mtime, "format": fmt, "metadata": meta}
        with self._lock:
            if len(self._entries) >= self.limit:
                self._entries.clear()
            self._entries[key] = info
        return {**info, "name": name}


def list_models(settings: Any, kind: str, cache: MetadataCache) -> list[dict]:
    """Every model of a kind over its folders (the user's first), with its metadata."""
    out = [e for name, p in iter_models(settings, kind) if (e := cache.entry(p, name)) is not None]
    return sorted(out, key=lambda e: e["name"].lower())


def check_kind(kind: str) -> str:
    if kind not in MODEL_FOLDERS:
        raise ApiError(404, "not_found", f"no model folder {kind!r} (folders: {list(MODEL_FOLDERS)})")
    return kind


async def _listing(request: web.Request, kind: str) -> list[dict]:
    from .state import loom_of  # here: state imports this module

    loom = loom_of(request)
    return await asyncio.to_thread(list_models, loom.settings, kind, loom.model_meta)


async def get_models(request: web.Request) -> web.Response:
    return json_response({"folders": {k: await _listing(request, k) for k in MODEL_FOLDERS}})


async def get_model_folder(request: web.Request) -> web.Response:
    kind = check_kind(request.match_info["folder"])
    return json_response({"items": await _listing(request, kind)})


async def comfy_models(request: web.Request) -> web.Response:
    return json_response(list(MODEL_FOLDERS))


async def comfy_model_folder(request: web.Request) -> web.Response:
    kind = check_kind(request.match_info["folder"])
    return json_response([e["name"] for e in await _listing(request, kind)])


ROUTES = [
    Route("GET", "/api/v1/models", get_models, "Every model folder with its files", response=m.ModelFolders, tag="models"),
    Route("GET", "/api/v1/models/{folder}", get_model_folder, "One model folder", response=m.ModelList, tag="models"),
]

COMFY_ROUTES = [
    Route("GET", "/models", comfy_models, "ComfyUI: the model folder names", tag="comfyui", comfy=True),
    Route("GET", "/models/{folder}", comfy_model_folder, "ComfyUI: the files of a model folder", tag="comfyui", comfy=True),
]
