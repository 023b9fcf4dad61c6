"""Fast mode (nodes/sd/fast.py) on the CPU: the compiled code path gives the default mode's pictures.

The GPU runs the same functions through inductor with CUDA graphs (`mode="reduce-overhead"`). Inductor's C++
compile of even the tiny UNet takes minutes on a small CPU, so these tests compile with the
`aot_eager_decomp_partition` backend: dynamo capture, AOT autograd and inductor's decompositions, then eager
kernels (set LOOM_TEST_FAST_BACKEND=inductor to run them through inductor itself). The fused scheduler maths
is checked against diffusers' own `step()` without compiling.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engine.node import node
from engine.types import IMAGE
from tests.nodes.sd_helpers import L, executor, gen, loop_nodes, output_of, txt2img_nodes, wf

BACKEND = os.environ.get("LOOM_TEST_FAST_BACKEND", "aot_eager_decomp_partition")
MIN_PSNR = 40.0
_IMAGES: dict[str, torch.Tensor] = {}


@node(name="FastTestImage", output_name="image")
def fast_test_image(key: str = "a") -> IMAGE:
    return _IMAGES[key]


@pytest.fixture(autouse=True)
def compile_backend(monkeypatch):
    monkeypatch.setenv("LOOM_FAST_BACKEND", BACKEND)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of two images in 0..1 (inf when equal)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _ex(models_dir: Path, tmp_path: Path):
    ex = executor(models_dir, tmp_path)
    ex.settings.user_dir = tmp_path / "user"
    ex.registry.add(fast_test_image)
    return ex


def default_and_fast(ex, nodes: dict, out: str = "dec") -> tuple[torch.Tensor, torch.Tensor, list]:
    """The same workflow in the default mode and in fast mode (cache cleared: both really run)."""
    ex.settings.fast = False
    ex.cache.clear()
    a = output_of(ex, ex.run(wf(nodes)), out, "image")
    ex.settings.fast = True
    ex.cache.clear()
    events: list = []
    b = output_of(ex, ex.run(wf(nodes), on_event=events.append), out, "image")
    ex.settings.fast = False
    return a, b, events


def warnings_of(events: list) -> list[str]:
    return [e.message for e in events if type(e).__name__ == "NodeWarning"]


def statuses_of(events: list) -> list[str]:
    """The progress events' status lines (compile announcements)."""
    return [e.text for e in events if type(e).__name__ == "NodeProgress" and e.text]


def compiles() -> tuple[int, int]:
    """(our compile attempts, dynamo's distinct graphs): both stay put when a run reuses compiled graphs."""
    from torch._dynamo.utils import counters

    from nodes.sd import fast

    return fast.STATS["compiles"], int(counters["stats"]["unique_graphs"])


# ------------------------------------------------------------------------------------------------------------
# The fused scheduler update equals diffusers' step(), step after step (no compile)
# ------------------------------------------------------------------------------------------------------------

CASES = [("euler", "epsilon", 1.0), ("euler", "v_prediction", 1.0), ("euler_a", "epsilon", 1.0),
         ("euler_a", "v_prediction", 0.6), ("ddim", "epsilon", 1.0), ("ddim", "v_prediction", 1.0),
         ("dpmpp_2m", "epsilon", 1.0), ("dpmpp_2m", "v_prediction", 0.6), ("euler", "epsilon", 0.6)]


