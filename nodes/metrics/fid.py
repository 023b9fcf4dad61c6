"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) on Inception-v3 pool3 features.

Follows pytorch-fid: images in 0..1 are resized to 299x299 (bilinear, per image, so sets of any
size work), scaled to [-1,1], and fed to the TF-2015 FID Inception; mu/sigma are the feature mean
and the unbiased covariance; the Frechet distance uses scipy's sqrtm with the same fallback
(eps on the diagonals) and imaginary-part check. Two independent routes to the same trace (an
eigenvalue one, and a cross-Gram nuclear norm for small sets) check it. Folder statistics are
cached as .npz keyed by the folder's file list.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch

from .inception import FEATURE_DIM, FIDInceptionV3

WEIGHTS_STEM = "pt_inception-2015-12-05-6726825d"
WEIGHTS_FILES = (f"{WEIGHTS_STEM}.pth", f"{WEIGHTS_STEM}.safetensors")
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILES[0]
IMAGE_EXTENSIONS = frozenset({".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"})
STATS_VERSION = 1


class InceptionWeightsNotFound(FileNotFoundError):
    """The FID Inception weights file is not where it is looked for."""


class NotEnoughImages(ValueError):
    """A set is too small for the statistic asked of it."""


# ----------------------------------------------------------------------------------------------- the model


def find_inception_weights(models_dir: str | os.PathLike[str] = "models") -> Path:
    """`models/inception/pt_inception-2015-12-05-6726825d.pth` (or the same stem as .safetensors)."""
    folder = Path(models_dir) / "inception"
    for name in WEIGHTS_FILES:
        if (folder / name).is_file():
            return folder / name
    raise InceptionWeightsNotFound(
        f"FID needs the Inception weights file {WEIGHTS_FILES[0]} (pytorch-fid's release, {WEIGHTS_URL}); "
        f"put it in {folder.resolve()}/ (a .safetensors conversion named {WEIGHTS_FILES[1]} is also accepted)."
    )


def load_inception_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the weights without running pickled code (weights_only / safetensors)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def build_inception(state_dict: dict[str, torch.Tensor] | None = None) -> FIDInceptionV3:
    """The FID Inception in eval mode; with a state dict, loaded strictly (BN batch counters may be absent)."""
    model = FIDInceptionV3()
    if state_dict is not None:
        state = dict(state_dict)
        for key, value in model.state_dict().items():
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = value  # converted files often drop these counters; they do not affect eval
        model.load_state_dict(state, strict=True)
    return model.eval()


