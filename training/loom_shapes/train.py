"""Train loom-shapes from scratch: VAE, then UNet + CLIP text encoder jointly, then a Canny ControlNet.

    python -m training.loom_shapes.train --device cuda --out OUT --stage all --budget-seconds 360 [--resume]

Why it is built this way:
- Every stage is driven by a wall-clock budget (the GPU run gets one short slot), checkpoints every
  `--ckpt-every` seconds, writes its final fp16 diffusers weights at the end, and `--resume` continues
  from the last checkpoint (a finished stage is skipped).
- Data is rendered on the device per step from (seed, stage, step), so there is no data loader and a
  resumed run sees the same batches; with `--steps` (instead of a budget-driven learning-rate schedule)
  the run is a function of the seed (GPU kernels themselves are not bitwise deterministic).
- The learning rate follows warmup + cosine over `--steps`, or over the budget's progress when no step
  count is given, so a budget-driven run always ends annealed whatever the machine's speed.
- v-prediction with a zero-terminal-SNR schedule: on this data an epsilon/linear-beta model learned to
  ignore the prompt; v/zero-SNR learned colours in minutes (see NOTES-diffusers.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from . import data as D  # noqa: E402
from . import models as M  # noqa: E402

STAGES = ("vae", "unet", "controlnet")
STAGE_SHARE = {"vae": 0.14, "unet": 0.68, "controlnet": 0.18}  # of the training budget in --stage all
SEED_STRIDE = {"vae": 1, "unet": 2, "controlnet": 3}


@dataclass
class StageConfig:
    batch: int
    lr: float
    warmup: float = 0.05  # fraction of the run
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    ema_decay: float = 0.0  # 0 = no EMA


def stage_defaults(stage: str, cuda: bool) -> StageConfig:
    if stage == "vae":
        return StageConfig(batch=128 if cuda else 32, lr=6e-4, weight_decay=0.0)
    if stage == "unet":  # on a GPU this UNet is launch-bound: batch 512 costs about what 256 does
        return StageConfig(batch=512 if cuda else 32, lr=5e-4, ema_decay=0.999)
    return StageConfig(batch=256 if cuda else 32, lr=3e-4)


@dataclass
class Context:
    """Options shared by every stage."""

    device: torch.device
    out: Path
    seed: int
    sizes: M.ModelSizes
    sizes_name: str
    amp: bool
    resume: bool
    steps: int | None  # fixed optimizer steps per stage (deterministic schedule), else budget-driven
    batch: int | None
    ckpt_every: float
    log_every: int
    pool: int | None
    workers: int
    print_every: float = 0.0  # seconds between printed loss lines (all are kept in the JSON log)
    fused_adam: bool = True  # CUDA only; run_gpu's safe-mode retry turns it off
    ckpt_dir: Path | None = None  # default OUT/checkpoints

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def generator(self, stage: str, step: int) -> tuple[int, torch.Generator]:
        """Per-step seed and device generator: batches depend only on (seed, stage, step)."""
        s = (self.seed * 1_000_003 + SEED_STRIDE[stage] * 100_000_007 + step) % (2 ** 62)
        return s, torch.Generator(self.device).manual_seed(s)

    @property
    def pipeline_dir(self) -> Path:
        return self.out / M.PIPELINE_DIR

    @property
    def controlnet_dir(self) -> Path:
        return self.out / M.CONTROLNET_DIR

    @property
    def checkpoints(self) -> Path:
        return self.ckpt_dir or self.out / "checkpoints"

    def ckpt_path(self, stage: str) -> Path:
        return self.checkpoints / f"{stage}.pt"


# ------------------------------------------------------------------------------------------------ helpers

class EMA:
    """Exponential moving average of parameters, with the usual (1 + n) / (10 + n) warmup of the decay."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1.0 - d)

    @torch.no_grad()
    def copy_to(self, params: list[torch.nn.Parameter]) -> None:
        for p, s in zip(params, self.shadow):
            p.copy_(s.to(p.dtype))


