"""Evaluation nodes: CLIP score, CLIP directional similarity, FID/KID, prompt lists, noise-schedule
plots and scheduler sweeps. The numbers come from nodes/metrics (tested against the reference formulas)."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import Field

from engine.node import Choices, NodeContext, NodeError, NodeUI, Outputs, Widget, node
from engine.types import CLIP_MODEL, IMAGE, METRICS, TEXT_ENCODER, UNET, VAE
from nodes.impl.models import list_models, model_fingerprint, resolve_model


def _clips(settings) -> list[str]:
    return list_models(settings, "clip")


def _summary(name: str, per_item: list[float], mean: float, notes: list[str]) -> dict:
    return {"metric": name, "per_item": per_item, "mean": mean, "notes": notes}


def _show(metrics: dict) -> NodeUI:
    items = ", ".join(f"{v:.3f}" for v in metrics["per_item"][:16])
    text = f"{metrics['metric']}: mean {metrics['mean']:.4f}" + (f" (per item: {items})" if items else "")
    return NodeUI(text=[text, *metrics["notes"]])


@node(category="evaluation", name="LoadCLIP", output_name="clip", fingerprint=model_fingerprint("clip"))
def load_clip(name: Annotated[str, Choices(_clips)], ctx: NodeContext) -> CLIP_MODEL:
    """Load a transformers CLIPModel folder from models/clip/ for evaluation."""
    from nodes.metrics.clip_model import ClipModelNotFound, load_clip as load

    path = resolve_model(ctx.settings, "clip", name)
    try:
        return load(path, device=str(ctx.settings.devices().device))
    except ClipModelNotFound as exc:
        raise NodeError(str(exc)) from None


@node(category="evaluation", name="CLIPScore", output_name="metrics", output_node=True)
def clip_score_node(images: IMAGE, clip: CLIP_MODEL,
                    prompts: Annotated[str, Widget(multiline=True), Field(description="one prompt for all images, or one per line")] = "") -> METRICS:
    """CLIP score (Hessel et al. 2021): 100 * max(cos(image, text), 0) per image, and the mean."""
    from nodes.metrics.clip_score import clip_score

    lines = [p for p in prompts.splitlines() if p.strip()] or [""]
    try:
        r = clip_score(images, lines[0] if len(lines) == 1 else lines, clip)
    except ValueError as exc:
        raise NodeError(str(exc)) from None
    m = _summary("CLIP score", r.scores.tolist(), r.mean, r.notes)
    return m, _show(m)


@node(category="evaluation", name="CLIPDirectionalSimilarity", output_name="metrics", output_node=True)
def clip_direction_node(original: IMAGE, edited: IMAGE, clip: CLIP_MODEL, original_caption: str = "",
                        edited_caption: str = "") -> METRICS:
    """CLIP directional similarity (Gal et al. 2021): cosine between the image-embedding change and the
    caption-embedding change, per pair and mean."""
    from nodes.metrics.clip_direction import clip_directional_similarity

    try:
        r = clip_directional_similarity(original, edited, original_caption, edited_caption, clip)
    except ValueError as exc:
        raise NodeError(str(exc)) from None
    m = _summary("CLIP directional similarity", r.similarities.tolist(), r.mean, getattr(r, "notes", []))
    return m, _show(m)


@node(category="evaluation", name="FID", output_name="metrics", output_node=True)
def fid_node(ctx: NodeContext, folder_a: str = "", folder_b: str = "", images_a: IMAGE | None = None,
             images_b: IMAGE | None = None, kid: bool = False,
             method: Annotated[Literal["sqrtm", "eig", "gram"], Field(description="matrix square root: sqrtm = pytorch-fid's reference (slow at 2048-d); eig / gram = exact alternatives, fast")] = "sqrtm") -> METRICS:
    """Frechet Inception Distance (Heusel et al. 2017) between two image sets (folders, with their feature
    statistics cached, or image batches); KID (unbiased, cubic kernel) as an option for small sets."""
    from nodes.metrics.fid import InceptionWeightsNotFound, NotEnoughImages, compute_fid, load_fid_inception

    a = images_a if images_a is not None else folder_a
    b = images_b if images_b is not None else folder_b
    if (isinstance(a, str) and not a) or (isinstance(b, str) and not b):
        raise NodeError("give two image sets: folder_a / folder_b, or connect images_a / images_b")
    try:
        extractor = load_fid_inception(ctx.settings.models_dir, device=str(ctx.settings.devices().device))
        r = compute_fid(a, b, extractor, cache_dir=ctx.settings.user_dir / "fid-stats", kid=kid, method=method)
    except (InceptionWeightsNotFound, NotEnoughImages, FileNotFoundError, ValueError) as exc:
        raise NodeError(str(exc)) from None
    m = _summary("FID", [], r.fid, r.notes)
    m.update(n1=r.n1, n2=r.n2, method=r.method, fid_check=r.fid_check, check_method=r.check_method)
    if r.kid is not None:
        m["kid"] = {"mean": r.kid.mean, "std": r.kid.std}
    return m, _show(m)


class PromptOutputs(Outputs):
    prompt: str
    category: str
    count: int


@node(category="evaluation")
def prompt_from_list(ctx: NodeContext, file: str = "prompts.txt", index: Annotated[int, Field(0, ge=0)] = 0) -> PromptOutputs:
    """One prompt (and its category) from a TXT/CSV/TSV prompt list in the input folder (PartiPrompts and
    DrawBench layouts); drive batch runs by changing `index`."""
    from nodes.impl.images import UnsafePath, safe_join
    from nodes.metrics.prompts import PromptFileError, load_prompts

    try:
        path = safe_join(ctx.folders.input, file)
        ps = load_prompts(path)
    except (UnsafePath, PromptFileError, FileNotFoundError) as exc:
        raise NodeError(str(exc)) from None
    if index >= len(ps.entries):
        raise NodeError(f"{file} has {len(ps.entries)} prompts; index {index} is past the end")
    e = ps.entries[index]
    return PromptOutputs(prompt=e.text, category=e.category or "", count=len(ps.entries))


@node(category="evaluation", output_name="image")
def plot_noise_schedules(quantity: Literal["alpha_bar", "sigma", "log_snr"] = "alpha_bar", linear: bool = True,
                         scaled_linear: bool = True, cosine: bool = True, log_scale: bool = False,
                         zero_terminal_snr: bool = False) -> IMAGE:
    """Draw the noise schedules (alpha-bar, sigma or log-SNR over t) of the linear, scaled-linear and
    cosine beta schedules as an image."""
    import numpy as np
    import torch

    from nodes.metrics.schedules import make_schedule, plot_schedules

    names = [n for n, on in (("linear", linear), ("scaled_linear", scaled_linear), ("squaredcos_cap_v2", cosine)) if on]
    if not names:
        raise NodeError("switch on at least one schedule")
    img = plot_schedules([make_schedule(n, rescale_zero_terminal_snr=zero_terminal_snr) for n in names], quantity=quantity, log_y=log_scale)
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]


class SweepOutputs(Outputs):
    grid: IMAGE
    metrics: METRICS


@node(category="evaluation", output_node=True)
def scheduler_sweep(unet: UNET, text_encoder: TEXT_ENCODER, vae: VAE, ctx: NodeContext,
                    prompt: Annotated[str, Widget(multiline=True)] = "a large red circle on a blue background",
                    negative: str = "", seed: Annotated[int, Field(0, ge=0), Widget(seed=True)] = 0,
                    schedulers: str = "euler, euler_a, dpmpp_2m, ddim", steps: str = "5, 10, 20",
                    cfg: Annotated[float, Field(5.0, ge=0, le=100)] = 5.0,
                    width: Annotated[int, Field(64, ge=8, le=4096, multiple_of=8)] = 64,
                    height: Annotated[int, Field(64, ge=8, le=4096, multiple_of=8)] = 64,
                    clip: CLIP_MODEL | None = None, filename_prefix: str = "sweep") -> SweepOutputs:
    """Same model, prompt and seed; vary scheduler and steps. Saves a labelled grid (PNG) and a table
    (CSV and JSON) of seconds per image and CLIP score (when a CLIP model is connected)."""
    from engine.node import FileRef
    from nodes.impl.images import atomic_save_png, next_counter, png_info, safe_join
    from nodes.metrics.sweep import parse_list, run_sweep
    from nodes.sd.schedulers import SchedulerError

    try:
        names = parse_list(schedulers, str, "schedulers")
        counts = parse_list(steps, int, "steps")
        result = run_sweep(unet, text_encoder, vae, prompt, negative, seed, names, counts, cfg, width, height,
                           ctx.settings.devices(), clip, progress=lambda d, t: ctx.progress(d, t))
    except (ValueError, SchedulerError) as exc:
        raise NodeError(str(exc)) from None
    grid = result.grid()
    out = ctx.folders.output
    target = safe_join(out, filename_prefix + ".png")
    stem = target.name[:-4]
    n = next_counter(target.parent, stem)
    base = f"{stem}_{n:05d}_"
    atomic_save_png(grid, target.parent / f"{base}.png", png_info(ctx.workflow, ctx.prompt))
    (target.parent / f"{base}.csv").write_text(result.table_csv())
    (target.parent / f"{base}.json").write_text(result.table_json())
    sub = target.parent.relative_to(out.resolve()).as_posix() if target.parent != out.resolve() else ""
    import numpy as np
    import torch

    grid_t = torch.from_numpy(np.asarray(grid.convert("RGB"), dtype=np.float32) / 255.0)[None]
    metrics = json.loads(result.table_json())
    ui = NodeUI(images=[FileRef(filename=f"{base}.png", subfolder=sub)], text=[result.table_csv()])
    return SweepOutputs(grid=grid_t, metrics=metrics), ui