def _file_identity(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


@dataclass
class InceptionExtractor:
    """The FID Inception with the identity of its weights (part of every cache key)."""

    model: FIDInceptionV3
    identity: str
    device: torch.device = torch.device("cpu")

    @torch.no_grad()
    def features(self, images: object, batch_size: int = 32) -> tuple[np.ndarray, list[str]]:
        """pool3 features [N,2048] (float64) of images in 0..1, plus notes (e.g. which were resized)."""
        sizes: Counter[tuple[int, int]] = Counter()
        out = [np.zeros((0, FEATURE_DIM))]
        for batch in _image_tensors(images, batch_size):
            sizes[(int(batch.shape[-2]), int(batch.shape[-1]))] += len(batch)
            for i in range(0, len(batch), batch_size):
                chunk = batch[i : i + batch_size].to(self.device, torch.float32)
                out.append(self.model(chunk).double().cpu().numpy())
        return np.concatenate(out), _resize_notes(sizes)


def load_fid_inception(
    models_dir: str | os.PathLike[str] = "models",
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> InceptionExtractor:
    """Load the FID Inception from `weights` or from `models/inception/` (clear error when missing)."""
    path = Path(weights) if weights is not None else find_inception_weights(models_dir)
    if not path.is_file():
        raise InceptionWeightsNotFound(f"Inception weights file not found: {path}")
    model = build_inception(load_inception_state_dict(path)).to(device)
    return InceptionExtractor(model=model, identity=_file_identity(path), device=torch.device(device))


def _resize_notes(sizes: Counter[tuple[int, int]]) -> list[str]:
    other = {hw: n for hw, n in sizes.items() if hw != (299, 299)}
    if not other:
        return []
    listed = ", ".join(f"{n} at {w}x{h}" for (h, w), n in sorted(other.items(), key=lambda kv: -kv[1]))
    return [
        f"resized {sum(other.values())} image(s) ({listed}) to 299x299 with bilinear interpolation "
        "(no antialiasing), as pytorch-fid does"
    ]


def _image_tensors(images: object, max_batch: int = 32) -> Iterable[torch.Tensor]:
    """Yield float [B,3,H,W] batches in 0..1 of same-sized images (files are read batch by batch)."""
    from PIL import Image

    if isinstance(images, torch.Tensor):
        batch = images if images.ndim == 4 else images.unsqueeze(0)
        if batch.shape[-1] not in (1, 3, 4):
            raise ValueError(f"expected images shaped [N,H,W,C], got {tuple(images.shape)}")
        batch = batch.expand(-1, -1, -1, 3) if batch.shape[-1] == 1 else batch[..., :3]
        batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        yield batch.permute(0, 3, 1, 2)
        return
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    pending: list[torch.Tensor] = []
    for item in cast(Iterable[object], images):
        if isinstance(item, (str, os.PathLike)):
            item = _read_image(Path(item))
        if isinstance(item, Image.Image):
            item = torch.from_numpy(np.asarray(item.convert("RGB")).copy())
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(item)
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"unsupported image type {type(item).__name__}")
        for t in _image_tensors(item, max_batch):
            for single in t:
                if pending and (pending[0].shape != single.shape or len(pending) >= max_batch):
                    yield torch.stack(pending)
                    pending = []
                pending.append(single)
    if pending:
        yield torch.stack(pending)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise OSError(f"cannot read image {path}: {exc}") from exc


# ----------------------------------------------------------------------------------------------- statistics


@dataclass
class FeatureStats:
    """Mean and covariance of a feature set (and the features themselves when kept, for KID)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    cache_file: Path | None = None
    cache_hit: bool = False


def feature_statistics(features: np.ndarray, keep_features: bool = False, what: str = "the set") -> FeatureStats:
    """mu and the unbiased covariance (np.cov, rowvar=False) in float64; needs at least 2 rows."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {feats.shape}")
    if len(feats) < 2:
        raise NotEnoughImages(f"FID needs at least 2 images per set to estimate a covariance; {what} has {len(feats)}")
    return FeatureStats(
        mu=feats.mean(axis=0),
        sigma=np.cov(feats, rowvar=False),
        n=len(feats),
        features=feats if keep_features else None,
        notes=_small_set_notes(len(feats), feats.shape[1], what),
    )


def _small_set_notes(n: int, dim: int, what: str) -> list[str]:
    if n >= dim:
        return []
    return [
        f"{what} has {n} images, fewer than the {dim} feature dimensions: its covariance is rank-deficient "
        "and FID is strongly biased upward; compare FIDs only at equal set sizes (KID is unbiased for small sets)"
    ]


