"""The evaluation nodes run in workflows and give the numbers the metrics library computes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.executor import Executor
from engine.registry import Registry
from engine.settings import Settings


def L(n, o):
    return {"node": n, "output": o}


def wf(nodes):
    return {"format": "latentloom.workflow", "version": 1, "nodes": nodes}


def ex_for(models: Path, tmp: Path) -> Executor:
    return Executor(Registry.default(), Settings(models_dir=models, input_dir=tmp / "in", output_dir=tmp / "out", device="cpu"))


def _write_images(folder: Path, n: int, seed: int, shift: float = 0.0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    for i in range(n):
        arr = np.clip(g.random((40, 40, 3)) * 0.6 + shift, 0, 1)
        Image.fromarray((arr * 255).astype(np.uint8)).save(folder / f"{i}.png")


def test_clip_score_node_equals_library(tiny_clip_dir, tmp_path):
    from nodes.metrics.clip_model import load_clip
    from nodes.metrics.clip_score import clip_score

    models = tiny_clip_dir.parent.parent
    (tmp_path / "in").mkdir()
    _write_images(tmp_path / "in", 1, seed=1)
    ex = ex_for(models, tmp_path)
    result = ex.run(wf({
        "img": {"type": "LoadImage", "inputs": {"image": "0.png"}},
        "clip": {"type": "LoadCLIP", "inputs": {"name": "tiny"}},
        "score": {"type": "CLIPScore", "inputs": {"images": L("img", "image"), "clip": L("clip", "clip"), "prompts": "a red circle"}},
    }))
    assert result.status == "success", result.error
    metrics = ex.cache.peek(result.signatures["score"])["metrics"]
    image = ex.cache.peek(result.signatures["img"])["image"]
    expected = clip_score(image, "a red circle", load_clip(tiny_clip_dir))
    assert metrics["mean"] == pytest.approx(expected.mean, abs=1e-5)
    assert "CLIP score" in result.ui["score"].text[0]


def test_fid_node_self_is_zero_and_shift_grows(inception_models_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write_images(a, 6, seed=1)
    _write_images(b, 6, seed=2, shift=0.3)
    ex = ex_for(inception_models_dir, tmp_path)

    def fid(x, y):
        r = ex.run(wf({"fid": {"type": "FID", "inputs": {"folder_a": str(x), "folder_b": str(y), "method": "gram"}}}))
        assert r.status == "success", r.error
        return ex.cache.peek(r.signatures["fid"])["metrics"]["mean"]

    assert abs(fid(a, a)) <= 1e-6
    assert fid(a, b) > 1e-3


def test_fid_without_weights_names_file_and_folder(tmp_path):
    (tmp_path / "a").mkdir()
    ex = ex_for(tmp_path / "models", tmp_path)
    r = ex.run(wf({"fid": {"type": "FID", "inputs": {"folder_a": str(tmp_path / "a"), "folder_b": str(tmp_path / "a")}}}))
    assert r.status == "error"
    assert "pt_inception-2015-12-05" in r.error["message"] and "inception" in r.error["message"]


def test_plot_noise_schedules_node(tmp_path):
    ex = ex_for(tmp_path / "models", tmp_path)
    r = ex.run(wf({"plot": {"type": "PlotNoiseSchedules", "inputs": {"quantity": "sigma", "log_scale": True}},
                   "save": {"type": "SaveImage", "inputs": {"images": L("plot", "image"), "filename_prefix": "schedules"}}}))
    assert r.status == "success", r.error
    img = ex.cache.peek(r.signatures["plot"])["image"]
    assert img.shape[0] == 1 and img.shape[-1] == 3 and img.shape[1] >= 256
    assert img.std() > 0.05


def test_prompt_from_list_reads_partiprompts_layout(tmp_path):
    (tmp_path / "in").mkdir()
    with open(tmp_path / "in" / "parti.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["Prompt", "Category", "Challenge", "Note"])
        w.writerow(["a red circle", "Abstract", "Basic", ""])
        w.writerow(["a blue square", "Abstract", "Basic", ""])
    ex = ex_for(tmp_path / "models", tmp_path)
    r = ex.run(wf({"p": {"type": "PromptFromList", "inputs": {"file": "parti.tsv", "index": 1}}}), targets=["p"])
    assert r.status == "success", r.error
    out = ex.cache.peek(r.signatures["p"])
    assert (out["prompt"], out["category"], out["count"]) == ("a blue square", "Abstract", 2)


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory) -> Path:
    from tests import tiny_models

    models = tmp_path_factory.mktemp("models")
    tiny_models.make_tiny_sd15(models / "checkpoints" / "tiny")
    return models


def test_scheduler_sweep_writes_grid_table(tiny_models_dir, tmp_path):
    ex = ex_for(tiny_models_dir, tmp_path)
    r = ex.run(wf({
        "ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny"}},
        "sweep": {"type": "SchedulerSweep", "inputs": {"unet": L("ckpt", "unet"), "text_encoder": L("ckpt", "text_encoder"),
                                                      "vae": L("ckpt", "vae"), "schedulers": "euler, ddim", "steps": "2, 3"}},
    }))
    assert r.status == "success", r.error
    out = tmp_path / "out"
    pngs, csvs, jsons = sorted(out.glob("sweep_*.png")), sorted(out.glob("sweep_*.csv")), sorted(out.glob("sweep_*.json"))
    assert len(pngs) == len(csvs) == len(jsons) == 1
    rows = list(csv.DictReader(open(csvs[0])))
    assert [(x["scheduler"], x["steps"]) for x in rows] == [("euler", "2"), ("euler", "3"), ("ddim", "2"), ("ddim", "3")]
    assert all(float(x["seconds_per_image"]) > 0 for x in rows)
    assert len(json.loads(jsons[0].read_text())["rows"]) == 4
    with Image.open(pngs[0]) as im:
        assert im.size[0] > 2 * 64 and im.size[1] > 2 * 64


def test_sweep_rejects_bad_lists(tiny_models_dir, tmp_path):
    ex = ex_for(tiny_models_dir, tmp_path)
    r = ex.run(wf({
        "ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny"}},
        "sweep": {"type": "SchedulerSweep", "inputs": {"unet": L("ckpt", "unet"), "text_encoder": L("ckpt", "text_encoder"),
                                                      "vae": L("ckpt", "vae"), "schedulers": "euler, warp_drive", "steps": "2"}},
    }))
    assert r.status == "error" and r.error["node_id"] == "sweep" and "warp_drive" in r.error["message"]
