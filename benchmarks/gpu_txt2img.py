"""txt2img side by side in one process: diffusers eager, diffusers compiled, our default mode, our fast mode.

    python benchmarks/gpu_txt2img.py --case sd15-b1 [--case sdxl-b1 ...] [--modes diffusers,ours,ours-fast,diffusers-compiled]
                                     [--steps 20] [--repeats 3] [--budget SECONDS] [--json results.jsonl]
    python benchmarks/gpu_txt2img.py --summary results/*.jsonl [--markdown table.md] [--results all.json]
    python benchmarks/gpu_txt2img.py --tiny --case sd15-b1 --case sdxl-b1      # CPU check of this script (tiny models)

Cases: `sd15-b1` / `sd15-b4` (SD1.5 architecture, 512x512, batch 1 / 4) and `sdxl-b1` (SDXL, 1024x1024, batch 1),
random weights built from our shipped configs (nothing is downloaded), fp16 (or `--dtype bf16`) on CUDA, Euler, CFG 7.5. All four modes
share the same modules. Modes:

- `diffusers`: `StableDiffusion(XL)Pipeline`, eager.
- `diffusers-compiled`: the same pipeline with its UNet in channels-last and
  `torch.compile(unet, mode="reduce-overhead", fullgraph=True)` (the published recipe).
- `ours`: our workflow (EncodeText x2, EmptyLatent, Sample, VAEDecode) in the default mode.
- `ours-fast`: the same workflow with `Settings.fast` (nodes/sd/fast.py).

Per mode: sampling it/s (steps / sampling seconds; diffusers' from a latent-only call with precomputed prompt
embeddings, ours from the Sample node), seconds per image (whole txt2img incl. text encoding and VAE decode, /
batch), the first call's seconds and the compile part of it (first call - median call), peak GPU memory, our
fast mode's Python time per step (host ms/step: the loop enqueues work without waiting for the GPU), and the
PSNR of the picture against our default mode's picture for the same seed. Medians of `--repeats` runs.

Each mode's result is appended to `--json` (JSON lines) as soon as it is measured and each mode is guarded, so
a failure or a timeout loses only what had not finished; `--budget` skips a mode that cannot finish in the time
left. `--summary` reads those files and prints the markdown table and the issue's targets.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

T0 = time.perf_counter()
CASES = {"sd15-b1": ("sd15", 512, 1), "sd15-b4": ("sd15", 512, 4), "sdxl-b1": ("sdxl", 1024, 1)}
MODES = ("diffusers", "ours", "ours-fast", "diffusers-compiled")
PROMPT = "a photo of an astronaut riding a horse"
# rough seconds a mode needs on an H100 (compile included), to skip what cannot finish inside --budget
NEEDS = {("sd15", "diffusers"): 10, ("sd15", "ours"): 10, ("sd15", "ours-fast"): 90, ("sd15", "diffusers-compiled"): 60,
         ("sdxl", "diffusers"): 20, ("sdxl", "ours"): 20, ("sdxl", "ours-fast"): 130, ("sdxl", "diffusers-compiled"): 120}
TARGETS = [("sd15-b1", "ours-fast", "diffusers", 5.0), ("sd15-b1", "ours-fast", "diffusers-compiled", 1.2),
           ("sd15-b4", "ours-fast", "diffusers", 2.0), ("sdxl-b1", "ours-fast", "diffusers", 3.0)]


def say(message: str) -> None:
    """Progress with timestamps, flushed (the GPU run's log is read afterwards)."""
    print(f"[{time.perf_counter() - T0:7.1f}s {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------------------------
# Models: random weights from the shipped configs, built directly on the device
# ------------------------------------------------------------------------------------------------------------


def _clean(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def build_models(arch: str, tiny: bool, device: str, dtype: Any) -> dict[str, Any]:
    """UNet, VAE, text encoder(s), tokenizer(s) and scheduler config for `arch`; `tiny` for the CPU check."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nodes.sd import ldm_convert as lc
    from nodes.sd.loading import TEXT_ENCODER_NAMES, component_configs, make_tokenizer

    cfgs = component_configs(arch)
    if tiny:
        from tests.tiny_models import TINY_OVERRIDES

        for comp, extra in TINY_OVERRIDES[arch].items():
            cfgs[comp].update(extra)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: a 2.6B-parameter UNet takes minutes on the CPU
        unet = diffusers.UNet2DConditionModel.from_config(_clean(cfgs["unet"]))
        vae = diffusers.AutoencoderKL.from_config(_clean(cfgs["vae"]))
        encoders = []
        for name in TEXT_ENCODER_NAMES:
            if name in cfgs:
                cfg = cfgs[name]
                cls = CLIPTextModelWithProjection if "WithProjection" in str(cfg.get("architectures")) else CLIPTextModel
                encoders.append(cls(CLIPTextConfig.from_dict(cfg)))
    for m in (unet, vae, *encoders):
        m.to(dtype=dtype).eval().requires_grad_(False)
    tokenizers = [make_tokenizer(kind, int(te.config.max_position_embeddings))
                  for (kind, _), te in zip(lc.TEXT_ENCODER_LAYOUT[arch], encoders)]
    sched = dict(cfgs["scheduler"])
    sched.pop("_diffusers_version", None)
    return {"unet": unet, "vae": vae, "encoders": encoders, "tokenizers": tokenizers, "scheduler": sched}


def make_pipeline(arch: str, m: dict[str, Any]) -> Any:
    import diffusers

    sched_cfg = {k: v for k, v in m["scheduler"].items() if k != "_class_name"}
    parts: dict[str, Any] = {"unet": m["unet"], "vae": m["vae"], "scheduler": diffusers.EulerDiscreteScheduler.from_config(sched_cfg),
                             "text_encoder": m["encoders"][0], "tokenizer": m["tokenizers"][0]}
    if arch == "sdxl":
        parts.update(text_encoder_2=m["encoders"][1], tokenizer_2=m["tokenizers"][1], force_zeros_for_empty_prompt=False)
        pipe = diffusers.StableDiffusionXLPipeline(**parts)
    else:
        pipe = diffusers.StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                                 requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------------------------------
# Timing helpers
# ------------------------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def peak_reset(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    if device != "cuda":
        return float("nan")
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


def psnr(a: Any, b: Any) -> float:
    """PSNR of two images in 0..1 (inf when equal, nan when either has non-finite pixels)."""
    import torch

    a, b = a.double().cpu(), b.double().cpu()
    if a.shape != b.shape or not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("nan")
    mse = torch.mean((a - b) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------------
# One case: every mode in one process
# ------------------------------------------------------------------------------------------------------------


class Case:
    def __init__(self, name: str, args: argparse.Namespace) -> None:
        import torch

        self.name, self.args = name, args
        arch, size, batch = CASES[name]
        self.arch, self.batch = arch, batch
        self.size = 64 if args.tiny else size
        self.device = args.device
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype] if self.device == "cuda" else torch.float32
        self.steps = args.steps
        self.reference: Any = None  # our default mode's picture (seed 1)
        self.diffusers_image: Any = None

    # --- results -------------------------------------------------------------------------------------------
    def emit(self, row: dict) -> None:
        row = {"case": self.name, "arch": self.arch, "size": self.size, "batch": self.batch, "steps": self.steps, **row}
        text = json.dumps(row, default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else str(v))
        print("RESULT " + text, flush=True)
        if self.args.json:
            with open(self.args.json, "a") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())

    def measure(self, mode: str, first: Callable[[], dict], again: Callable[[int], dict]) -> dict:
        """first() once (compile, warm-up), then `repeats` timed calls; medians and peak memory."""
        peak_reset(self.device)
        sync(self.device)
        t0 = time.perf_counter()
        f = first()
        first_s = time.perf_counter() - t0
        say(f"{self.name} {mode}: first call {first_s:.1f} s")
        peak_reset(self.device)
        runs = [again(100 + i) for i in range(self.args.repeats)]
        peak = peak_gib(self.device)
        total = statistics.median(r["total"] for r in runs)
        sampling = statistics.median(r["sampling"] for r in runs)
        row = {"mode": mode, "it_s": self.steps / sampling, "s_per_image": total / self.batch, "sampling_s": sampling,
               "total_s": total, "first_call_s": first_s, "compile_s": max(0.0, first_s - total), "peak_gib": peak}
        for key in ("host_ms_per_step", "path", "psnr_vs_ours", "psnr_vs_diffusers", "cudagraph_skips"):
            if key in f:
                row[key] = f[key]
        host = [r["host_ms_per_step"] for r in runs if "host_ms_per_step" in r]
        if host:
            row["host_ms_per_step"] = statistics.median(host)
        return row

    # --- diffusers -----------------------------------------------------------------------------------------
    def diffusers_mode(self, m: dict, compiled: bool) -> dict:
        import torch

        pipe = make_pipeline(self.arch, m)
        mode = "diffusers-compiled" if compiled else "diffusers"
        if compiled:
            pipe.unet.to(memory_format=torch.channels_last)
            if self.device == "cuda":
                pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=True)
            else:
                pipe.unet = torch.compile(pipe.unet, backend=os.environ.get("LOOM_FAST_BACKEND", "inductor"), fullgraph=True)
        b, size = self.batch, self.size
        with torch.no_grad():
            enc = pipe.encode_prompt(prompt=[PROMPT] * b, device=self.device, num_images_per_prompt=1,
                                     do_classifier_free_guidance=True, negative_prompt=[""] * b)
        if self.arch == "sdxl":
            embeds = dict(prompt_embeds=enc[0], negative_prompt_embeds=enc[1], pooled_prompt_embeds=enc[2],
                          negative_pooled_prompt_embeds=enc[3])
        else:
            embeds = dict(prompt_embeds=enc[0], negative_prompt_embeds=enc[1])
        common = dict(height=size, width=size, num_inference_steps=self.steps, guidance_scale=7.5)

        def full(seed: int) -> tuple[float, Any]:
            g = torch.Generator("cpu").manual_seed(seed)
            sync(self.device)
            t0 = time.perf_counter()
            out = pipe(prompt=[PROMPT] * b, negative_prompt=[""] * b, generator=g, output_type="pt", **common).images
            sync(self.device)
            return time.perf_counter() - t0, out

        def sampling(seed: int) -> float:
            g = torch.Generator("cpu").manual_seed(seed)
            sync(self.device)
            t0 = time.perf_counter()
            pipe(generator=g, output_type="latent", **embeds, **common)
            sync(self.device)
            return time.perf_counter() - t0

        def first() -> dict:
            total, image = full(1)
            image = image.permute(0, 2, 3, 1).float().cpu()
            info: dict = {}
            if compiled and self.diffusers_image is not None:
                info["psnr_vs_diffusers"] = psnr(image, self.diffusers_image)
            elif not compiled:
                self.diffusers_image = image
            return info

        def again(seed: int) -> dict:
            return {"sampling": sampling(seed), "total": full(seed)[0]}

        try:
            return self.measure(mode, first, again)
        finally:
            pipe = None  # noqa: F841  (drops the compiled UNet and its CUDA graphs before the next mode)
            free(self.device)

    # --- ours ------------------------------------------------------------------------------------------------
    def ours_mode(self, m: dict, fast: bool) -> dict:
        from engine.executor import Executor
        from engine.node import Outputs, node
        from engine.registry import Registry
        from engine.settings import Settings
        from engine.types import IMAGE, TEXT_ENCODER, UNET, VAE
        from nodes.sd import fast as fast_mode
        from nodes.sd.handles import TextEncoderHandle, UNetHandle, VAEHandle

        family = self.arch
        sched = dict(m["scheduler"])
        handles = (
            UNetHandle(model=m["unet"], family=family, prediction_type="epsilon", scheduler_config=sched, source=f"random-{family}"),
            TextEncoderHandle(tokenizers=tuple(m["tokenizers"]), encoders=tuple(m["encoders"]), family=family, source=f"random-{family}"),
            VAEHandle(model=m["vae"], family=family, source=f"random-{family}"),
        )

        class Bench(Outputs):
            unet: UNET
            text_encoder: TEXT_ENCODER
            vae: VAE

        @node(name="BenchModel")
        def bench_model() -> Bench:
            return Bench(*handles)

        @node(name="BenchSink", output_node=True, output_name="image")
        def bench_sink(images: IMAGE) -> IMAGE:
            """An output node that keeps the image in memory (no PNG encoding in the timings)."""
            return images

        registry = Registry.default()
        registry.add(bench_model)
        registry.add(bench_sink)
        settings = Settings(device=self.device, dtype=self.args.dtype if self.device == "cuda" else "auto",
                            output_dir=Path(self.args.scratch) / "out", user_dir=Path(self.args.scratch) / "user", fast=fast)
        ex = Executor(registry, settings)
        mode = "ours-fast" if fast else "ours"

        def L(n: str, o: str) -> dict:
            return {"node": n, "output": o}

        def workflow(seed: int) -> dict:
            return {"format": "latentloom.workflow", "version": 1, "nodes": {
                "m": {"type": "BenchModel"},
                "pos": {"type": "EncodeText", "inputs": {"text_encoder": L("m", "text_encoder"), "text": PROMPT}},
                "neg": {"type": "EncodeText", "inputs": {"text_encoder": L("m", "text_encoder"), "text": ""}},
                "lat": {"type": "EmptyLatent", "inputs": {"width": self.size, "height": self.size, "batch_size": self.batch,
                                                          "vae": L("m", "vae")}},
                "s": {"type": "Sample", "inputs": {"unet": L("m", "unet"), "positive": L("pos", "conditioning"),
                                                   "negative": L("neg", "conditioning"), "latent": L("lat", "latent"),
                                                   "seed": seed, "steps": self.steps, "cfg": 7.5, "scheduler": "euler"}},
                "d": {"type": "VAEDecode", "inputs": {"vae": L("m", "vae"), "latent": L("s", "latent")}},
                "out": {"type": "BenchSink", "inputs": {"images": L("d", "image")}},
            }}

        warnings: list[str] = []

        def on_event(e: Any) -> None:
            if type(e).__name__ == "NodeWarning":
                warnings.append(e.message)
                say(f"{self.name} {mode}: [{e.node_id}] {e.message}")

        def run(seed: int) -> tuple[dict, Any]:
            ex.cache.clear()  # everything really runs, text encoding included (as in the pipeline call)
            sync(self.device)
            t0 = time.perf_counter()
            r = ex.run(workflow(seed), on_event=on_event)
            sync(self.device)
            total = time.perf_counter() - t0
            if r.status != "success":
                raise RuntimeError(f"workflow failed: {r.error}")
            image = ex.cache.peek(r.signatures["out"])["image"]
            out = {"total": total, "sampling": r.nodes["s"].seconds}
            if fast and fast_mode.LAST_RUN:
                out["host_ms_per_step"] = fast_mode.LAST_RUN.get("host_ms_per_step")
                out["path"] = fast_mode.LAST_RUN.get("path")
            return out, image

        def first() -> dict:
            out, image = run(1)
            info = {k: out[k] for k in ("host_ms_per_step", "path") if k in out}
            if fast:
                from torch._dynamo.utils import counters

                info["cudagraph_skips"] = int(counters["inductor"].get("cudagraph_skips", 0))  # graphs run without
                info["psnr_vs_ours"] = psnr(image, self.reference) if self.reference is not None else float("nan")
                say(f"{self.name} {mode}: path {out.get('path')}, PSNR vs our default mode {info['psnr_vs_ours']:.1f} dB")
            else:
                self.reference = image
            if self.diffusers_image is not None:
                info["psnr_vs_diffusers"] = psnr(image, self.diffusers_image)
            return info

        def again(seed: int) -> dict:
            return run(seed)[0]

        try:
            row = self.measure(mode, first, again)
            if warnings:
                row["notices"] = warnings[:6]
            return row
        finally:
            ex = None  # noqa: F841
            if fast:
                fast_mode.clear_cache()  # frees its CUDA graphs before any later mode
            free(self.device)

    # --- driver --------------------------------------------------------------------------------------------
    def run(self, modes: list[str]) -> int:
        import diffusers
        import torch

        dev = torch.cuda.get_device_name(0) if self.device == "cuda" else "CPU"
        self.emit({"mode": "_env", "device": dev, "torch": torch.__version__, "diffusers": diffusers.__version__,
                   "dtype": str(self.dtype).replace("torch.", ""), "tiny": bool(self.args.tiny)})
        say(f"{self.name}: building random {self.arch} models ({'tiny' if self.args.tiny else 'full size'}) on {self.device}")
        m = build_models(self.arch, self.args.tiny, self.device, self.dtype)
        say(f"{self.name}: models ready, UNet {sum(p.numel() for p in m['unet'].parameters()) / 1e6:.0f}M parameters")
        failures = 0
        for mode in modes:
            left = self.args.budget - (time.perf_counter() - T0) if self.args.budget else None
            need = NEEDS.get((self.arch, mode), 30) if not self.args.tiny else 0
            if left is not None and left < need:
                say(f"{self.name} {mode}: skipped, {left:.0f} s left of the budget, needs ~{need} s")
                self.emit({"mode": mode, "skipped": f"{left:.0f} s left, needs ~{need} s"})
                continue
            say(f"{self.name} {mode}: start")
            try:
                if mode.startswith("diffusers"):
                    row = self.diffusers_mode(m, compiled=mode == "diffusers-compiled")
                else:
                    row = self.ours_mode(m, fast=mode == "ours-fast")
                self.emit(row)
                say(f"{self.name} {mode}: {row['it_s']:.1f} it/s, {row['s_per_image']:.3f} s/image, first call "
                    f"{row['first_call_s']:.1f} s, peak {row['peak_gib']:.2f} GiB")
            except Exception as exc:  # one mode's failure must not lose the others
                failures += 1
                text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:500]
                say(f"{self.name} {mode}: FAILED {text}")
                traceback.print_exc()
                sys.stdout.flush()
                self.emit({"mode": mode, "error": text})
                free(self.device)
        return 1 if failures else 0


# ------------------------------------------------------------------------------------------------------------
# Summary: the table and the targets
# ------------------------------------------------------------------------------------------------------------


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "inf" if isinstance(v, float) and v == math.inf else "-"
    return format(v, spec)


def summary(files: list[str], markdown: str | None, results: str | None) -> int:
    rows, env = [], {}
    for path in files:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            print(f"(cannot read {path}: {exc})")
            continue
        for line in lines:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("mode") == "_env":
                env[r["case"]] = r
            else:
                rows.append(r)
    by = {(r["case"], r["mode"]): r for r in rows}
    out = []
    e = next(iter(env.values()), {})
    out.append(f"{e.get('device', '?')}, torch {e.get('torch', '?')}, diffusers {e.get('diffusers', '?')}, "
               f"{e.get('dtype', '?')}, random weights, Euler, CFG 7.5; medians. it/s: sampling only; s/image: whole "
               "txt2img (text encoding, sampling, VAE decode) / batch; compile s: first call - median call.\n")
    out.append("| case | mode | it/s | s/image | x eager | first call s | compile s | peak GiB | host ms/step | PSNR vs ours |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for case in CASES:
        eager = by.get((case, "diffusers"), {}).get("it_s")
        for mode in MODES:
            r = by.get((case, mode))
            if r is None:
                continue
            if "error" in r or "skipped" in r:
                out.append(f"| {case} | {mode} | {'FAILED: ' + r['error'][:80] if 'error' in r else 'skipped: ' + r['skipped']} "
                           "| | | | | | | |")
                continue
            speed = r["it_s"] / eager if eager else None
            out.append(f"| {case} | {mode} | {_fmt(r.get('it_s'), '.1f')} | {_fmt(r.get('s_per_image'), '.3f')} | "
                       f"{_fmt(speed, '.2f')} | {_fmt(r.get('first_call_s'), '.1f')} | {_fmt(r.get('compile_s'), '.1f')} | "
                       f"{_fmt(r.get('peak_gib'), '.2f')} | {_fmt(r.get('host_ms_per_step'), '.3f')} | "
                       f"{_fmt(r.get('psnr_vs_ours'), '.1f')} |")
    for r in rows:
        if r.get("mode") not in MODES:
            out.append(f"| {r.get('case')} | {r.get('mode')} | {'skipped: ' + str(r.get('skipped')) if 'skipped' in r else r.get('error', '?')} "
                       "| | | | | | | |")
    out.append("")
    if any(v.get("tiny") for v in env.values()):
        out.append("(tiny models on the CPU: this checks the script; the numbers say nothing about speed)")
    out.append("Modes run in the order diffusers, ours, ours-fast, diffusers-compiled in one process per case; a later "
               "compile can reuse Triton kernels an earlier one built. host ms/step: Python time per step of the fast "
               "loop (it enqueues GPU work without waiting).")
    out.append("")
    out.append("Targets (issue 9):")
    verdicts = []
    for case, ours, base, factor in TARGETS:
        a, b = by.get((case, ours), {}).get("it_s"), by.get((case, base), {}).get("it_s")
        if a is None or b is None:
            verdicts.append(f"- {case}: {ours} >= {factor}x {base}: not measured")
            continue
        verdicts.append(f"- {case}: {ours} >= {factor}x {base}: {a / b:.2f}x -> {'PASS' if a / b >= factor else 'FAIL'}")
    for case in CASES:
        p = by.get((case, "ours-fast"), {}).get("psnr_vs_ours")
        if p is not None:
            verdicts.append(f"- {case}: same picture (PSNR >= 40 dB vs default mode): {_fmt(p, '.1f')} dB -> "
                            f"{'PASS' if (p == math.inf or (isinstance(p, float) and p >= 40)) else 'FAIL'}")
    out.extend(verdicts)
    text = "\n".join(out)
    print("\n" + text, flush=True)
    if markdown:
        Path(markdown).write_text(text + "\n")
    if results:
        Path(results).write_text(json.dumps({"env": env, "rows": rows}, indent=1, default=str))
    return 0


# ------------------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="repeatable; default: all three")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, in run order; default {','.join(MODES)}")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16", help="compute dtype on CUDA (fp32 on the CPU)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=None, help="seconds for this process: skip modes that cannot finish")
    ap.add_argument("--tiny", action="store_true", help="tiny models at 64x64 on the CPU: checks the script, not speed")
    ap.add_argument("--json", help="append JSON lines here")
    ap.add_argument("--scratch", default="/tmp/loom-bench", help="output and user folders of our executor")
    ap.add_argument("--summary", nargs="+", help="JSON-lines files to summarise (no benchmark run)")
    ap.add_argument("--markdown", help="with --summary: write the table here")
    ap.add_argument("--results", help="with --summary: write all rows here as one JSON")
    args = ap.parse_args()
    if args.summary:
        return summary(args.summary, args.markdown, args.results)

    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"),
                       ("DIFFUSERS_VERBOSITY", "error")):
        os.environ.setdefault(key, value)  # as engine.settings.offline(); the engine is imported by our modes only
    if args.tiny:
        os.environ.setdefault("LOOM_FAST_BACKEND", "aot_eager_decomp_partition")  # inductor's C++ compile: minutes
        args.steps = min(args.steps, 4)
        args.repeats = min(args.repeats, 1)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown modes {unknown}; known: {', '.join(MODES)}")
    from types import SimpleNamespace

    from nodes.sd import fast  # torch only: the diffusers modes run even where our engine cannot be imported

    # the on-disk compile caches, for every compile of this process (diffusers' too), before the first one
    say(f"compile cache: {fast.prepare_process(SimpleNamespace(user_dir=Path(args.scratch) / 'user'))}")
    status = 0
    for name in args.case or list(CASES):
        status |= Case(name, args).run(modes)
        free(args.device)
    return status


if __name__ == "__main__":
    sys.exit(main())
