"""CLIP score and directional similarity on a tiny random CLIPModel: by-hand formulas and torchmetrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nodes.metrics.clip_direction import clip_directional_similarity
from nodes.metrics.clip_model import ClipModelNotFound, find_clip_folder, load_clip, preprocess_images
from nodes.metrics.clip_score import clip_score

PROMPTS = ["a photo of a cat", "a red car on a road", "an oil painting of a lighthouse", "two dogs"]


def _images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Smooth random uint8 images [N,3,H,W] (smooth like real photos, so 8-bit resampling is exact)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, h, w), generator=g).float()
    return F.avg_pool2d(x, 5, 1, 2).round().to(torch.uint8)


def _as_image_batch(u8: torch.Tensor) -> torch.Tensor:
    """uint8 [N,3,H,W] -> the engine's IMAGE: float [N,H,W,3] in 0..1."""
    return u8.permute(0, 2, 3, 1).float() / 255.0


def _pil_processor(folder: Path):
    """CLIPProcessor with the PIL image backend, the one ours mirrors (transformers picks a torchvision
    backend when torchvision is installed; it resizes slightly differently)."""
    import transformers
    from transformers import CLIPProcessor, CLIPTokenizer

    image_cls = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
    return CLIPProcessor(
        image_processor=image_cls.from_pretrained(str(folder)), tokenizer=CLIPTokenizer.from_pretrained(str(folder))
    )


