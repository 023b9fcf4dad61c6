"""Fixtures for the metrics tests: a tiny random CLIP folder and a random-weight FID Inception.

Nothing is downloaded: the CLIP model is built from a small CLIPConfig and saved with the repo's
bundled tokenizer files; the Inception gets a variance-preserving random init so its features
are not vanishingly small (a plain default init shrinks them to ~1e-8 through 94 layers).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = REPO / "nodes" / "sd" / "tokenizers" / "clip"


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/clip/tiny: CLIPModel (32-wide towers, 32px images, 8px patches) + tokenizer + image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    models = tmp_path_factory.mktemp("models")
    folder = models / "clip" / "tiny"
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPTokenizer(
        vocab_file=str(TOKENIZER_DIR / "vocab.json"),
        merges_file=str(TOKENIZER_DIR / "merges.txt"),
        model_max_length=77,
    ).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_dir: Path):
    from nodes.metrics.clip_model import load_clip

    return load_clip("tiny", models_dir=tiny_clip_dir.parent.parent)


def random_inception_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict for the FID Inception with He-normal convs and non-trivial BN statistics."""
    from nodes.metrics.inception import FIDInceptionV3

    torch.manual_seed(seed)
    model = FIDInceptionV3()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.8, 1.2)
                module.bias.uniform_(-0.1, 0.1)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.8, 1.2)
    return model.state_dict()


@pytest.fixture(scope="session")
def make_inception_state():
    """The random_inception_state factory, for tests (conftest is not importable as a module)."""
    return random_inception_state


@pytest.fixture(scope="session")
def inception_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models/ folder whose inception/ holds a random-weight file under the standard name."""
    from nodes.metrics.fid import WEIGHTS_FILES

    models = tmp_path_factory.mktemp("models")
    (models / "inception").mkdir()
    torch.save(random_inception_state(), models / "inception" / WEIGHTS_FILES[0])
    return models


@pytest.fixture(scope="session")
def inception(inception_models_dir: Path):
    from nodes.metrics.fid import load_fid_inception

    return load_fid_inception(models_dir=inception_models_dir)
