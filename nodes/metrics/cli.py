"""`loom eval clip-score | clip-direction | fid | sweep`: the evaluation nodes' numbers from the shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _images(source: str) -> list:
    from PIL import Image
    from tqdm import tqdm

    from nodes.metrics.fid import list_images

    p = Path(source)
    files = list_images(p) if p.is_dir() else [p]
    if not files:
        raise SystemExit(f"error: no images in {p}")
    out = []
    for f in tqdm(files, desc=f"reading {p.name}", file=sys.stderr, disable=len(files) < 8):
        with Image.open(f) as im:
            out.append(im.convert("RGB"))
    return out


def _settings(args):
    from engine.settings import Settings

    s = Settings()
    if args.models_dir:
        s.models_dir = Path(args.models_dir)
    return s


def _clip(args):
    from nodes.metrics.clip_model import ClipModelNotFound, load_clip

    try:
        return load_clip(args.clip, models_dir=_settings(args).models_dir)
    except ClipModelNotFound as exc:
        raise SystemExit(f"error: {exc}")


def _print(args, name: str, per_item: list, mean: float, notes: list, extra: dict | None = None) -> int:
    doc = {"metric": name, "mean": mean, "per_item": per_item, "notes": notes, **(extra or {})}
    if args.json:
        print(json.dumps(doc))
    else:
        for i, v in enumerate(per_item):
            print(f"{i}\t{v:.4f}")
        print(f"{name}: {mean:.4f}")
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
    return 0


def cmd_clip_score(args) -> int:
    from nodes.metrics.clip_score import clip_score

    images = _images(args.images)
    if args.prompts:
        from nodes.metrics.prompts import load_prompts

        prompts = load_prompts(args.prompts).prompts
    else:
        prompts = args.prompt
    r = clip_score(images, prompts, _clip(args))
    return _print(args, "CLIP score", r.scores.tolist(), r.mean, r.notes)


def cmd_clip_direction(args) -> int:
    from nodes.metrics.clip_direction import clip_directional_similarity

    r = clip_directional_similarity(_images(args.original), _images(args.edited), args.original_caption, args.edited_caption, _clip(args))
    return _print(args, "CLIP directional similarity", r.similarities.tolist(), r.mean, list(getattr(r, "notes", [])))


def cmd_fid(args) -> int:
    from nodes.metrics.fid import InceptionWeightsNotFound, NotEnoughImages, compute_fid, load_fid_inception

    s = _settings(args)
    try:
        extractor = load_fid_inception(s.models_dir)
        r = compute_fid(args.set_a, args.set_b, extractor, cache_dir=s.user_dir / "fid-stats", kid=args.kid, method=args.method)
    except (InceptionWeightsNotFound, NotEnoughImages) as exc:
        raise SystemExit(f"error: {exc}")
    extra = {"n1": r.n1, "n2": r.n2, "fid_check": r.fid_check}
    if r.kid is not None:
        extra["kid"] = {"mean": r.kid.mean, "std": r.kid.std}
        if not args.json:
            print(f"KID: {r.kid.mean:.6f} +- {r.kid.std:.6f}")
    return _print(args, "FID", [], r.fid, r.notes, extra)


def cmd_sweep(args) -> int:
    from engine.executor import Executor
    from engine.registry import Registry

    s = _settings(args)
    if args.out:
        s.output_dir = Path(args.out)
    nodes = {
        "ckpt": {"type": "LoadCheckpoint", "inputs": {"name": args.model}},
        "sweep": {"type": "SchedulerSweep", "inputs": {
            "unet": {"node": "ckpt", "output": "unet"}, "text_encoder": {"node": "ckpt", "output": "text_encoder"},
            "vae": {"node": "ckpt", "output": "vae"}, "prompt": args.prompt, "negative": args.negative, "seed": args.seed,
            "schedulers": args.schedulers, "steps": args.steps, "cfg": args.cfg, "width": args.size, "height": args.size}},
    }
    if args.clip:
        nodes["clip"] = {"type": "LoadCLIP", "inputs": {"name": args.clip}}
        nodes["sweep"]["inputs"]["clip"] = {"node": "clip", "output": "clip"}
    from tqdm import tqdm

    bar = tqdm(total=1, desc="sweep", file=sys.stderr)

    def on_event(e):
        if e.type == "node_progress" and e.max:
            bar.total = e.max
            bar.n = e.value
            bar.refresh()

    r = Executor(Registry.default(), s).run({"format": "latentloom.workflow", "version": 1, "nodes": nodes}, on_event=on_event)
    bar.close()
    if r.status != "success":
        print(f"error in node {r.error.get('node_id')}: {r.error['message']}", file=sys.stderr)
        return 2 if r.status == "invalid" else 1
    ui = r.ui["sweep"]
    png = (s.output_dir / ui.images[0].subfolder / ui.images[0].filename).resolve()
    if args.json:
        print(json.dumps({"grid": str(png), "table_csv": str(png.with_suffix(".csv")), "table_json": str(png.with_suffix(".json"))}))
    else:
        print(ui.text[0], end="")
        print(f"grid: {png}\ntable: {png.with_suffix('.csv')} {png.with_suffix('.json')}")
    return 0


def register(sub) -> None:
    ev = sub.add_parser("eval", help="evaluation: CLIP score, CLIP directional similarity, FID, scheduler sweeps")
    evs = ev.add_subparsers(dest="eval_command", required=True)

    def common(p, clip=False):
        p.add_argument("--models-dir", help="models folder (clip/, inception/, checkpoints/)")
        p.add_argument("--json", action="store_true", help="one JSON object on stdout")
        if clip:
            p.add_argument("--clip", required=True, help="a CLIPModel folder name in models/clip/ or a path")

    p = evs.add_parser("clip-score", help="CLIP score of images against prompts")
    p.add_argument("--images", required=True, help="an image file or a folder")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt", help="one prompt for every image")
    g.add_argument("--prompts", help="a TXT/CSV/TSV prompt list, one prompt per image in file order")
    common(p, clip=True)
    p.set_defaults(func=cmd_clip_score)

    p = evs.add_parser("clip-direction", help="CLIP directional similarity of (original, edited) image pairs")
    p.add_argument("--original", required=True)
    p.add_argument("--edited", required=True)
    p.add_argument("--original-caption", required=True)
    p.add_argument("--edited-caption", required=True)
    common(p, clip=True)
    p.set_defaults(func=cmd_clip_direction)

    p = evs.add_parser("fid", help="FID (and KID) between two image folders")
    p.add_argument("set_a")
    p.add_argument("set_b")
    p.add_argument("--kid", action="store_true", help="also compute KID (better for small sets)")
    p.add_argument("--method", choices=["sqrtm", "eig", "gram"], default="sqrtm",
                   help="matrix square root: sqrtm (pytorch-fid's reference, slow at 2048-d) or an exact faster route")
    common(p)
    p.set_defaults(func=cmd_fid)

    p = evs.add_parser("sweep", help="one model, prompt and seed over several schedulers and step counts")
    p.add_argument("--model", default="loom-shapes")
    p.add_argument("--prompt", default="a large red circle on a teal background")
    p.add_argument("--negative", default="")
    p.add_argument("--schedulers", default="euler, euler_a, dpmpp_2m, ddim")
    p.add_argument("--steps", default="5, 10, 20")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--clip", help="add CLIP scores with this CLIP model")
    p.add_argument("--out", help="output folder (default: output/)")
    p.add_argument("--models-dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)