@dataclass
class FrechetResult:
    value: float
    notes: list[str] = field(default_factory=list)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> FrechetResult:
    """||mu1-mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)), computed as pytorch-fid does.

    If sqrtm is not finite (singular product) eps is added to both diagonals; a complex result is
    accepted when its diagonal's imaginary part is within 1e-3 of 0 and its real part is used.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    notes: list[str] = []
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2, notes)
    if not np.isfinite(covmean).all():
        notes.append(f"sqrtm of the covariance product was not finite; added {eps} to both diagonals")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset), notes)
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component ({np.max(np.abs(covmean.imag)):.3g})")
        if imag > 0:
            notes.append(f"dropped an imaginary part of up to {imag:.2g} from sqrtm's diagonal")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    return FrechetResult(value=value, notes=notes)


def _sqrtm(matrix: np.ndarray, notes: list[str]) -> np.ndarray:
    """scipy's sqrtm, with its singular-matrix warning turned into a note (the reference prints it)."""
    import warnings

    from scipy import linalg

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        root = linalg.sqrtm(matrix)
    for warning in caught:
        if issubclass(warning.category, linalg.LinAlgWarning):
            notes.append(f"sqrtm: {warning.message}")
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return root


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix (negative rounding-noise eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_eig(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The same distance without sqrtm: Tr sqrtm(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1))).

    S1 S2 is similar to the PSD matrix sqrt(S1) S2 sqrt(S1), so its square root's trace is the sum
    of the square roots of that matrix's (real, non-negative) eigenvalues: an independent check.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def frechet_distance_gram(features1: np.ndarray, features2: np.ndarray) -> float:
    """The same distance from the features themselves, exact and fast for small sets.

    With centred features X1, X2, S1 S2 = X1'X1 X2'X2 / c (c = (n1-1)(n2-1)) has the non-zero
    eigenvalues of C C' for C = X1 X2' / sqrt(c), so Tr sqrtm(S1 S2) is the nuclear norm of C:
    an n1 x n2 SVD instead of a 2048 x 2048 matrix function.
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    x1, x2 = f1 - f1.mean(axis=0), f2 - f2.mean(axis=0)
    scale1, scale2 = len(f1) - 1, len(f2) - 1
    cross = (x1 @ x2.T) / np.sqrt(scale1 * scale2)
    tr_covmean = np.linalg.svd(cross, compute_uv=False).sum()
    diff = f1.mean(axis=0) - f2.mean(axis=0)
    return float(diff @ diff + (x1 * x1).sum() / scale1 + (x2 * x2).sum() / scale2 - 2 * tr_covmean)


@dataclass
class KIDResult:
    mean: float
    std: float
    subset_size: int
    num_subsets: int
    notes: list[str] = field(default_factory=list)


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> KIDResult:
    """KID: unbiased MMD^2 with the kernel (x.y/d + 1)^3, averaged over random subsets.

    Each subset draws m = min(subset_size, n1, n2) rows without replacement from each set;
    reports mean and std over subsets (as torch-fidelity / clean-fid do).
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    m_max = min(len(f1), len(f2))
    if m_max < 2:
        raise NotEnoughImages(f"KID needs at least 2 images in each set; got {len(f1)} and {len(f2)}")
    m = min(subset_size, m_max)
    notes = [] if m == subset_size else [f"subset size lowered from {subset_size} to {m} (the smaller set's size)"]
    gamma = 1.0 / f1.shape[1] if gamma is None else gamma
    rng = np.random.default_rng(seed)
    mmds = np.empty(num_subsets)
    for i in range(num_subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx = (gamma * x @ x.T + coef0) ** degree
        kyy = (gamma * y @ y.T + coef0) ** degree
        kxy = (gamma * x @ y.T + coef0) ** degree
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        mmds[i] = within - 2 * kxy.sum() / (m * m)
    return KIDResult(float(mmds.mean()), float(mmds.std()), m, num_subsets, notes)


# ----------------------------------------------------------------------------------------------- folders + cache


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly in `folder` (not recursive, as pytorch-fid), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def stats_cache_key(folder: Path, files: Sequence[Path], extractor_identity: str) -> str:
    """Hash of folder path, file names, sizes and mtimes, and the model identity: any change misses the cache."""
    entries = []
    for f in files:
        st = f.stat()
        entries.append([f.name, st.st_size, st.st_mtime_ns])
    blob = json.dumps(
        {"v": STATS_VERSION, "folder": str(folder.resolve()), "files": entries, "model": extractor_identity},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def folder_statistics(
    folder: str | os.PathLike[str],
    extractor: InceptionExtractor,
    cache_dir: str | os.PathLike[str] | None = None,
    keep_features: bool = False,
    batch_size: int = 32,
) -> FeatureStats:
    """mu/sigma of a folder's images, from `cache_dir` when nothing in the folder changed."""
    folder = Path(folder)
    files = list_images(folder)
    if len(files) < 2:
        raise NotEnoughImages(
            f"FID needs at least 2 images per set; {folder} has {len(files)} "
            f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))} directly in the folder)"
        )
    cache_file = None
    if cache_dir is not None:
        key = stats_cache_key(folder, files, extractor.identity)
        cache_file = Path(cache_dir) / f"fid-stats-{key}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as data:
                if not keep_features or "features" in data:
                    stats = FeatureStats(
                        mu=data["mu"],
                        sigma=data["sigma"],
                        n=int(data["n"]),
                        features=data.get("features"),
                        notes=[f"statistics of {folder} read from cache {cache_file}"],
                        cache_file=cache_file,
                        cache_hit=True,
                    )
                    stats.notes += _small_set_notes(stats.n, stats.mu.shape[0], str(folder))
                    return stats
    feats, notes = extractor.features(files, batch_size=batch_size)
    stats = feature_statistics(feats, keep_features=keep_features, what=str(folder))
    stats.notes = notes + stats.notes
    if cache_file is not None:
        stats.cache_file = save_statistics(stats, cache_file)
    return stats


