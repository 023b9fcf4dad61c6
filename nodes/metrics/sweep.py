"""Scheduler sweeps: one model, prompt and seed; vary the scheduler and the number of steps.

Produces a labelled grid (rows: schedulers, columns: step counts), and a table of seconds per image and,
when a CLIP model is given, the CLIP score of each image. Uses the same stage functions as `Sample`.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch


@dataclass
class SweepRow:
    scheduler: str
    steps: int
    seconds: float
    clip_score: float | None = None


@dataclass
class SweepResult:
    rows: list[SweepRow]
    images: torch.Tensor  # [n_sched * n_steps, H, W, 3], row-major
    schedulers: list[str]
    steps: list[int]
    notes: list[str] = field(default_factory=list)

    def table_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["scheduler", "steps", "seconds_per_image", "clip_score"])
        for r in self.rows:
            w.writerow([r.scheduler, r.steps, f"{r.seconds:.4f}", "" if r.clip_score is None else f"{r.clip_score:.4f}"])
        return buf.getvalue()

    def table_json(self) -> str:
        return json.dumps({"rows": [asdict(r) for r in self.rows], "notes": self.notes}, indent=1)

    def grid(self):
        from .grid import image_grid

        captions = [f"{r.seconds:.2f}s" + (f"  CLIP {r.clip_score:.1f}" if r.clip_score is not None else "") for r in self.rows]
        images = self.images
        factor = 128 // images.shape[1]
        if factor > 1:  # small images (64 px) are enlarged, pixel for pixel, so the grid stays readable
            images = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2), scale_factor=factor, mode="nearest").permute(0, 2, 3, 1)
        return image_grid(images, rows=len(self.schedulers), cols=len(self.steps), row_labels=self.schedulers,
                          col_labels=[f"{s} steps" for s in self.steps], captions=captions)


def parse_list(text: str, kind: type, what: str) -> list:
    items = [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]
    if not items:
        raise ValueError(f"{what}: give at least one value (comma-separated)")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a comma-separated list of {kind.__name__}") from None


def run_sweep(unet: Any, text_encoder: Any, vae: Any, prompt: str, negative: str, seed: int, schedulers: list[str],
              steps: list[int], cfg: float, width: int, height: int, devices: Any, clip: Any = None,
              progress: Callable[[int, int], None] | None = None) -> SweepResult:
    from nodes.sd.denoise import apply_guidance, predict_noise, prepare, scheduler_step, uses_cfg
    from nodes.sd.encode import encode_text
    from nodes.sd.handles import Latent, NoiseSpec
    from nodes.sd.schedulers import make_spec
    from nodes.sd.vae_ops import decode

    pos = encode_text(text_encoder, prompt, devices)
    neg = encode_text(text_encoder, negative, devices)
    down = vae.downscale
    empty = Latent(samples=torch.zeros((1, vae.latent_channels, height // down, width // down)), family=vae.family)
    rows, images = [], []
    total, done = len(schedulers) * len(steps), 0
    for name in schedulers:
        for n in steps:
            spec = make_spec(name, unet.scheduler_config, n, seed_for_sde=seed)
            t0 = time.perf_counter()
            state, x = prepare(unet, empty, NoiseSpec(seed), spec, devices)
            guided = uses_cfg(cfg, neg)
            for i, t in enumerate(state.timesteps):
                pred = predict_noise(unet, x, t, pos, neg if guided else None, state, devices, guidance=guided)
                x = scheduler_step(state, apply_guidance(pred, cfg), t, x, i)
            img = decode(vae, empty.with_samples(x), devices)
            rows.append(SweepRow(name, n, time.perf_counter() - t0))
            images.append(img[0])
            done += 1
            if progress is not None:
                progress(done, total)
    result = SweepResult(rows=rows, images=torch.stack(images), schedulers=schedulers, steps=steps)
    if clip is not None:
        from .clip_score import clip_score

        scores = clip_score(result.images, prompt, clip)
        for r, s in zip(rows, scores.scores.tolist()):
            r.clip_score = s
        result.notes.extend(scores.notes)
    return result