def _reference_features(folder: Path, u8: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings the long way: CLIPProcessor, the towers and the projections, called directly."""
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(str(folder)).eval()
    processor = _pil_processor(folder)
    with torch.no_grad():
        pixels = processor(images=list(u8), return_tensors="pt")["pixel_values"]
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        tokens = processor(text=texts, return_tensors="pt", padding=True)
        text = model.text_projection(model.text_model(**tokens).pooler_output)
    return image, text


class _TensorFeatures(torch.nn.Module):
    """torchmetrics 1.9 divides get_*_features' result by its norm; transformers 5 returns a ModelOutput."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return self.model.get_text_features(*args, **kwargs).pooler_output


def _torchmetrics_loader(folder: Path):
    from transformers import CLIPModel

    def load():
        model = CLIPModel.from_pretrained(str(folder)).eval()
        return _TensorFeatures(model), _pil_processor(folder)

    return load


def test_missing_model_folder_names_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(ClipModelNotFound) as err:
        find_clip_folder("clip-vit-large-patch14", models_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "clip" / "clip-vit-large-patch14") in message
    assert "config.json" in message and "model.safetensors" in message and "preprocessor_config.json" in message

    incomplete = tmp_path / "clip" / "half"
    incomplete.mkdir(parents=True)
    (incomplete / "config.json").write_text("{}")
    with pytest.raises(ClipModelNotFound, match="lacks model.safetensors"):
        load_clip("half", models_dir=tmp_path)


def test_folder_without_tokenizer_or_image_config_uses_defaults(tmp_path: Path, tiny_clip_dir: Path, tiny_clip) -> None:
    bare = tmp_path / "clip" / "bare"
    bare.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((tiny_clip_dir / name).read_bytes())
    clip = load_clip("bare", models_dir=tmp_path)
    assert any("bundled OpenAI CLIP tokenizer" in note for note in clip.notes)
    assert any("preprocessor_config.json missing" in note for note in clip.notes)
    assert clip.preprocess.crop_hw == (32, 32) and clip.max_length == 77
    images = _as_image_batch(_images(2, 32, 32, seed=5))
    assert torch.allclose(clip_score(images, "a cat", clip).cosine, clip_score(images, "a cat", tiny_clip).cosine)


@pytest.mark.parametrize("hw", [(32, 32), (40, 48), (300, 200), (20, 20), (33, 97)])
def test_preprocessing_matches_clip_processor(tiny_clip_dir: Path, tiny_clip, hw: tuple[int, int]) -> None:
    u8 = _images(2, *hw, seed=hw[0])
    expected = _pil_processor(tiny_clip_dir)(images=list(u8), return_tensors="pt")["pixel_values"]
    ours = preprocess_images(_as_image_batch(u8), tiny_clip.preprocess)
    assert ours.shape == expected.shape == (2, 3, 32, 32)
    # PIL's fixed-point resampler and ours round differently on a few pixels: at most one grey level
    one_level = 1 / 255 / min(tiny_clip.preprocess.std) + 1e-5
    diff = (ours - expected).abs()
    assert diff.max() <= one_level and (diff > 1e-5).float().mean() < 0.01
    pil = preprocess_images([Image.fromarray(im.permute(1, 2, 0).numpy()) for im in u8], tiny_clip.preprocess)
    assert torch.equal(pil, ours)


def test_clip_score_equals_hand_formula_and_torchmetrics(tiny_clip_dir: Path, tiny_clip) -> None:
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.multimodal import CLIPScore

    u8 = _images(4, 40, 56, seed=1)
    result = clip_score(_as_image_batch(u8), PROMPTS, tiny_clip)

    image, text = _reference_features(tiny_clip_dir, u8, PROMPTS)
    cosine = (image / image.norm(dim=-1, keepdim=True) * (text / text.norm(dim=-1, keepdim=True))).sum(-1)
    assert torch.allclose(result.cosine, cosine, atol=1e-5)
    assert torch.allclose(result.scores, 100 * cosine.clamp(min=0), atol=1e-3)
    assert result.mean == pytest.approx(float(100 * cosine.clamp(min=0).mean()), abs=1e-3)

    model, processor = _torchmetrics_loader(tiny_clip_dir)()
    per_pair, n = _clip_score_update(list(u8), PROMPTS, model, processor)
    assert n == 4 and torch.allclose(result.cosine * 100, per_pair, atol=1e-3)
    metric = CLIPScore(model_name_or_path=_torchmetrics_loader(tiny_clip_dir))
    metric.update(u8, PROMPTS)
    assert result.mean_of_raw == pytest.approx(float(metric.compute()), abs=1e-3)


def test_clip_score_inputs_and_notes(tiny_clip) -> None:
    u8 = _images(2, 32, 32, seed=2)
    batch = _as_image_batch(u8)
    one_prompt = clip_score(batch, "a cat", tiny_clip)
    same = clip_score([Image.fromarray(im.permute(1, 2, 0).numpy()) for im in u8], ["a cat", "a cat"], tiny_clip)
    assert torch.allclose(one_prompt.cosine, same.cosine, atol=1e-6)
    long_prompt = " ".join(["cat"] * 100)
    noted = clip_score(batch[:1], long_prompt, tiny_clip)
    assert any("truncated to 77" in note for note in noted.notes)
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        clip_score(batch, ["a", "b", "c"], tiny_clip)


def test_directional_similarity_equals_hand_formula(tiny_clip_dir: Path, tiny_clip) -> None:
    original, edited = _images(3, 32, 48, seed=3), _images(3, 32, 48, seed=4)
    before = ["a photo of a cat", "a house", "a road"]
    after = ["a watercolor of a cat", "a house in snow", "a road at night"]
    result = clip_directional_similarity(_as_image_batch(original), _as_image_batch(edited), before, after, tiny_clip)

    img_a, txt_a = _reference_features(tiny_clip_dir, original, before)
    img_b, txt_b = _reference_features(tiny_clip_dir, edited, after)
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    expected = F.cosine_similarity(unit(img_b) - unit(img_a), unit(txt_b) - unit(txt_a), dim=-1)
    assert torch.allclose(result.similarities, expected, atol=1e-5)
    assert result.mean == pytest.approx(float(expected.mean()), abs=1e-6)

    # reversing the edit reverses both directions: same cosine
    a, b = _as_image_batch(original), _as_image_batch(edited)
    back = clip_directional_similarity(b, a, after, before, tiny_clip)
    assert torch.allclose(back.similarities, result.similarities, atol=1e-5)
    unchanged = clip_directional_similarity(a, a, before, after, tiny_clip)
    assert torch.allclose(unchanged.similarities, torch.zeros(3))
    assert any("did not change" in note for note in unchanged.notes)


def test_torchmetrics_folder_loading_needs_openai_in_path(tiny_clip_dir: Path) -> None:
    """Documents why the tests hand torchmetrics a callable: a plain local folder is refused offline."""
    from torchmetrics.multimodal import CLIPScore

    with pytest.raises(ValueError, match="Invalid model_name_or_path"):
        CLIPScore(model_name_or_path=str(tiny_clip_dir))
