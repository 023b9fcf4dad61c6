"""Benchmark loom-shapes: generate from grammar prompts with diffusers pipelines, judge by geometry only.

    python benchmarks/loom_shapes_eval.py --model OUT/loom-shapes --controlnet OUT/loom-shapes-canny \
        --n 200 --device cuda --json eval.json

Text-to-image: prompts (and their ground truth) are drawn from the training grammar with a fixed seed;
each image gets its own seeded generator, so results do not depend on the batch size. The judge
(training/loom_shapes/judge.py) names the background and foreground colours, fits shape templates to the
foreground mask, and reads position and size off its bounding box. Position and size are scored only when
the prompt asks for them.

ControlNet: for each prompt a ground-truth image is rendered, its cv2.Canny edges are the control image,
and the score is the IoU between the generated shape's mask and the region the edges enclose.

The judge's own accuracy on the ground-truth renders is reported too: a model cannot be judged more
reliably than that.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.loom_shapes import data as D  # noqa: E402
from training.loom_shapes import judge as J  # noqa: E402

ATTRS = ("color", "background", "shape", "position", "size")
QUALITY_BAR = {"color": 0.90, "background": 0.90, "shape": 0.75, "position": 0.80}
CONTROLNET_IOU_BAR = 0.6


def _dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.float32  # tiny models: fp32 costs nothing and avoids fp16 overflow surprises
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def load_pipelines(model: Path, controlnet: Path | None, device: str, dtype: torch.dtype):
    """StableDiffusionPipeline (and a ControlNet pipeline sharing its modules), offline."""
    import warnings

    import diffusers
    import transformers
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    # fp32 is every component's default (the shipped configs ask for it); pass a dtype only to change it.
    kw = {} if dtype == torch.float32 else {"torch_dtype": dtype}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers 0.42 renames torch_dtype -> dtype
        pipe = StableDiffusionPipeline.from_pretrained(str(model), local_files_only=True, **kw)
        cn = (ControlNetModel.from_pretrained(str(controlnet), local_files_only=True, **kw)
              if controlnet is not None else None)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    cpipe = None
    if cn is not None:
        cn = cn.to(device)
        cpipe = StableDiffusionControlNetPipeline(
            vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet, controlnet=cn,
            scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        cpipe.set_progress_bar_config(disable=True)
    return pipe, cpipe


def generate(pipe, prompts: list[str], seeds: list[int], device: str, steps: int, cfg: float,
             guidance_rescale: float, batch_size: int, control: list[np.ndarray] | None = None) -> np.ndarray:
    """(N, 64, 64, 3) uint8 images; one generator per image so the batch size does not change results."""
    from PIL import Image

    out = []
    for a in range(0, len(prompts), batch_size):
        b = min(len(prompts), a + batch_size)
        gens = [torch.Generator(device).manual_seed(s) for s in seeds[a:b]]
        kwargs = dict(num_inference_steps=steps, guidance_scale=cfg, guidance_rescale=guidance_rescale,
                      generator=gens, output_type="np", height=D.IMAGE_SIZE, width=D.IMAGE_SIZE)
        if control is not None:
            kwargs["image"] = [Image.fromarray(np.repeat(e[:, :, None], 3, 2)) for e in control[a:b]]
        with torch.inference_mode():
            images = pipe(prompts[a:b], **kwargs).images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def score_images(images: np.ndarray, attrs: D.Attributes) -> tuple[dict[str, float | None], list[dict]]:
    """Per-attribute accuracy (None where never asked) and per-image records."""
    hits: dict[str, list[bool]] = {k: [] for k in ATTRS}
    records = []
    for i in range(images.shape[0]):
        truth = attrs.row(i)
        j = J.judge(images[i])
        s = J.score(j, truth)
        for k, v in s.items():
            if v is not None:
                hits[k].append(bool(v))
        asked = [v for v in s.values() if v is not None]
        records.append({"truth": {k: truth[k] for k in ("color", "shape", "background", "size", "position")},
                        "judged": {"color": j.color, "background": j.background, "shape": j.shape,
                                   "position": j.position, "size": j.size, "shape_iou": round(j.shape_iou, 3)},
                        "correct": s, "all_correct": all(asked)})
    acc = {k: (round(sum(v) / len(v), 4) if v else None) for k, v in hits.items()}
    acc["all"] = round(float(np.mean([r["all_correct"] for r in records])), 4) if records else None
    acc["n_position_asked"] = len(hits["position"])
    acc["n_size_asked"] = len(hits["size"])
    return acc, records


def grid(images: np.ndarray, cols: int = 16) -> np.ndarray:
    n = images.shape[0]
    rows = (n + cols - 1) // cols
    h, w = images.shape[1:3]
    g = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        g[r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i]
    return g


def run_eval(model: Path, controlnet: Path | None = None, n: int = 200, device: str = "cpu", seed: int = 1234,
             steps: int = 20, cfg: float = 5.0, guidance_rescale: float = 0.0, batch_size: int = 50,
             dtype: str = "auto", n_controlnet: int | None = None, grid_dir: Path | None = None) -> dict:
    """Generate and judge; returns the full result (metrics, timings, per-image records)."""
    t0 = time.monotonic()
    pipe, cpipe = load_pipelines(Path(model), Path(controlnet) if controlnet else None, device,
                                 _dtype(dtype, device))
    load_s = time.monotonic() - t0
    attrs = D.sample_attributes(n, seed)
    prompts = D.captions(attrs)
    seeds = [seed * 100_003 + i for i in range(n)]
    truth_imgs = D.to_uint8(D.render(attrs))
    judge_gt, _ = score_images(truth_imgs, attrs)

    t = time.monotonic()
    images = generate(pipe, prompts, seeds, device, steps, cfg, guidance_rescale, batch_size)
    gen_s = time.monotonic() - t
    acc, records = score_images(images, attrs)
    for r, p in zip(records, prompts):
        r["prompt"] = p
    result: dict = {
        "model": str(model), "controlnet": str(controlnet) if controlnet else None, "n": n, "seed": seed,
        "device": device, "steps": steps, "guidance_scale": cfg, "guidance_rescale": guidance_rescale,
        "scheduler": type(pipe.scheduler).__name__, "load_seconds": round(load_s, 2),
        "text2img": {"accuracy": acc, "seconds": round(gen_s, 2), "seconds_per_image": round(gen_s / n, 4)},
        "judge_on_ground_truth": judge_gt,
        "quality_bar": QUALITY_BAR, "records": records,
    }
    passed = {k: (acc[k] is not None and acc[k] >= v) for k, v in QUALITY_BAR.items()}
    if grid_dir is not None:
        _save_png(Path(grid_dir) / "text2img.png", grid(images[:128]))

    if cpipe is not None:
        m = n_controlnet or n
        c_attrs = D.sample_attributes(m, seed + 1)
        c_prompts = D.captions(c_attrs)
        c_seeds = [(seed + 1) * 100_003 + i for i in range(m)]
        gt = D.to_uint8(D.render(c_attrs))
        edges = D.canny(gt)
        regions = [J.edge_region(e) for e in edges]
        t = time.monotonic()
        c_images = generate(cpipe, c_prompts, c_seeds, device, steps, cfg, guidance_rescale, batch_size, edges)
        c_s = time.monotonic() - t
        ious = [J.iou(J.foreground_mask(c_images[i])[0], regions[i]) for i in range(m)]
        gt_ious = [J.iou(J.foreground_mask(gt[i])[0], regions[i]) for i in range(m)]
        # Reference: the same prompts without ControlNet (edges ignored) show what the control adds.
        base = generate(pipe, c_prompts, c_seeds, device, steps, cfg, guidance_rescale, batch_size)
        base_ious = [J.iou(J.foreground_mask(base[i])[0], regions[i]) for i in range(m)]
        c_acc, _ = score_images(c_images, c_attrs)
        result["controlnet_eval"] = {
            "n": m, "mean_iou": round(float(np.mean(ious)), 4),
            "frac_iou_ge_0.6": round(float(np.mean(np.array(ious) >= CONTROLNET_IOU_BAR)), 4),
            "ground_truth_mean_iou": round(float(np.mean(gt_ious)), 4),
            "without_controlnet_mean_iou": round(float(np.mean(base_ious)), 4),
            "accuracy": c_acc, "seconds": round(c_s, 2), "seconds_per_image": round(c_s / m, 4)}
        passed["controlnet_iou"] = float(np.mean(ious)) >= CONTROLNET_IOU_BAR
        if grid_dir is not None:
            e3 = np.repeat(edges[:64, :, :, None], 3, 3)
            _save_png(Path(grid_dir) / "controlnet.png",
                      grid(np.stack([x for pair in zip(e3, c_images[:64]) for x in pair])))
    result["passed"] = passed
    result["total_seconds"] = round(time.monotonic() - t0, 2)
    return result


def _save_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.resize(rgb[:, :, ::-1], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))


def markdown(result: dict) -> str:
    """A markdown summary table of a run_eval result."""
    acc = result["text2img"]["accuracy"]
    gt = result["judge_on_ground_truth"]
    lines = ["| metric | model | judge on ground truth | bar | pass |", "|---|---|---|---|---|"]
    for k in ATTRS + ("all",):
        bar = QUALITY_BAR.get(k)
        ok = result["passed"].get(k)
        lines.append(f"| {k} | {_pct(acc.get(k))} | {_pct(gt.get(k))} | {_pct(bar) if bar else '-'} | "
                     f"{'-' if ok is None else ('yes' if ok else 'NO')} |")
    lines.append(f"| seconds / image | {result['text2img']['seconds_per_image']:.4f} | | | |")
    if "controlnet_eval" in result:
        c = result["controlnet_eval"]
        ok = result["passed"]["controlnet_iou"]
        lines.append(f"| ControlNet mean IoU | {c['mean_iou']:.3f} | {c['ground_truth_mean_iou']:.3f} | "
                     f"{CONTROLNET_IOU_BAR} | {'yes' if ok else 'NO'} |")
        lines.append(f"| ControlNet IoU >= 0.6 | {_pct(c['frac_iou_ge_0.6'])} | | | |")
        lines.append(f"| same prompts, no ControlNet: IoU | {c['without_controlnet_mean_iou']:.3f} | | | |")
        lines.append(f"| ControlNet colour / bg | {_pct(c['accuracy']['color'])} / "
                     f"{_pct(c['accuracy']['background'])} | | | |")
        lines.append(f"| ControlNet seconds / image | {c['seconds_per_image']:.4f} | | | |")
    head = (f"loom-shapes eval: n={result['n']}, {result['scheduler']} {result['steps']} steps, "
            f"CFG {result['guidance_scale']}, device {result['device']}")
    return head + "\n\n" + "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="StableDiffusionPipeline folder (loom-shapes)")
    p.add_argument("--controlnet", type=Path, default=None, help="ControlNetModel folder (loom-shapes-canny)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--n-controlnet", type=int, default=None, help="default: --n")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--grid-dir", type=Path, default=None, help="write sample grids (PNG) here")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--guidance-rescale", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    result = run_eval(a.model, a.controlnet, a.n, a.device, a.seed, a.steps, a.cfg, a.guidance_rescale,
                      a.batch_size, a.dtype, a.n_controlnet, a.grid_dir)
    print(markdown(result))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