def save_statistics(stats: FeatureStats, path: str | os.PathLike[str]) -> Path:
    """Write mu/sigma (+ n, + features when kept) as .npz; pytorch-fid's --save-stats layout (keys mu, sigma)."""
    arrays = {"mu": stats.mu, "sigma": stats.sigma, "n": np.array(stats.n)}
    if stats.features is not None:
        arrays["features"] = np.asarray(stats.features, np.float32)
    path = Path(path)
    _save_npz_atomic(path, **arrays)
    return path


def load_statistics(path: str | os.PathLike[str]) -> FeatureStats:
    """Read precomputed statistics (ours or pytorch-fid's .npz with mu and sigma, e.g. published reference sets)."""
    path = Path(path)
    with np.load(path) as data:
        if "mu" not in data or "sigma" not in data:
            raise ValueError(f"{path} holds no FID statistics (needs arrays 'mu' and 'sigma'; has {list(data)})")
        n = int(data["n"]) if "n" in data else 0
        return FeatureStats(
            mu=data["mu"].astype(np.float64),
            sigma=data["sigma"].astype(np.float64),
            n=n,
            features=data.get("features"),
            notes=[f"statistics read from {path}" + ("" if n else " (image count not recorded)")],
        )


# ----------------------------------------------------------------------------------------------- FID


ROUTES = ("sqrtm", "eig", "gram")


@dataclass
class FIDResult:
    """FID, a check of it by another route, optional KID, and what was done to the inputs.

    Routes to Tr sqrtm(S1 S2): "sqrtm" = scipy's sqrtm exactly as pytorch-fid (the reference, ~10 s
    at 2048-d on 2 cores); "eig" = eigenvalues of sqrt(S1) S2 sqrt(S1) (a few s); "gram" = nuclear
    norm of the centred cross-Gram matrix (needs the features; instant for small sets).
    fid_check - fid is the numerical error of the reported value.
    """

    fid: float
    n1: int
    n2: int
    method: str = "sqrtm"
    fid_check: float | None = None
    check_method: str | None = None
    kid: KIDResult | None = None
    notes: list[str] = field(default_factory=list)


def _stats_for(
    source: object, extractor: InceptionExtractor, cache_dir: str | os.PathLike[str] | None, keep: bool, name: str
) -> FeatureStats:
    if isinstance(source, FeatureStats):
        return source
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        return folder_statistics(source, extractor, cache_dir=cache_dir, keep_features=keep)
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix == ".npz":
        return load_statistics(source)
    feats, notes = extractor.features(source)
    stats = feature_statistics(feats, keep_features=keep, what=name)
    stats.notes = notes + stats.notes
    return stats


