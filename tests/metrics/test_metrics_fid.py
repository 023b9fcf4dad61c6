"""FID/KID math, the FID Inception's weight layout, and the folder pipeline with its cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import linalg

from nodes.metrics.fid import (
    WEIGHTS_FILES,
    FeatureStats,
    InceptionWeightsNotFound,
    NotEnoughImages,
    compute_fid,
    feature_statistics,
    fid_from_features,
    folder_statistics,
    frechet_distance,
    frechet_distance_eig,
    frechet_distance_gram,
    kernel_inception_distance,
    list_images,
    load_fid_inception,
    load_statistics,
    save_statistics,
    stats_cache_key,
)
from nodes.metrics.inception import FIDInceptionV3


def _features(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / np.sqrt(d) + rng.standard_normal(d)


def _direct_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID written out plainly with numpy/scipy, for comparison."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a.dot(cov_b)).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_fid_of_a_set_with_itself_is_zero() -> None:
    a = _features(400, 48, seed=0)
    for method in ("sqrtm", "eig", "gram"):
        assert abs(fid_from_features(a, a, method=method, check=None).fid) <= 1e-6


def test_fid_grows_monotonically_with_a_shift() -> None:
    a = _features(300, 32, seed=1)
    direction = np.random.default_rng(2).standard_normal(32)
    values = [fid_from_features(a, a + c * direction, check=None).fid for c in (0.0, 0.05, 0.2, 0.5, 1.0, 3.0)]
    assert all(lo < hi for lo, hi in zip(values, values[1:], strict=False))
    # a pure shift leaves the covariances equal: FID = |shift|^2
    assert values[-1] == pytest.approx(9 * float(direction @ direction), rel=1e-8)


@pytest.mark.parametrize(("n1", "n2", "d"), [(500, 400, 64), (30, 25, 64)])
def test_fid_equals_direct_scipy_and_eigen_check(n1: int, n2: int, d: int) -> None:
    a, b = _features(n1, d, seed=3), _features(n2, d, seed=4) * 1.3 + 0.2
    result = fid_from_features(a, b)
    assert result.method == "sqrtm" and result.fid == pytest.approx(_direct_fid(a, b), rel=1e-9)
    assert result.check_method == ("gram" if n1 < d else "eig")
    assert result.fid_check == pytest.approx(result.fid, rel=1e-6)
    # both independent routes agree with the reference, also when n < d (singular covariances)
    sa, sb = feature_statistics(a), feature_statistics(b)
    assert frechet_distance_eig(sa.mu, sa.sigma, sb.mu, sb.sigma) == pytest.approx(result.fid, rel=1e-6)
    assert frechet_distance_gram(a, b) == pytest.approx(result.fid, rel=1e-6)
    if n1 < d:
        assert any("rank-deficient" in note for note in result.notes)


def test_frechet_distance_rejects_mismatched_statistics() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_kid_matches_the_unbiased_mmd_formula() -> None:
    a, b = _features(60, 16, seed=5), _features(60, 16, seed=6) + 0.3
    kid = kernel_inception_distance(a, b, num_subsets=1, subset_size=60)
    k = lambda x, y: (x @ y.T / 16 + 1) ** 3  # noqa: E731
    m = 60
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    expected = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    expected -= 2 * kxy.mean()
    assert kid.mean == pytest.approx(expected, rel=1e-10)
    same = kernel_inception_distance(_features(200, 16, 7), _features(200, 16, 7) + 0, num_subsets=20, subset_size=50)
    shifted = kernel_inception_distance(a, a + 1.0, num_subsets=20, subset_size=50)
    assert abs(same.mean) < shifted.mean
    small = kernel_inception_distance(a[:10], b, num_subsets=5)
    assert small.subset_size == 10 and small.notes


def test_fewer_than_two_images_is_an_error(tmp_path: Path, inception) -> None:
    with pytest.raises(NotEnoughImages, match="at least 2"):
        feature_statistics(np.zeros((1, 2048)))
    Image.new("RGB", (16, 16)).save(tmp_path / "only.png")
    with pytest.raises(NotEnoughImages, match=r"at least 2 images per set; .* has 1"):
        folder_statistics(tmp_path, inception)


def test_inception_weights_use_the_standard_key_names(tmp_path: Path, inception_models_dir: Path, inception) -> None:
    weights_file = inception_models_dir / "inception" / WEIGHTS_FILES[0]
    state = torch.load(weights_file, weights_only=True)
    FIDInceptionV3().load_state_dict(state, strict=True)  # the standard file's exact loading recipe
    assert len(state) == 566  # 94 conv+BN units x 6 tensors + fc weight/bias
    for key, shape in {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6b.branch7x7dbl_5.conv.weight": (192, 128, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "fc.weight": (1008, 2048),
    }.items():
        assert tuple(state[key].shape) == shape
    assert not any(k.startswith("AuxLogits") for k in state)

    # files converted without the BN batch counters, and the .safetensors form, load as well
    from safetensors.torch import save_file

    trimmed = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    save_file(trimmed, str(tmp_path / WEIGHTS_FILES[1]))
    safetensors_models = tmp_path
    (safetensors_models / "inception").mkdir()
    (tmp_path / WEIGHTS_FILES[1]).rename(safetensors_models / "inception" / WEIGHTS_FILES[1])
    from_safetensors = load_fid_inception(models_dir=safetensors_models).model
    for name, tensor in inception.model.state_dict().items():
        assert torch.equal(from_safetensors.state_dict()[name], tensor), name


def test_missing_weights_error_names_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(InceptionWeightsNotFound) as err:
        load_fid_inception(models_dir=tmp_path)
    assert WEIGHTS_FILES[0] in str(err.value) and str((tmp_path / "inception").resolve()) in str(err.value)


def test_features_resize_each_image_to_299_bilinear(inception) -> None:
    g = torch.Generator().manual_seed(0)
    small, square = torch.rand(2, 64, 48, 3, generator=g), torch.rand(1, 299, 299, 3, generator=g)
    feats, notes = inception.features([small, square])
    assert feats.shape == (3, 2048) and np.isfinite(feats).all() and feats.std() > 1e-3
    assert notes and "resized 2 image(s) (2 at 48x64) to 299x299" in notes[0]
    resized = F.interpolate(small[:1].permute(0, 3, 1, 2), size=(299, 299), mode="bilinear", align_corners=False)
    direct, direct_notes = inception.features(resized.permute(0, 2, 3, 1))
    assert direct_notes == [] and np.allclose(direct, feats[:1], rtol=1e-4, atol=1e-5)


def _write_images(folder: Path, count: int, size: tuple[int, int], seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        base = rng.integers(0, 256, 3)
        noise = rng.integers(-40, 40, (size[1], size[0], 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")


def test_folder_fid_with_cache_and_kid(tmp_path: Path, inception) -> None:
    real, fake, cache = tmp_path / "real", tmp_path / "fake", tmp_path / "cache"
    _write_images(real, 3, (64, 64), seed=1)
    _write_images(fake, 2, (48, 40), seed=2)

    first = folder_statistics(real, inception, cache_dir=cache, keep_features=True)
    second = folder_statistics(real, inception, cache_dir=cache, keep_features=True)
    assert not first.cache_hit and second.cache_hit and first.cache_file == second.cache_file
    assert first.cache_file is not None and first.cache_file.suffix == ".npz"
    assert np.array_equal(first.mu, second.mu) and np.array_equal(first.sigma, second.sigma)
    assert first.mu.shape == (2048,) and first.sigma.shape == (2048, 2048) and first.n == 3

    files = list_images(real)
    key = stats_cache_key(real, files, inception.identity)
    assert first.cache_file.name == f"fid-stats-{key}.npz"
    os.utime(files[0], ns=(1_000_000_000, 1_000_000_000))  # any change to the files misses the cache
    assert stats_cache_key(real, files, inception.identity) != key
    assert stats_cache_key(real, files[1:], inception.identity) != key
    assert stats_cache_key(real, files, "other weights") != key

    # the "gram" route skips 2048-d matrix functions (10+ s on 2 cores); the routes are compared above
    result = compute_fid(real, fake, inception, cache_dir=cache, kid=True, kid_subsets=10, method="gram", check=None)
    assert result.n1 == 3 and result.n2 == 2 and result.method == "gram" and result.fid_check is None
    assert result.fid > 0
    assert result.kid is not None and result.kid.subset_size == 2 and np.isfinite(result.kid.mean)
    assert any("resized 2 image(s) (2 at 48x40)" in note for note in result.notes)
    assert any("rank-deficient" in note for note in result.notes)
    stats = folder_statistics(fake, inception, cache_dir=cache)
    assert isinstance(stats, FeatureStats) and stats.cache_hit

    # precomputed statistics (.npz with mu/sigma, pytorch-fid's layout) stand in for a folder
    saved = save_statistics(first, tmp_path / "real_stats.npz")
    again = compute_fid(saved, fake, inception, cache_dir=cache, method="gram", check=None)
    assert again.fid == pytest.approx(result.fid, rel=1e-12)
    assert np.array_equal(load_statistics(saved).sigma, first.sigma)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LOOM_SLOW_TESTS"), reason="2048-d sqrtm: 10-30 s; LOOM_SLOW_TESTS=1 runs it")
def test_full_size_sqrtm_route_agrees_with_the_eigen_route() -> None:
    """Inception-sized, rank-deficient statistics (few images): sqrtm turns complex; both routes agree."""
    a, b = _features(40, 2048, seed=8), _features(30, 2048, seed=9) + 0.1
    result = fid_from_features(a, b, check="eig")
    assert result.fid == pytest.approx(result.fid_check, rel=1e-5)
    assert result.fid == pytest.approx(_direct_fid(a, b), rel=1e-9)
    assert result.fid == pytest.approx(frechet_distance_gram(a, b), rel=1e-5)
