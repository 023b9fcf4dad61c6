"""Engine test fixtures: a registry of counting test nodes, an executor writing under tmp_path."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loomtest_nodes as tn  # noqa: E402

from engine.cache import OutputCache  # noqa: E402
from engine.executor import Executor  # noqa: E402
from engine.settings import Settings  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_counters():
    tn.reset()
    yield
    tn.reset()


@pytest.fixture
def reg():
    return tn.registry()


@pytest.fixture
def settings(tmp_path):
    return Settings(input_dir=tmp_path / "input", output_dir=tmp_path / "output", user_dir=tmp_path / "user")


@pytest.fixture
def executor(reg, settings):
    return Executor(reg, settings, OutputCache(64 * 1024 * 1024))