@pytest.mark.parametrize("name,prediction,denoise", CASES)
@pytest.mark.parametrize("steps,dtype", [(8, torch.float32), (20, torch.float32), (20, torch.float16)])
def test_fused_update_equals_diffusers_step(name, prediction, denoise, steps, dtype):
    """Run eagerly, our update is bit-identical to diffusers' step in fp32 and fp16 (it mirrors its operations);
    the bound leaves room for a future diffusers that reorders them."""
    from nodes.sd import fast
    from nodes.sd.loading import component_configs
    from nodes.sd.schedulers import make_spec, set_timesteps, step_kwargs

    config = dict(component_configs("sd15")["scheduler"], prediction_type=prediction)
    eta = 0.3 if name == "ddim" else 0.0
    spec = make_spec(name, config, steps, denoise=denoise, eta=eta)
    sched, timesteps, _ = set_timesteps(spec, torch.device("cpu"))
    g_ref, g_ours = gen(7), gen(7)
    state = SimpleNamespace(scheduler=sched, timesteps=timesteps, noise_mask=None, generator=g_ref,
                            step_kwargs=step_kwargs(sched, g_ref, eta))
    recipe, why = fast.fused_recipe(state, use_cfg=True, rescale=0.0)
    assert recipe is not None, why
    consts = fast.step_constants(recipe, state)
    update = fast.scheduler_update(recipe)
    draw = torch.Generator().manual_seed(1)
    x_ref = (torch.randn(2, 4, 8, 8, generator=draw) * float(sched.init_noise_sigma)).to(dtype)
    x_ours = x_ref.clone()
    prev = torch.zeros_like(x_ours)
    bound = 1e-5 if dtype == torch.float32 else 2e-3
    for i, t in enumerate(timesteps):
        e = torch.randn(x_ref.shape, generator=draw).to(dtype)
        x_ref = sched.step(e, t, x_ref, **state.step_kwargs, return_dict=False)[0]
        noise = torch.randn(x_ours.shape, generator=g_ours, dtype=dtype) if recipe.noise else None
        x_ours, prev = update(x_ours, e, consts[i], noise, prev)
        assert x_ours.dtype == x_ref.dtype
        err = (x_ours.float() - x_ref.float()).abs().max().item() / max(1.0, x_ref.float().abs().max().item())
        assert err <= bound, f"step {i}: relative error {err}"


def test_unsupported_samplers_are_named():
    from nodes.sd import fast
    from nodes.sd.loading import component_configs
    from nodes.sd.schedulers import make_spec, set_timesteps

    config = component_configs("sd15")["scheduler"]
    for name in ("heun", "dpmpp_2m_sde", "lms", "pndm"):
        sched, timesteps, _ = set_timesteps(make_spec(name, config, 6), torch.device("cpu"))
        state = SimpleNamespace(scheduler=sched, timesteps=timesteps, noise_mask=None, step_kwargs={})
        recipe, why = fast.fused_recipe(state, use_cfg=True, rescale=0.0)
        assert recipe is None and why


# ------------------------------------------------------------------------------------------------------------
# Whole workflows: fast mode equals the default mode
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ex(models_dir, tmp_path_factory):
    """One executor for the SD1.5 tests: its cached model is the same object throughout, so compiled graphs
    are shared between tests, as between the workflows of one server process."""
    return _ex(models_dir, tmp_path_factory.mktemp("fast"))


def test_txt2img_same_picture_compile_announced_and_reused(ex):
    """DPM++ 2M (its previous data prediction is carried from step to step through the captured graph)."""
    from nodes.sd import fast

    fast.clear_cache()  # this test watches the first compile
    nodes = txt2img_nodes("tiny-sd15", steps=6, seed=3, scheduler="dpmpp_2m")
    a, b, events = default_and_fast(ex, nodes)
    assert psnr(a, b) >= MIN_PSNR
    assert fast.LAST_RUN["path"] == "fused"
    said = statuses_of(events)  # announced as the node's progress status, before the stall
    assert any(m.startswith("compiling UNet for 64x64 batch 1 (first time") for m in said), said
    assert any(m.startswith("compiling VAE decode for 64x64 batch 1") for m in said), said
    assert not warnings_of(events)  # nothing went wrong
    first = next(i for i, e in enumerate(events) if getattr(e, "text", None) and e.text.startswith("compiling UNet"))
    assert type(events[first]).__name__ == "NodeProgress" and events[first].node_id == "sample"
    assert events[first].model_dump()["text"].startswith("compiling UNet")  # serialised for the WebSocket
    before = compiles()
    # a second run (another seed, a DenoiseLoop with the default body) compiles nothing
    ex.settings.fast = True
    events = []
    again = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", steps=6, seed=4, scheduler="dpmpp_2m")),
                                 on_event=events.append), "dec", "image")
    loop = output_of(ex, ex.run(wf(loop_nodes("tiny-sd15", steps=6, seed=3, scheduler="dpmpp_2m"))), "dec", "image")
    ex.settings.fast = False
    assert compiles() == before
    assert not any(m.startswith("compiling") for m in statuses_of(events) + warnings_of(events))
    assert psnr(loop, b) >= MIN_PSNR and fast.LAST_RUN["path"] == "fused"
    assert not torch.equal(again, b)
    # progress every step, previews as often as the default mode gives them (every step when steps < 16)
    progress = [e for e in events if type(e).__name__ == "NodeProgress" and e.node_id == "sample"]
    assert [p.value for p in progress] == [1, 2, 3, 4, 5, 6]
    assert all(p.preview is not None and p.preview.samples.device.type == "cpu" for p in progress)


