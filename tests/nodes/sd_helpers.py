"""Helpers for the Stable Diffusion node tests: tiny models in a models folder, workflows, reference runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.executor import Executor
from engine.node import Outputs, node
from engine.registry import Registry
from engine.settings import Settings
from engine.types import IMAGE, MASK


# A test-only source node: it hands tensors made by a test to the graph (with_source).
SOURCE: dict = {}


class ImageAndMask(Outputs):
    image: IMAGE
    mask: MASK


@node(name="TestImageSource")
def image_source() -> ImageAndMask:
    return ImageAndMask(image=SOURCE["image"], mask=SOURCE.get("mask", SOURCE["image"][..., 0] * 0))


def with_source(ex: Executor, **tensors: torch.Tensor) -> None:
    """Make `{"type": "TestImageSource"}` give these tensors (image, optional mask) in `ex`'s runs."""
    SOURCE.clear()
    SOURCE.update(tensors)
    ex.registry.add(image_source)


def L(node: str, output: str) -> dict:
    return {"node": node, "output": output}


def wf(nodes: dict) -> dict:
    return {"format": "latentloom.workflow", "version": 1, "nodes": nodes}


def executor(models_dir: Path, out: Path) -> Executor:
    return Executor(Registry.default(), Settings(models_dir=models_dir, output_dir=out, input_dir=out / "input", device="cpu"))


def output_of(ex: Executor, result, node_id: str, name: str) -> Any:
    assert result.status == "success", result.error
    return ex.cache.peek(result.signatures[node_id])[name]


def txt2img_nodes(ckpt: str, prompt: str = "a red circle", negative: str = "", seed: int = 42, steps: int = 8,
                  cfg: float = 7.5, scheduler: str = "euler", size: int = 64) -> dict:
    return {
        "ckpt": {"type": "LoadCheckpoint", "inputs": {"name": ckpt}},
        "pos": {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text": prompt}},
        "neg": {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text": negative}},
        "lat": {"type": "EmptyLatent", "inputs": {"width": size, "height": size, "vae": L("ckpt", "vae")}},
        "sample": {"type": "Sample", "inputs": {"unet": L("ckpt", "unet"), "positive": L("pos", "conditioning"),
                                                "negative": L("neg", "conditioning"), "latent": L("lat", "latent"),
                                                "seed": seed, "steps": steps, "cfg": cfg, "scheduler": scheduler}},
        "dec": {"type": "VAEDecode", "inputs": {"vae": L("ckpt", "vae"), "latent": L("sample", "latent")}},
        "save": {"type": "SaveImage", "inputs": {"images": L("dec", "image")}},
    }


def loop_nodes(ckpt: str, prompt: str = "a red circle", negative: str = "", seed: int = 42, steps: int = 8,
               cfg: float = 7.5, scheduler: str = "euler", size: int = 64, body: dict | None = None) -> dict:
    nodes = txt2img_nodes(ckpt, prompt, negative, seed, steps, cfg, scheduler, size)
    del nodes["sample"]
    nodes["noise"] = {"type": "Noise", "inputs": {"seed": seed}}
    nodes["sched"] = {"type": "Scheduler", "inputs": {"unet": L("ckpt", "unet"), "name": scheduler, "steps": steps}}
    nodes["loop"] = {"type": "DenoiseLoop", "inputs": {"unet": L("ckpt", "unet"), "positive": L("pos", "conditioning"),
                                                        "negative": L("neg", "conditioning"), "latent": L("lat", "latent"),
                                                        "noise": L("noise", "noise"), "scheduler": L("sched", "scheduler"), "cfg": cfg}}
    if body is not None:
        nodes["loop"]["body"] = body
    nodes["dec"]["inputs"]["latent"] = L("loop", "latent")
    return nodes


def reference_pipeline(folder: Path, scheduler_name: str, steps: int, pipeline_class: str | None = None):
    """diffusers' own pipeline over the same weights, with the scheduler our table picks."""
    import diffusers

    from nodes.sd import loading
    from nodes.sd.schedulers import instantiate, make_spec

    ck = loading.load_checkpoint(folder)
    spec = make_spec(scheduler_name, dict(ck.scheduler_config, prediction_type=ck.prediction_type), steps)
    pipe = ck.pipeline(instantiate(spec))
    if pipeline_class is not None:
        pipe = getattr(diffusers, pipeline_class)(**pipe.components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gen(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def quick(workflow: dict, steps: int = 1) -> dict:
    """A shipped workflow made fast for a test: few sampling steps, one image."""
    for n in workflow["nodes"].values():
        if n["type"] == "Sample":
            n["inputs"]["steps"] = steps
        if n["type"] == "EmptyLatent":
            n["inputs"]["batch_size"] = 1
    return workflow
