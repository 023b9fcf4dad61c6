"""Latent nodes: empty latents, upscaling (hires fix), noise masks for inpainting, batches and blends, and
latents saved to and loaded from disk."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from pydantic import Field

from engine.node import Choices, NodeContext, NodeError, NodeUI, Widget, node
from engine.types import LATENT, MASK, VAE
from nodes.image import FlipMethod, Rotation, quarter_turns

Dim = Annotated[int, Field(512, ge=8, le=16384, multiple_of=8, description="pixels; a multiple of 8")]


@node(category="latent", output_name="latent")
def empty_latent(width: Dim = 512, height: Dim = 512, batch_size: Annotated[int, Field(1, ge=1, le=64)] = 1,
                 vae: VAE | None = None) -> LATENT:
    """All-zero latents for text-to-image. Connect the VAE to tag them with its model family and shape."""
    import torch

    from nodes.sd.handles import Latent

    down, channels, family = 8, 4, None
    if vae is not None:
        down, channels, family = vae.downscale, vae.latent_channels, vae.family
    if width % down or height % down:
        raise NodeError(f"width and height must be multiples of {down} for this VAE (got {width}x{height})")
    return Latent(samples=torch.zeros((batch_size, channels, height // down, width // down)), family=family,
                  downscale=down)


LatentMethod = Literal["nearest-exact", "bilinear", "bicubic", "area"]


def _upscale(latent, h: int, w: int, method: str):
    import torch.nn.functional as F

    kwargs = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    samples = F.interpolate(latent.samples, size=(h, w), mode=method, **kwargs)
    mask = latent.noise_mask
    if mask is not None:
        m = mask if mask.ndim == 4 else mask[:, None]
        mask = F.interpolate(m.float(), size=(h * latent.downscale, w * latent.downscale), mode="nearest")
    return replace(latent, samples=samples, noise_mask=mask, inpaint=None)


@node(category="latent", output_name="latent")
def latent_upscale(latent: LATENT, width: Dim = 1024, height: Dim = 1024, method: LatentMethod = "nearest-exact") -> LATENT:
    """Resize latents to an image size (hires fix: upscale, then a second sampling pass at denoise < 1)."""
    down = latent.downscale
    return _upscale(latent, max(1, height // down), max(1, width // down), method)


@node(category="latent", output_name="latent")
def latent_upscale_by(latent: LATENT, scale: Annotated[float, Field(1.5, ge=0.1, le=8.0), Widget(step=0.05)] = 1.5,
                      method: LatentMethod = "nearest-exact") -> LATENT:
    """Resize latents by a factor."""
    h, w = latent.samples.shape[-2:]
    return _upscale(latent, max(1, round(h * scale)), max(1, round(w * scale)), method)


@node(category="latent", output_name="latent")
def set_latent_noise_mask(latent: LATENT, mask: MASK) -> LATENT:
    """Repaint only where the mask is 1: each step blends the re-noised original back elsewhere."""
    return replace(latent, noise_mask=mask)


# ---------------------------------------------------------------------------------------------------
# Batches and blends (ComfyUI's LatentFromBatch, RepeatLatentBatch, LatentBatch, LatentComposite, LatentBlend)
# ---------------------------------------------------------------------------------------------------


def _rows(t, index: int, length: int):
    """Rows [index, index+length) of a per-image tensor (masks of batch 1 apply to every row: kept whole)."""
    if t is None or t.shape[0] == 1:
        return t
    return t[index:index + length]


@node(category="latent/batch", output_name="latent")
def latent_from_batch(latent: LATENT, batch_index: Annotated[int, Field(0, ge=0, le=63)] = 0,
                      length: Annotated[int, Field(1, ge=1, le=64)] = 1) -> LATENT:
    """Pick `length` latents starting at `batch_index` (e.g. re-run one image of a batch)."""
    n = latent.samples.shape[0]
    if batch_index >= n:
        raise NodeError(f"batch_index {batch_index} is past the end of a batch of {n}")
    length = min(length, n - batch_index)
    return replace(latent, samples=latent.samples[batch_index:batch_index + length].clone(),
                   noise_mask=_rows(latent.noise_mask, batch_index, length), inpaint=_rows(latent.inpaint, batch_index, length))


@node(category="latent/batch", output_name="latent")
def repeat_latent_batch(latent: LATENT, amount: Annotated[int, Field(1, ge=1, le=64)] = 1) -> LATENT:
    """The batch repeated `amount` times (with its masks)."""
    def rep(t):  # a mask of batch 1 applies to every row already
        return t if t is None or t.shape[0] == 1 else t.repeat(amount, *[1] * (t.ndim - 1))

    return replace(latent, samples=latent.samples.repeat(amount, 1, 1, 1), noise_mask=rep(latent.noise_mask),
                   inpaint=rep(latent.inpaint))


def _same_space(a, b, what: str) -> None:
    from nodes.sd.denoise import check_family

    if a.samples.shape[1] != b.samples.shape[1]:
        raise NodeError(f"{what}: the latents have {a.samples.shape[1]} and {b.samples.shape[1]} channels")
    check_family(f"{what}: the second latent", b.family, a.family or b.family, "first latent", latent=True)


def _fit(samples, like, method: str = "bilinear"):
    """ComfyUI's common_upscale with a centre crop: `samples` resized to `like`'s size when they differ."""
    import torch.nn.functional as F

    h, w = like.shape[-2:]
    sh, sw = samples.shape[-2:]
    if (sh, sw) == (h, w):
        return samples
    old, new = sw / sh, w / h
    x = round((sw - sw * (new / old)) / 2) if old > new else 0
    y = round((sh - sh * (old / new)) / 2) if old < new else 0
    samples = samples[..., y:sh - y, x:sw - x]
    return F.interpolate(samples, size=(h, w), mode=method)


@node(category="latent/batch", output_name="latent")
def latent_batch(latent1: LATENT, latent2: LATENT) -> LATENT:
    """One batch from two (the second resized to the first's size if they differ); masks are dropped."""
    import torch

    _same_space(latent1, latent2, "LatentBatch")
    samples = torch.cat([latent1.samples, _fit(latent2.samples, latent1.samples)])
    return replace(latent1, samples=samples, noise_mask=None, inpaint=None, family=latent1.family or latent2.family)


Position = Annotated[int, Field(0, ge=0, le=16384, multiple_of=8, description="pixels; a multiple of 8")]


@node(category="latent", output_name="latent")
def latent_composite(latent_to: LATENT, latent_from: LATENT, x: Position = 0, y: Position = 0,
                     feather: Annotated[int, Field(0, ge=0, le=16384, multiple_of=8)] = 0) -> LATENT:
    """Paste `latent_from` into `latent_to` at (x, y) pixels, its inner edges faded over `feather` pixels
    (edges that touch the border of `latent_to` are not faded), as ComfyUI's LatentComposite."""
    import torch

    _same_space(latent_to, latent_from, "LatentComposite")
    to, src = latent_to.samples, latent_from.samples
    d = latent_to.downscale
    x, y, feather = x // d, y // d, feather // d
    H, W = to.shape[-2:]
    if x >= W or y >= H:
        raise NodeError(f"x, y ({x * d}, {y * d}) lies outside the {W * d}x{H * d} latent")
    src = src[..., :H - y, :W - x]
    if src.shape[0] != to.shape[0]:
        src = src.repeat(-(-to.shape[0] // src.shape[0]), 1, 1, 1)[:to.shape[0]]
    h, w = src.shape[-2:]
    mask = torch.ones_like(src)
    for t in range(feather):
        ramp = (t + 1) / feather
        if y != 0:
            mask[..., t:t + 1, :] *= ramp
        if y + h < H:
            mask[..., h - 1 - t:h - t, :] *= ramp
        if x != 0:
            mask[..., :, t:t + 1] *= ramp
        if x + w < W:
            mask[..., :, w - 1 - t:w - t] *= ramp
    out = to.clone()
    out[..., y:y + h, x:x + w] = src * mask + to[..., y:y + h, x:x + w] * (1 - mask)
    return replace(latent_to, samples=out)


@node(category="latent", output_name="latent")
def latent_blend(latent1: LATENT, latent2: LATENT,
                 blend_factor: Annotated[float, Field(0.5, ge=0.0, le=1.0), Widget(step=0.01)] = 0.5) -> LATENT:
    """latent1 * blend_factor + latent2 * (1 - blend_factor) (latent2 resized to latent1's size if needed)."""
    _same_space(latent1, latent2, "LatentBlend")
    samples = latent1.samples * blend_factor + _fit(latent2.samples, latent1.samples, "bicubic") * (1 - blend_factor)
    return replace(latent1, samples=samples)


# ---------------------------------------------------------------------------------------------------
# Transforms (ComfyUI's LatentFlip, LatentRotate, LatentCrop). The noise mask and the inpainting latents move with
# the samples (ComfyUI leaves its noise_mask as it was, so a flipped, turned or cropped inpainting latent there
# repaints the wrong place: the mask is later stretched over the new latents).
# ---------------------------------------------------------------------------------------------------


def _spatial(latent, fn, mask_fn=None):
    """`latent` with `fn` applied to its samples and inpainting latents and `mask_fn` (default `fn`) to its noise
    mask, whose last two dims are rows and columns at any resolution ([B,H,W] or [B,1,H,W])."""
    mask_fn = mask_fn or fn
    return replace(latent, samples=fn(latent.samples),
                   noise_mask=None if latent.noise_mask is None else mask_fn(latent.noise_mask),
                   inpaint=None if latent.inpaint is None else fn(latent.inpaint))


@node(category="latent/transform", output_name="latent")
def latent_flip(latent: LATENT, flip_method: FlipMethod = "x-axis: vertically") -> LATENT:
    """Mirror latents: `x-axis` upside down, `y-axis` left to right (as ImageFlip does to the decoded image)."""
    import torch

    dim = -2 if flip_method.startswith("x") else -1
    return _spatial(latent, lambda t: torch.flip(t, dims=[dim]))


@node(category="latent/transform", output_name="latent")
def latent_rotate(latent: LATENT, rotation: Rotation = "none") -> LATENT:
    """Turn latents clockwise by quarter turns (as ImageRotate does to the decoded image)."""
    import torch

    k = quarter_turns(rotation)
    if k == 0:
        return latent
    return _spatial(latent, lambda t: torch.rot90(t, k=k, dims=[-1, -2]).contiguous())


@node(category="latent/transform", output_name="latent")
def latent_crop(latent: LATENT, width: Dim = 512, height: Dim = 512, x: Position = 0, y: Position = 0) -> LATENT:
    """Cut a rectangle out of latents (pixels, multiples of 8). As ComfyUI's LatentCrop, the origin is moved back so
    that at least 8 latent pixels remain, and the size is clipped to the latents."""
    H, W = latent.samples.shape[-2:]
    d = latent.downscale
    x0, y0 = min(x // d, max(0, W - 8)), min(y // d, max(0, H - 8))
    x1, y1 = min(W, x0 + max(1, width // d)), min(H, y0 + max(1, height // d))

    def mask_crop(m):  # the same rectangle, in the mask's own resolution
        mh, mw = m.shape[-2:]
        return m[..., round(y0 * mh / H):round(y1 * mh / H), round(x0 * mw / W):round(x1 * mw / W)].clone()

    return _spatial(latent, lambda t: t[..., y0:y1, x0:x1].clone(), mask_crop)


# ---------------------------------------------------------------------------------------------------
# Latents on disk (ComfyUI's SaveLatent / LoadLatent files: safetensors with `latent_tensor`)
# ---------------------------------------------------------------------------------------------------

LATENT_SUFFIXES = frozenset({".latent"})


def _input_latents(settings) -> list[str]:
    from nodes.impl.files import list_files

    return list_files(settings.folders().input, LATENT_SUFFIXES) if settings is not None else []


def _latent_fingerprint(inputs: dict, settings) -> str:
    from nodes.impl.files import safe_join

    try:
        st = safe_join(settings.folders().input, inputs["latent"]).stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    except Exception as exc:
        return f"missing:{exc}"


@node(category="latent", output_node=True)
def save_latent(latent: LATENT, ctx: NodeContext,
                filename_prefix: Annotated[str, Field(description="file name start; may include a sub-folder")] = "latents/loom",
                ) -> NodeUI:
    """Keep latents on disk (`.latent`: safetensors, ComfyUI's format, the workflow in its metadata) to decode or
    sample them again later with LoadLatent (put the file in the input folder)."""
    import json

    from safetensors.torch import save_file

    from nodes.impl.files import UnsafePath, safe_join

    root = ctx.folders.output
    root.mkdir(parents=True, exist_ok=True)
    try:
        target = safe_join(root, filename_prefix + ".latent")
    except UnsafePath as exc:
        raise NodeError(str(exc)) from None
    folder, stem = target.parent, target.name[: -len(".latent")]
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"latentloom.family": latent.family or "", "latentloom.downscale": str(latent.downscale)}
    if ctx.workflow is not None:
        meta["workflow"] = json.dumps(ctx.workflow)
    if ctx.prompt is not None:
        meta["prompt"] = json.dumps(ctx.prompt)
    import torch

    tensors = {"latent_tensor": latent.samples.detach().float().cpu().contiguous(), "latent_format_version_0": torch.tensor([])}
    counter = 1 + max([int(p.name[len(stem) + 1:len(stem) + 6]) for p in folder.glob(f"{stem}_?????_.latent")
                       if p.name[len(stem) + 1:len(stem) + 6].isdigit()], default=0)
    while (folder / f"{stem}_{counter:05d}_.latent").exists():
        counter += 1
    name = f"{stem}_{counter:05d}_.latent"
    tmp = folder / f".{name}.tmp"
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(folder / name)
    subfolder = folder.relative_to(root.resolve()).as_posix() if folder != root.resolve() else ""
    return NodeUI(text=[f"{subfolder + '/' if subfolder else ''}{name}"])


@node(category="latent", output_name="latent", fingerprint=_latent_fingerprint)
def load_latent(latent: Annotated[str, Choices(_input_latents)], ctx: NodeContext) -> LATENT:
    """Latents saved by SaveLatent (ours or ComfyUI's) from the input folder. Files from before ComfyUI's format
    version 0 (no `latent_format_version_0` key) are multiplied by 1 / 0.18215, as ComfyUI does."""
    from safetensors import SafetensorError, safe_open

    from nodes.impl.files import UnsafePath, safe_join
    from nodes.sd.handles import Latent

    try:
        path = safe_join(ctx.folders.input, latent)
    except UnsafePath as exc:
        raise NodeError(str(exc)) from None
    if not path.is_file():
        raise NodeError(f"latent file {latent!r} not found in {ctx.folders.input}")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            if "latent_tensor" not in keys:
                raise NodeError(f"{latent}: no 'latent_tensor' in the file (keys: {sorted(keys)[:8]})")
            samples = f.get_tensor("latent_tensor").float()
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise NodeError(f"{latent} is not a readable .latent (safetensors) file: {exc}") from None
    if "latent_format_version_0" not in keys:
        samples = samples * (1.0 / 0.18215)
    if samples.ndim != 4:
        raise NodeError(f"{latent}: expected latents [batch, channels, height, width], got shape {list(samples.shape)}")
    down = meta.get("latentloom.downscale", "8")
    return Latent(samples=samples, family=meta.get("latentloom.family") or None, downscale=int(down) if down.isdigit() else 8)
