"""Tiny Stable Diffusion models for the node tests, built once per session into a models folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.node import Folders
from tests import tiny_models


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    """Empty model/input/output/temp/user folders for one test (the input folder exists)."""
    f = Folders(models=tmp_path / "models", input=tmp_path / "input", output=tmp_path / "output",
                temp=tmp_path / "output" / "temp", user=tmp_path / "user")
    f.input.mkdir(parents=True)
    return f


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    ck = root / "checkpoints"
    ck.mkdir()
    tiny_models.make_tiny_sd15(ck / "tiny-sd15")
    return root


@pytest.fixture(scope="session")
def sdxl_models_dir(models_dir: Path) -> Path:
    tiny_models.make_tiny_sdxl(models_dir / "checkpoints" / "tiny-sdxl")
    return models_dir


@pytest.fixture(scope="session")
def inpaint_models_dir(models_dir: Path) -> Path:
    tiny_models.make_tiny_inpaint(models_dir / "checkpoints" / "tiny-inpaint")
    return models_dir


@pytest.fixture(scope="session")
def sd2_inpaint_models_dir(models_dir: Path) -> Path:
    tiny_models.make_tiny_inpaint(models_dir / "checkpoints" / "tiny-sd2-inpaint", arch="sd2-inpaint")
    return models_dir


@pytest.fixture(scope="session")
def sdxl_inpaint_models_dir(sdxl_models_dir: Path) -> Path:
    tiny_models.make_tiny_inpaint(sdxl_models_dir / "checkpoints" / "tiny-sdxl-inpaint", arch="sdxl-inpaint")
    return sdxl_models_dir


@pytest.fixture(scope="session")
def refiner_models_dir(sdxl_models_dir: Path) -> Path:
    """tiny-sdxl and a tiny SDXL refiner (OpenCLIP-G-width text encoder only, aesthetic-score time ids)."""
    tiny_models.make_tiny_refiner(sdxl_models_dir / "checkpoints" / "tiny-sdxl-refiner")
    return sdxl_models_dir


@pytest.fixture
def own_models():
    """For a test that runs models in another dtype: the shared model cache is dropped after it, because the
    device manager converts cached models in place (fp16 would round the weights later fp32 tests compare)."""
    from nodes.sd import loading

    loading.clear_cache()
    yield
    loading.clear_cache()
