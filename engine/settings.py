"""Run-time settings shared by the CLI, the server and the nodes: folders, device, cache size.

One object passed explicitly (to the executor, to nodes through their context, to catalog choice
functions), so two servers or test runs in one process never see each other's folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .node import Folders

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_user_dir() -> Path:
    base = os.environ.get("LOOM_USER_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "latentloom"


@dataclass
class Settings:
    models_dir: Path = REPO_ROOT / "models"
    input_dir: Path = Path("input")
    output_dir: Path = Path("output")
    user_dir: Path = field(default_factory=default_user_dir)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = "auto"
    cache_bytes: int = 4 * 1024**3
    vram_budget_bytes: int | None = None
    fast: bool = False
    _devices: object = field(default=None, repr=False, compare=False)

    def devices(self):
        """The DeviceManager for these settings (created on first use; imports torch)."""
        if self._devices is None:
            from .devices import DeviceManager

            self._devices = DeviceManager.from_settings(self)
        return self._devices

    def folders(self) -> Folders:
        return Folders(
            models=Path(self.models_dir), input=Path(self.input_dir), output=Path(self.output_dir),
            temp=Path(self.output_dir) / "temp", user=Path(self.user_dir),
        )

    def model_folders(self, kind: str) -> list[Path]:
        """Folders searched for a model kind (`checkpoints`, `loras`, ...): the user's, then the repo's."""
        seen, out = set(), []
        for root in (Path(self.models_dir), REPO_ROOT / "models"):
            p = (root / kind).resolve()
            if p not in seen:
                seen.add(p)
                out.append(p)
        return out


def offline() -> None:
    """Latent Loom never downloads at run time: make the hub libraries fail fast instead."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