def test_lora_same_picture_without_recompiling(ex, models_dir):
    pytest.importorskip("nodes.lora")
    from nodes.sd import fast
    from nodes.sd.loading import load_checkpoint

    unet = load_checkpoint(models_dir / "checkpoints" / "tiny-sd15").unet
    _kohya_lora(unet, models_dir / "loras" / "fast-test.safetensors", seed=5)
    nodes = txt2img_nodes("tiny-sd15", steps=6, seed=3, scheduler="dpmpp_2m")
    nodes["lora"] = {"type": "LoadLoraModelOnly", "inputs": {"unet": L("ckpt", "unet"), "name": "fast-test.safetensors"}}
    nodes["sample"]["inputs"]["unet"] = L("lora", "unet")
    plain, _, _ = default_and_fast(ex, txt2img_nodes("tiny-sd15", steps=6, seed=3, scheduler="dpmpp_2m"))
    before = compiles()
    a, b, _ = default_and_fast(ex, nodes)
    assert fast.LAST_RUN["path"] == "fused"
    assert compiles() == before  # patched weights of the same layout: the same graph, no dynamo recompile
    assert psnr(a, b) >= MIN_PSNR
    assert psnr(plain, a) < 35  # the LoRA really changes the picture


def test_img2img_ancestral_same_picture(ex):
    """img2img (denoise 0.6, a begun schedule) with Euler a: the per-step noise comes from the seed's generator
    in the default mode's order."""
    from nodes.sd import fast

    _IMAGES["img"] = torch.rand(1, 64, 64, 3, generator=gen(3))
    nodes = txt2img_nodes("tiny-sd15", steps=8, scheduler="euler_a")
    nodes["img"] = {"type": "FastTestImage", "inputs": {"key": "img"}}
    nodes["enc"] = {"type": "VAEEncode", "inputs": {"vae": L("ckpt", "vae"), "image": L("img", "image")}}
    nodes["sample"]["inputs"].update(latent=L("enc", "latent"), denoise=0.6)
    a, b, _ = default_and_fast(ex, nodes)
    assert fast.LAST_RUN["path"] == "fused" and fast.LAST_RUN["steps"] == 4
    assert psnr(a, b) >= MIN_PSNR


