"""The one command for the GPU slot: VAE, UNet + text encoder, ControlNet and the benchmark, one budget.

    python -m training.loom_shapes.run_gpu --out OUT --total-seconds 380

Why: the GPU is lent once, for a few minutes, with a hard wall-clock kill. The clock starts when this
module is imported; training gets the total minus an evaluation reserve, split 14/68/18% between the
stages (each stage's share is recomputed from what is left when it starts, so an overrun shrinks the next
stage instead of the evaluation). Every stage checkpoints and writes its fp16 folder as soon as it ends,
so a kill still leaves usable artefacts, and `--resume` continues a killed run. A failed stage or
evaluation is recorded in OUT/run_log.json rather than losing what was already trained.
"""

from __future__ import annotations

import time

T_START = time.monotonic()

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from . import models as M  # noqa: E402
from . import train as T  # noqa: E402

EVAL_SCRIPT = M.REPO_ROOT / "benchmarks" / "loom_shapes_eval.py"


def _load_eval_module():
    spec = importlib.util.spec_from_file_location("loom_shapes_eval", EVAL_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def _versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    v = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
         "transformers": transformers.__version__}
    if torch.cuda.is_available():
        v["gpu"] = torch.cuda.get_device_name(0)
    return v


def _write(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--total-seconds", type=float, default=380.0, help="everything, from process start")
    p.add_argument("--eval-reserve", type=float, default=40.0, help="seconds kept for the benchmark")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--ckpt-dir", type=Path, default=None,
                   help="training checkpoints (~200 MB); default OUT/checkpoints. Put them outside OUT when OUT "
                        "is shipped back")
    p.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke test)")
    p.add_argument("--steps", type=int, default=None, help="fixed steps per stage instead of budget-driven")
    p.add_argument("--eval-n", type=int, default=200)
    p.add_argument("--eval-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--eval-batch", type=int, default=None, help="default 100 on CUDA, 25 on CPU")
    a = p.parse_args(argv)

    train_args = ["--device", a.device, "--out", str(a.out), "--seed", str(a.seed)]
    train_args += ["--resume"] * a.resume + ["--tiny"] * a.tiny
    train_args += ["--steps", str(a.steps)] if a.steps else []
    train_args += ["--ckpt-dir", str(a.ckpt_dir)] if a.ckpt_dir else []
    ctx = T.make_context(T.build_parser().parse_args(train_args))
    log: dict = {"total_seconds_budget": a.total_seconds, "versions": _versions(), "stages": {}, "errors": {}}
    log_path = a.out / "run_log.json"

    end = T_START + a.total_seconds
    for i, stage in enumerate(T.STAGES):
        left = end - a.eval_reserve - time.monotonic()
        share = T.STAGE_SHARE[stage] / sum(T.STAGE_SHARE[s] for s in T.STAGES[i:])
        budget = max(5.0, left * share)
        print(f"[run] {stage}: budget {budget:.0f}s (t={time.monotonic() - T_START:.0f}s)", flush=True)
        try:
            log["stages"][stage] = {k: v for k, v in T.STAGE_FNS[stage](ctx, budget).items() if k != "log"}
        except Exception:  # keep what earlier stages produced; later stages may still run
            log["errors"][stage] = traceback.format_exc()
            print(log["errors"][stage], file=sys.stderr, flush=True)
            if ctx.amp or (ctx.cuda and ctx.fused_adam):
                # One retry in safe mode (fp32, plain AdamW), continuing from the stage's checkpoint if any.
                ctx.amp, ctx.fused_adam, ctx.resume = False, False, True
                left = end - a.eval_reserve - time.monotonic()
                budget = max(5.0, left * share)
                print(f"[run] {stage}: retry in safe mode, budget {budget:.0f}s", flush=True)
                try:
                    log["stages"][stage] = {k: v for k, v in T.STAGE_FNS[stage](ctx, budget).items() if k != "log"}
                    log["stages"][stage]["safe_mode"] = True
                except Exception:
                    log["errors"][stage + "_safe_mode"] = traceback.format_exc()
                    print(log["errors"][stage + "_safe_mode"], file=sys.stderr, flush=True)
        log["elapsed_seconds"] = round(time.monotonic() - T_START, 1)
        _write(log_path, log)

    pipeline, controlnet = ctx.pipeline_dir, ctx.controlnet_dir
    log["bytes"] = {d.name: M.folder_bytes(d) for d in (pipeline, controlnet) if d.exists()}
    if (pipeline / "model_index.json").exists():
        print(f"[run] eval (t={time.monotonic() - T_START:.0f}s)", flush=True)
        try:
            ev = _load_eval_module()
            cuda = a.device.startswith("cuda")
            result = ev.run_eval(pipeline, controlnet if (controlnet / "config.json").exists() else None,
                                 n=a.eval_n, device=a.device, steps=a.eval_steps, cfg=a.cfg,
                                 batch_size=a.eval_batch or (100 if cuda else 25), grid_dir=a.out / "samples")
            _write(a.out / "eval.json", result)
            table = ev.markdown(result)
            (a.out / "eval.md").write_text(table + "\n")
            print(table, flush=True)
            log["eval"] = {k: v for k, v in result.items() if k != "records"}
        except Exception:
            log["errors"]["eval"] = traceback.format_exc()
            print(log["errors"]["eval"], file=sys.stderr, flush=True)
    log["elapsed_seconds"] = round(time.monotonic() - T_START, 1)
    _write(log_path, log)
    steps = {s: log["stages"].get(s, {}).get("steps") for s in T.STAGES}
    print(f"[run] done in {log['elapsed_seconds']}s; steps {steps}; sizes {log['bytes']}; "
          f"errors {list(log['errors'])}", flush=True)
    return log


if __name__ == "__main__":
    main()
