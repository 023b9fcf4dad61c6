"""Our txt2img workflow vs diffusers' StableDiffusionPipeline, side by side in one process.

    python benchmarks/gpu_txt2img.py [--device cuda] [--batches 1 4] [--steps 20] [--size 512] [--tiny]

SD1.5 architecture with random weights (from our shipped configs; no download), fp16 on CUDA, Euler,
CFG 7.5. Both sides share the same modules. Reports sampling it/s, seconds per image, peak memory and our
overhead over the pipeline, as medians of a few runs; a markdown table at the end. Both sides end with
the decoded images in memory (our run targets the VAEDecode node; no PNG is written). `--tiny` runs a small
model on the CPU to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engine.settings import offline  # noqa: E402

offline()


def build_models(tiny: bool, device: str, dtype: torch.dtype):
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.sd.loading import component_configs, make_tokenizer

    cfgs = component_configs("sd15")
    unet_cfg, vae_cfg, te_cfg = dict(cfgs["unet"]), dict(cfgs["vae"]), dict(cfgs["text_encoder"])
    if tiny:
        unet_cfg.update(block_out_channels=[32, 64, 64, 64], attention_head_dim=8, cross_attention_dim=64, layers_per_block=1)
        vae_cfg.update(block_out_channels=[32, 32, 64, 64], layers_per_block=1)
        te_cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, projection_dim=64)
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel.from_config({k: v for k, v in unet_cfg.items() if not k.startswith("_")})
    vae = diffusers.AutoencoderKL.from_config({k: v for k, v in vae_cfg.items() if not k.startswith("_")})
    te = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in te_cfg.items() if not k.startswith("_") and k != "architectures"}))
    for m in (unet, vae, te):
        m.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return unet, vae, te, make_tokenizer("clip"), dict(cfgs["scheduler"])


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    device = args.device
    dtype = torch.float16 if device == "cuda" else torch.float32
    size = 64 if args.tiny else args.size

    import diffusers

    from engine.executor import Executor
    from engine.node import Outputs, node
    from engine.registry import Registry
    from engine.settings import Settings
    from engine.types import TEXT_ENCODER, UNET, VAE
    from nodes.sd.handles import TextEncoderHandle, UNetHandle, VAEHandle

    unet, vae, te, tok, sched_cfg = build_models(args.tiny, device, dtype)
    sched_cfg.pop("_class_name", None)
    sched_cfg.pop("_diffusers_version", None)
    handles = (
        UNetHandle(model=unet, family="sd15", prediction_type="epsilon", scheduler_config=sched_cfg, source="random-sd15"),
        TextEncoderHandle(tokenizers=(tok,), encoders=(te,), family="sd15", source="random-sd15"),
        VAEHandle(model=vae, family="sd15", source="random-sd15"),
    )

    class Bench(Outputs):
        unet: UNET
        text_encoder: TEXT_ENCODER
        vae: VAE

    @node(name="BenchModel")
    def bench_model() -> Bench:
        return Bench(*handles)

    registry = Registry.default()
    registry.add(bench_model)
    settings = Settings(device=device, output_dir=Path("/tmp/loom-bench-out"))
    ex = Executor(registry, settings)

    def L(n, o):
        return {"node": n, "output": o}

    def workflow(seed: int, batch: int) -> dict:
        return {"format": "latentloom.workflow", "version": 1, "nodes": {
            "m": {"type": "BenchModel"},
            "pos": {"type": "EncodeText", "inputs": {"text_encoder": L("m", "text_encoder"), "text": "a photo of an astronaut riding a horse"}},
            "neg": {"type": "EncodeText", "inputs": {"text_encoder": L("m", "text_encoder"), "text": ""}},
            "lat": {"type": "EmptyLatent", "inputs": {"width": size, "height": size, "batch_size": batch, "vae": L("m", "vae")}},
            "s": {"type": "Sample", "inputs": {"unet": L("m", "unet"), "positive": L("pos", "conditioning"), "negative": L("neg", "conditioning"),
                                               "latent": L("lat", "latent"), "seed": seed, "steps": args.steps, "cfg": 7.5, "scheduler": "euler"}},
            "d": {"type": "VAEDecode", "inputs": {"vae": L("m", "vae"), "latent": L("s", "latent")}},
            "out": {"type": "PreviewImage", "inputs": {"images": L("d", "image")}},
        }}

    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
                                             scheduler=diffusers.EulerDiscreteScheduler.from_config(sched_cfg),
                                             safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    rows = []
    for batch in args.batches:
        def run_pipe(seed: int) -> tuple[float, float]:
            g = torch.Generator("cpu").manual_seed(seed)
            sync(device)
            t0 = time.perf_counter()
            pipe(["a photo of an astronaut riding a horse"] * batch, negative_prompt=[""] * batch, height=size, width=size,
                 num_inference_steps=args.steps, guidance_scale=7.5, generator=g, output_type="np")
            sync(device)
            return time.perf_counter() - t0, 0.0

        def run_ours(seed: int) -> tuple[float, float]:
            sync(device)
            t0 = time.perf_counter()
            r = ex.run(workflow(seed, batch), targets=["d"])  # end at the decoded images, as the pipeline does
            sync(device)
            assert r.status == "success", r.error
            return time.perf_counter() - t0, r.nodes["s"].seconds

        results = {}
        for name, fn in (("diffusers", run_pipe), ("latentloom", run_ours)):
            fn(1)  # warm-up
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = [fn(100 + i)[0] for i in range(args.repeats)]
            peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
            med = statistics.median(times)
            results[name] = {"seconds": med, "it_s": args.steps / med, "s_per_image": med / batch, "peak_gib": peak}
        overhead = results["latentloom"]["seconds"] / results["diffusers"]["seconds"] - 1
        rows.append({"batch": batch, **{f"{k}_{m}": v for k, r in results.items() for m, v in r.items()}, "overhead": overhead})
        print(json.dumps(rows[-1]), flush=True)

    dev_name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    print(f"\n{dev_name}, torch {torch.__version__}, diffusers {diffusers.__version__}, SD1.5 architecture random weights, "
          f"{'fp16' if dtype == torch.float16 else 'fp32'}, {size}x{size}, Euler, {args.steps} steps, CFG 7.5 (medians of {args.repeats}; "
          "whole txt2img incl. text encoding and VAE decode)\n")
    print("| batch | diffusers s | diffusers it/s | Latent Loom s | Latent Loom it/s | s/image (ours) | peak GiB (diffusers / ours) | our overhead |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['diffusers_seconds']:.3f} | {r['diffusers_it_s']:.1f} | {r['latentloom_seconds']:.3f} | "
              f"{r['latentloom_it_s']:.1f} | {r['latentloom_s_per_image']:.3f} | {r['diffusers_peak_gib']:.2f} / {r['latentloom_peak_gib']:.2f} | "
              f"{r['overhead'] * 100:+.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev_name, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