def test_controlnet_same_picture_in_sample_and_in_an_edited_loop_body(ex, models_dir, monkeypatch):
    """A ControlNet runs stage-wise with the ControlNet and the UNet (with residuals) compiled; an edited loop
    body (CFG 3 inside) runs node by node through the same compiled graphs."""
    pytest.importorskip("nodes.control")
    import copy

    from diffusers import UNet2DConditionModel

    from nodes.sampling import DEFAULT_DENOISE_BODY
    from nodes.sd import fast

    folder = models_dir / "controlnet" / "fast-test-cn"
    if not folder.exists():
        unet = UNet2DConditionModel.from_pretrained(str(models_dir / "checkpoints" / "tiny-sd15"), subfolder="unet")
        _working_controlnet(unet, folder, seed=9)
    _IMAGES["edges"] = (torch.rand(1, 64, 64, 3, generator=gen(11)) > 0.7).float()

    def controlled(nodes: dict, sampler: str) -> dict:
        nodes["cn"] = {"type": "LoadControlNet", "inputs": {"name": "fast-test-cn"}}
        nodes["hint"] = {"type": "FastTestImage", "inputs": {"key": "edges"}}
        nodes["apply"] = {"type": "ApplyControlNet", "inputs": {"conditioning": L("pos", "conditioning"),
                                                               "control_net": L("cn", "control_net"),
                                                               "image": L("hint", "image"), "strength": 0.8}}
        nodes[sampler]["inputs"]["positive"] = L("apply", "conditioning")
        return nodes

    a, b, _ = default_and_fast(ex, controlled(txt2img_nodes("tiny-sd15", steps=4, seed=3, cfg=3.0), "sample"))
    assert fast.LAST_RUN["path"] == "fused"  # the ControlNet runs inside the compiled step
    assert psnr(a, b) >= MIN_PSNR
    # stacked: the positive-only one above plus one on both sides for the middle half of the steps only
    nodes = controlled(txt2img_nodes("tiny-sd15", steps=4, seed=3, cfg=3.0), "sample")
    nodes["both"] = {"type": "ApplyControlNetAdvanced", "inputs": {
        "positive": L("apply", "conditioning"), "negative": L("neg", "conditioning"), "control_net": L("cn", "control_net"),
        "image": L("hint", "image"), "strength": 1.2, "start_percent": 0.25, "end_percent": 0.75}}
    nodes["sample"]["inputs"].update(positive=L("both", "positive"), negative=L("both", "negative"))
    e, f, _ = default_and_fast(ex, nodes)
    assert fast.LAST_RUN["path"] == "fused"
    assert psnr(e, f) >= MIN_PSNR and psnr(a, e) < MIN_PSNR  # the second ControlNet changed the picture
    # another sampler runs stage-wise: ControlNet and UNet compiled separately
    g, h, _ = default_and_fast(ex, controlled(txt2img_nodes("tiny-sd15", steps=4, seed=3, cfg=3.0,
                                                            scheduler="unipc"), "sample"))
    assert fast.LAST_RUN["path"] == "stagewise"
    assert psnr(g, h) >= MIN_PSNR
    assert any(k[1] == "ControlNet" for k in fast._cache if k[0] == "module")
    body = copy.deepcopy(DEFAULT_DENOISE_BODY)
    body["nodes"]["guide"]["inputs"]["cfg"] = 3.0
    before = fast.STATS["compiles"]
    walks = []  # a walk over every weight costs 1-3 ms on a full-size UNet: never once per step
    real_layout = fast._layout
    monkeypatch.setattr(fast, "_layout", lambda m: walks.append(type(m).__name__) or real_layout(m))
    loop = controlled(loop_nodes("tiny-sd15", steps=4, seed=3, body=body), "loop")
    c, d, events = default_and_fast(ex, loop)
    assert 1 <= fast.STATS["compiles"] - before <= 2  # the UNet and the ControlNet, for Euler's float timesteps
    said = [(e.node_id, e.text) for e in events if type(e).__name__ == "NodeProgress" and e.text]
    assert said and all(nid == "loop" and text.startswith("compiling") for nid, text in said), said  # body -> loop node
    assert len(walks) <= 3, walks  # 4 steps x (UNet + ControlNet) without the memo
    before = fast.STATS["compiles"]
    ex.settings.fast = True
    ex.cache.clear()
    assert ex.run(wf(loop)).status == "success"
    ex.settings.fast = False
    assert fast.STATS["compiles"] == before  # compiled once, reused
    assert psnr(c, d) >= MIN_PSNR and psnr(a, c) >= MIN_PSNR


def test_model_preparation_is_memoised_per_weights_state(monkeypatch):
    """prepare_model (ready_model + the weights' layout for compile keys) walks the weights once per state:
    the same weights again cost a dictionary lookup; a re-cast or a move is a new state."""
    from nodes.sd import fast

    walks = []
    real_layout = fast._layout
    monkeypatch.setattr(fast, "_layout", lambda m: walks.append(1) or real_layout(m))
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.Linear(8, 8))
    cpu = torch.device("cpu")
    first = fast.prepare_model(model, cpu)
    assert not any(p.requires_grad for p in model.parameters())  # ready_model ran
    assert [fast.prepare_model(model, cpu) for _ in range(5)] == [first] * 5 and len(walks) == 1
    model.to(torch.float64)
    recast = fast.prepare_model(model, cpu)
    assert recast != first and len(walks) == 2
    model.to(torch.float32)  # back: the same layout as at first (walked again unless the allocator reused the storage)
    assert fast.prepare_model(model, cpu) == first and len(walks) <= 3


def _kohya_lora(unet: torch.nn.Module, path: Path, seed: int) -> None:
    """A random kohya-style LoRA on the attention projections of `unet`."""
    from safetensors.torch import save_file

    g = gen(seed)
    sd = {}
    for name, m in unet.named_modules():
        if name.endswith(("to_q", "to_v", "to_out.0")):
            key = "lora_unet_" + name.replace(".", "_")
            sd[f"{key}.lora_down.weight"] = torch.randn(4, m.weight.shape[1], generator=g) * 0.3
            sd[f"{key}.lora_up.weight"] = torch.randn(m.weight.shape[0], 4, generator=g) * 0.3
            sd[f"{key}.alpha"] = torch.tensor(4.0)
    path.parent.mkdir(exist_ok=True)
    save_file(sd, str(path))


def _working_controlnet(unet: torch.nn.Module, folder: Path, seed: int) -> None:
    """ControlNetModel.from_unet with its zero-initialised output layers made non-zero (a fresh one adds 0)."""
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    cn = ControlNetModel.from_unet(unet)
    g = gen(seed)
    with torch.no_grad():
        for name, p in cn.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    cn.save_pretrained(str(folder))


