"""Render the README's grid: loom-shapes images from the shipped txt2img workflow, prompt under each.

    .venv/bin/python tools/readme_grid.py docs/images/loom-shapes-grid.png
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "a large red circle on a teal background",
    "a small yellow star on the left on a black background",
    "a large blue square on a white background",
    "a green triangle at the top on a pink background",
    "a large purple diamond on a gray background",
    "an orange circle on the right on a white background",
    "a large green star on a black background",
    "a small red square at the bottom on a teal background",
]


def main(out: str) -> int:
    import tempfile

    import torch

    from engine.executor import Executor
    from engine.registry import Registry
    from engine.settings import Settings, offline
    from nodes.metrics.grid import image_grid

    offline()
    base = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    ex = Executor(Registry.default(), Settings(output_dir=Path(tempfile.mkdtemp()), device="cpu"))
    images = []
    for i, prompt in enumerate(PROMPTS):
        wf = copy.deepcopy(base)
        wf["nodes"]["positive"]["inputs"]["text"] = prompt
        wf["nodes"]["latent"]["inputs"]["batch_size"] = 1
        wf["nodes"]["sample"]["inputs"]["seed"] = i
        r = ex.run(wf, targets=["decode"])
        assert r.status == "success", r.error
        images.append(ex.cache.peek(r.signatures["decode"])["image"][0])
        print(f"{i + 1}/{len(PROMPTS)} {prompt}", flush=True)
    big = torch.nn.functional.interpolate(torch.stack(images).permute(0, 3, 1, 2), scale_factor=3, mode="nearest").permute(0, 2, 3, 1)
    grid = image_grid(big, rows=2, cols=4, captions=PROMPTS, font_size=13)
    grid.save(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