def compute_fid(
    set1: object,
    set2: object,
    extractor: InceptionExtractor,
    cache_dir: str | os.PathLike[str] | None = None,
    kid: bool = False,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    method: str = "sqrtm",
    check: str | None = "auto",
) -> FIDResult:
    """FID between two sets, each a folder (stats cached), a .npz of statistics, an image tensor [N,H,W,3]
    in 0..1, a list of images or paths, or FeatureStats.

    Features are kept (and cached) when KID or the "gram" route needs them.
    """
    keep = kid or method == "gram" or check == "gram"
    s1 = _stats_for(set1, extractor, cache_dir, keep, "set 1")
    s2 = _stats_for(set2, extractor, cache_dir, keep, "set 2")
    return fid_from_stats(
        s1, s2, kid=kid, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, method=method, check=check
    )


def _route(route: str, s1: FeatureStats, s2: FeatureStats, notes: list[str]) -> float:
    if route == "sqrtm":
        result = frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma)
        notes.extend(result.notes)
        return result.value
    if route == "eig":
        return frechet_distance_eig(s1.mu, s1.sigma, s2.mu, s2.sigma)
    if route == "gram":
        if s1.features is None or s2.features is None:
            raise ValueError("the 'gram' route needs the features; compute the statistics with keep_features=True")
        return frechet_distance_gram(s1.features, s2.features)
    raise ValueError(f"unknown FID route {route!r}; choose from {ROUTES}")


def _auto_check(method: str, s1: FeatureStats, s2: FeatureStats) -> str | None:
    """The cheapest route other than `method`: gram for small sets with features, else eig."""
    small = s1.features is not None and s2.features is not None and min(s1.n, s2.n) <= s1.mu.shape[0]
    for route in ("gram", "eig") if small else ("eig",):
        if route != method:
            return route
    return None


def fid_from_stats(
    s1: FeatureStats,
    s2: FeatureStats,
    kid: bool = False,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    method: str = "sqrtm",
    check: str | None = "auto",
) -> FIDResult:
    """FID by `method`, checked by `check` ("auto", a route name, or None), and KID (needs kept features)."""
    if method not in ROUTES or (check is not None and check != "auto" and check not in ROUTES):
        raise ValueError(f"method and check must be among {ROUTES} (check may also be 'auto' or None)")
    if s1.mu.shape != s2.mu.shape:
        raise ValueError(f"statistics differ in dimension: {s1.mu.shape} vs {s2.mu.shape}")
    notes = s1.notes + s2.notes
    check_method = _auto_check(method, s1, s2) if check == "auto" else check
    result = FIDResult(
        fid=_route(method, s1, s2, notes),
        n1=s1.n,
        n2=s2.n,
        method=method,
        check_method=check_method,
        fid_check=_route(check_method, s1, s2, notes) if check_method else None,
        notes=notes,
    )
    if kid:
        if s1.features is None or s2.features is None:
            raise ValueError("KID needs the features themselves; compute the statistics with keep_features=True")
        result.kid = kernel_inception_distance(
            s1.features, s2.features, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
        )
        result.notes += result.kid.notes
    return result


def fid_from_features(
    features1: np.ndarray,
    features2: np.ndarray,
    kid: bool = False,
    seed: int = 0,
    method: str = "sqrtm",
    check: str | None = "auto",
) -> FIDResult:
    """FID (and KID) straight from two feature arrays [N,D]; features are kept, so "gram" is available."""
    s1 = feature_statistics(features1, keep_features=True, what="set 1")
    s2 = feature_statistics(features2, keep_features=True, what="set 2")
    return fid_from_stats(s1, s2, kid=kid, seed=seed, method=method, check=check)
