"""loom-shapes: data determinism and coverage, judge accuracy on ground truth, a tiny end-to-end run.

The whole file runs in well under a minute on a 2-core CPU: models are `--tiny`, training is 2 steps.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training.loom_shapes import data as D  # noqa: E402
from training.loom_shapes import judge as J  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensor ops on a shared 2-core CPU are much faster single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_deterministic_from_seed():
    a, b, c = D.make_batch(64, 7), D.make_batch(64, 7), D.make_batch(64, 8)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.caption_ids, b.caption_ids)
    assert D.captions(a.attrs) == D.captions(b.attrs)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (64, 3, 64, 64)
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0


def test_grammar_coverage():
    assert len(D.FG_COLORS) >= 6 and len(D.SHAPES) >= 4 and len(D.BG_COLORS) >= 4
    assert not set(D.FG_COLORS) & set(D.BG_COLORS), "fg/bg palettes must be disjoint (no collisions)"
    attrs = D.sample_attributes(3000, 0)
    caps = D.captions(attrs)
    words = " ".join(caps)
    for w in list(D.FG_COLORS) + list(D.BG_COLORS) + list(D.SHAPES) + list(D.NAMED_SIZES):
        assert f" {w} " in f" {words} ", w
    for phrase in D.POSITION_PHRASES.values():
        assert phrase in words
    assert any(not any(s in c.split() for s in D.NAMED_SIZES) for c in caps), "size must be optional"
    assert any(not any(p in c for p in D.POSITION_PHRASES.values()) for c in caps), "position must be optional"
    assert all(c.startswith("a ") and c.endswith(" background") for c in caps)
    table = D.all_captions()
    assert len(table) == D.N_CAPTIONS + 1 and table[D.EMPTY_CAPTION_INDEX] == ""
    assert len(set(table)) == len(table)
    for i in range(len(attrs)):  # caption text agrees with the ground truth it describes
        row, cap = attrs.row(i), caps[i]
        assert f" {row['color']} {row['shape']} " in f" {cap} "
        assert f"on a {row['background']} background" in cap
        assert (row["size"] in cap.split()) == row["size_named"]
        if row["position_named"]:
            assert D.POSITION_PHRASES[row["position"]] in cap


def test_judge_on_ground_truth_at_least_98_percent():
    batch = D.make_batch(400, 2024)
    images = D.to_uint8(batch.images)
    hits: dict[str, list[bool]] = {}
    for i in range(len(batch.attrs)):
        for k, v in J.score(J.judge(images[i]), batch.attrs.row(i)).items():
            if v is not None:
                hits.setdefault(k, []).append(v)
    acc = {k: float(np.mean(v)) for k, v in hits.items()}
    assert set(acc) == {"color", "background", "shape", "position", "size"}
    assert all(v >= 0.98 for v in acc.values()), acc


def test_canny_edges_enclose_the_shape():
    batch = D.make_batch(200, 5)
    images = D.to_uint8(batch.images)
    edges = D.canny(images)
    assert edges.shape == (200, 64, 64) and edges.dtype == np.uint8
    gt = D.masks(batch.attrs).numpy()
    ious = [J.iou(J.edge_region(edges[i]), gt[i]) for i in range(200)]
    assert np.mean(ious) > 0.8 and min(ious) > 0.6
    cond = D.edges_to_condition(edges[:2])
    assert cond.shape == (2, 3, 64, 64) and set(torch.unique(cond).tolist()) <= {0.0, 1.0}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from training.loom_shapes import train

    out = tmp_path_factory.mktemp("loom")
    train.main(["--device", "cpu", "--out", str(out), "--stage", "all", "--tiny", "--steps", "2",
                "--budget-seconds", "120", "--pool", "64", "--batch-size", "8"])
    return out


def test_tiny_training_writes_loadable_folders(tiny_run: Path):
    from diffusers import ControlNetModel, StableDiffusionPipeline

    pipe_dir = tiny_run / "loom-shapes"
    index = json.loads((pipe_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    sched = json.loads((pipe_dir / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "DDIMScheduler" and sched["prediction_type"] == "v_prediction"
    assert sched["rescale_betas_zero_snr"] and sched["timestep_spacing"] == "trailing"
    tok_cfg = json.loads((pipe_dir / "tokenizer" / "tokenizer_config.json").read_text())
    assert tok_cfg["model_max_length"] == 77
    assert (pipe_dir / "tokenizer" / "vocab.json").exists() and (pipe_dir / "tokenizer" / "merges.txt").exists()
    log = json.loads((tiny_run / "train_log.json").read_text())
    assert {"vae", "unet", "controlnet"} <= set(log) and log["unet"]["steps"] == 2

    pipe = StableDiffusionPipeline.from_pretrained(str(pipe_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.tokenizer.model_max_length == 77
    image = pipe("a red circle on a white background", num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()
    ControlNetModel.from_pretrained(str(tiny_run / "loom-shapes-canny"), local_files_only=True)


def test_resume_skips_finished_stage(tiny_run: Path, capsys):
    from training.loom_shapes import train

    train.main(["--device", "cpu", "--out", str(tiny_run), "--stage", "vae", "--tiny", "--steps", "2", "--resume"])
    assert "already done" in capsys.readouterr().out


def test_eval_script_end_to_end(tiny_run: Path, tmp_path: Path):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import loom_shapes_eval as ev

    out = tmp_path / "eval.json"
    result = ev.main(["--model", str(tiny_run / "loom-shapes"), "--controlnet", str(tiny_run / "loom-shapes-canny"),
                      "--n", "4", "--steps", "2", "--device", "cpu", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["n"] == 4 and len(saved["records"]) == 4
    assert result["judge_on_ground_truth"]["shape"] == 1.0
    assert "controlnet_eval" in saved and 0.0 <= saved["controlnet_eval"]["mean_iou"] <= 1.0
    assert "| color |" in ev.markdown(result)


def test_training_target_matches_shipped_sampler():
    """An oracle that predicts the training v exactly must make the shipped DDIM sampler return x0.

    Checks that the training noise schedule, the v convention and the sampler config agree.
    """
    from training.loom_shapes import models as M
    from training.loom_shapes.train import noisy_and_v

    alphas = M.build_train_scheduler().alphas_cumprod
    x0 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    # Training side: v at a few timesteps, and the identity x0 = sqrt(a) x_t - sqrt(1 - a) v.
    t = torch.tensor([0, 999])
    noisy, v = noisy_and_v(alphas, x0, noise, t)
    a = alphas[t].sqrt()[:, None, None, None]
    assert torch.allclose(a * noisy - (1 - a ** 2).sqrt() * v, x0, atol=1e-5)
    assert float(alphas[-1]) < 1e-6, "zero terminal SNR"
    # Sampling side: the shipped scheduler, fed the oracle v, lands on x0.
    sched = M.build_sampler()
    sched.set_timesteps(20)
    assert int(sched.timesteps[0]) == 999
    latents = noise * sched.init_noise_sigma
    for step in sched.timesteps:
        tt = torch.full((2,), int(step))
        a_t = alphas[tt].sqrt()[:, None, None, None]
        s_t = (1 - alphas[tt]).sqrt()[:, None, None, None]
        oracle_v = a_t * (latents - a_t * x0) / s_t - s_t * x0  # v of the noise that produced `latents`
        latents = sched.step(oracle_v, step, latents).prev_sample
    assert torch.allclose(latents, x0, atol=1e-3)