def test_sdxl_same_picture(sdxl_models_dir, tmp_path, monkeypatch):
    """SDXL (pooled text embeddings and size conditioning inside the graph), Euler: txt2img, then img2img, a LoRA
    and a ControlNet (with SDXL's added conditioning on its rows of the batch)."""
    pytest.importorskip("nodes.lora")
    from nodes.sd import fast
    from nodes.sd.loading import load_checkpoint

    monkeypatch.setenv("LOOM_FAST_VAE", "0")  # the VAE graph is covered above; keep the test short
    ex = _ex(sdxl_models_dir, tmp_path)
    plain, b, _ = default_and_fast(ex, txt2img_nodes("tiny-sdxl", steps=4))
    assert fast.LAST_RUN["path"] == "fused"
    assert psnr(plain, b) >= MIN_PSNR

    _IMAGES["sdxl-img"] = torch.rand(1, 64, 64, 3, generator=gen(4))
    nodes = txt2img_nodes("tiny-sdxl", steps=4)
    nodes["img"] = {"type": "FastTestImage", "inputs": {"key": "sdxl-img"}}
    nodes["enc"] = {"type": "VAEEncode", "inputs": {"vae": L("ckpt", "vae"), "image": L("img", "image")}}
    nodes["sample"]["inputs"].update(latent=L("enc", "latent"), denoise=0.6)
    a, b, _ = default_and_fast(ex, nodes)
    assert fast.LAST_RUN["path"] == "fused" and psnr(a, b) >= MIN_PSNR

    unet = load_checkpoint(sdxl_models_dir / "checkpoints" / "tiny-sdxl").unet
    _kohya_lora(unet, sdxl_models_dir / "loras" / "fast-test-sdxl.safetensors", seed=6)
    nodes = txt2img_nodes("tiny-sdxl", steps=4)
    nodes["lora"] = {"type": "LoadLoraModelOnly", "inputs": {"unet": L("ckpt", "unet"), "name": "fast-test-sdxl.safetensors"}}
    nodes["sample"]["inputs"]["unet"] = L("lora", "unet")
    a, b, _ = default_and_fast(ex, nodes)
    assert fast.LAST_RUN["path"] == "fused" and psnr(a, b) >= MIN_PSNR and psnr(plain, a) < 35

    folder = sdxl_models_dir / "controlnet" / "fast-test-cn-sdxl"
    if not folder.exists():
        _working_controlnet(unet, folder, seed=9)
    _IMAGES["sdxl-edges"] = (torch.rand(1, 64, 64, 3, generator=gen(12)) > 0.7).float()
    nodes = txt2img_nodes("tiny-sdxl", steps=4)
    nodes["cn"] = {"type": "LoadControlNet", "inputs": {"name": "fast-test-cn-sdxl"}}
    nodes["hint"] = {"type": "FastTestImage", "inputs": {"key": "sdxl-edges"}}
    nodes["apply"] = {"type": "ApplyControlNetAdvanced", "inputs": {
        "positive": L("pos", "conditioning"), "negative": L("neg", "conditioning"), "control_net": L("cn", "control_net"),
        "image": L("hint", "image"), "strength": 0.9}}
    nodes["sample"]["inputs"].update(positive=L("apply", "positive"), negative=L("apply", "negative"))
    a, b, _ = default_and_fast(ex, nodes)
    assert fast.LAST_RUN["path"] == "fused" and psnr(a, b) >= MIN_PSNR and psnr(plain, a) < 35


# ------------------------------------------------------------------------------------------------------------
# Failures fall back to eager: the default code, the same picture, and a warning
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", ["compile", "oom"])
def test_compile_failure_falls_back_to_eager(ex, monkeypatch, error):
    from nodes.sd import fast

    def broken(fn, opts):
        if error == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise RuntimeError("forced failure for the test")

    monkeypatch.setattr(fast, "_torch_compile", broken)
    nodes = txt2img_nodes("tiny-sd15", steps=4, size=48, seed=11)  # a shape no other test compiles
    a, b, events = default_and_fast(ex, nodes)
    assert torch.equal(a, b)  # eager fallback is the default code
    said = warnings_of(events)
    assert any("UNet for 48x48 batch 1" in m and "runs eagerly" in m for m in said), said
    if error == "oom":
        assert any("out of GPU memory" in m for m in said)
    assert fast.LAST_RUN["path"] == "eager"
    # the failure is remembered: the next run does not try again
    attempts = fast.STATS["compiles"]
    ex.settings.fast = True
    ex.cache.clear()
    ex.run(wf(nodes))
    ex.settings.fast = False
    assert fast.STATS["compiles"] == attempts
    with fast._cache_lock:  # forget it: another test may compile this shape for real
        for key in [k for k, e in fast._cache.items() if e.fn is None]:
            del fast._cache[key]


