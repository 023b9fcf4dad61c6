"""System stats: versions, devices (CPU, and CUDA GPUs with their memory) and RAM.

`import torch` takes seconds, so it happens once, in a thread, the first time stats are asked for
(the server itself never needs torch to start). Package versions come from installed metadata,
without importing the packages.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from importlib import metadata
from typing import Any

from aiohttp import web

from . import models as m
from .errors import json_response
from .routing import Route


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def ram() -> dict[str, int]:
    """Total and available RAM in bytes (from /proc/meminfo, or sysconf where there is none)."""
    try:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
        return {"ram_total": info.get("MemTotal", 0), "ram_free": info.get("MemAvailable", info.get("MemFree", 0))}
    except (OSError, ValueError, IndexError):
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            return {"ram_total": page * os.sysconf("SC_PHYS_PAGES"), "ram_free": page * os.sysconf("SC_AVPHYS_PAGES")}
        except (ValueError, OSError, AttributeError):
            return {"ram_total": 0, "ram_free": 0}


def _torch_devices() -> tuple[str | None, list[dict]]:
    try:
        import torch
    except Exception:
        return None, []
    devices = []
    try:
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                reserved = torch.cuda.memory_reserved(i)
                allocated = torch.cuda.memory_allocated(i)
                devices.append({"name": f"cuda:{i} {torch.cuda.get_device_name(i)}", "type": "cuda", "index": i,
                                "vram_total": int(total), "vram_free": int(free),
                                "torch_vram_total": int(reserved), "torch_vram_free": int(reserved - allocated)})
    except Exception:  # a broken driver must not break the stats
        pass
    return torch.__version__, devices


class SystemProbe:
    """Asks torch once, in a thread; later calls reuse the import (memory figures stay fresh)."""

    def __init__(self) -> None:
        self._torch_ready: asyncio.Future | None = None

    async def stats(self) -> dict[str, Any]:
        if self._torch_ready is None:
            self._torch_ready = asyncio.ensure_future(asyncio.to_thread(_torch_devices))
        await asyncio.shield(self._torch_ready)
        torch_version, devices = await asyncio.to_thread(_torch_devices)
        mem = ram()
        cpu = {"name": f"cpu {platform.processor() or platform.machine()}".strip(), "type": "cpu", "index": None,
               "vram_total": mem["ram_total"], "vram_free": mem["ram_free"], "torch_vram_total": 0, "torch_vram_free": 0}
        versions = {"python": platform.python_version(), "latentloom": _version("latentloom"), "torch": torch_version,
                    "diffusers": _version("diffusers"), "transformers": _version("transformers"),
                    "aiohttp": _version("aiohttp"), "pydantic": _version("pydantic")}
        system = {"os": sys.platform, "ram_total": mem["ram_total"], "ram_free": mem["ram_free"],
                  "comfyui_version": "latentloom-" + (versions["latentloom"] or "dev"),
                  "python_version": sys.version, "pytorch_version": torch_version or "", "embedded_python": False,
                  "argv": sys.argv, "cpu_count": os.cpu_count() or 1}
        return {"system": system, "devices": devices + [cpu], "versions": versions, "memory": mem}


async def get_system(request: web.Request) -> web.Response:
    from .state import loom_of  # here: state imports this module

    return json_response(await loom_of(request).system.stats())


ROUTES = [Route("GET", "/api/v1/system", get_system, "Devices, memory and versions", response=m.SystemStats, tag="system")]
COMFY_ROUTES = [Route("GET", "/system_stats", get_system, "ComfyUI: system stats", response=m.SystemStats,
                      tag="comfyui", comfy=True)]