def lr_factor(progress: float, cfg: StageConfig) -> float:
    """Linear warmup then cosine from 1 to min_lr_ratio, as a function of progress in [0, 1]."""
    if progress < cfg.warmup:
        return max(progress / cfg.warmup, 1e-3)
    p = min(1.0, (progress - cfg.warmup) / max(1e-9, 1.0 - cfg.warmup))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def make_optimizer(params: list[torch.nn.Parameter], cfg: StageConfig, fused: bool) -> torch.optim.Optimizer:
    kwargs = dict(lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay, eps=1e-8)
    if fused:
        kwargs["fused"] = True
    return torch.optim.AdamW(params, **kwargs)


def noisy_and_v(alphas_cumprod: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor,
                t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward diffusion and the v-prediction target (diffusers' add_noise / get_velocity, without their
    per-call host-to-device copy of the schedule)."""
    a = alphas_cumprod[t].sqrt()[:, None, None, None]
    s = (1 - alphas_cumprod[t]).sqrt()[:, None, None, None]
    return a * latents + s * noise, a * noise - s * latents


def save_atomic(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def update_log(out: Path, key: str, value: object) -> None:
    """Merge one entry into OUT/train_log.json (re-read each time: stages may run as separate processes)."""
    path = out / "train_log.json"
    log = json.loads(path.read_text()) if path.exists() else {}
    log[key] = value
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(log, indent=2))
    os.replace(tmp, path)


def vae_latent_stats(vae, images: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of images in [0, 1] (no grad)."""
    with torch.no_grad(), ctx.autocast():
        dist = vae.encode(images * 2 - 1).latent_dist
    return dist.mean.float(), dist.std.float()


@dataclass
class LoopState:
    step: int = 0
    progress: float = 0.0
    seconds: float = 0.0  # training-loop seconds over all resumed runs
    log: list[dict[str, float]] = field(default_factory=list)


def train_loop(stage: str, ctx: Context, cfg: StageConfig, deadline: float, state: LoopState,
               optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
               step_fn: Callable[[int], torch.Tensor], on_step: Callable[[int], None] | None,
               checkpoint: Callable[[], None]) -> None:
    """Run optimizer steps until --steps or the deadline; log, checkpoint every ctx.ckpt_every seconds."""
    t0 = time.monotonic()
    start_progress = state.progress
    loop_budget = max(1e-3, deadline - t0)
    last_ckpt = last_print = t0
    loss_sum = torch.zeros((), device=ctx.device)
    n_sum = 0
    steps_this_run = 0
    while True:
        now = time.monotonic()
        if now >= deadline and steps_this_run > 0:
            break
        if ctx.steps is not None:
            if state.step >= ctx.steps:
                break
            progress = state.step / ctx.steps
        else:
            progress = start_progress + (1 - start_progress) * min(1.0, (now - t0) / loop_budget)
        lr = cfg.lr * lr_factor(progress, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = step_fn(state.step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        state.step += 1
        steps_this_run += 1
        state.progress = progress
        if on_step is not None:
            on_step(state.step)
        loss_sum += loss.detach().float()
        n_sum += 1
        if state.step % ctx.log_every == 0 or state.step == 1:
            mean = float(loss_sum) / n_sum  # one sync per log interval, not per step
            loss_sum.zero_()
            n_sum = 0
            elapsed = state.seconds + time.monotonic() - t0
            state.log.append({"step": state.step, "loss": round(mean, 6), "lr": lr, "t": round(elapsed, 2)})
            if state.step == 1 or time.monotonic() - last_print >= ctx.print_every:
                last_print = time.monotonic()
                print(f"[{stage}] step {state.step} loss {mean:.4f} lr {lr:.2e} t {elapsed:.1f}s", flush=True)
            if not math.isfinite(mean):
                # Fail loudly: run_gpu retries the stage in fp32 from the last (finite) checkpoint.
                raise FloatingPointError(f"{stage}: non-finite loss {mean} at step {state.step}")
            if time.monotonic() - last_ckpt > ctx.ckpt_every:  # only right after a finite-loss check
                state.seconds += time.monotonic() - t0
                checkpoint()
                # Restart the loop clock: progress continues linearly from here to the deadline.
                t0 = last_ckpt = time.monotonic()
                start_progress = state.progress
                loop_budget = max(1e-3, deadline - t0)
    state.seconds += time.monotonic() - t0
    if ctx.cuda:
        torch.cuda.synchronize()


def _done_path(ctx: Context, stage: str) -> Path:
    return ctx.checkpoints / f"{stage}.done.json"


def _finished(ctx: Context, stage: str) -> dict | None:
    """The summary of a stage finished earlier, when resuming; None means: train it."""
    path = _done_path(ctx, stage)
    if ctx.resume and path.exists():
        print(f"[{stage}] already done; skipping", flush=True)
        return json.loads(path.read_text())
    return None


def _mark_done(ctx: Context, stage: str, summary: dict) -> None:
    path = _done_path(ctx, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    update_log(ctx.out, stage, summary)


def _load_state(ctx: Context, stage: str) -> dict | None:
    path = ctx.ckpt_path(stage)
    if not (ctx.resume and path.exists()):
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("sizes") != ctx.sizes_name:
        raise SystemExit(f"{path} was trained with sizes {ckpt.get('sizes')!r}, not {ctx.sizes_name!r}")
    return ckpt


def _summary(stage: str, state: LoopState, cfg: StageConfig, started: float, extra: dict) -> dict:
    return {"stage": stage, "steps": state.step, "loop_seconds": round(state.seconds, 2),
            "stage_seconds_this_run": round(time.monotonic() - started, 2),
            "steps_per_second": round(state.step / state.seconds, 3) if state.seconds else None,
            "samples_per_second": round(state.step * cfg.batch / state.seconds, 1) if state.seconds else None,
            "final_loss": state.log[-1]["loss"] if state.log else None, "config": asdict(cfg),
            "log": state.log, **extra}


def _export_reserve(budget: float) -> float:
    return min(10.0, 0.2 * budget)


@dataclass
class StageStart:
    """What every stage starts from: its clock, its settings, and a finished result or a checkpoint to resume."""

    started: float
    deadline: float
    cfg: Any
    finished: dict | None
    ckpt: Any


def _begin_stage(ctx: Context, stage: str, budget: float) -> StageStart:
    """Start a stage's clock (keeping time to export), read its settings, and find a finished run (returned as
    is) or the checkpoint to resume; without --resume an earlier run's "done" marker is dropped."""
    started = time.monotonic()
    cfg = stage_defaults(stage, ctx.cuda)
    if ctx.batch:
        cfg.batch = ctx.batch
    finished = _finished(ctx, stage)
    if finished is None and not ctx.resume:
        _done_path(ctx, stage).unlink(missing_ok=True)
    ckpt = _load_state(ctx, stage) if finished is None else None
    return StageStart(started, started + budget - _export_reserve(budget), cfg, finished, ckpt)


# --------------------------------------------------------------------------------------------------- VAE

def train_vae(ctx: Context, budget: float) -> dict:
    """AutoencoderKL 64x64x3 <-> 16x16x4 with L1 + MSE + a tiny KL; scaling_factor = 1 / latent std."""
    begin = _begin_stage(ctx, "vae", budget)
    if begin.finished is not None:
        return begin.finished
    started, deadline, cfg, ckpt = begin.started, begin.deadline, begin.cfg, begin.ckpt
    torch.manual_seed(ctx.seed)
    vae = M.build_vae(ctx.sizes).to(ctx.device).train()
    params = [p for p in vae.parameters()]
    opt = make_optimizer(params, cfg, ctx.cuda and ctx.fused_adam)
    state = LoopState()
    if ckpt:
        vae.load_state_dict(ckpt["vae"])
        opt.load_state_dict(ckpt["opt"])
        state = LoopState(**ckpt["state"])

    def step_fn(step: int) -> torch.Tensor:
        seed, g = ctx.generator("vae", step)
        x = D.make_batch(cfg.batch, seed, ctx.device).images * 2 - 1
        with ctx.autocast():
            dist = vae.encode(x).latent_dist
            z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g, device=ctx.device)
            rec = vae.decode(z).sample.float()
        kl = dist.kl().mean() / dist.mean[0].numel()
        return F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-4 * kl

    def checkpoint() -> None:
        save_atomic({"vae": vae.state_dict(), "opt": opt.state_dict(), "state": asdict(state),
                     "sizes": ctx.sizes_name}, ctx.ckpt_path("vae"))

    train_loop("vae", ctx, cfg, deadline, state, opt, params, step_fn, None, checkpoint)

    # Latent scale from fresh images (SD-style: 1 / std of posterior samples) and a reconstruction check.
    vae.eval()
    seed, g = ctx.generator("vae", 10_000_000)
    batch = D.make_batch(1024 if ctx.cuda else 128, seed, ctx.device)
    with torch.no_grad():
        mean, std = vae_latent_stats(vae, batch.images, ctx)
        z = mean + std * torch.randn(mean.shape, generator=g, device=ctx.device)
        scale = float(1.0 / z.std())
        with ctx.autocast():
            rec = vae.decode(mean).sample.float()
    vae.register_to_config(scaling_factor=scale)
    recon = _judge_accuracy((rec[:256] + 1) / 2, batch.attrs, 256)
    M.save_model(ctx.pipeline_dir / "vae", M.fp16_copy(vae))
    summary = _summary("vae", state, cfg, started, {"scaling_factor": scale, "latent_mean": float(z.mean()),
                                                      "reconstruction_judge": recon,
                                                      "recon_mse": float(F.mse_loss(rec, batch.images * 2 - 1))})
    checkpoint()
    _mark_done(ctx, "vae", summary)
    print(f"[vae] done: {state.step} steps, scaling_factor {scale:.4f}, reconstructions judged {recon}", flush=True)
    return summary


def _judge_accuracy(images: torch.Tensor, attrs: D.Attributes, n: int) -> dict[str, float]:
    """Geometric-judge accuracy of images (N, 3, 64, 64) in [0, 1] against their attributes."""
    from . import judge as J

    u8 = D.to_uint8(images[:n].float())
    hits: dict[str, list[bool]] = {}
    for i in range(u8.shape[0]):
        for k, v in J.score(J.judge(u8[i]), attrs.row(i)).items():
            if v is not None:
                hits.setdefault(k, []).append(bool(v))
    return {k: round(sum(v) / len(v), 4) for k, v in hits.items()}


# ------------------------------------------------------------------------------------------ UNet + text

def _load_vae(ctx: Context):
    from diffusers import AutoencoderKL

    folder = ctx.pipeline_dir / "vae"
    if not (folder / "config.json").exists():
        raise SystemExit(f"{folder} missing: run --stage vae first")
    vae = AutoencoderKL.from_pretrained(str(folder)).float().to(ctx.device).eval()
    vae.requires_grad_(False)
    return vae


def train_unet(ctx: Context, budget: float) -> dict:
    """UNet2DConditionModel + CLIPTextModel trained jointly; v-prediction, zero terminal SNR, 10% empty captions."""
    begin = _begin_stage(ctx, "unet", budget)
    if begin.finished is not None:
        return begin.finished
    started, deadline, cfg, ckpt = begin.started, begin.deadline, begin.cfg, begin.ckpt
    vae = _load_vae(ctx)
    scale = float(vae.config.scaling_factor)
    tokens = M.caption_token_table(M.load_tokenizer()).to(ctx.device)
    torch.manual_seed(ctx.seed + 1)
    unet = M.build_unet(ctx.sizes).to(ctx.device).train()
    text = M.build_text_encoder(ctx.sizes).to(ctx.device).train()
    params = [p for p in unet.parameters()] + [p for p in text.parameters()]
    opt = make_optimizer(params, cfg, ctx.cuda and ctx.fused_adam)
    ema = EMA(params, cfg.ema_decay)
    state = LoopState()
    if ckpt:
        unet.load_state_dict(ckpt["unet"])
        text.load_state_dict(ckpt["text"])
        opt.load_state_dict(ckpt["opt"])
        ema.shadow = [s.to(ctx.device) for s in ckpt["ema"]]
        state = LoopState(**ckpt["state"])
    alphas = M.build_train_scheduler().alphas_cumprod.to(ctx.device)
    n_t = alphas.shape[0]

    def step_fn(step: int) -> torch.Tensor:
        seed, g = ctx.generator("unet", step)
        batch = D.make_batch(cfg.batch, seed, ctx.device)
        mean, std = vae_latent_stats(vae, batch.images, ctx)
        latents = (mean + std * torch.randn(mean.shape, generator=g, device=ctx.device)) * scale
        drop = torch.rand(cfg.batch, generator=g, device=ctx.device) < 0.1
        ids = tokens[torch.where(drop, D.EMPTY_CAPTION_INDEX, batch.caption_ids)]
        t = torch.randint(0, n_t, (cfg.batch,), generator=g, device=ctx.device)
        noise = torch.randn(latents.shape, generator=g, device=ctx.device)
        noisy, target = noisy_and_v(alphas, latents, noise, t)
        with ctx.autocast():
            cond = text(ids)[0]
            pred = unet(noisy, t, cond).sample
        return F.mse_loss(pred.float(), target)

    def checkpoint() -> None:
        save_atomic({"unet": unet.state_dict(), "text": text.state_dict(), "opt": opt.state_dict(),
                     "ema": [s.cpu() for s in ema.shadow], "state": asdict(state), "sizes": ctx.sizes_name},
                    ctx.ckpt_path("unet"))

    train_loop("unet", ctx, cfg, deadline, state, opt, params, step_fn, ema.update, checkpoint)

    # The checkpoint keeps the raw weights (a resume continues them); the pipeline gets the EMA weights.
    checkpoint()
    ema.copy_to(params)
    unet.eval()
    text.eval()
    M.save_pipeline(ctx.pipeline_dir, M.fp16_copy(vae), M.fp16_copy(text), M.fp16_copy(unet))
    summary = _summary("unet", state, cfg, started, {
        "unet_params": sum(p.numel() for p in unet.parameters()),
        "text_encoder_params": sum(p.numel() for p in text.parameters()),
        "pipeline_bytes": M.folder_bytes(ctx.pipeline_dir)})
    _mark_done(ctx, "unet", summary)
    print(f"[unet] done: {state.step} steps; pipeline {summary['pipeline_bytes'] / 1e6:.1f} MB", flush=True)
    return summary


# ---------------------------------------------------------------------------------------------- ControlNet

def _load_pipeline_parts(ctx: Context):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = ctx.pipeline_dir
    if not (folder / "model_index.json").exists():
        raise SystemExit(f"{folder} missing: run --stage unet first")
    vae = _load_vae(ctx)
    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet")).float().to(ctx.device)
    text = CLIPTextModel.from_pretrained(str(folder / "text_encoder")).float().to(ctx.device)
    for m in (unet, text):
        m.eval().requires_grad_(False)
    return vae, unet, text


def build_edge_pool(ctx: Context, vae, n: int) -> dict[str, torch.Tensor]:
    """A fixed pool of images with Canny edges (cv2, threaded) and VAE latent statistics, kept on device.

    cv2.Canny runs on the CPU; doing it once for the pool keeps it out of the training step.
    """
    seed, _ = ctx.generator("controlnet", 50_000_000)
    chunk = 4096 if ctx.cuda else 256
    means, stds, edges, caps = [], [], [], []
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        batch = D.make_batch(b - a, seed + a, ctx.device)
        e = D.canny(D.to_uint8(batch.images), workers=ctx.workers)
        edges.append(torch.from_numpy(e).to(ctx.device))
        for i in range(0, b - a, 1024):
            m, s = vae_latent_stats(vae, batch.images[i:i + 1024], ctx)
            means.append(m)
            stds.append(s)
        caps.append(batch.caption_ids)
    return {"mean": torch.cat(means), "std": torch.cat(stds), "edges": torch.cat(edges), "caps": torch.cat(caps)}


def train_controlnet(ctx: Context, budget: float) -> dict:
    """ControlNet (initialised from the UNet's encoder) on Canny edges; UNet, text encoder and VAE frozen."""
    begin = _begin_stage(ctx, "controlnet", budget)
    if begin.finished is not None:
        return begin.finished
    started, deadline, cfg, ckpt = begin.started, begin.deadline, begin.cfg, begin.ckpt
    vae, unet, text = _load_pipeline_parts(ctx)
    scale = float(vae.config.scaling_factor)
    tokens = M.caption_token_table(M.load_tokenizer()).to(ctx.device)
    with torch.no_grad():  # the text encoder is frozen: embed every caption of the grammar once
        emb_table = torch.cat([text(tokens[i:i + 512])[0].float() for i in range(0, tokens.shape[0], 512)])
    torch.manual_seed(ctx.seed + 2)
    controlnet = M.build_controlnet(unet, ctx.sizes).to(ctx.device).train()
    params = [p for p in controlnet.parameters()]
    opt = make_optimizer(params, cfg, ctx.cuda and ctx.fused_adam)
    state = LoopState()
    if ckpt:
        controlnet.load_state_dict(ckpt["controlnet"])
        opt.load_state_dict(ckpt["opt"])
        state = LoopState(**ckpt["state"])
    pool_n = ctx.pool or (32768 if ctx.cuda else 512)
    t_pool = time.monotonic()
    pool = build_edge_pool(ctx, vae, pool_n)
    t_pool = time.monotonic() - t_pool
    print(f"[controlnet] edge pool of {pool_n} built in {t_pool:.1f}s", flush=True)
    alphas = M.build_train_scheduler().alphas_cumprod.to(ctx.device)
    n_t = alphas.shape[0]

    def step_fn(step: int) -> torch.Tensor:
        _, g = ctx.generator("controlnet", step)
        idx = torch.randint(0, pool_n, (cfg.batch,), generator=g, device=ctx.device)
        latents = (pool["mean"][idx] + pool["std"][idx] * torch.randn(
            pool["mean"][idx].shape, generator=g, device=ctx.device)) * scale
        drop = torch.rand(cfg.batch, generator=g, device=ctx.device) < 0.1
        cond_text = emb_table[torch.where(drop, D.EMPTY_CAPTION_INDEX, pool["caps"][idx])]
        control = (pool["edges"][idx].float() / 255.0)[:, None].expand(-1, 3, -1, -1)
        t = torch.randint(0, n_t, (cfg.batch,), generator=g, device=ctx.device)
        noise = torch.randn(latents.shape, generator=g, device=ctx.device)
        noisy, target = noisy_and_v(alphas, latents, noise, t)
        with ctx.autocast():
            down, mid = controlnet(noisy, t, encoder_hidden_states=cond_text, controlnet_cond=control,
                                   return_dict=False)
            pred = unet(noisy, t, cond_text, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample
        return F.mse_loss(pred.float(), target)

    def checkpoint() -> None:
        save_atomic({"controlnet": controlnet.state_dict(), "opt": opt.state_dict(), "state": asdict(state),
                     "sizes": ctx.sizes_name}, ctx.ckpt_path("controlnet"))

    train_loop("controlnet", ctx, cfg, deadline, state, opt, params, step_fn, None, checkpoint)
    controlnet.eval()
    M.save_model(ctx.controlnet_dir, M.fp16_copy(controlnet))
    summary = _summary("controlnet", state, cfg, started, {
        "pool": pool_n, "pool_seconds": round(t_pool, 2),
        "controlnet_params": sum(p.numel() for p in controlnet.parameters()),
        "controlnet_bytes": M.folder_bytes(ctx.controlnet_dir)})
    checkpoint()
    _mark_done(ctx, "controlnet", summary)
    print(f"[controlnet] done: {state.step} steps", flush=True)
    return summary


STAGE_FNS: dict[str, Callable[[Context, float], dict]] = {
    "vae": train_vae, "unet": train_unet, "controlnet": train_controlnet}


# ------------------------------------------------------------------------------------------------------ CLI

def setup_device(device: str, threads: int | None) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda but CUDA is not available")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    else:
        # One thread per training process measured ~6x faster than two on a shared 2-core machine.
        torch.set_num_threads(threads or 1)
    return dev


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage", choices=STAGES + ("all",), default="all")
    p.add_argument("--budget-seconds", type=float, default=360.0,
                   help="wall-clock budget of the stage (with --stage all: of all three, split 14/68/18%%)")
    p.add_argument("--steps", type=int, default=None,
                   help="fixed optimizer steps per stage (deterministic schedule); the budget still caps time")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints; finished stages are skipped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="tiny models (tests)")
    p.add_argument("--batch-size", type=int, default=None, help="override every stage's batch size")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--ckpt-every", type=float, default=60.0, help="seconds between checkpoints")
    p.add_argument("--ckpt-dir", type=Path, default=None,
                   help="training checkpoints (~200 MB with optimizer state); default OUT/checkpoints")
    p.add_argument("--log-every", type=int, default=None, help="steps between loss log entries")
    p.add_argument("--print-every", type=float, default=10.0, help="seconds between printed loss lines")
    p.add_argument("--pool", type=int, default=None, help="ControlNet edge-pool size (default 32768 CUDA, 512 CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default 1 on CPU)")
    return p


def quiet_libraries() -> None:
    """No per-file progress bars in logs (they drown the loss lines)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def make_context(args: argparse.Namespace) -> Context:
    quiet_libraries()
    device = setup_device(args.device, args.threads)
    amp = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    return Context(device=device, out=args.out, seed=args.seed, sizes=M.TINY if args.tiny else M.FULL,
                   sizes_name="tiny" if args.tiny else "full", amp=amp, resume=args.resume, steps=args.steps,
                   batch=args.batch_size, ckpt_every=args.ckpt_every,
                   log_every=args.log_every or (50 if device.type == "cuda" else 5), pool=args.pool,
                   workers=max(1, min(16, os.cpu_count() or 1)), print_every=args.print_every,
                   ckpt_dir=args.ckpt_dir)


def run_stages(ctx: Context, stages: tuple[str, ...], budget: float) -> dict[str, dict]:
    """Run stages in order; each gets its share of what is left of the budget when it starts."""
    end = time.monotonic() + budget
    results: dict[str, dict] = {}
    for i, stage in enumerate(stages):
        left = end - time.monotonic()
        share = STAGE_SHARE[stage] / sum(STAGE_SHARE[s] for s in stages[i:])
        results[stage] = STAGE_FNS[stage](ctx, max(1.0, left * share))
    return results


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = build_parser().parse_args(argv)
    ctx = make_context(args)
    stages = STAGES if args.stage == "all" else (args.stage,)
    return run_stages(ctx, stages, args.budget_seconds)


if __name__ == "__main__":
    main()