def test_compile_cache_folder_is_in_the_user_folder(tmp_path, monkeypatch):
    """Importing inductor (diffusers does) fills TORCHINDUCTOR_CACHE_DIR with its /tmp default: that is replaced
    by the user folder's; a folder the user chose is kept."""
    import torch._inductor.config  # noqa: F401

    from nodes.sd import fast

    monkeypatch.setattr(fast, "_cache_root", None)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", fast._inductor_default_dir())
    root = fast.prepare_process(SimpleNamespace(user_dir=tmp_path / "user"))
    assert root == tmp_path / "user" / "compile-cache"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor")
    monkeypatch.setattr(fast, "_cache_root", None)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    fast.prepare_process(SimpleNamespace(user_dir=tmp_path / "other"))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


@pytest.mark.parametrize("dtype,scheduler", [("bf16", "euler_a"), ("fp16", "dpmpp_2m")])
def test_half_precision_same_picture(models_dir, tmp_path, own_models, dtype, scheduler):
    """fp16 (the GPU default) and bf16: the fused step compiles for them and gives the default mode's picture in
    the same dtype."""
    from nodes.sd import fast

    ex = _ex(models_dir, tmp_path)
    ex.settings.dtype = dtype
    a, b, _ = default_and_fast(ex, txt2img_nodes("tiny-sd15", steps=4, seed=8, scheduler=scheduler))
    assert fast.LAST_RUN["path"] == "fused"
    assert psnr(a, b) >= MIN_PSNR
    assert ex.settings.devices().dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    from nodes.sd import loading

    ex.settings.dtype = "fp32"
    ex.settings._devices = None
    loading.clear_cache()  # the cached model was converted to bf16 in place: load the fp32 weights again
    ex.cache.clear()
    full = output_of(ex, ex.run(wf(txt2img_nodes("tiny-sd15", steps=4, seed=8, scheduler=scheduler))), "dec", "image")
    assert 20 < psnr(full, a) < 90  # the half precision really ran: close to fp32, not equal


def test_sdxl_vae_decodes_in_fp32_under_fp16():
    """The SDXL VAE overflows in fp16 (diffusers' SDXL pipeline upcasts it too); bf16 and other VAEs stay as set."""
    from nodes.sd.vae_ops import compute_dtype as vae_dtype  # fast mode's decode uses the default mode's rule

    def vae(family, upcast):
        return SimpleNamespace(family=family, model=SimpleNamespace(config=SimpleNamespace(force_upcast=upcast)))

    fp16, bf16 = SimpleNamespace(dtype=torch.float16), SimpleNamespace(dtype=torch.bfloat16)
    assert vae_dtype(vae("sdxl", True), fp16) == torch.float32
    assert vae_dtype(vae("sdxl", False), fp16) == torch.float16  # a fixed fp16 SDXL VAE (e.g. madebyollin's)
    assert vae_dtype(vae("sdxl", True), bf16) == torch.bfloat16
    assert vae_dtype(vae("sd15", True), fp16) == torch.float16


def test_combined_conditioning_runs_stagewise_with_the_same_picture(ex):
    """Combined prompts are predicted one by one: fast mode runs them stage-wise (UNet compiled), same picture."""
    from nodes.sd import fast

    nodes = txt2img_nodes("tiny-sd15", steps=4, seed=2)
    nodes["b"] = {"type": "EncodeText", "inputs": {"text_encoder": L("ckpt", "text_encoder"), "text": "a blue square"}}
    nodes["both"] = {"type": "ConditioningCombine", "inputs": {"conditioning_1": L("pos", "conditioning"),
                                                               "conditioning_2": L("b", "conditioning")}}
    nodes["sample"]["inputs"]["positive"] = L("both", "conditioning")
    a, b, _ = default_and_fast(ex, nodes)
    assert fast.LAST_RUN["path"] == "stagewise"
    assert psnr(a, b) >= MIN_PSNR
