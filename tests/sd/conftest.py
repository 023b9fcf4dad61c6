"""Session-scoped model fixtures for the SD loading tests (and for anyone else who wants them).

Models are built once per session in a temporary folder; every factory is deterministic from its seed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = "1"

from tests import tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def sd_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sd-models")


@pytest.fixture(scope="session")
def tiny_sd15_dir(sd_models_dir: Path) -> Path:
    return tiny_models.make_tiny_sd15(sd_models_dir / "tiny-sd15")


@pytest.fixture(scope="session")
def tiny_sd2v_dir(sd_models_dir: Path) -> Path:
    return tiny_models.make_tiny_sd2v(sd_models_dir / "tiny-sd2v")


@pytest.fixture(scope="session")
def tiny_sdxl_dir(sd_models_dir: Path) -> Path:
    return tiny_models.make_tiny_sdxl(sd_models_dir / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_inpaint_dir(sd_models_dir: Path) -> Path:
    return tiny_models.make_tiny_inpaint(sd_models_dir / "tiny-inpaint")


@pytest.fixture(scope="session")
def tiny_new_arch_dir(sd_models_dir: Path) -> Callable[[str], Path]:
    """``tiny_new_arch_dir(arch)`` -> a tiny diffusers folder for ``sd2-inpaint``, ``sdxl-inpaint`` or ``sdxl-refiner``."""
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            folder = sd_models_dir / f"tiny-{arch}"
            made[arch] = (tiny_models.make_tiny_refiner(folder) if arch == "sdxl-refiner"
                          else tiny_models.make_tiny_inpaint(folder, arch=arch))
        return made[arch]

    return get


@pytest.fixture(scope="session")
def tiny_sd15_file(sd_models_dir: Path) -> Path:
    """The tiny SD1.5 model (same weights as ``tiny_sd15_dir``) as a single file with config metadata."""
    return tiny_models.make_tiny_single_file(sd_models_dir / "tiny-sd15.safetensors", "sd15")


@pytest.fixture(scope="session")
def narrow_model(sd_models_dir: Path) -> Callable[[str], tuple[Path, tuple[Any, Any, tuple[Any, ...]]]]:
    """``narrow_model(arch)`` -> (single file with config metadata, (unet, vae, text_encoders) it was made from)."""
    made: dict[str, tuple[Path, tuple[Any, Any, tuple[Any, ...]]]] = {}

    def get(arch: str) -> tuple[Path, tuple[Any, Any, tuple[Any, ...]]]:
        if arch not in made:
            from nodes.sd import ldm_convert

            overrides = tiny_models.NARROW_OVERRIDES[arch]
            models = tiny_models.build_models(arch, overrides, seed=0)
            scheduler = tiny_models.configs_with(arch, overrides)["scheduler"]
            path = ldm_convert.save_single_file(sd_models_dir / f"narrow-{arch}.safetensors", *models, arch,
                                                scheduler_config=scheduler)
            made[arch] = (path, models)
        return made[arch]

    return get
